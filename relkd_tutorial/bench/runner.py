"""The benchmark: every method on the same teacher, data, schedule and seeds, with honest statistics.

    python -m relkd_tutorial.bench                        # the main job (cpu preset, ~10-15 min)
    python -m relkd_tutorial.bench --preset large         # the bigger sizes (about an hour or more)
    RELKD_FAST=1 python -m relkd_tutorial.bench           # fast mode (CI, a few minutes)
    python -m relkd_tutorial.bench --settings cross-task  # one setting (see --help)

What is compared. CE (no teacher), Hinton KD, RKD, RRD, RRD+KD, REFILLED, GRKD, GRKD+KD and the
two ranking variants (soft pairwise, listwise) train the same student (``student_cnn_s``, about 6k
parameters) against the same frozen teacher (the shipped ``teacher_cnn``), on the same data, with
the same optimiser, schedule and number of epochs, for the same seeds. Seed ``s`` fixes the
labelled subset, the student's initialisation, the batch order and any learnable head, so runs of
two methods with the same seed are *paired* (:mod:`relkd_tutorial.stats`).

Settings (Fashion-MNIST, the shipped 10k/2k subset; a stratified validation split of
``val_per_class`` images per class is carved out of the training set first and is never trained
on). ``transfer``, ``low-data`` and ``standard`` run by default (:data:`DEFAULT_SETTINGS`);
``cross-task`` and ``full`` are opt-in (``--settings``):

- ``transfer`` (headline): ``n`` labelled images per class, the rest of the training pool kept
  *unlabelled* (label ``-1``): cross-entropy on the labelled images, the distillation terms on all.
- ``low-data``: the same ``n`` labelled images per class and nothing else.
- ``standard``: the whole pool labelled, trained long enough to converge; learning curves are
  saved (a short schedule measures convergence speed, not distillation).
- ``cross-task``: REFILLED's generalized setting. A 5-class teacher trained once on classes 0-4 of
  the pool (cached in the output folder) teaches a student on classes 5-9 (transfer-style labels).
  Methods that read the teacher's *logits* need shared classes and are reported as n/a.
- ``full`` (GPU): CIFAR-100 with the RepDistiller recipe, see :mod:`relkd_tutorial.bench_full`.

Fine-grained accuracy on the confusable groups (tops {0, 2, 4, 6}, footwear {5, 7, 9}) is reported
beside top-1 in every setting (a group with fewer than two of the student's classes is n/a).

Per run: test top-1, group accuracies, relational fidelity (mean Kendall tau between the teacher's
and the student's class rankings per test image: "did the ranking transfer"; and the Pearson
correlation of their pairwise feature-distance matrices on a fixed stratified test batch), the
training wall time and the peak memory.

Sizes (``--preset``, see :func:`default_settings`): ``cpu`` (the default on a CPU) is sized so
the main job finishes in about 10-15 minutes on a quiet 2-core CPU with one torch thread: a
3,000-image pool, every method at its paper defaults, a few seeds. ``large`` (the default on a
GPU) is the bigger configuration: the whole 9,000-image pool, longer schedules, five seeds and the
hyperparameter sweep. On a CPU the benchmark uses one torch thread unless ``--threads`` says
otherwise (the small students gain nothing from a second thread, and the machine stays usable).

Hyperparameters (choice, an equal budget; on by default in the ``large`` preset, opt-in with
``--sweep`` in the ``cpu`` preset): each distillation method gets :data:`SWEEP_TRIALS`
trials on the first seed, scored by top-1 on the *validation* split; the best trial (ties go to the
paper default) then runs on every seed and is reported. One-knob methods scale their main weight by
``1/3, 1, 3, 10`` around the paper default; GRKD and GRKD+KD spend the same four trials on their
weight (``1, 3, 10``) and temperature (``tau = 2`` at weight 3). Published defaults are in
:data:`PAPER_DEFAULTS` (see ``notes/papers.md`` and ``DESIGN.md``).

Speed: the student trains without augmentation against the teacher's outputs precomputed once per
image set and looked up by sample index (:class:`~relkd_tutorial.teacher.TeacherCache`), from the
on-device :class:`~relkd_tutorial.data.TensorLoader`.

Resume: every finished run is appended to ``<out>/runs.csv`` (and its per-epoch history to
``histories.csv``) at once; re-running the same command skips the runs already there, so an
interruption loses at most the run in progress. A run's key holds a fingerprint of its setting
(data sizes, schedule, student, teacher weights), so results of a different configuration are
never mixed in. The report (``results.md``, ``summary.csv``, ``differences.csv``, PNG plots) is
rebuilt from ``runs.csv`` at the end of every invocation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .bench_store import (  # noqa: F401 - re-exported: the benchmark's public names
    HISTORY_COLUMNS,
    NUMERIC_COLUMNS,
    RUN_COLUMNS,
    ResultStore,
    environment,
    read_runs,
    record_invocation,
)
from .data import (
    ImageSet,
    TensorLoader,
    cross_task_split,
    labelled_subset,
    load_fashion_mnist,
    partially_labelled,
    sample_per_class,
    select_classes,
    split_validation,
)
from .fastmode import fast_mode
from .methods import CrossEntropy, build_method
from .metrics import (
    FASHION_MNIST_GROUPS,
    accuracy,
    collect_outputs,
    distance_matrix_correlation,
    group_accuracy,
    kendall_tau,
)
from .models import build_model
from .teacher import TeacherCache
from .train import TrainConfig, evaluate, fit, resolve_device, seeded

# ---------------------------------------------------------------------------------------------
# Methods: names, labels, paper defaults, the sweep
# ---------------------------------------------------------------------------------------------

METHODS: tuple[str, ...] = (
    "ce",
    "kd",
    "rkd",
    "rrd",
    "rrd_kd",
    "refilled",
    "grkd",
    "grkd_kd",
    "rank_soft",
    "rank_listwise",
)

METHOD_LABELS: dict[str, str] = {
    "ce": "CE",
    "kd": "KD",
    "rkd": "RKD",
    "rrd": "RRD",
    "rrd_kd": "RRD+KD",
    "refilled": "REFILLED",
    "grkd": "GRKD",
    "grkd_kd": "GRKD+KD",
    "rank_soft": "Rank-soft",
    "rank_listwise": "Rank-listwise",
}

#: The paper (or DESIGN) defaults each method runs at, and where they come from. The loss weights
#: are the constructor defaults of :mod:`relkd_tutorial.methods`; listed here for the report.
PAPER_DEFAULTS: dict[str, tuple[dict[str, float], str]] = {
    "ce": ({}, "plain cross-entropy"),
    "kd": ({"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0}, "CRD/RepDistiller KD"),
    "rkd": ({"distance_weight": 25.0, "angle_weight": 50.0}, "RepDistiller RKD (CE + 25 D + 50 A)"),
    "rrd": ({"rrd_weight": 1.0, "tau_s": 0.04, "tau_t": 0.10}, "RRD code (Sept 2024)"),
    "rrd_kd": ({"rrd_weight": 1.0, "kd_weight": 1.0}, "RRD README (RRD+KD)"),
    "refilled": ({"lambda1": 1000.0, "lambda2": 100.0, "tau2": 2.0}, "REFILLED code"),
    "grkd": ({"grkd_weight": 1.0, "temperature": 1.0}, "DESIGN 2.5 (paper silent)"),
    "grkd_kd": ({"grkd_weight": 1.0, "kd_weight": 1.0, "temperature": 1.0}, "DESIGN 2.5"),
    "rank_soft": ({"rank_weight": 1.0, "temperature": 1.0}, "DESIGN 2.5 (beyond the paper)"),
    "rank_listwise": ({"rank_weight": 1.0, "temperature": 1.0}, "DESIGN 2.5 (beyond the paper)"),
}

#: Methods that read the teacher's logits, so they need the teacher and the student to share
#: their classes; in the cross-task setting they are n/a, for this reason.
NEEDS_SHARED_CLASSES: dict[str, str] = {
    "kd": "matches the teacher's class distribution; the teacher has none of the student's classes",
    "rrd_kd": "its KD term needs the teacher's logits over the student's classes (RRD alone runs)",
    "grkd": "ranks the student's classes by the teacher's logits; the teacher has none of them",
    "grkd_kd": "ranks and matches the teacher's logits; the teacher has none of the student's classes",
    "rank_soft": "ranks the teacher's logits; the teacher has none of the student's classes",
    "rank_listwise": "ranks the teacher's logits; the teacher has none of the student's classes",
}

#: Methods trained in several stages (REFILLED: embedding, then classifier) and their count.
MULTI_STAGE: dict[str, int] = {"refilled": 2}

SWEEP_TRIALS = 4
_WEIGHT_SCALES = (1.0, 1.0 / 3.0, 3.0, 10.0)  # the default first: ties go to it


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def sweep_candidates(method: str) -> list[dict[str, float]]:
    """The hyperparameter trials of a method: overrides of its defaults, the default (``{}``) first.

    Every distillation method gets :data:`SWEEP_TRIALS` trials (CE has no knob: one trial).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    if method == "ce":
        return [{}]
    if method in ("grkd", "grkd_kd"):
        return [
            {},
            {"grkd_weight": 3.0},
            {"grkd_weight": 10.0},
            {"grkd_weight": 3.0, "temperature": 2.0},
        ]
    knobs = {
        "kd": {"kd_weight": 0.9},
        "rkd": {"distance_weight": 25.0, "angle_weight": 50.0},
        "rrd": {"rrd_weight": 1.0},
        "rrd_kd": {"rrd_weight": 1.0},
        "refilled": {"lambda2": 100.0},
        "rank_soft": {"rank_weight": 1.0},
        "rank_listwise": {"rank_weight": 1.0},
    }[method]
    out: list[dict[str, float]] = []
    for scale in _WEIGHT_SCALES:
        out.append({} if scale == 1.0 else {k: _round(v * scale) for k, v in knobs.items()})
    return out


