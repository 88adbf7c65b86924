"""Two processes (gloo, CPU) give the single-process loss, gradients, weights and RRD queue.

One module-scoped fixture spawns two processes (``tests/_dist_worker.py``) that join a process
group through ``init_distributed`` and save what they computed; the tests below compute the
single-process reference on the concatenated batch and compare, in float64 (no BatchNorm):

- (a) every method's loss terms and the gradients of the student's and the method's parameters
  after one step on two halves of the batch, DDP-averaged;
- (b) two epochs of ``fit`` with a sharded ``TensorLoader``: weights, method state and history;
- (c) RRD's queue: identical on both ranks, equal to the single-process queue.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _dist_worker import (
    FIT_CASES,
    GLOBAL_BATCH,
    METHOD_CASES,
    WORLD,
    build_case,
    fit_case,
    grads,
    launch,
    step,
    step_batch,
    tiny_net,
    worker,
)
from _helpers import read_history_csv

from relkd_tutorial.data import TensorLoader
from relkd_tutorial.training import distributed, load_checkpoint

TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    launch(worker, out)
    return out


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same(actual: dict, expected: dict, what: str, **tol) -> None:
    assert actual.keys() == expected.keys(), what
    for k in expected:
        torch.testing.assert_close(actual[k], expected[k], msg=f"{what}: {k}", **(tol or TOL))


def test_all_gather_concatenates_uneven_shards_and_sums_the_gradient(spawned):
    weights = torch.arange(10.0, dtype=torch.float64).view(5, 2)  # dL/dY of L = sum(w * Y)
    blocks = [slice(0, 3), slice(3, 5)]  # rank 0 holds 3 rows, rank 1 holds 2
    for rank in range(WORLD):
        got = load(spawned / f"gather_r{rank}.pt")
        expected = torch.tensor([[1.0] * 2] * 3 + [[2.0] * 2] * 2, dtype=torch.float64)
        assert torch.equal(got["gathered"], expected)
        # both ranks computed the same L: block r of the all-reduced gradient is W * w[block r]
        assert torch.equal(got["grad"], WORLD * weights[blocks[rank]])


@pytest.mark.parametrize("case", METHOD_CASES, ids=[c[0] for c in METHOD_CASES])
def test_one_step_on_two_halves_equals_one_process_on_the_whole_batch(spawned, case):
    name, kind, kwargs, stage = case
    ranks = [load(spawned / f"step_r{r}.pt")[name] for r in range(WORLD)]
    model, method = tiny_net(), build_case(kind, kwargs, stage)
    terms, inputs = step(model, method, *step_batch())
    method.after_step(inputs)
    assert inputs.student_logits.shape[0] == GLOBAL_BATCH
    assert float(terms["loss"]) != 0.0  # a loss that tests something
    for rank, got in enumerate(ranks):
        what = f"{name}, rank {rank}"
        assert_same(got["terms"], terms, f"{what} loss terms")
        assert_same(got["student"], grads(model), f"{what} student gradients")
        assert_same(got["method"], grads(method), f"{what} method gradients")
        assert_same(got["buffers"], method.state_dict(), f"{what} method buffers")
    # every rank computed the same global loss and holds the same synchronised gradients
    for part in ("terms", "student", "method", "buffers"):
        for k, v in ranks[0][part].items():
            assert torch.equal(v, ranks[1][part][k]), f"{name}: ranks differ in {part} {k}"


@pytest.mark.parametrize("name", list(FIT_CASES))
def test_two_process_training_matches_one_process_with_the_same_global_batch(
    spawned, name, tmp_path
):
    model, method, history = fit_case(name, 0, 1, tmp_path)
    for record in history:
        record.pop("seconds")
    ranks = [load(spawned / f"fit_{name}_r{r}.pt") for r in range(WORLD)]
    for rank, got in enumerate(ranks):
        assert_same(got["model"], model.state_dict(), f"{name} rank {rank} weights")
        assert_same(got["method"], method.state_dict(), f"{name} rank {rank} method state")
        assert got["history"][-1].keys() == history[-1].keys()
        for mine, ref in zip(got["history"], history, strict=True):
            for k, v in ref.items():
                if k == "eval_loss":  # evaluate() works in float32 per batch: shards differ
                    assert mine[k] == pytest.approx(v, rel=1e-6), (name, k)
                elif isinstance(v, float):
                    assert mine[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (name, k)
                else:
                    assert mine[k] == v, (name, k)
    assert torch.equal(ranks[0]["model"]["fc.weight"], ranks[1]["model"]["fc.weight"])
    # only rank 0 writes; its checkpoint holds the unwrapped student (no "module." prefix)
    assert not (spawned / f"ckpt_{name}_r1").exists()
    assert not (spawned / f"history_{name}_r1.csv").exists()
    saved = load_checkpoint(spawned / f"ckpt_{name}_r0" / "last.pt")
    assert_same(saved["model"], ranks[0]["model"], "checkpoint")
    assert len(saved["rng_ranks"]) == WORLD
    assert len(read_history_csv(spawned / f"history_{name}_r0.csv")) == len(history)


def test_rrd_queue_is_identical_on_both_ranks_and_equals_the_single_process_queue(spawned):
    ranks = [load(spawned / f"fit_rrd_r{r}.pt")["method"] for r in range(WORLD)]
    _, method, _ = fit_case("rrd", 0, 1, Path(spawned) / "single")
    queue = method.state_dict()["rrd.queue.keys"]
    assert int(method.rrd.queue.filled) == method.rrd.queue.size  # 64 keys through 12 slots
    for state in ranks:
        assert torch.equal(state["rrd.queue.keys"], ranks[0]["rrd.queue.keys"])
        assert torch.equal(state["rrd.queue.ptr"], method.state_dict()["rrd.queue.ptr"])
        torch.testing.assert_close(state["rrd.queue.keys"], queue, **TOL)


def test_helpers_without_a_process_group_are_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather(x) is x
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    assert distributed.get_rank() == 0 and not distributed.is_distributed()
    assert distributed.any_rank(True, torch.device("cpu"))
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]


def test_unsharded_or_mis_sharded_loaders_are_refused(monkeypatch):
    from _dist_worker import image_set

    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    data = image_set()
    distributed.check_sharded_loader(TensorLoader(data, 8, rank=1, world_size=2))
    with pytest.raises(ValueError, match="world_size=1 but 2 processes"):
        distributed.check_sharded_loader(TensorLoader(data, 8))
    with pytest.raises(ValueError, match="does not say how it is sharded"):
        distributed.check_sharded_loader([])
    with pytest.raises(ValueError, match="SyncBatchNorm does not run on cpu"):
        distributed.wrap_student(tiny_net(), torch.device("cpu"), sync_batchnorm=True)
