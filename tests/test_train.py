"""The training loop: every promise of the Method interface, exact resume, checkpoints, history.

Data are tiny synthetic 1x12x12 images (a class template plus noise), so every ``fit`` here
takes a fraction of a second. The loader shuffles and augments with the *global* torch RNG, so the
exact-resume tests also prove that the RNG states are saved and restored.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import read_history_csv
from torch import nn

from relkd_tutorial.data import Batch
from relkd_tutorial.methods import (
    CrossEntropy,
    Method,
    SetupData,
    Stage,
    StepInputs,
    supervised_cross_entropy,
)
from relkd_tutorial.methods.base import with_total
from relkd_tutorial.models import build_model
from relkd_tutorial.relations import normalized_pairwise_distances
from relkd_tutorial.teacher import IndexedDataset, TeacherCache
from relkd_tutorial.training import (
    TrainConfig,
    checkpoint,
    evaluate,
    fit,
    load_checkpoint,
    loop,
    lr_factor,
    resolve_device,
    rng,
    save_checkpoint,
    seed_everything,
    seeded,
    stage_plan,
)

NUM_CLASSES = 4
SIZE = 12


def make_data(n: int = 96, seed: int = 0, noise: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``(n, 1, 12, 12)``: one random template per class plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(NUM_CLASSES, 1, SIZE, SIZE, generator=g)
    y = torch.arange(n) % NUM_CLASSES
    x = templates[y] + noise * torch.randn(n, 1, SIZE, SIZE, generator=g)
    return x, y


class TensorLoader:
    """Batches of an in-memory data set as ``Batch(x, y, index)``.

    Shuffling and the random flips use the global torch RNG (like a plain DataLoader), so only
    a restored RNG state reproduces them.
    """

    def __init__(self, x, y, batch_size=32, shuffle=True, augment=False, crash_at_epoch=None):
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.crash_at_epoch = crash_at_epoch
        self.epochs_seen: list[int] = []
        self.passes = 0  # calls of iter()

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.crash_at_epoch:
            raise KeyboardInterrupt(f"simulated crash at epoch {epoch}")
        self.epochs_seen.append(epoch)

    def __iter__(self):
        self.passes += 1
        n = len(self.y)
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for lo in range(0, n, self.batch_size):
            idx = order[lo : lo + self.batch_size]
            x = self.x[idx]
            if self.augment:
                flip = torch.rand(len(idx)) < 0.5  # (B,)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            yield Batch(x=x, y=self.y[idx], index=idx)


def quiet(**kwargs) -> TrainConfig:
    base = dict(epochs=2, lr=0.05, device="cpu", progress=False, seed=0)
    base.update(kwargs)
    return TrainConfig(**base)


def student(seed: int = 1) -> nn.Module:
    return build_model("student_cnn_s", NUM_CLASSES, 1, seed=seed)


def teacher(seed: int = 2) -> nn.Module:
    return build_model("student_cnn_m", NUM_CLASSES, 1, seed=seed).eval()


# ---------------------------------------------------------------------------------------------
# Dummy methods exercising each part of the interface
# ---------------------------------------------------------------------------------------------


class HeadMethod(Method):
    """CE + a learnable linear head from student to teacher features (a FitNets-style hint)."""

    name = "head"
    needs_teacher = True

    def __init__(self, d_s: int, d_t: int) -> None:
        super().__init__()
        self.head = nn.Linear(d_s, d_t)

    def loss_terms(self, inputs: StepInputs):
        hint = F.mse_loss(self.head(inputs.student_features), inputs.teacher_features)
        return with_total(
            {
                "ce": supervised_cross_entropy(inputs.student_logits, inputs.labels),
                "hint": 0.1 * hint,
            }
        )


class QueueMethod(HeadMethod):
    """HeadMethod + a FIFO queue of past teacher features, written in ``after_step``."""

    name = "queue"

    def __init__(self, d_s: int, d_t: int, k: int = 40) -> None:
        super().__init__(d_s, d_t)
        self.register_buffer("queue", torch.zeros(k, d_t))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("writes", torch.zeros((), dtype=torch.long))

    def loss_terms(self, inputs: StepInputs):
        terms = dict(super().loss_terms(inputs))
        terms.pop("loss")
        q = F.normalize(self.queue, dim=1)  # (K, D_T)
        s = F.normalize(self.head(inputs.student_features), dim=1) @ q.t()  # (B, K)
        t = F.normalize(inputs.teacher_features, dim=1) @ q.t()  # (B, K)
        terms["queue"] = 0.1 * F.mse_loss(s, t)
        return with_total(terms)

    def after_step(self, inputs: StepInputs) -> None:
        rows = inputs.teacher_features.detach()  # (B, D_T)
        k = self.queue.shape[0]
        slots = (self.ptr + torch.arange(rows.shape[0])) % k  # (B,)
        self.queue[slots] = rows
        self.ptr.copy_((self.ptr + rows.shape[0]) % k)
        self.writes += 1


class TwoStageMethod(QueueMethod):
    """A REFILLED-shaped method: a setup pass (class centres), an embedding stage, a classifier stage."""

    name = "two_stage"
    needs_setup = True

    def __init__(self, d_s: int, d_t: int, num_classes: int) -> None:
        super().__init__(d_s, d_t)
        self.register_buffer("centres", torch.zeros(num_classes, d_t))
        self.setup_calls = 0
        self.setup_n = 0
        self.stage_log: list[str] = []
        self.steps: dict[str, int] = {"embed": 0, "classify": 0}

    def stages(self):
        return [Stage("embed", 0.3), Stage("classify", 0.7)]

    def set_stage(self, name: str) -> None:
        super().set_stage(name)
        self.stage_log.append(name)
        if name == "classify":
            # Draws from the global RNG at the stage boundary: an exact resume must replay it
            # with the RNG state the uninterrupted run had there.
            self.head.reset_parameters()

    def setup(self, data: SetupData) -> None:
        self.setup_calls += 1
        self.setup_n = data.labels.shape[0]
        for k in range(self.centres.shape[0]):
            self.centres[k] = F.normalize(data.teacher_features[data.labels == k].mean(0), dim=0)

    def loss_terms(self, inputs: StepInputs):
        self.steps[self.stage] += 1
        if self.stage == "embed":
            d_s = normalized_pairwise_distances(inputs.student_features)  # (B, B)
            d_t = normalized_pairwise_distances(inputs.teacher_features)  # (B, B)
            return with_total({"embed": F.smooth_l1_loss(d_s, d_t)})
        zeta = F.normalize(inputs.teacher_features, dim=1) @ self.centres.t()  # (B, C)
        kl = F.kl_div(
            F.log_softmax(inputs.student_logits, 1), F.softmax(zeta, 1), reduction="batchmean"
        )
        terms = dict(super().loss_terms(inputs))
        terms.pop("loss")
        terms["local_kl"] = 0.5 * kl
        return with_total(terms)


class RecordingMethod(CrossEntropy):
    """CE that records the teacher outputs and indices it was given."""

    needs_teacher = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def loss_terms(self, inputs: StepInputs):
        self.seen.append((inputs.index, inputs.teacher_features, inputs.teacher_logits))
        return super().loss_terms(inputs)


# ---------------------------------------------------------------------------------------------
# Schedules, devices, seeds
# ---------------------------------------------------------------------------------------------


def test_stage_plan_rounding_and_minimum_one_epoch():
    stages = [Stage("a", 0.3), Stage("b", 0.7)]
    assert [(p.name, p.first, p.epochs) for p in stage_plan(stages, 10)] == [
        ("a", 0, 3),
        ("b", 3, 7),
    ]
    # 3 epochs: ideal 0.9 / 2.1 -> floors 0 / 2, the leftover goes to the larger remainder (a).
    assert [p.epochs for p in stage_plan(stages, 3)] == [1, 2]
    # 2 epochs, 0.05 / 0.95: ideal 0.1 / 1.9 -> 0 / 2 -> a takes one from b.
    assert [p.epochs for p in stage_plan([Stage("a", 0.05), Stage("b", 0.95)], 2)] == [1, 1]
    for epochs in range(3, 30):
        plan = stage_plan([Stage("a", 0.2), Stage("b", 0.5), Stage("c", 0.3)], epochs)
        assert sum(p.epochs for p in plan) == epochs and min(p.epochs for p in plan) >= 1
        assert [p.first for p in plan] == [0, plan[0].end, plan[1].end]
    with pytest.raises(ValueError, match="at least one epoch"):
        stage_plan(stages, 1)


def test_lr_factor_matches_the_cifar_recipe_and_cosine():
    step = TrainConfig(schedule="step")  # milestones 0.625/0.75/0.875 = 150/180/210 of 240
    factors = {e: lr_factor(step, e, 240) for e in (0, 149, 150, 179, 180, 210, 239)}
    assert factors == pytest.approx(
        {0: 1, 149: 1, 150: 0.1, 179: 0.1, 180: 0.01, 210: 0.001, 239: 0.001}
    )
    cos = TrainConfig(schedule="cosine")
    assert lr_factor(cos, 0, 10) == 1.0
    assert lr_factor(cos, 5, 10) == pytest.approx(0.5)
    assert 0 < lr_factor(cos, 9, 10) < 0.03
    warm = TrainConfig(schedule="constant", warmup_epochs=3)
    assert [lr_factor(warm, e, 10) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(milestones=(150, 180))
    with pytest.raises(ValueError, match="nesterov"):
        TrainConfig(optimizer="adamw", nesterov=True)


def test_resolve_device_and_seed():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert resolve_device("auto") != torch.device("cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    seed_everything(3)
    a = torch.rand(3)
    seed_everything(3)
    assert torch.equal(a, torch.rand(3))


def test_seeded_block_is_reproducible_and_isolated():
    torch.manual_seed(0)
    outside = torch.rand(2)
    torch.manual_seed(0)
    with seeded(7):
        a = nn.Linear(3, 3).weight.detach().clone()
    assert torch.equal(torch.rand(2), outside)  # the global stream did not move
    with seeded(7):
        assert torch.equal(nn.Linear(3, 3).weight, a)


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    seed_everything(5)
    state = rng.get_rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    rng.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


# ---------------------------------------------------------------------------------------------
# Learning, loaders, labels, precision
# ---------------------------------------------------------------------------------------------


def test_loss_decreases_and_student_learns():
    x, y = make_data(192)
    xe, ye = make_data(96, seed=0, noise=0.6)
    model = student()
    before = evaluate(model, TensorLoader(xe, ye, shuffle=False), "cpu")["acc"]
    loader = TensorLoader(x, y)
    history = fit(
        model,
        CrossEntropy(),
        loader,
        quiet(epochs=5, lr=0.1),
        eval_loader=TensorLoader(xe, ye, shuffle=False),
    )
    assert loader.passes == 5 and loader.epochs_seen == [0, 1, 2, 3, 4]  # one pass per epoch
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["eval_acc"] > 0.9 and history[-1]["eval_acc"] > before + 0.3
    assert history[-1]["ce"] == history[-1]["loss"]  # the only term is the total
    assert all(r["lr"] <= 0.1 for r in history) and history[0]["lr"] == 0.1


def test_plain_dataloader_tuples_are_adapted():
    x, y = make_data(64)
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True)
    history = fit(student(), CrossEntropy(), loader, quiet(epochs=1))
    assert math.isfinite(history[0]["loss"])
    # (x, y, index) tuples from IndexedDataset work with a teacher cache
    indexed = torch.utils.data.DataLoader(IndexedDataset(ds), batch_size=16, shuffle=True)
    cache = TeacherCache.build(teacher(), torch.utils.data.DataLoader(IndexedDataset(ds), 32))
    method = RecordingMethod()
    fit(student(), method, indexed, quiet(epochs=1), teacher=cache)
    for index, _, logits in method.seen:
        assert torch.equal(logits, cache.logits[index])
    # (x, y) tuples carry no index: a cache lookup must fail clearly, not misalign
    with pytest.raises(ValueError, match="no sample index"):
        fit(student(), RecordingMethod(), loader, quiet(epochs=1), teacher=cache)


class SeenAccuracy(CrossEntropy):
    """CE that records, per step, which labelled samples its logits classify right."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[torch.Tensor] = []

    def loss_terms(self, inputs: StepInputs):
        keep = inputs.labels >= 0  # (B,)
        right = inputs.student_logits.detach().argmax(1) == inputs.labels  # (B,)
        self.hits.append(right[keep])
        return super().loss_terms(inputs)


