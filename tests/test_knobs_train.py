"""Every field of ``TrainConfig``, observed through what ``fit`` does.

The optimizer knobs are checked against a loop written here by hand with ``torch.optim.SGD`` /
``torch.optim.AdamW`` and ``torch.nn.utils.clip_grad_norm_`` (float64, no BatchNorm, no
randomness in the forward pass, two batches per epoch so momentum matters): ignoring
``weight_decay``, ``momentum``, ``nesterov``, ``grad_clip`` or ``lr``, or a different default,
gives other weights. The schedule is checked by the ``lr`` column *and* by weights trained with
the hand-computed per-epoch rate. Every other field has a test that fails if ``fit`` ignores it.

Only the package root is imported (``from relkd_tutorial import fit, TrainConfig, ...``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import signal
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from relkd_tutorial import (
    CrossEntropy,
    StepInputs,
    TrainConfig,
    build_method,
    fit,
    load_checkpoint,
    seeded,
)

C, D, IN = 3, 4, 2  # classes, feature width, input channels (2: channels_last is observable)
TIGHT = {"rtol": 1e-12, "atol": 1e-13}


class Tiny(nn.Module):
    """``(B, 2, 6, 6)`` -> ``(features (B, 4), logits (B, 3))``: conv, tanh, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(IN, D, 3, padding=1)
        self.fc = nn.Linear(D, C)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.fc.weight.dtype)
        features = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)  # (B, D)
        return features, self.fc(features)


def tiny(seed: int = 1, dtype: torch.dtype = torch.float64) -> Tiny:
    with seeded(seed):
        return Tiny().to(dtype)


def batches(n: int = 2, dtype: torch.dtype = torch.float64) -> list[tuple[Tensor, Tensor]]:
    """``n`` fixed batches of 8 ``(x, y)`` (a list: the same order every epoch, no RNG)."""
    g = torch.Generator().manual_seed(0)
    return [
        (3 * torch.randn(8, IN, 6, 6, generator=g, dtype=dtype), torch.arange(8) % C)
        for _ in range(n)
    ]


def config(**kwargs) -> TrainConfig:
    base = dict(epochs=1, device="cpu", progress=False, schedule="constant", seed=0)
    base.update(kwargs)
    return TrainConfig(**base)


def rrd_method():
    with seeded(4):
        return build_method("rrd", student_dim=D, teacher_dim=D, embed_dim=3, queue_size=5).double()


def by_hand(
    student: nn.Module,
    method,
    data: list,
    make_optimizer,
    lrs: list[float],
    *,
    clip: float | None = None,
    teacher: nn.Module | None = None,
    autocast: torch.dtype | None = None,
) -> list[float]:
    """The loop, written out: per epoch set the rate, then per batch forward, loss, clip, step.

    Returns the global gradient norm before clipping at every step.
    """
    params = [p for m in (student, method) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(params)
    norms = []
    for lr in lrs:
        for group in optimizer.param_groups:
            group["lr"] = lr
        for x, y in data:
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
                features, logits = student(x)
            t_feat = t_logits = None
            if teacher is not None:
                with torch.no_grad():
                    t_feat, t_logits = (t.float() for t in teacher(x))  # the loop's float32
            wide = torch.promote_types(features.dtype, torch.float32)
            inputs = StepInputs(features.to(wide), logits.to(wide), y, t_feat, t_logits)
            optimizer.zero_grad(set_to_none=True)
            method.loss_terms(inputs)["loss"].backward()
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
            norms.append(float(norm))
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            method.after_step(inputs)
    return norms


def assert_same_weights(a: nn.Module, b: nn.Module, **tol) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k, **(tol or TIGHT))


def differ(a: nn.Module, b: nn.Module) -> bool:
    return any(not torch.allclose(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ---------------------------------------------------------------------------------------------
# The optimizer: SGD (momentum, Nesterov, weight decay), AdamW, clipping, lr
# ---------------------------------------------------------------------------------------------

SGD_CASES = {
    "plain": dict(lr=0.1, momentum=0.0, weight_decay=0.0),
    "momentum": dict(lr=0.1, momentum=0.9, weight_decay=0.0),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0),
    "weight_decay": dict(lr=0.1, momentum=0.9, weight_decay=0.2),
    "clip": dict(lr=0.1, momentum=0.9, weight_decay=0.01, grad_clip=0.05),
    "nesterov_decay_clip": dict(lr=0.3, momentum=0.5, nesterov=True, weight_decay=0.1,
                                grad_clip=0.05),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SGD_CASES))