def params_tag(params: dict[str, float]) -> str:
    """Canonical text of a trial's overrides (``"{}"`` for the paper defaults)."""
    return json.dumps({k: params[k] for k in sorted(params)}, separators=(",", ":"))


def describe_params(params: dict[str, float] | str) -> str:
    """Short human form: ``"defaults"`` or ``"grkd_weight=3, temperature=2"``."""
    if isinstance(params, str):
        params = json.loads(params) if params else {}
    if not params:
        return "defaults"
    return ", ".join(f"{k}={v:g}" for k, v in sorted(params.items()))


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

FASHION_SETTINGS: tuple[str, ...] = ("transfer", "low-data", "standard", "cross-task")
ALL_SETTINGS: tuple[str, ...] = (*FASHION_SETTINGS, "full")
DEFAULT_SETTINGS: tuple[str, ...] = ("transfer", "low-data", "standard")
PRESETS: tuple[str, ...] = ("cpu", "large")
CROSS_TASK_TEACHER_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
CROSS_TASK_STUDENT_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)


@dataclass(frozen=True)
class Setting:
    """One benchmark setting on the shipped Fashion-MNIST subset.

    Attributes:
        name: one of :data:`FASHION_SETTINGS`.
        labelled_per_class: ``n`` labelled images per class (``None`` = all labelled).
        keep_unlabelled: keep the rest of the pool with label ``-1`` (transfer) or drop it.
        epochs, batch_size, lr: the student's schedule (SGD + Nesterov, momentum 0.9, weight
            decay 5e-4, cosine decay; identical for every method).
        seeds: the seeds of the final runs (the sweep uses the first).
        student: student architecture (:func:`~relkd_tutorial.models.build_model`).
        pool_per_class: images per class of the training pool (``None`` = the whole subset minus
            the validation split; fast mode uses a smaller pool).
        val_per_class: validation images per class carved out of the training subset.
        teacher_epochs: cross-task only: epochs of the 5-class teacher.
        sweep: run the hyperparameter sweep (else every method at its defaults).
        curves: evaluate on the run's evaluation split after every epoch (learning curves; does
            not change the training, so it is not part of the fingerprint).
    """

    name: str
    labelled_per_class: int | None
    keep_unlabelled: bool
    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    seeds: tuple[int, ...] = (0, 1, 2)
    student: str = "student_cnn_s"
    pool_per_class: int | None = None
    val_per_class: int = 100
    teacher_epochs: int = 0
    sweep: bool = True
    curves: bool = False

    def fingerprint(self, teacher_id: str) -> str:
        """8 hex digits identifying everything that changes a run's result except method and seed."""
        spec = asdict(self)
        for k in ("seeds", "sweep", "curves"):
            spec.pop(k)
        spec["teacher"] = teacher_id
        blob = json.dumps(spec, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:8]