def test_unlabelled_samples_are_skipped():
    x, y = make_data(64)
    y_half = y.clone()
    y_half[::2] = -1
    seen = SeenAccuracy()
    history = fit(student(), seen, TensorLoader(x, y_half), quiet(epochs=1))
    hits = torch.cat(seen.hits)  # (32,) one entry per labelled sample of the epoch
    assert hits.numel() == 32 and 0 < int(hits.sum()) < 32
    assert history[0]["train_acc"] == pytest.approx(float(hits.float().mean()), rel=1e-12)
    assert math.isfinite(history[0]["loss"])

    y_none = torch.full_like(y, -1)
    with pytest.warns(UserWarning, match="no training sample was labelled"):
        history = fit(student(), CrossEntropy(), TensorLoader(x, y_none), quiet(epochs=1))
    assert math.isnan(history[0]["train_acc"]) and history[0]["loss"] == 0.0
    result = evaluate(student(), TensorLoader(x, y_none), "cpu")
    assert math.isnan(result["acc"]) and result["labelled"] == 0 and result["n"] == 64


def test_train_accuracy_counts_only_labelled_samples():
    """One batch, lr 0: the recorded accuracy must equal the accuracy over labelled samples."""
    x, y = make_data(32)
    y = y.clone()
    y[:10] = -1
    model = student()
    # Train-mode BN uses batch statistics; compute the expected value the same way.
    seed_everything(0)
    model.train()
    with torch.no_grad():
        _, logits = model(x)
    keep = y >= 0
    expected = float((logits.argmax(1)[keep] == y[keep]).float().mean())
    history = fit(
        model,
        CrossEntropy(),
        TensorLoader(x, y, batch_size=32, shuffle=False),
        quiet(epochs=1, lr=1e-30, momentum=0.0, weight_decay=0.0),
    )
    assert history[0]["train_acc"] == pytest.approx(expected)


