"""Teacher outputs: live forward, the index-keyed cache, batch adaptation."""

from __future__ import annotations

import pytest
import torch

from relkd_tutorial.data import Batch
from relkd_tutorial.models import build_model
from relkd_tutorial.teacher import IndexedDataset, TeacherCache, as_batch, teacher_outputs


def data(n: int = 50, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 3


def batches(x, y, batch_size=16, order=None):
    order = torch.arange(len(y)) if order is None else order
    for lo in range(0, len(y), batch_size):
        idx = order[lo : lo + batch_size]
        yield Batch(x=x[idx], y=y[idx], index=idx)


def net():
    return build_model("student_cnn_s", num_classes=3, in_channels=1, seed=0).eval()


def test_cache_rows_are_keyed_by_sample_index_whatever_the_order():
    x, y = data()
    teacher = net()
    with torch.no_grad():
        feats, logits = teacher(x)
    shuffled = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))
    cache = TeacherCache.build(teacher, list(batches(x, y, order=shuffled)))
    # BN in eval mode: each row depends on its own image only, so rows match a full forward.
    torch.testing.assert_close(cache.features, feats)
    torch.testing.assert_close(cache.logits, logits)
    assert torch.equal(cache.labels, y) and len(cache) == 50
    index = torch.tensor([7, 3, 49, 3])
    f, z = cache.lookup(index)
    torch.testing.assert_close(f, feats[index])
    torch.testing.assert_close(z, logits[index])


def test_cache_refuses_gaps_missing_indices_and_out_of_range_lookups():
    x, y = data(20)
    teacher = net()
    partial = [b for i, b in enumerate(batches(x, y, batch_size=5)) if i != 1]  # rows 5-9 missing
    with pytest.raises(ValueError, match="5 of 20 rows"):
        TeacherCache.build(teacher, partial)
    with pytest.raises(ValueError, match="needs sample indices"):
        TeacherCache.build(teacher, [(x, y)])
    cache = TeacherCache.build(teacher, list(batches(x, y)))
    with pytest.raises(ValueError, match=r"\[0, 20\] but the TeacherCache has 20 rows"):
        cache.lookup(torch.tensor([0, 20]))
    with pytest.raises(ValueError, match=r"values in \[-1"):
        cache.lookup(torch.tensor([-1, 2]))  # would silently read the last row
    with pytest.raises(ValueError, match="no sample index"):
        cache.lookup(None)
    with pytest.raises(ValueError, match="empty loader"):
        TeacherCache.build(teacher, [])
    with pytest.raises(ValueError, match="disagree"):
        TeacherCache(torch.zeros(3, 2), torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))


def test_cache_save_load_round_trip_and_setup_data(tmp_path):
    x, y = data(20)
    cache = TeacherCache.build(net(), list(batches(x, y)))
    cache.save(tmp_path / "cache.pt")
    torch.load(tmp_path / "cache.pt", weights_only=True)  # plain tensors only
    loaded = TeacherCache.load(tmp_path / "cache.pt")
    for a, b in zip(vars(cache).values(), vars(loaded).values(), strict=True):
        assert torch.equal(a, b)
    setup = cache.setup_data()
    assert setup.teacher_features is cache.features and torch.equal(setup.labels, y)


def test_teacher_outputs_of_a_module_are_eval_mode_no_grad_float32():
    x, y = data(8)
    teacher = net().train()
    running_mean = teacher.body[0][1].running_mean.clone()
    batch = Batch(x=x, y=y, index=torch.arange(8))
    f, z = teacher_outputs(teacher, batch)
    assert not teacher.training and not f.requires_grad and not z.requires_grad
    assert torch.equal(teacher.body[0][1].running_mean, running_mean)
    f16, z16 = teacher_outputs(teacher, batch, autocast_dtype=torch.bfloat16)
    assert f16.dtype == z16.dtype == torch.float32  # cast back for the losses
    torch.testing.assert_close(z16, z, rtol=0.05, atol=0.05)
    with pytest.raises(TypeError, match="TeacherCache"):
        teacher_outputs("not a teacher", batch)  # type: ignore[arg-type]


def test_as_batch_adapts_tuples_and_rejects_the_rest():
    x, y = data(4)
    b = as_batch((x, y.int()))
    assert b.index is None and b.y.dtype == torch.int64
    b = as_batch([x, y, torch.arange(4)])
    assert torch.equal(b.index, torch.arange(4))
    assert as_batch(Batch(x, y, torch.arange(4)), "cpu").x is x
    with pytest.raises(TypeError, match="Batch or"):
        as_batch({"x": x})
    with pytest.raises(TypeError, match="of length 4"):
        as_batch((x, y, y, y))


def test_indexed_dataset_yields_positions():
    x, y = data(6)
    ds = IndexedDataset(torch.utils.data.TensorDataset(x, y))
    assert len(ds) == 6 and ds[4][2] == 4 and torch.equal(ds[4][0], x[4])
