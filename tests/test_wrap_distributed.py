"""Wrapped torchvision models under DDP (gloo, two CPU processes) through ``fit``.

The processes are in ``tests/_wrap_dist_worker.py``, started by the distributed tests' launcher.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _dist_worker import WORLD, launch
from _wrap_dist_worker import run, worker


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wrap_ddp")
    launch(worker, out)
    return out


def ranks(spawned: Path, case: str) -> list[dict]:
    return [torch.load(spawned / f"{case}_r{r}.pt", weights_only=True) for r in range(WORLD)]


def test_a_wrapped_vit_trains_under_ddp_as_in_one_process(spawned):
    student, history = run("vit", 0, 1)
    expected = {k: v.detach() for k, v in student.named_parameters()}
    for rank, got in enumerate(ranks(spawned, "vit")):
        assert got["params"].keys() == expected.keys()
        for k, v in expected.items():  # float64: only the summation order differs
            torch.testing.assert_close(got["params"][k], v, rtol=1e-9, atol=1e-11)
        assert [r["loss"] for r in got["history"]] == pytest.approx(
            [r["loss"] for r in history], rel=1e-9
        ), rank
    first = {k: v.detach() for k, v in tiny_start().named_parameters()}
    moved = [k for k, v in expected.items() if not torch.equal(v, first[k])]
    assert "model.conv_proj.weight" in moved and "model.heads.head.weight" in moved


def tiny_start():
    from _wrap_dist_worker import tiny_vit

    return tiny_vit(1)


def test_a_wrapped_batchnorm_student_keeps_identical_parameters_on_both_ranks(spawned):
    r0, r1 = ranks(spawned, "bn")
    assert r0["params"].keys() == r1["params"].keys()
    for k, v in r0["params"].items():
        assert torch.equal(v, r1["params"][k]), k
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in r0["history"])