def test_bf16_autocast_runs_on_cpu_and_fp16_is_refused():
    x, y = make_data(64)
    model = student()
    dtypes = []
    model.fc.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    history = fit(model, CrossEntropy(), TensorLoader(x, y), quiet(epochs=1, amp="bf16"))
    assert math.isfinite(history[0]["loss"])
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, logits = model(x)  # the evaluation by hand: eval mode, bf16 forward, one batch
    expected = float((logits.float().argmax(1) == y).double().mean())
    result = evaluate(model.train(), TensorLoader(x, y, batch_size=64, shuffle=False), "cpu",
                      amp="bf16")  # fmt: skip
    assert result["acc"] == pytest.approx(expected, rel=1e-12) and 0.0 < expected < 1.0
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16"):
            fit(student(), CrossEntropy(), TensorLoader(x, y), quiet(epochs=1, amp="fp16"))


def test_channels_last_adamw_clipping_step_schedule_run():
    x, y = make_data(64)
    config = quiet(
        epochs=2,
        optimizer="adamw",
        lr=1e-3,
        schedule="step",
        milestones=(0.5,),
        channels_last=True,
        grad_clip=1.0,
        warmup_epochs=0,
    )
    history = fit(student(), CrossEntropy(), TensorLoader(x, y), config)
    assert [r["lr"] for r in history] == pytest.approx([1e-3, 1e-4])


