"""A teacher cache keyed by sample index follows every sample through any shuffling.

The classic bug (docs/pitfalls.md; haitongli/knowledge-distillation-pytorch #4, #9, #23):
teacher outputs computed once and then read back by *iteration number* while the loader
shuffles, so from the second epoch on the student learns from other images' outputs. Here each
shuffled batch's cached outputs are compared with running the teacher on that very batch.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from relkd_tutorial.data import ImageSet, TensorLoader
from relkd_tutorial.methods import KD
from relkd_tutorial.models import build_model
from relkd_tutorial.teacher import IndexedDataset, TeacherCache, as_batch
from relkd_tutorial.training import TrainConfig, fit

N, C = 60, 3


def image_set() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 12, 12), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(N) % C, ["a", "b", "c"], "t", (0.5,), (0.25,))


def teacher() -> torch.nn.Module:
    return build_model("student_cnn_m", C, 1, seed=0).eval()  # BN in eval mode: per-sample


def live(batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return teacher()(batch.x)


def test_a_shuffled_tensorloader_gets_each_samples_own_teacher_output():
    data = image_set()
    cache = TeacherCache.build(teacher(), TensorLoader.for_evaluation(data, 16))
    loader = TensorLoader(data, 16, shuffle=True, augment=False, seed=1)
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            assert not torch.equal(batch.index, batch.index.sort().values)  # really shuffled
            feats, logits = cache.lookup(batch.index)
            live_feats, live_logits = live(batch)
            torch.testing.assert_close(feats, live_feats)
            torch.testing.assert_close(logits, live_logits)


def test_a_shuffled_dataloader_over_an_indexed_dataset_gets_each_samples_own_output():
    data = image_set()
    x = (data.images.float() / 255 - 0.5) / 0.25  # (N, 1, 12, 12)
    dataset = IndexedDataset(TensorDataset(x, data.labels))
    cache = TeacherCache.build(teacher(), DataLoader(dataset, batch_size=16))
    shuffled = DataLoader(dataset, batch_size=16, shuffle=True)
    for _ in range(2):
        for item in shuffled:
            batch = as_batch(item)
            feats, logits = cache.lookup(batch.index)
            live_feats, live_logits = live(batch)
            torch.testing.assert_close(feats, live_feats)
            torch.testing.assert_close(logits, live_logits)


def test_the_iteration_number_bug_is_what_the_index_key_avoids():
    """Reading epoch 1's outputs back by step number gives other images' outputs in epoch 2."""
    data = image_set()
    loader = TensorLoader(data, 20, shuffle=True, augment=False, seed=1)
    by_step = [live(batch)[1] for batch in loader]  # epoch 0, keyed by iteration number
    cache = TeacherCache.build(teacher(), TensorLoader.for_evaluation(data, 20))
    for step, batch in enumerate(loader):  # epoch 1: a new order
        truth = live(batch)[1]
        assert not torch.allclose(by_step[step], truth)  # the bug: another image's logits
        torch.testing.assert_close(cache.lookup(batch.index)[1], truth)


def test_fit_with_a_cache_and_a_shuffled_tensorloader_sees_each_samples_output():
    data = image_set()
    cache = TeacherCache.build(teacher(), TensorLoader.for_evaluation(data, 32))

    class Recording(KD):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list = []

        def after_step(self, inputs):
            self.seen.append((inputs.index.clone(), inputs.teacher_logits.clone()))

    method = Recording()
    loader = TensorLoader(data, 12, shuffle=True, augment=False, seed=2)
    config = TrainConfig(epochs=2, device="cpu", progress=False, seed=0)
    fit(build_model("student_cnn_s", C, 1, seed=1), method, loader, config, teacher=cache)
    with torch.no_grad():
        reference = teacher()(next(iter(TensorLoader.for_evaluation(data, N))).x)[1]  # (N, C)
    assert len(method.seen) == 2 * 5
    for index, logits in method.seen:
        torch.testing.assert_close(logits, reference[index])


def test_building_a_cache_over_an_augmenting_loader_is_refused():
    data = image_set()
    with pytest.raises(ValueError, match="one cache per fixed view"):
        TeacherCache.build(teacher(), TensorLoader(data, 16, augment=True))
    TeacherCache.build(teacher(), TensorLoader(data, 16, augment=False, shuffle=True))