@pytest.mark.parametrize("kind", ["ce", "rrd"])
def test_sgd_steps_equal_torch_sgd_with_clip_grad_norm(case: str, kind: str) -> None:
    knobs = SGD_CASES[case]
    make = (lambda: CrossEntropy()) if kind == "ce" else rrd_method
    teacher = None if kind == "ce" else tiny(seed=9).eval()
    student, method = tiny(), make()
    fit(student, method, batches(), config(epochs=2, **knobs), teacher=teacher)

    ref, ref_method = tiny(), make()
    sgd = lambda params: torch.optim.SGD(  # noqa: E731
        params, lr=knobs["lr"], momentum=knobs["momentum"],
        nesterov=knobs.get("nesterov", False), weight_decay=knobs["weight_decay"],
    )  # fmt: skip
    clip = knobs.get("grad_clip")
    norms = by_hand(ref, ref_method, batches(), sgd, [knobs["lr"]] * 2, clip=clip, teacher=teacher)
    assert_same_weights(student, ref)
    assert_same_weights(method, ref_method)  # RRD's head is clipped and stepped too
    if clip is not None:
        assert min(norms) > 2 * clip  # clipping was active at every step


ADAMW_CASES = {
    "plain": dict(lr=0.01, weight_decay=0.0),
    "weight_decay": dict(lr=0.01, weight_decay=0.5),
    "clip": dict(lr=0.01, weight_decay=0.1, grad_clip=0.05),
}


@pytest.mark.parametrize("case", list(ADAMW_CASES))
def test_adamw_steps_equal_torch_adamw(case: str) -> None:
    knobs = ADAMW_CASES[case]
    student = tiny()
    fit(student, CrossEntropy(), batches(), config(epochs=2, optimizer="adamw", **knobs))
    ref = tiny()
    adamw = lambda params: torch.optim.AdamW(  # noqa: E731
        params, lr=knobs["lr"], weight_decay=knobs["weight_decay"]
    )
    clip = knobs.get("grad_clip")
    norms = by_hand(ref, CrossEntropy(), batches(), adamw, [knobs["lr"]] * 2, clip=clip)
    assert_same_weights(student, ref)
    if clip is not None:
        assert min(norms) > 2 * clip  # clipping was active at every step


def test_the_default_optimizer_is_sgd_lr_0p05_momentum_0p9_decay_5e_4_cosine() -> None:
    student = tiny()
    history = fit(student, CrossEntropy(), batches(), TrainConfig(epochs=2, device="cpu",
                                                                 progress=False))  # fmt: skip
    ref = tiny()
    sgd = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    by_hand(ref, CrossEntropy(), batches(), sgd, [0.05, 0.05 * (1 + math.cos(math.pi / 2)) / 2])
    assert_same_weights(student, ref)
    assert [r["lr"] for r in history] == pytest.approx([0.05, 0.025], rel=1e-12)


def test_default_config_fields() -> None:
    assert dataclasses.asdict(TrainConfig()) == {
        "epochs": 10, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False,
        "weight_decay": 5e-4, "schedule": "cosine", "milestones": (0.625, 0.75, 0.875),
        "gamma": 0.1, "warmup_epochs": 0, "grad_clip": None, "device": "auto", "amp": "off",
        "channels_last": False, "compile": False, "seed": 0, "checkpoint_dir": None,
        "resume": False, "history_csv": None, "progress": True, "log_every": 10, "extra": {},
        "handle_signals": True, "sync_batchnorm": False,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Schedule, warm-up, epochs and stages
# ---------------------------------------------------------------------------------------------


def cosine(e: int, n: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * e / n))