def test_model_without_features_logits_contract_is_refused():
    x, y = make_data(32)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, NUM_CLASSES))
    with pytest.raises(TypeError, match=r"\(features \(B, D\), logits \(B, C\)\)"):
        fit(plain, CrossEntropy(), TensorLoader(x, y), quiet(epochs=1))


def test_progress_is_quiet_under_ci(monkeypatch, capsys):
    x, y = make_data(32)
    monkeypatch.setenv("CI", "true")
    fit(student(), CrossEntropy(), TensorLoader(x, y), quiet(epochs=1, progress=True))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    monkeypatch.delenv("CI")
    loader = TensorLoader(x, y, batch_size=8)
    fit(student(), CrossEntropy(), loader, quiet(epochs=2, progress=True, log_every=1))
    out = capsys.readouterr()
    assert "epoch 1/2" in out.err + out.out and "epoch 2/2" in out.err + out.out
    assert loader.passes == 2  # the progress bar never iterates the loader itself


# ---------------------------------------------------------------------------------------------
# Teacher: live, cached, setup; learnable parts and buffers; stages
# ---------------------------------------------------------------------------------------------


def test_cached_teacher_outputs_follow_each_sample_under_shuffling():
    x, y = make_data(96)
    t = teacher()
    cache = TeacherCache.build(t, TensorLoader(x, y, shuffle=False))
    method = RecordingMethod()
    fit(student(), method, TensorLoader(x, y, batch_size=20), quiet(epochs=2), teacher=cache)
    with torch.no_grad():
        t_feat, t_logits = t.eval()(x)
    assert len(method.seen) == 2 * 5
    for index, feats, logits in method.seen:
        assert not torch.equal(index, torch.arange(index.min(), index.min() + len(index)))
        torch.testing.assert_close(feats, t_feat[index], rtol=0, atol=0)
        torch.testing.assert_close(logits, t_logits[index], rtol=0, atol=0)


