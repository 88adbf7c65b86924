"""One benchmark run (:func:`run_job`) and the runs of the settings (:func:`run_settings`).

A run is a pure function of its job and workspace (every random draw is seeded by the job's
seed), so its row does not depend on how many run at once (``--jobs``, :mod:`.parallel`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..data import ImageSet, TensorLoader, sample_per_class
from ..methods import build_method
from ..metrics import (
    FASHION_MNIST_GROUPS,
    accuracy,
    collect_outputs,
    distance_matrix_correlation,
    group_accuracy,
    kendall_tau,
)
from ..models import build_model
from ..training import TrainConfig, fit, seeded
from .recipes import Recipes
from .search_space import ablation_seeds
from .settings import (
    CONTROL_WEIGHTS,
    METHOD_LABELS,
    MULTI_STAGE,
    NEEDS_SHARED_CLASSES,
    NEEDS_UNLABELLED,
    PAPER_DEFAULTS,
    Setting,
    ablation_variants,
    describe_params,
    has_unlabelled,
    params_tag,
)
from .store import MEASURES, NUMERIC_COLUMNS, ResultStore
from .workspace import Workspace

# --- Peak memory of a run ---


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` size (``VmRSS``, ``VmHWM``) in bytes; ``None`` without it."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return None


@contextmanager
def peak_memory(device: torch.device) -> Iterator[SimpleNamespace]:
    """Peak memory the block added, in MiB (the yielded ``.mib``, set when the block ends): CUDA's
    peak allocation after a reset, or on a CPU the kernel's resident-set high-water mark
    (``VmHWM``, reset through ``/proc/self/clear_refs``, Linux >= 4.0) minus the resident set at
    the start (``nan`` without them)."""
    memory, start = SimpleNamespace(mib=math.nan), None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
    else:
        with suppress(OSError):  # no clear_refs: no start, so nan
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # the high-water mark back to the resident set now
            start = _status_bytes("VmRSS")
    yield memory
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        memory.mib = (torch.cuda.max_memory_allocated(device) - start) / 2**20
    elif start is not None and (peak := _status_bytes("VmHWM")) is not None:
        memory.mib = (peak - start) / 2**20


# --- One run ---

DIST_CORR_PER_CLASS = 50  # the fixed test batch for the distance correlation: 50 images per class
#: The phases whose runs choose something (a method's default): scored on the validation split.
SELECTION_PHASES: tuple[str, ...] = ("ablation",)


@dataclass(frozen=True)
class Job:
    """One training run: a method, its overrides, a seed, a phase (``"final"``: scored on the
    test set; ``"ablation"``, :func:`ablation_jobs`: on the validation split)."""

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
    """Constructor arguments: :data:`~.settings.PAPER_DEFAULTS`, then
    :data:`~.settings.CONTROL_WEIGHTS`, the setting's sizes (RRD's queue ``K = min(4096, N)``,
    ``docs/rrd.md``; REFILLED's class count), then ``params``."""
    kwargs: dict[str, Any] = dict(PAPER_DEFAULTS[method][0]) if method in PAPER_DEFAULTS else {}
    kwargs.update(CONTROL_WEIGHTS.get(method, {}))
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


#: ``False`` in a worker process of :mod:`.parallel`: there the parent process handles SIGINT and
#: SIGTERM (it stops the workers), so ``fit`` leaves the signals alone.
HANDLE_SIGNALS = True


def student_config(
    setting: Setting, seed: int, device: torch.device, channels_last: bool = False
) -> TrainConfig:
    """The one schedule every method trains with in a setting (``channels_last``: the layout)."""
    return TrainConfig(
        epochs=setting.epochs, optimizer="sgd", lr=setting.lr, momentum=0.9, nesterov=True,
        weight_decay=5e-4, schedule="cosine", device=str(device), seed=seed, progress=False,
        channels_last=channels_last, handle_signals=HANDLE_SIGNALS,
    )  # fmt: skip


def evaluate_student(student: nn.Module, data: ImageSet, ws: Workspace) -> dict[str, float]:
    """Top-1, group accuracies, mean Kendall tau and distance correlation on ``data``."""
    loader = TensorLoader.for_evaluation(
        data, 1000, device=ws.device, channels_last=getattr(ws, "channels_last", False)
    )
    out = collect_outputs(student, loader)
    teacher = ws.teacher_cache(data)
    result = {"acc": accuracy(out.logits, out.labels)}
    for name in FASHION_MNIST_GROUPS:
        group = ws.groups.get(name)
        result[f"acc_{name}"] = group_accuracy(out.logits, out.labels, group) if group else math.nan
    tau = kendall_tau(teacher.logits.cpu(), out.logits).nanmean() if ws.shared_classes else None
    result["kendall_tau"] = math.nan if tau is None else float(tau)
    per_class = min(DIST_CORR_PER_CLASS, int(data.class_counts().min()))
    rows = sample_per_class(data.labels, per_class, seed=0, num_classes=data.num_classes)
    result["dist_corr"] = distance_matrix_correlation(
        teacher.features.cpu()[rows], out.features[rows]
    )
    return result