def default_settings(fast: bool, preset: str = "cpu") -> dict[str, Setting]:
    """The Fashion-MNIST settings of fast mode (``fast=True``) or of a size ``preset``.

    ``preset="cpu"`` (the main job on a CPU, about 10-15 minutes on a quiet 2-core CPU with one
    thread): a 3,000-image training pool (300 per class, stratified), every method at its paper
    defaults (no sweep; ``--sweep`` opts in). Transfer: 50 labels per class + the other 2,500
    pool images unlabelled, 8 epochs, 4 seeds. Low-data: the 50 labels per class alone, 20 epochs
    (batch 64), 3 seeds. Standard: 2,000 labelled images (200 per class), 10 epochs, 1 seed, with
    learning curves. Cross-task (opt-in): classes 5-9 of the pool, 50 labels per class, 8 epochs,
    3 seeds, a 6-epoch teacher on classes 0-4.

    ``preset="large"`` (the default on a GPU): the whole 9,000-image pool, the sweep on transfer,
    low-data and cross-task; transfer 50 labels per class + 8,500 unlabelled images, 15 epochs,
    5 seeds; low-data 60 epochs, 5 seeds; standard 9,000 labelled, 30 epochs, 3 seeds;
    cross-task 15 epochs, 3 seeds.

    Fast mode (any preset) shrinks the pool to 150 images per class, the epochs to a few, two
    seeds, no sweep.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if fast:
        common = dict(pool_per_class=150, val_per_class=30, seeds=(0, 1), sweep=False)
        return {
            "transfer": Setting("transfer", 20, True, epochs=4, **common),
            "low-data": Setting("low-data", 20, False, epochs=10, batch_size=64, **common),
            "standard": Setting("standard", None, False, epochs=6, curves=True, **common),
            "cross-task": Setting("cross-task", 20, True, epochs=4, teacher_epochs=2, **common),
        }
    if preset == "cpu":
        common = dict(pool_per_class=300, sweep=False)
        return {
            "transfer": Setting("transfer", 50, True, epochs=8, seeds=(0, 1, 2, 3), **common),
            "low-data": Setting(
                "low-data", 50, False, epochs=20, batch_size=64, seeds=(0, 1, 2), **common
            ),
            "standard": Setting(
                "standard",
                None,
                False,
                epochs=10,
                seeds=(0,),
                curves=True,
                pool_per_class=200,
                sweep=False,
            ),
            "cross-task": Setting(
                "cross-task", 50, True, epochs=8, teacher_epochs=6, seeds=(0, 1, 2), **common
            ),
        }
    return {
        "transfer": Setting("transfer", 50, True, epochs=15, seeds=(0, 1, 2, 3, 4)),
        "low-data": Setting("low-data", 50, False, epochs=60, batch_size=64, seeds=(0, 1, 2, 3, 4)),
        "standard": Setting("standard", None, False, epochs=30, sweep=False, curves=True),
        "cross-task": Setting("cross-task", 50, True, epochs=15, teacher_epochs=6),
    }


# ---------------------------------------------------------------------------------------------
# Data and teachers of a setting
# ---------------------------------------------------------------------------------------------


def _digest(data: ImageSet) -> str:
    return hashlib.sha1(data.images.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def teacher_fingerprint(model: nn.Module) -> str:
    """8 hex digits of a model's weights (so results from another teacher are never reused)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def class_groups(data: ImageSet) -> dict[str, tuple[int, ...]]:
    """The confusable groups in ``data``'s labels (after any class selection).

    A group keeps the classes the data set has, relabelled; a group left with fewer than two
    classes has nothing to confuse and is dropped (its accuracy is reported as n/a).
    """
    original = data.original_classes or tuple(range(data.num_classes))
    groups = {}
    for name, members in FASHION_MNIST_GROUPS.items():
        local = tuple(new for new, old in enumerate(original) if old in members)
        if len(local) >= 2:
            groups[name] = local
    return groups


