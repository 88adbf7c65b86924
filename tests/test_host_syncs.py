"""The training step never waits on the host: at most one host read per step, none where nothing
is logged, for every method ``available_methods()`` lists (so a method added later is covered).

A host read is an ``aten._local_scalar_dense`` call (every ``.item()``, ``bool(t)``, ``float(t)``,
``int(t)``), counted under a ``TorchDispatchMode``, or a call of the loop's one bulk read,
``training.steps.to_host`` (``tolist()`` of a CPU tensor dispatches nothing, so it is counted by
wrapping it). On a GPU each one drains the queue. The count is taken over whole ``fit`` calls of 3
and of 7 steps per epoch on CPU: the 4 extra steps must add nothing with the bar off, and at most
one read each with the bar refreshed every step. The first step of a run checks the losses' input
values (a read per tensor), so it is not one of the extra steps.

Not counted: ``aten.nonzero`` (a boolean mask's size), which on a GPU waits too. The only
remaining one on a step is REFILLED's triplet mining in its first stage (the set of semi-hard
triplets has a data-dependent size).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from relkd_tutorial import input_checks, rkd_distance_loss
from relkd_tutorial._checks import input_checks_enabled
from relkd_tutorial.data import TensorLoader, load_fashion_mnist
from relkd_tutorial.methods import available_methods, build_method
from relkd_tutorial.models import build_model
from relkd_tutorial.pretrained import load_shipped_teacher
from relkd_tutorial.teacher import TeacherCache
from relkd_tutorial.training import TrainConfig, fit, progress, steps

BATCH = 16


class HostReads(TorchDispatchMode):
    """Counts ``aten._local_scalar_dense`` calls (and ``to_host`` calls, added by the fixture)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def shipped():
    train, _ = load_fashion_mnist("subset")
    data = train.subset(torch.arange(7 * BATCH))
    teacher = load_shipped_teacher("cpu")
    cache = TeacherCache.build(teacher, TensorLoader(data, BATCH, shuffle=False, augment=False))
    return data, teacher, cache


def reads(shipped, monkeypatch, name: str, steps_per_epoch: int, log_every: int) -> tuple:
    """Host reads of one ``fit`` of ``name`` (one epoch per stage), bar refreshed every
    ``log_every`` steps (``0``: no bar); and the number of stages."""
    data, teacher, cache = shipped
    data = data.subset(torch.arange(steps_per_epoch * BATCH))
    student = build_model("student_cnn_s", 10, 1, seed=0)
    dims = {"student_dim": student.feature_dim, "teacher_dim": teacher.feature_dim}
    kwargs = {**dims, "queue_size": 64} if name.startswith("rrd") else {}
    torch.manual_seed(0)
    method = build_method(name, **kwargs)
    counter = HostReads()

    def counted(values):  # type: ignore[no-untyped-def]
        counter.count += 1
        return values.tolist()

    monkeypatch.setattr(steps, "to_host", counted)
    monkeypatch.setattr(progress, "to_host", counted)
    monkeypatch.setenv("CI", "")  # the bar is shown (and refreshed) only outside CI
    config = TrainConfig(
        epochs=len(method.stages()), device="cpu", progress=log_every > 0,
        log_every=log_every or 10**6, handle_signals=False,
    )  # fmt: skip
    loader = TensorLoader(data, BATCH, augment=False, seed=0)
    with counter:
        fit(student, method, loader, config, teacher=cache)
    return counter.count, len(method.stages())


@pytest.mark.parametrize("name", available_methods())
def test_no_host_read_on_a_step_that_logs_nothing(shipped, monkeypatch, name: str) -> None:
    (few, _), (more, _) = (reads(shipped, monkeypatch, name, n, log_every=0) for n in (3, 7))
    assert more - few == 0, f"{name}: {more - few} host reads in 4 steps that log nothing"


@pytest.mark.parametrize("name", available_methods())
def test_at_most_one_host_read_on_a_step_that_logs(shipped, monkeypatch, name: str) -> None:
    (few, _), (more, stages) = (reads(shipped, monkeypatch, name, n, log_every=1) for n in (3, 7))
    assert 0 < more - few <= 4 * stages, f"{name}: {more - few} host reads in {4 * stages} steps"


def test_the_losses_still_check_their_inputs_around_fit(shipped, monkeypatch) -> None:
    """The loop turns the value checks off after its first step, and back on when it returns;
    the first step checks (a NaN there fails with the losses' message), a later NaN stops the
    run at the end of the epoch (its loss is not finite), or at once with ``every_step=True``."""
    data, _, cache = shipped
    reads(shipped, monkeypatch, "kd", 3, log_every=0)
    assert input_checks_enabled()
    bad = torch.randn(6, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        rkd_distance_loss(bad, torch.randn(6, 4))

    def run(nan_at: int) -> None:
        logits = cache.logits.clone()
        logits[nan_at, 0] = float("nan")  # batches in order: sample i is in step i // BATCH + 1
        nan_cache = dataclasses.replace(cache, logits=logits)
        loader = TensorLoader(
            data.subset(torch.arange(3 * BATCH)), BATCH, shuffle=False, augment=False
        )
        config = TrainConfig(epochs=1, device="cpu", progress=False)
        fit(build_model("student_cnn_s", 10, 1, seed=0), build_method("kd"), loader, config,
            teacher=nan_cache)  # fmt: skip

    with pytest.raises(ValueError, match="teacher_logits contains NaN"):
        run(0)  # step 1
    with pytest.raises(FloatingPointError, match="non-finite loss terms"):
        run(2 * BATCH)  # step 3
    with input_checks(True, every_step=True), pytest.raises(ValueError, match="contains NaN"):
        run(2 * BATCH)
    assert input_checks_enabled()