def test_live_teacher_runs_in_eval_mode_without_gradient():
    x, y = make_data(64)
    t = teacher()
    t.train()  # a careless caller: the loop must switch it to eval mode
    stats_before = {k: v.clone() for k, v in t.state_dict().items()}
    method = RecordingMethod()
    fit(student(), method, TensorLoader(x, y), quiet(epochs=1), teacher=t)
    assert not t.training
    for k, v in t.state_dict().items():  # BN running stats untouched, weights untouched
        assert torch.equal(v, stats_before[k]), k
    assert all(not f.requires_grad for _, f, _ in method.seen)
    with pytest.raises(ValueError, match="needs a teacher"):
        fit(student(), RecordingMethod(), TensorLoader(x, y), quiet(epochs=1))


def test_learnable_head_joins_the_optimizer_and_the_checkpoint(tmp_path):
    x, y = make_data(64)
    s, t = student(), teacher()
    method = HeadMethod(s.feature_dim, t.feature_dim)
    head_before = method.head.weight.detach().clone()
    history = fit(
        s, method, TensorLoader(x, y), quiet(epochs=2, checkpoint_dir=str(tmp_path)), teacher=t
    )
    assert not torch.equal(method.head.weight, head_before)
    assert {"loss", "ce", "hint"} <= set(history[0])
    for r in history:  # the weighted contributions add up to the total
        assert r["ce"] + r["hint"] == pytest.approx(r["loss"], rel=1e-5)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(ckpt["method"]["head.weight"], method.head.weight.detach())
    n_params = len(ckpt["optimizer"]["param_groups"][0]["params"])
    assert n_params == len(list(s.parameters())) + len(list(method.parameters()))


def test_buffers_are_updated_after_each_step():
    x, y = make_data(64)
    s, t = student(), teacher()
    method = QueueMethod(s.feature_dim, t.feature_dim, k=40)
    fit(s, method, TensorLoader(x, y, batch_size=16), quiet(epochs=2), teacher=t)
    assert int(method.writes) == 8  # 4 steps per epoch, 2 epochs
    assert int(method.ptr) == (8 * 16) % 40
    assert bool((method.queue.abs().sum(1) > 0).all())