SCHEDULES = {
    "constant": (dict(schedule="constant"), [1.0] * 4),
    "cosine": (dict(schedule="cosine"), [cosine(e, 4) for e in range(4)]),
    "step": (dict(schedule="step", milestones=(0.5, 0.75), gamma=0.3), [1, 1, 0.3, 0.09]),
    "step_default_milestones": (dict(schedule="step"), [1, 1, 1, 0.01]),  # at e=3: 3>=2.5, 3>=3
    "warmup": (dict(schedule="constant", warmup_epochs=2), [1 / 3, 2 / 3, 1, 1]),
    "cosine_warmup": (
        dict(schedule="cosine", warmup_epochs=1), [cosine(e, 4) * min(1, (e + 1) / 2) for e in
                                                   range(4)]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_rates_are_logged_and_applied(name: str) -> None:
    knobs, factors = SCHEDULES[name]
    lr = 0.2
    student = tiny()
    history = fit(student, CrossEntropy(), batches(), config(epochs=4, lr=lr, momentum=0.0,
                                                             weight_decay=0.0, **knobs))  # fmt: skip
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["lr"] for r in history] == pytest.approx([lr * f for f in factors], rel=1e-12)
    ref = tiny()
    sgd = lambda params: torch.optim.SGD(params, lr=lr)  # noqa: E731
    by_hand(ref, CrossEntropy(), batches(), sgd, [lr * f for f in factors])
    assert_same_weights(student, ref)


class Counting(CrossEntropy):
    """CE that counts its steps (and may draw from the global RNGs at each)."""

    def __init__(self, draw: bool = False) -> None:
        super().__init__()
        self.steps, self.draw, self.draws = 0, draw, []

    def loss_terms(self, inputs: StepInputs):
        self.steps += 1
        if self.draw:
            self.draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
        return super().loss_terms(inputs)


@pytest.mark.parametrize("epochs", [1, 3])
def test_epochs_is_the_number_of_passes(epochs: int) -> None:
    method = Counting()
    history = fit(tiny(), method, batches(), config(epochs=epochs))
    assert len(history) == epochs and method.steps == 2 * epochs


def test_each_stage_of_a_method_gets_its_share_of_the_epochs_and_a_fresh_schedule() -> None:
    method = build_method("refilled", centres="local", stage1_fraction=0.5, margin=1.0)
    history = fit(tiny(), method.double(), batches(), config(epochs=4, lr=0.1, schedule="cosine"),
                  teacher=tiny(seed=9).eval())  # fmt: skip
    assert [r["stage"] for r in history] == ["embedding"] * 2 + ["classifier"] * 2
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.05, 0.1, 0.05], rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Seed, device, amp, channels_last, compile
# ---------------------------------------------------------------------------------------------


def test_seed_seeds_python_numpy_and_torch_and_none_leaves_them_alone() -> None:
    def draws(seed, outer: int = 123) -> list:
        random.seed(outer)
        np.random.seed(outer)
        torch.manual_seed(outer)
        method = Counting(draw=True)
        fit(tiny(), method, batches(1), config(seed=seed))
        return method.draws[0]

    def fresh(seed: int) -> tuple:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    assert draws(3) == fresh(3) and draws(3, outer=7) == fresh(3)
    assert draws(4) == fresh(4) != fresh(3)
    assert draws(None, outer=7) == fresh(7) and draws(None, outer=8) == fresh(8)


def test_device_is_used() -> None:
    student = tiny()
    fit(student, CrossEntropy(), batches(1), config(device="cpu"))
    assert student.fc.weight.device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            fit(tiny(), CrossEntropy(), batches(1), config(device="cuda"))


def test_amp_bf16_runs_the_forward_under_autocast_and_the_loss_in_float32() -> None:
    data = batches(dtype=torch.float32)
    student = tiny(dtype=torch.float32)
    fit(student, CrossEntropy(), data, config(epochs=2, lr=0.1, amp="bf16"))
    ref = tiny(dtype=torch.float32)
    sgd = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)  # noqa: E731
    by_hand(ref, CrossEntropy(), data, sgd, [0.1, 0.1], autocast=torch.bfloat16)
    assert_same_weights(student, ref, rtol=1e-6, atol=1e-7)
    full = tiny(dtype=torch.float32)
    fit(full, CrossEntropy(), data, config(epochs=2, lr=0.1, amp="off"))
    assert differ(full, student)  # bf16 and float32 forwards train different weights


@pytest.mark.parametrize("on", [False, True])
def test_channels_last_formats_the_student_and_its_inputs(on: bool) -> None:
    student, seen = tiny(), []
    student.conv.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    fit(student, CrossEntropy(), batches(), config(channels_last=on))
    assert seen == [on, on]
    assert student.conv.weight.is_contiguous(memory_format=torch.channels_last) == on