@dataclass
class Workspace:
    """What the runs of one setting share: data splits, the teacher, caches of its outputs."""

    setting: Setting
    pool: ImageSet  # training pool (labels of the student's classes)
    val: ImageSet
    test: ImageSet
    teacher: nn.Module
    teacher_id: str
    shared_classes: bool  # teacher logits are over the student's classes
    device: torch.device
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _caches: dict[str, TeacherCache] = field(default_factory=dict)
    cache_seconds: float = 0.0

    @property
    def num_classes(self) -> int:
        return self.pool.num_classes

    @property
    def spec(self) -> str:
        return self.setting.fingerprint(self.teacher_id)

    def train_set(self, seed: int) -> ImageSet:
        """The student's training set for ``seed`` (only the labelled subset depends on it)."""
        s = self.setting
        if s.labelled_per_class is None:
            return self.pool
        if s.keep_unlabelled:
            return partially_labelled(self.pool, s.labelled_per_class, seed=seed)
        return labelled_subset(self.pool, s.labelled_per_class, seed=seed)

    def teacher_cache(self, data: ImageSet) -> TeacherCache:
        """The teacher's outputs over ``data`` (one pass, memoised by image content), its labels."""
        key = _digest(data)
        if key not in self._caches:
            tic = time.perf_counter()
            loader = TensorLoader.for_evaluation(data, 1000, device=self.device)
            self._caches[key] = TeacherCache.build(
                self.teacher, loader, self.device, storage_device=self.device
            )
            self.cache_seconds += time.perf_counter() - tic
        cache = self._caches[key]
        return TeacherCache(cache.features, cache.logits, data.labels.to(self.device))


def _fashion_splits(setting: Setting) -> tuple[ImageSet, ImageSet, ImageSet]:
    """``(pool, val, test)``: the shipped subset, a validation split, an optional smaller pool."""
    train, test = load_fashion_mnist("subset")
    pool, val = split_validation(train, per_class=setting.val_per_class, seed=0)
    if setting.pool_per_class is not None:
        pool = labelled_subset(pool, setting.pool_per_class, seed=0)
    return pool, val, test