def run_parts(ws: Workspace, method: str, params: dict[str, Any], seed: int) -> tuple:
    """What ``fit`` gets for ``method`` with ``params`` at ``seed`` on the setting's training set:
    ``(student, method, loader, config, teacher cache)``, built before the run is timed."""
    setting, train = ws.setting, ws.train_set(seed)
    cache = ws.teacher_cache(train)
    student = build_model(setting.student, ws.num_classes, 1, seed=seed)
    with seeded(seed):
        m = build_method(method, **method_kwargs(method, params, ws, len(train)))
    loader = TensorLoader(train, setting.batch_size, augment=False, seed=seed, device=ws.device)
    return student, m, loader, student_config(setting, seed, ws.device, ws.channels_last), cache


def base_row(job: Job, spec: str, split: str, epochs: int, train: ImageSet) -> dict[str, Any]:
    """The row of ``job`` before it trains: its key, what it is and what it trains on."""
    return {"key": job.key(spec), "setting": job.setting, "spec": spec, "phase": job.phase,
            "method": job.method, "params": params_tag(job.params), "seed": job.seed,
            "eval_split": split, "epochs": epochs, "n_train": len(train),
            "n_labelled": int((train.labels >= 0).sum()), "note": ""}  # fmt: skip


def measured_fit(
    row: dict[str, Any], ws: Any, student: nn.Module, eval_set: ImageSet, train: Callable
) -> list[dict[str, Any]]:
    """Run ``train()`` (the run's ``fit``) timed and with its peak memory, then measure the
    student on ``eval_set`` into ``row``; returns the per-epoch history. A run whose loss or
    weights become NaN/inf (``FloatingPointError``) is a result, not a crash: status
    ``"diverged"``, metrics NaN."""
    history: list[dict[str, Any]] = []
    tic = time.perf_counter()
    with peak_memory(ws.device) as memory:
        try:
            history = train()
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
        row.update(dict.fromkeys(MEASURES, math.nan))
    return history