def test_stages_setup_and_fresh_optimizer_per_stage(monkeypatch):
    x, y = make_data(64)
    s, t = student(), teacher()
    method = TwoStageMethod(s.feature_dim, t.feature_dim, NUM_CLASSES)
    built = []
    real = loop.build_optimizer
    monkeypatch.setattr(loop, "build_optimizer", lambda p, c: built.append(1) or real(p, c))
    setup_loader = TensorLoader(x, y, shuffle=False)
    history = fit(
        s,
        method,
        TensorLoader(x, y, batch_size=16, augment=True),
        quiet(epochs=4, lr=0.05),
        teacher=t,
        setup_loader=setup_loader,
    )
    assert method.setup_calls == 1 and method.setup_n == 64
    with torch.no_grad():
        t_feat, _ = t(x)
    for k in range(NUM_CLASSES):
        expected = F.normalize(t_feat[y == k].mean(0), dim=0)
        torch.testing.assert_close(method.centres[k], expected, rtol=1e-5, atol=1e-6)
    # 4 epochs split 0.3 / 0.7 -> 1 + 3; 4 steps per epoch
    assert [r["stage"] for r in history] == ["embed", "classify", "classify", "classify"]
    assert method.stage_log == ["embed", "classify"]
    assert method.steps == {"embed": 4, "classify": 12}
    assert len(built) == 2  # a fresh optimizer per stage
    assert history[0]["lr"] == history[1]["lr"] == 0.05  # the schedule restarts with the stage
    assert "embed" in history[0] and "embed" not in history[1] and "local_kl" in history[1]


def test_setup_needs_an_unaugmented_pass():
    x, y = make_data(32)
    s, t = student(), teacher()
    with pytest.raises(ValueError, match="setup_loader"):
        fit(s, TwoStageMethod(32, 64, NUM_CLASSES), TensorLoader(x, y), quiet(epochs=2), teacher=t)
    # a cache *is* that pass: no setup_loader needed
    cache = TeacherCache.build(t, TensorLoader(x, y, shuffle=False))
    method = TwoStageMethod(32, 64, NUM_CLASSES)
    fit(s, method, TensorLoader(x, y), quiet(epochs=2), teacher=cache)
    assert method.setup_calls == 1 and method.setup_n == 32


# ---------------------------------------------------------------------------------------------
# Checkpoints, resume, history files
# ---------------------------------------------------------------------------------------------


def _run(tmp_path: Path, epochs: int, crash_at_epoch: int | None = None, resume: bool = False):
    """A run with everything: two stages, setup, a learnable head, a queue, a live teacher."""
    x, y = make_data(64)
    s, t = student(seed=1), teacher()
    with seeded(3):  # the head's initialisation must not depend on what ran before
        method = TwoStageMethod(s.feature_dim, t.feature_dim, NUM_CLASSES)
    config = quiet(
        epochs=epochs,
        nesterov=True,
        checkpoint_dir=str(tmp_path),
        resume=resume,
        history_csv=str(tmp_path / "history.csv"),
    )
    loader = TensorLoader(x, y, batch_size=16, augment=True, crash_at_epoch=crash_at_epoch)
    history = fit(
        s, method, loader, config, teacher=t, setup_loader=TensorLoader(x, y, shuffle=False)
    )
    return s, method, history


def _strip_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("crash_at", [2, 1])  # mid-stage (epoch 3 of 4) and at the stage boundary
def test_resume_continues_exactly(tmp_path, crash_at):
    s_ref, m_ref, h_ref = _run(tmp_path / "straight", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", epochs=4, crash_at_epoch=crash_at)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == crash_at
    s_res, m_res, h_res = _run(tmp_path / "resumed", epochs=4, resume=True)
    for name, ref in s_ref.state_dict().items():
        assert torch.equal(ref, s_res.state_dict()[name]), name
    for name, ref in m_ref.state_dict().items():  # head, queue, pointer, centres
        assert torch.equal(ref, m_res.state_dict()[name]), name
    assert _strip_seconds(h_res) == _strip_seconds(h_ref)
    # the resumed run trained only the missing epochs, starting with the right stage
    assert m_res.steps["embed"] == (0 if crash_at >= 1 else 4)
    assert m_res.steps["classify"] == 4 * (4 - crash_at)


def test_history_csv_matches_the_records(tmp_path):
    _, _, history = _run(tmp_path, epochs=3)
    rows = read_history_csv(tmp_path / "history.csv")
    assert len(rows) == len(history) == 3
    for row, record in zip(rows, history, strict=True):
        assert row == record  # floats round-trip exactly through repr


def test_checkpoint_is_weights_only_and_complete(tmp_path):
    _run(tmp_path, epochs=2)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {
        "model",
        "method",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "epoch",
        "stage",
        "history",
        "config",
    } <= set(state)
    assert state["epoch"] == 2 and state["stage"] == "classify"
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["config"]["epochs"] == 2


def test_resume_after_the_last_epoch_trains_nothing(tmp_path):
    s_ref, _, h_ref = _run(tmp_path, epochs=2)
    s_again, m_again, h_again = _run(tmp_path, epochs=2, resume=True)
    assert m_again.steps == {"embed": 0, "classify": 0}
    assert _strip_seconds(h_again) == _strip_seconds(h_ref)
    for name, ref in s_ref.state_dict().items():
        assert torch.equal(ref, s_again.state_dict()[name])


def test_resume_with_a_different_config_warns(tmp_path):
    x, y = make_data(32)
    fit(
        student(), CrossEntropy(), TensorLoader(x, y), quiet(epochs=1, checkpoint_dir=str(tmp_path))
    )
    with pytest.warns(UserWarning, match="lr"):
        fit(
            student(),
            CrossEntropy(),
            TensorLoader(x, y),
            quiet(epochs=2, lr=0.01, checkpoint_dir=str(tmp_path), resume=True),
        )


def test_crash_during_a_checkpoint_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    good = {"format": checkpoint.CHECKPOINT_FORMAT, "epoch": 1, "w": torch.arange(1000.0)}
    save_checkpoint(path, good)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails after bytes are written
        save_checkpoint(
            path, {"format": checkpoint.CHECKPOINT_FORMAT, "w": torch.zeros(10**5), "f": lambda: 0}
        )
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], good["w"])
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind


def test_truncated_checkpoint_gives_a_clear_error_and_no_silent_restart(tmp_path):
    x, y = make_data(32)
    config = quiet(epochs=1, checkpoint_dir=str(tmp_path))
    fit(student(), CrossEntropy(), TensorLoader(x, y), config)
    path = tmp_path / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"last\.pt is truncated or corrupt"):
        load_checkpoint(path)
    resume = quiet(epochs=2, checkpoint_dir=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        fit(student(), CrossEntropy(), TensorLoader(x, y), resume)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a relkd_tutorial training checkpoint"):
        load_checkpoint(other)


def test_non_finite_loss_stops_before_overwriting_the_checkpoint(tmp_path):
    x, y = make_data(32)
    fit(
        student(), CrossEntropy(), TensorLoader(x, y), quiet(epochs=1, checkpoint_dir=str(tmp_path))
    )

    class Exploding(CrossEntropy):
        def loss_terms(self, inputs):
            terms = super().loss_terms(inputs)
            return {k: v * float("nan") for k, v in terms.items()}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match="non-finite"):
            fit(
                student(),
                Exploding(),
                TensorLoader(x, y),
                quiet(epochs=1, checkpoint_dir=str(tmp_path)),
            )
    assert math.isfinite(load_checkpoint(tmp_path / "last.pt")["history"][0]["loss"])


def test_nan_weights_after_a_finite_loss_do_not_replace_the_checkpoint(tmp_path):
    """A last step with a NaN gradient: the epoch's loss is finite, its weights are not."""
    x, y = make_data(32)
    loader = TensorLoader(x, y, batch_size=32)  # one step per epoch
    fit(student(), CrossEntropy(), loader, quiet(epochs=1, checkpoint_dir=str(tmp_path)))
    good = load_checkpoint(tmp_path / "last.pt")["model"]

    class NanGradient(CrossEntropy):
        def loss_terms(self, inputs):
            terms = dict(super().loss_terms(inputs))
            terms.pop("loss")
            # value 0, gradient 0 * d sqrt(u)/du at u = 0 = 0 * inf = NaN
            terms["zero"] = 0.0 * (0.0 * inputs.student_logits).sqrt().sum()
            return with_total(terms)

    with pytest.raises(FloatingPointError, match="NaN or inf"):
        fit(student(), NanGradient(), loader, quiet(epochs=1, checkpoint_dir=str(tmp_path)))
    kept = load_checkpoint(tmp_path / "last.pt")["model"]
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_config_paths_become_str_and_extra_must_be_plain(tmp_path):
    x, y = make_data(32)
    config = quiet(
        epochs=1,
        checkpoint_dir=tmp_path,
        history_csv=tmp_path / "h.csv",
        extra={"data": "synthetic", "sizes": [1, 2.5], "nested": {"ok": None}},
    )
    assert config.checkpoint_dir == str(tmp_path) and config.history_csv == str(tmp_path / "h.csv")
    fit(student(), CrossEntropy(), TensorLoader(x, y), config)
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # no PosixPath inside
    assert state["config"]["extra"]["sizes"] == [1, 2.5]
    assert quiet(resume=tmp_path / "last.pt").resume == str(tmp_path / "last.pt")
    with pytest.raises(TypeError, match=r"extra\['bad'\] must hold plain values"):
        quiet(extra={"bad": torch.zeros(1)})
    with pytest.raises(TypeError, match="resume"):
        quiet(resume=1)