def load_teacher_weights(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``state_dict`` file, or the ``"model"`` entry of a training checkpoint, into ``model``."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict(state)
    return model.eval()


def fashion_teacher(path: str | Path | None, device: torch.device) -> nn.Module:
    """The shipped ``teacher_cnn`` (default) or ``teacher_cnn`` weights from ``path``."""
    if path is None:
        from .pretrained import load_shipped_teacher

        return load_shipped_teacher(device)
    return load_teacher_weights(path, build_model("teacher_cnn", 10, 1)).to(device)


def cross_task_teacher(
    pool: ImageSet,
    test: ImageSet,
    setting: Setting,
    out_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any]]:
    """The 5-class teacher of the cross-task setting, trained once and cached in ``out_dir``.

    ``teacher_cnn`` trained with cross-entropy on classes 0-4 of the pool (crop 2 + flip, SGD +
    Nesterov, lr 0.05, cosine, ``setting.teacher_epochs`` epochs, seed 0), like the shipped
    teacher but shorter. Cached as ``cross_task_teacher_<digest>.pt`` with a JSON record.
    """
    teacher_set, _ = cross_task_split(
        pool, CROSS_TASK_TEACHER_CLASSES, CROSS_TASK_STUDENT_CLASSES, seed=0
    )
    tag = hashlib.sha1(f"{_digest(teacher_set)}|{setting.teacher_epochs}".encode()).hexdigest()[:8]
    weights = out_dir / f"cross_task_teacher_{tag}.pt"
    record_path = weights.with_suffix(".json")
    model = build_model("teacher_cnn", len(CROSS_TASK_TEACHER_CLASSES), 1, seed=0)
    if weights.exists() and record_path.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.to(device).eval(), json.loads(record_path.read_text())
    log(
        f"training the cross-task teacher (teacher_cnn on classes 0-4, {len(teacher_set)} images, "
        f"{setting.teacher_epochs} epochs; once, cached in {weights.name})"
    )
    loader = TensorLoader(teacher_set, 128, augment=True, crop_padding=2, flip=True, seed=0)
    config = TrainConfig(
        epochs=max(1, setting.teacher_epochs),
        lr=0.05,
        nesterov=True,
        schedule="cosine",
        device=str(device),
        seed=0,
        progress=False,
    )
    tic = time.perf_counter()
    fit(model, CrossEntropy(), loader, config)
    seconds = time.perf_counter() - tic
    teacher_test = select_classes(test, CROSS_TASK_TEACHER_CLASSES)
    acc = evaluate(model, TensorLoader.for_evaluation(teacher_test, device=device))["acc"]
    record = {
        "classes": list(CROSS_TASK_TEACHER_CLASSES),
        "train_images": len(teacher_set),
        "epochs": setting.teacher_epochs,
        "test_accuracy_on_its_classes": acc,
        "seconds": round(seconds, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    log(f"cross-task teacher: {100 * acc:.1f}% on classes 0-4 of the test set, {seconds:.0f} s")
    return model.to(device).eval(), record


def build_workspace(
    setting: Setting,
    out_dir: Path,
    device: torch.device,
    teacher_path: str | Path | None = None,
    log: Callable[[str], None] = print,
    teacher: nn.Module | None = None,
) -> Workspace:
    """Splits and teacher of a Fashion-MNIST setting (``teacher`` overrides the shipped one)."""
    if setting.name not in FASHION_SETTINGS:
        raise ValueError(f"setting must be one of {FASHION_SETTINGS}, got {setting.name!r}")
    pool, val, test = _fashion_splits(setting)
    shared = True
    if setting.name == "cross-task":
        model, _ = cross_task_teacher(pool, test, setting, out_dir, device, log)
        _, pool = cross_task_split(
            pool, CROSS_TASK_TEACHER_CLASSES, CROSS_TASK_STUDENT_CLASSES, seed=0
        )
        val = select_classes(val, CROSS_TASK_STUDENT_CLASSES)
        test = select_classes(test, CROSS_TASK_STUDENT_CLASSES)
        shared = False
    else:
        model = teacher if teacher is not None else fashion_teacher(teacher_path, device)
    model = model.to(device).eval()
    return Workspace(
        setting=setting,
        pool=pool,
        val=val,
        test=test,
        teacher=model,
        teacher_id=teacher_fingerprint(model),
        shared_classes=shared,
        device=device,
        groups=class_groups(test),
    )


# ---------------------------------------------------------------------------------------------
# Peak memory of a run
# ---------------------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PeakMemory:
    """Peak memory of a block, in MiB: CUDA's peak allocation, or the CPU's resident-set peak.

    On CUDA: ``torch.cuda.max_memory_allocated`` after a reset (exact). On CPU (choice): a thread
    samples the process's resident set size every ``interval`` seconds (Linux ``/proc``) and the
    result is the peak minus the size at the start, i.e. what the block added at its worst. It
    includes allocator slack and misses peaks shorter than the interval; ``nan`` where ``/proc``
    is missing.
    """

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device = device
        self.interval = interval
        self.mib = math.nan
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None:
                self._peak = max(self._peak, rss)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        start = _rss_bytes()
        if start is not None:
            self._start = self._peak = start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.mib = (peak - self._start) / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            rss = _rss_bytes()
            if rss is not None:
                self._peak = max(self._peak, rss)
            self.mib = (self._peak - self._start) / 2**20


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------

DIST_CORR_PER_CLASS = 50  # the fixed test batch for the distance correlation: 50 images per class


@dataclass(frozen=True)
class Job:
    """One training run: a method with its hyperparameter overrides, a seed, a phase.

    ``phase="sweep"`` runs score the validation split; ``phase="final"`` runs the test set.
    """

    setting: str
    phase: str
    method: str
    params: dict[str, float]
    seed: int

    def key(self, spec: str) -> str:
        return "|".join(
            [self.setting, spec, self.phase, self.method, params_tag(self.params), str(self.seed)]
        )


def method_kwargs(method: str, params: dict[str, float], ws: Workspace, n_train: int) -> dict:
    """Constructor arguments: the setting-dependent sizes plus the trial's overrides.

    RRD's queue holds ``K = min(4096, N)`` teacher embeddings (choice: the CIFAR 16384 is larger
    than these training sets; DESIGN 2.3 says ``K <= N``). REFILLED gets the student's class count.
    """
    kwargs: dict[str, Any] = {}
    if method in ("rrd", "rrd_kd"):
        student_dim = build_model(ws.setting.student, ws.num_classes, 1).feature_dim
        teacher_dim = int(ws.teacher_cache(ws.test).features.shape[1])
        kwargs.update(
            student_dim=student_dim, teacher_dim=teacher_dim, queue_size=min(4096, n_train)
        )
    if method == "refilled":
        kwargs["num_classes"] = ws.num_classes
    kwargs.update(params)
    return kwargs


def student_config(setting: Setting, seed: int, device: torch.device) -> TrainConfig:
    """The one schedule every method trains with in a setting."""
    return TrainConfig(
        epochs=setting.epochs,
        optimizer="sgd",
        lr=setting.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="cosine",
        device=str(device),
        seed=seed,
        progress=False,
    )


def evaluate_student(
    student: nn.Module, data: ImageSet, ws: Workspace, seed_batch: int = DIST_CORR_PER_CLASS
) -> dict[str, float]:
    """Top-1, group accuracies, mean Kendall tau and distance correlation on ``data``."""
    loader = TensorLoader.for_evaluation(data, 1000, device=ws.device)
    out = collect_outputs(student, loader)
    teacher = ws.teacher_cache(data)
    result = {"acc": accuracy(out.logits, out.labels)}
    for name in FASHION_MNIST_GROUPS:
        group = ws.groups.get(name)
        result[f"acc_{name}"] = group_accuracy(out.logits, out.labels, group) if group else math.nan
    if ws.shared_classes:
        tau = kendall_tau(teacher.logits.cpu(), out.logits)
        result["kendall_tau"] = float(tau.nanmean())
    else:
        result["kendall_tau"] = math.nan
    per_class = min(seed_batch, int(data.class_counts().min()))
    rows = sample_per_class(data.labels, per_class, seed=0, num_classes=data.num_classes)
    result["dist_corr"] = distance_matrix_correlation(
        teacher.features.cpu()[rows], out.features[rows]
    )
    return result


def run_job(job: Job, ws: Workspace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one student and measure it; returns ``(row, per-epoch history)``.

    A run whose loss or weights become NaN/inf (``FloatingPointError`` from the loop) is a result,
    not a crash: status ``"diverged"``, metrics NaN.
    """
    setting = ws.setting
    train = ws.train_set(job.seed)
    eval_set = ws.val if job.phase == "sweep" else ws.test
    n_labelled = int((train.labels >= 0).sum())
    row: dict[str, Any] = {
        "key": job.key(ws.spec),
        "setting": job.setting,
        "spec": ws.spec,
        "phase": job.phase,
        "method": job.method,
        "params": params_tag(job.params),
        "seed": job.seed,
        "eval_split": "val" if job.phase == "sweep" else "test",
        "epochs": setting.epochs,
        "n_train": len(train),
        "n_labelled": n_labelled,
        "note": "",
    }
    cache = ws.teacher_cache(train)
    eval_loader = (
        TensorLoader.for_evaluation(eval_set, 1000, device=ws.device) if setting.curves else None
    )
    student = build_model(setting.student, ws.num_classes, 1, seed=job.seed)
    with seeded(job.seed):
        method = build_method(job.method, **method_kwargs(job.method, job.params, ws, len(train)))
    loader = TensorLoader(train, setting.batch_size, augment=False, seed=job.seed, device=ws.device)
    history: list[dict[str, Any]] = []
    tic = time.perf_counter()
    with PeakMemory(ws.device) as memory:
        try:
            history = fit(
                student,
                method,
                loader,
                student_config(setting, job.seed, ws.device),
                teacher=cache,
                eval_loader=eval_loader,
            )
            row["status"] = "ok"
        except FloatingPointError as err:
            row["status"] = "diverged"
            row["note"] = str(err).split(";")[0][:160]
    row["seconds"] = time.perf_counter() - tic
    row["peak_mem_mb"] = memory.mib
    row["load1"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    if row["status"] == "ok":
        row.update(evaluate_student(student, eval_set, ws))
        row["train_acc"] = history[-1].get("train_acc", math.nan) if history else math.nan
    else:
        for k in ("acc", "acc_tops", "acc_footwear", "kendall_tau", "dist_corr", "train_acc"):
            row[k] = math.nan
    return row, history


def not_applicable_row(setting: str, spec: str, method: str, reason: str) -> dict[str, Any]:
    """The row recorded for a method that cannot run in a setting (no training)."""
    row = {c: math.nan for c in NUMERIC_COLUMNS}
    row.update(
        key="|".join([setting, spec, "final", method, "n/a", ""]),
        setting=setting,
        spec=spec,
        phase="final",
        method=method,
        params="",
        seed="",
        status="n/a",
        eval_split="test",
        epochs="",
        n_train="",
        n_labelled="",
        note=reason,
    )
    return row


def applicable(method: str, ws: Workspace) -> str | None:
    """``None`` if ``method`` can run in ``ws``'s setting, else the reason it cannot."""
    if not ws.shared_classes and method in NEEDS_SHARED_CLASSES:
        return NEEDS_SHARED_CLASSES[method]
    stages = MULTI_STAGE.get(method, 1)
    if ws.setting.epochs < stages:
        return f"trains in {stages} stages, so it needs at least {stages} epochs"
    return None


def choose_params(rows: Iterable[dict[str, Any]], setting: str, spec: str, method: str) -> dict:
    """The sweep's winner: the best validation top-1 among ``method``'s sweep runs.

    Candidates are compared in :func:`sweep_candidates` order with a strict ``>``, so a tie goes
    to the earlier candidate (the paper default first). Diverged trials never win.
    """
    scores = {
        r["params"]: r["acc"]
        for r in rows
        if r["setting"] == setting
        and r["spec"] == spec
        and r["phase"] == "sweep"
        and r["method"] == method
        and r["status"] == "ok"
        and not math.isnan(r["acc"])
    }
    best, best_acc = {}, -math.inf
    for candidate in sweep_candidates(method):
        acc = scores.get(params_tag(candidate))
        if acc is not None and acc > best_acc:
            best, best_acc = candidate, acc
    return best


# ---------------------------------------------------------------------------------------------
# The benchmark loop
# ---------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """One line per run: ``[ 12/86] transfer final grkd (grkd_weight=3) seed 2: ...``."""

    total: int
    stream: Any = None
    done: int = 0
    trained: int = 0  # runs trained by this invocation
    started: float = field(default_factory=time.perf_counter)

    def line(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def run(self, job: Job, row: dict[str, Any]) -> None:
        self.done += 1
        self.trained += 1
        width = len(str(self.total))
        elapsed = time.perf_counter() - self.started
        split = row.get("eval_split", "test")
        if row["status"] == "ok":
            tau = row.get("kendall_tau", math.nan)
            tau_text = "" if math.isnan(tau) else f"  tau {tau:.3f}"
            result = f"{split} acc {100 * row['acc']:.2f}%{tau_text}"
        else:
            result = row["status"]
        self.line(
            f"[{self.done:>{width}}/{self.total}] {job.setting} {job.phase} "
            f"{METHOD_LABELS[job.method]} ({describe_params(job.params)}) seed {job.seed}: "
            f"{result}  {row['seconds']:.1f} s  (elapsed {_clock(elapsed)})"
        )


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def plan_counts(setting: Setting, methods: Sequence[str], ws: Workspace | None = None) -> int:
    """Number of training runs a setting needs (sweep + final; n/a methods excluded)."""
    runnable = [m for m in methods if ws is None or applicable(m, ws) is None]
    sweep = sum(len(sweep_candidates(m)) for m in runnable if m != "ce") if setting.sweep else 0
    # the sweep's default trial on the first seed is not the same run as the final one (val vs
    # test split), so nothing is shared
    return sweep + len(runnable) * len(setting.seeds)


def run_setting(
    ws: Workspace,
    methods: Sequence[str],
    store: ResultStore,
    progress: Progress,
) -> None:
    """Sweep (first seed, validation split), then the chosen trial of every method on every seed."""
    setting = ws.setting
    done = store.done()
    for method in methods:
        reason = applicable(method, ws)
        if reason is not None:
            row = not_applicable_row(setting.name, ws.spec, method, reason)
            if row["key"] not in done:
                store.append(row)
            continue
    runnable = [m for m in methods if applicable(m, ws) is None]
    if setting.sweep:
        for method in runnable:
            if method == "ce":
                continue
            for params in sweep_candidates(method):
                _run_or_skip(Job(setting.name, "sweep", method, params, setting.seeds[0]), ws,
                             store, done, progress)  # fmt: skip
    rows = store.rows()
    for method in runnable:
        params = choose_params(rows, setting.name, ws.spec, method) if setting.sweep else {}
        for seed in setting.seeds:
            _run_or_skip(
                Job(setting.name, "final", method, params, seed), ws, store, done, progress
            )


def _run_or_skip(
    job: Job, ws: Workspace, store: ResultStore, done: set[str], progress: Progress
) -> None:
    if job.key(ws.spec) in done:
        return
    row, history = run_job(job, ws)
    store.append(row, history)
    done.add(row["key"])
    progress.run(job, row)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if "all" in items:
        return list(allowed)
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {list(allowed)} (comma-separated)")
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m relkd_tutorial.bench",
        description=(
            "Benchmark CE, KD, RKD, RRD, RRD+KD, REFILLED, GRKD, GRKD+KD and two ranking losses on "
            "the same teacher, data, schedule and seeds; writes runs.csv, summary.csv, "
            "differences.csv, results.md and PNG plots to --out, and resumes from them."
        ),
    )
    parser.add_argument(
        "--settings",
        default=None,
        help=f"comma-separated, from {list(ALL_SETTINGS)} or 'all' (default: "
        f"{','.join(DEFAULT_SETTINGS)}; 'cross-task' is opt-in, 'full' needs a GPU)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="sizes: 'cpu' (3,000-image pool, paper defaults, a few seeds: ~10-15 min on a quiet "
        "2-core CPU) or 'large' (9,000-image pool, longer schedules, 5 seeds, the sweep); "
        "default: cpu on a CPU, large on a GPU. Fast mode overrides both.",
    )
    parser.add_argument("--methods", default="all", help=f"comma-separated from {list(METHODS)}")
    parser.add_argument("--seeds", default=None, help="comma-separated ints (default: per setting)")
    parser.add_argument("--out", default=None, help="results folder (default runs/bench[-fast])")
    fast = parser.add_mutually_exclusive_group()
    fast.add_argument("--fast", dest="fast", action="store_true", default=None,
                      help="fast mode (default: on when RELKD_FAST=1 or CI=true)")  # fmt: skip
    fast.add_argument("--no-fast", dest="fast", action="store_false")
    sweep = parser.add_mutually_exclusive_group()
    sweep.add_argument("--sweep", dest="sweep", action="store_true", default=None,
                       help="run the sweep (default: on in the large preset, off in the cpu "
                       "preset and in fast mode)")  # fmt: skip
    sweep.add_argument("--no-sweep", dest="sweep", action="store_false",
                       help="every method at its paper defaults")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="override every setting's epochs")
    parser.add_argument("--pool-per-class", type=int, default=None,
                        help="shrink the training pool to this many images per class")  # fmt: skip
    parser.add_argument("--labelled-per-class", type=int, default=None,
                        help="override n, the labelled images per class")  # fmt: skip
    parser.add_argument("--student", default=None, help="student architecture (student_cnn_s)")
    parser.add_argument("--teacher", default=None,
                        help="teacher_cnn weights to use instead of the shipped teacher")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: 1 on a CPU, torch's own on a GPU)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild tables and plots from --out without training")  # fmt: skip
    parser.add_argument("--plan", action="store_true", help="print the runs and exit")
    parser.add_argument("--no-plots", action="store_true")
    # full (CIFAR-100) options, see relkd_tutorial.bench_full
    parser.add_argument("--pairs", default=None, help="full: teacher->student pairs")
    parser.add_argument("--teacher-checkpoint", action="append", default=[],
                        help="full: NAME=PATH of a trained CIFAR teacher (repeatable)")  # fmt: skip
    parser.add_argument("--data-root", default=None, help="full: folder with cifar-100-python/")
    parser.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    return parser


def default_preset(device: torch.device | str) -> str:
    """``"cpu"`` on a CPU (or Apple MPS), ``"large"`` on a CUDA GPU."""
    return "large" if torch.device(device).type == "cuda" else "cpu"


def default_threads(device: torch.device | str, threads: int | None) -> int | None:
    """Torch threads to set: ``threads`` if given, else 1 on a CPU, else ``None`` (leave as is)."""
    if threads is not None:
        return threads
    return 1 if torch.device(device).type == "cpu" else None


def configure(
    args: argparse.Namespace, device: torch.device | str = "cpu"
) -> tuple[bool, dict[str, Setting], list[str]]:
    """``(fast, settings to run, methods)`` from the parsed arguments.

    ``args.preset`` (``None``: :func:`default_preset` of ``device``) picks the sizes; fast mode
    overrides the preset; explicit flags (``--seeds``, ``--epochs``, ...) override both.
    """
    fast = fast_mode() if args.fast is None else bool(args.fast)
    preset = args.preset or default_preset(device)
    names = (
        list(DEFAULT_SETTINGS)
        if args.settings is None
        else _parse_list(args.settings, ALL_SETTINGS, "settings")
    )
    methods = _parse_list(args.methods, METHODS, "methods")
    base = default_settings(fast, preset)
    settings: dict[str, Setting] = {}
    for name in names:
        if name == "full":
            continue
        s = base[name]
        changes: dict[str, Any] = {}
        if args.seeds is not None:
            changes["seeds"] = tuple(int(x) for x in args.seeds.split(",") if x.strip())
            if not changes["seeds"]:
                raise SystemExit("--seeds needs at least one seed")
        if args.sweep is not None:
            changes["sweep"] = bool(args.sweep)
        if args.epochs is not None:
            changes["epochs"] = args.epochs
        if args.pool_per_class is not None:
            changes["pool_per_class"] = args.pool_per_class
        if args.labelled_per_class is not None and s.labelled_per_class is not None:
            changes["labelled_per_class"] = args.labelled_per_class
        if args.student is not None:
            changes["student"] = args.student
        s = replace(s, **changes)
        if (
            s.labelled_per_class is not None
            and s.pool_per_class is not None
            and s.labelled_per_class > s.pool_per_class
        ):
            raise SystemExit(
                f"{name}: {s.labelled_per_class} labelled images per class do not fit in a pool "
                f"of {s.pool_per_class} per class; lower --labelled-per-class"
            )
        settings[name] = s
    return fast, settings, methods


def main(argv: Sequence[str] | None = None) -> int:
    """The ``relkd-bench`` / ``python -m relkd_tutorial.bench`` command."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    threads = default_threads(device, args.threads)
    if threads is not None:
        torch.set_num_threads(threads)
    fast, settings, methods = configure(args, device)
    preset = args.preset or default_preset(device)
    out_dir = Path(args.out or ("runs/bench-fast" if fast else "runs/bench"))
    names = list(settings)
    want_full = args.settings is not None and "full" in _parse_list(
        args.settings, ALL_SETTINGS, "settings"
    )
    command = " ".join(["python -m relkd_tutorial.bench", *map(shlex.quote, argv or sys.argv[1:])])
    mode = "fast mode" if fast else f"default mode, {preset} preset"

    from . import bench_report

    if args.plan:
        print(f"{mode}, {torch.get_num_threads()} torch thread(s)")
        for name, s in settings.items():
            print(f"{name}: {s}")
            print(f"  up to {plan_counts(s, methods)} training runs")
        if want_full:
            from .bench_full import describe_full_plan

            print(describe_full_plan(args))
        return 0

    store = ResultStore(out_dir)
    if args.report_only:
        bench_report.write_report(out_dir, plots=not args.no_plots)
        print(bench_report.stdout_summary(store.rows()))
        return 0

    started = time.time()
    tic = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"relkd_tutorial benchmark, {mode}: settings {', '.join(names) or '-'}"
        f"{' + full' if want_full else ''}; methods {', '.join(methods)}; device {device}, "
        f"{torch.get_num_threads()} threads; results in {out_dir}/",
        flush=True,
    )
    workspaces: list[Workspace] = []
    for name in names:
        ws = build_workspace(settings[name], out_dir, device, args.teacher)
        workspaces.append(ws)
    total = sum(plan_counts(ws.setting, methods, ws) for ws in workspaces)
    specs = {ws.spec for ws in workspaces}
    done_before = sum(
        1
        for r in store.rows()
        if r["spec"] in specs and r["status"] != "n/a" and r["method"] in methods
    )
    progress = Progress(total=total, done=min(done_before, total))
    if done_before:
        print(
            f"resuming: {done_before} of these runs are already in {store.runs_path}; skipped",
            flush=True,
        )
    try:
        for ws in workspaces:
            s = ws.setting
            print(
                f"-- {s.name}: {len(ws.train_set(s.seeds[0]))} training images "
                f"({'all' if s.labelled_per_class is None else s.labelled_per_class} labelled per "
                f"class), {s.epochs} epochs, seeds {list(s.seeds)}, "
                f"{'sweep on the validation split' if s.sweep else 'paper defaults (no sweep)'}",
                flush=True,
            )
            run_setting(ws, methods, store, progress)
        if want_full:
            from .bench_full import run_full

            specs |= set(run_full(args, store, device, progress))
    except KeyboardInterrupt as err:  # Ctrl-C, or TrainingInterrupted from fit (SIGINT/SIGTERM)
        print(
            f"\nstopped: the {progress.trained} runs finished by this invocation are kept in "
            f"{store.runs_path} (the run in progress is lost); run the same command again to "
            "resume where it stopped",
            file=sys.stderr,
            flush=True,
        )
        return int(getattr(err, "exit_code", 130))
    wall = time.perf_counter() - tic
    record_invocation(
        out_dir,
        {
            "command": command,
            "mode": "fast" if fast else "default",
            "preset": None if fast else preset,
            "settings": {name: asdict(s) for name, s in settings.items()},
            "methods": methods,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_seconds": round(wall, 1),
            "runs_trained": progress.trained,
            "teacher_cache_seconds": round(sum(ws.cache_seconds for ws in workspaces), 1),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
    )
    bench_report.write_report(out_dir, plots=not args.no_plots)
    print(bench_report.stdout_summary(store.rows(), specs=specs))
    print(
        f"{progress.trained} runs trained in {_clock(wall)}; tables, plots and meta.json in {out_dir}/",
        flush=True,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