@pytest.mark.parametrize("on", [False, True])
def test_compile_runs_the_forward_through_torch_compile(monkeypatch, on: bool) -> None:
    calls = []

    class Compiled(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.forwards = inner, 0

        def forward(self, x):
            self.forwards += 1
            return self.inner(x)

    def fake_compile(model, *args, **kwargs):
        calls.append(Compiled(model))
        return calls[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    fit(tiny(), CrossEntropy(), batches(), config(compile=on))
    assert len(calls) == int(on)
    if on:
        assert calls[0].forwards == 2  # every training step went through the compiled module


# ---------------------------------------------------------------------------------------------
# Checkpoints, resume, history CSV, extra
# ---------------------------------------------------------------------------------------------


def test_checkpoint_dir_and_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    fit(tiny(), CrossEntropy(), batches(), config(epochs=2))
    assert os.listdir(tmp_path) == []  # no checkpoint_dir: nothing written
    extra = {"data": "tiny", "n": [1, 2], "nested": {"a": None}}
    student = tiny()
    fit(student, CrossEntropy(), batches(), config(epochs=2, checkpoint_dir="run", extra=extra))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 2 and state["config"]["extra"] == extra
    for k, v in student.state_dict().items():
        assert torch.equal(state["model"][k], v)


def test_resume_true_path_and_false(tmp_path) -> None:
    straight = tiny()
    fit(straight, CrossEntropy(), batches(), config(epochs=3))
    fit(tiny(), CrossEntropy(), batches(), config(epochs=2, checkpoint_dir=str(tmp_path / "a")))
    a = tmp_path / "a"
    for resume, folder in ((str(a / "last.pt"), tmp_path / "b"), (True, a)):  # path, then True
        student, method = tiny(seed=5), Counting()  # other initial weights: the file must win
        with pytest.warns(
            UserWarning, match="resuming a 2-epoch run as a 3-epoch run.*is a straight"
        ):
            history = fit(student, method, batches(),
                          config(epochs=3, checkpoint_dir=str(folder), resume=resume))  # fmt: skip
        assert method.steps == 2 and [r["epoch"] for r in history] == [1, 2, 3]
        assert_same_weights(student, straight, rtol=0, atol=0)
    student, method = tiny(), Counting()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh start reads no checkpoint: no warning
        fit(student, method, batches(), config(epochs=3, checkpoint_dir=str(tmp_path / "a")))
    assert method.steps == 6
    assert_same_weights(student, straight, rtol=0, atol=0)


def test_history_csv_holds_every_record(tmp_path) -> None:
    path = tmp_path / "h.csv"
    history = fit(tiny(), CrossEntropy(), batches(), config(epochs=3, history_csv=str(path)))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, record in zip(rows, history, strict=True):
        assert float(row["loss"]) == pytest.approx(record["loss"], rel=1e-12)
        assert float(row["lr"]) == record["lr"] and row["stage"] == record["stage"]


# ---------------------------------------------------------------------------------------------
# Progress bars, log_every, signals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("on", [False, True])
def test_progress_shows_bars_and_summaries(monkeypatch, capsys, on: bool) -> None:
    monkeypatch.delenv("CI", raising=False)
    fit(tiny(), CrossEntropy(), batches(), config(epochs=1, progress=on))
    printed = "".join(capsys.readouterr())
    assert ("epoch 1/1" in printed) == on and ("epoch 1 [main]" in printed) == on


@pytest.mark.parametrize(("every", "refreshes"), [(1, 6), (2, 3), (4, 1), (10, 0)])
def test_log_every_sets_how_often_the_bar_shows_the_terms(monkeypatch, every, refreshes) -> None:
    import tqdm.std

    monkeypatch.delenv("CI", raising=False)
    calls = []
    original = tqdm.std.tqdm.set_postfix
    monkeypatch.setattr(
        tqdm.std.tqdm,
        "set_postfix",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    fit(tiny(), CrossEntropy(), batches(6), config(progress=True, log_every=every))
    assert len(calls) == refreshes


class SignalAfter(Counting):
    def after_step(self, inputs: StepInputs) -> None:
        if self.steps == 1:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("on", [True, False])
def test_handle_signals_stops_cleanly_or_leaves_sigint_alone(on: bool) -> None:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        method = SignalAfter()
        with pytest.raises(KeyboardInterrupt) as stop:
            fit(tiny(), method, batches(), config(epochs=2, handle_signals=on))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (type(stop.value).__name__ == "TrainingInterrupted") == on
    assert method.steps == 1  # the step finished (on) / the signal interrupted it at once (off)