def run_job(job: Job, ws: Workspace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train one student and measure it (:func:`measured_fit`); returns ``(row, history)``."""
    split = "val" if job.phase in SELECTION_PHASES else "test"
    eval_set = ws.val if split == "val" else ws.test
    row = base_row(job, ws.spec, split, ws.setting.epochs, ws.train_set(job.seed))
    student, method, loader, config, cache = run_parts(ws, job.method, job.params, job.seed)
    eval_loader = (
        TensorLoader.for_evaluation(eval_set, 1000, device=ws.device) if ws.setting.curves else None
    )
    history = measured_fit(row, ws, student, eval_set, lambda: fit(
        student, method, loader, config, teacher=cache, eval_loader=eval_loader
    ))  # fmt: skip
    return row, history


def not_applicable_row(setting: str, spec: str, method: str, reason: str) -> dict[str, Any]:
    """The row recorded for a method that cannot run in a setting (no training)."""
    row: dict[str, Any] = {c: math.nan for c in NUMERIC_COLUMNS}
    row.update(key="|".join([setting, spec, "final", method, "n/a", ""]), setting=setting,
               spec=spec, phase="final", method=method, params="", seed="", status="n/a",
               eval_split="test", epochs="", n_train="", n_labelled="", note=reason)  # fmt: skip
    return row


def applicable(method: str, ws: Workspace) -> str | None:
    """``None`` if ``method`` can run in ``ws``'s setting, else the reason it cannot."""
    if not ws.shared_classes and method in NEEDS_SHARED_CLASSES:
        return NEEDS_SHARED_CLASSES[method]
    if method in NEEDS_UNLABELLED and not has_unlabelled(ws.setting):
        return NEEDS_UNLABELLED[method]
    stages = MULTI_STAGE.get(method, 1)
    if ws.setting.epochs < stages:
        return f"trains in {stages} stages, so it needs at least {stages} epochs"
    return None


def ablation_jobs(setting: Setting, method: str) -> list[Job]:
    """Every variant of ``method``'s ablation (its ``params`` column tells it apart) on the same
    selection seeds (:func:`~.search_space.ablation_seeds`, scored on the validation split: the
    ablation chooses defaults), so a variant pairs with the default seed by seed."""
    return [
        Job(setting.name, "ablation", method, dict(v.params), seed)
        for v in ablation_variants(method)
        for seed in ablation_seeds(setting.seeds)
    ]


# --- The benchmark loop ---


@dataclass
class Progress:
    """One line per run: ``[ 12/86] transfer final grkd (grkd_weight=3) seed 2: ...``."""

    total: int
    done: int = 0
    trained: int = 0  # runs trained by this invocation
    started: float = field(default_factory=time.perf_counter)

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
        print(
            f"[{self.done:>{width}}/{self.total}] {job.setting} {job.phase} "
            f"{METHOD_LABELS[job.method]} ({describe_params(job.params)}) seed {job.seed}: "
            f"{result}  {row['seconds']:.1f} s  (elapsed {_clock(elapsed)})",
            flush=True,
        )


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s"


def arm_params(
    setting: Setting, method: str, recipes: Recipes | None, defaults: bool = True
) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
    """The final runs of ``method`` in ``setting``: ``(params, seeds)`` per arm, headline first:
    its canonical recipe (``{}`` without one, or without ``recipes``) on every seed, then, with
    ``defaults`` and a recipe that differs from them, its paper defaults on the first
    ``setting.default_seeds`` seeds."""
    tuned = recipes.run_params(setting.name, method) if recipes is not None else {}
    arms: list[tuple[dict[str, Any], tuple[int, ...]]] = [(tuned, tuple(setting.seeds))]
    if defaults and tuned and setting.default_seeds > 0:
        arms.append(({}, tuple(setting.seeds[: setting.default_seeds])))
    return arms


def final_jobs(
    setting: Setting,
    methods: Sequence[str],
    ws: Workspace | None = None,
    recipes: Recipes | None = None,
    defaults: bool = True,
) -> list[Job]:
    """The final runs of a setting: every method's headline (tuned) runs, then the paper-default
    ones (:func:`arm_params`); without the n/a methods (without ``ws``, only those the setting
    alone rules out)."""
    arms = {m: arm_params(setting, m, recipes, defaults) for m in methods
            if (ws is None or applicable(m, ws) is None)
            and not (m in NEEDS_UNLABELLED and not has_unlabelled(setting))}  # fmt: skip
    return [
        Job(setting.name, "final", method, dict(params), seed)
        for arm in range(2)
        for method, method_arms in arms.items()
        for params, seeds in method_arms[arm : arm + 1]
        for seed in seeds
    ]


def pending_jobs(
    workspaces: Sequence[Workspace],
    methods: Sequence[str],
    store: ResultStore,
    ablation: str | None = None,
    recipes: Recipes | None = None,
    defaults: bool = True,
) -> list[tuple[int, Job]]:
    """``(workspace index, job)`` of every run not in ``store`` yet, in order (every method's
    tuned runs, then the paper-default ones; with ``ablation``, that method's
    :func:`ablation_jobs`); records the n/a rows."""
    done = store.done()
    out: list[tuple[int, Job]] = []
    for i, ws in enumerate(workspaces):
        setting = ws.setting
        if ablation is not None:
            jobs = ablation_jobs(setting, ablation)
        else:
            for method in methods:
                if (reason := applicable(method, ws)) is not None:
                    row = not_applicable_row(setting.name, ws.spec, method, reason)
                    if row["key"] not in done:
                        store.append(row)
                        done.add(row["key"])
            jobs = final_jobs(setting, methods, ws, recipes, defaults)
        for job in jobs:
            if job.key(ws.spec) not in done:
                done.add(job.key(ws.spec))
                out.append((i, job))
    return out


def run_settings(
    workspaces: Sequence[Workspace],
    methods: Sequence[str],
    store: ResultStore,
    progress: Progress,
    executor: Callable[..., None] | None = None,
    ablation: str | None = None,
    recipes: Recipes | None = None,
    defaults: bool = True,
) -> None:
    """Every run of :func:`pending_jobs`, each appended to ``store`` as soon as it finishes; in
    this process, or by ``executor(jobs, record)`` (:func:`~.parallel.run_in_workers`)."""
    jobs = pending_jobs(workspaces, methods, store, ablation, recipes, defaults)

    def record(job: Job, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        store.append(row, history)
        progress.run(job, row)

    if executor is not None:
        executor(jobs, record)
        return
    for index, job in jobs:
        record(job, *run_job(job, workspaces[index]))  # the module's (patchable) run_job