# ---------------------------------------------------------------------------------------------
# The package's own loader: TensorLoader over real Fashion-MNIST images
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_small():
    """256 training images (the first of the shipped subset) and 200 test images."""
    from relkd_tutorial.data import load_fashion_mnist

    train_set, test_set = load_fashion_mnist()
    return train_set.subset(torch.arange(256)), test_set.subset(torch.arange(200))


class CrashAfter(CrossEntropy):
    """CE that raises ``KeyboardInterrupt`` at its ``crash_at_step``-th step (1-based), once."""

    def __init__(self, crash_at_step: int | None = None) -> None:
        super().__init__()
        self.crash_at_step, self.steps = crash_at_step, 0

    def loss_terms(self, inputs):
        self.steps += 1
        if self.steps == self.crash_at_step:
            raise KeyboardInterrupt("simulated crash in the middle of an epoch")
        return super().loss_terms(inputs)


def test_fit_with_tensorloader_resumes_exactly_after_a_mid_epoch_crash(tmp_path, fashion_small):
    """4 epochs straight == 2 epochs + a crash half-way through epoch 3 + resume.

    The resumed fit reuses the *same* TensorLoader object, whose own epoch counter advanced
    during the crashed epoch: only ``set_epoch`` called by the loop replays the right batches.
    """
    from relkd_tutorial.data import TensorLoader as RealLoader

    train_set, test_set = fashion_small
    eval_loader = RealLoader.for_evaluation(test_set, 100)

    def run(directory, loader, method, resume=False):
        model = build_model("student_cnn_s", 10, 1, seed=0)
        config = quiet(epochs=4, lr=0.1, checkpoint_dir=str(directory), resume=resume)
        history = fit(model, method, loader, config, eval_loader=eval_loader)
        return model, history

    loader = RealLoader(train_set, 64, augment=True, seed=7)  # 4 steps per epoch
    ref_model, ref_history = run(tmp_path / "straight", loader, CrossEntropy())

    loader = RealLoader(train_set, 64, augment=True, seed=7)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", loader, CrashAfter(crash_at_step=2 * 4 + 2))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    assert loader.epoch == 3  # the interrupted epoch's iter() had advanced it
    model, history = run(tmp_path / "resumed", loader, CrossEntropy(), resume=True)

    for name, ref in ref_model.state_dict().items():
        assert torch.equal(ref, model.state_dict()[name]), name
    assert _strip_seconds(history) == _strip_seconds(ref_history)
    assert 0.1 < history[-1]["eval_acc"] <= 1.0


def test_teacher_cache_with_an_augmenting_loader_warns(fashion_small):
    from relkd_tutorial.data import TensorLoader as RealLoader

    train_set, _ = fashion_small
    t = build_model("student_cnn_s", 10, 1, seed=2)
    cache = TeacherCache.build(t, RealLoader.for_evaluation(train_set, 128))
    one_epoch = quiet(epochs=1)
    with pytest.warns(UserWarning, match="augments"):
        fit(student_10(), RecordingMethod(), RealLoader(train_set, 128), one_epoch, teacher=cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = RealLoader(train_set, 128, augment=False)
        fit(student_10(), RecordingMethod(), plain, one_epoch, teacher=cache)
        fit(student_10(), RecordingMethod(), RealLoader(train_set, 128), one_epoch, teacher=t)


def student_10() -> nn.Module:
    return build_model("student_cnn_s", 10, 1, seed=1)
