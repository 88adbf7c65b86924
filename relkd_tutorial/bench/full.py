"""The ``full`` benchmark setting: CIFAR-100 with the RepDistiller recipe (for a GPU).

    python -m relkd_tutorial.bench --settings full --data-root ~/data \\
        --teacher-checkpoint resnet32x4=ckpt/resnet32x4.pt --teacher-checkpoint wrn_40_2=ckpt/wrn.pt

Two teacher -> student pairs of the CRD/RepDistiller benchmark (Tian et al., ICLR 2020),
``resnet32x4 -> resnet8x4`` and ``wrn_40_2 -> wrn_16_2``, at the recipe of
:meth:`FullPlan.config` (240 epochs of SGD, crop + flip, the last epoch's accuracy; the teacher
runs live on every augmented batch). Every method runs at its published defaults (no tuning).
A teacher comes from ``--teacher-checkpoint NAME=PATH`` (a ``state_dict`` of our
``build_model(NAME)`` or a :func:`~relkd_tutorial.training.fit` checkpoint; RepDistiller's own
use other parameter names and do not load) or is trained first with the same recipe (resumable;
about 9 days per teacher on the project's 2-core CPU, so on a GPU). Results are printed beside the
published numbers (:data:`PUBLISHED`); ``docs/benchmark.md`` has the details.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ImageSet, TensorLoader, labelled_subset, load_cifar100
from ..methods import CrossEntropy, build_method
from ..models import build_model
from ..training import TrainConfig, evaluate, fit, seeded
from . import verdict
from .runner import base_row, final_jobs, measured_fit, pending_jobs
from .settings import METHODS, Setting, _parse_list, pm
from .workspace import Workspace, load_teacher_weights, teacher_fingerprint

#: Top-1 (%) on CIFAR-100 as published: teacher, student (CE), KD, RKD, CRD from the CRD paper's
#: Table 1 (reproduced in the RepDistiller README); RRD and RRD+KD from the RRD authors' README
#: (giakoumoglou/distillers, Feb 2025). See ``docs/benchmark.md``.
PUBLISHED: dict[str, dict[str, float]] = {
    "resnet32x4->resnet8x4": {"teacher": 79.42, "ce": 72.50, "kd": 73.33, "rkd": 71.90,
                              "crd": 75.51, "rrd": 74.48, "rrd_kd": 75.08},
    "wrn_40_2->wrn_16_2": {"teacher": 75.61, "ce": 73.26, "kd": 74.92, "rkd": 73.35,
                           "crd": 75.48, "rrd": 75.33, "rrd_kd": 75.66},
}  # fmt: skip
FULL_PAIRS: tuple[str, ...] = tuple(PUBLISHED)
RECIPE_EPOCHS = 240
RECIPE_DECAY_EPOCHS = (150, 180, 210)


@dataclass(frozen=True)
class FullPlan:
    """One teacher -> student pair of the full setting: models, recipe, methods, seeds."""

    pair: str
    teacher: str
    student: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int = RECIPE_EPOCHS
    batch_size: int = 64
    crop_padding: int = 4
    flip: bool = True
    num_classes: int = 100
    teacher_checkpoint: str | None = None

    @property
    def setting(self) -> str:
        return f"full:{self.pair}"

    @property
    def published(self) -> dict[str, float]:
        return PUBLISHED[self.pair]

    def config(self, seed: int, device: str = "auto", amp: str = "off") -> TrainConfig:
        """The RepDistiller schedule; the decay epochs are fractions of the run, so a shortened
        run keeps the same shape."""
        return TrainConfig(
            epochs=self.epochs, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=False,
            weight_decay=5e-4, schedule="step", gamma=0.1, device=device, amp=amp, seed=seed,
            milestones=tuple(e / RECIPE_EPOCHS for e in RECIPE_DECAY_EPOCHS), progress=False,
        )  # fmt: skip

    def method_kwargs(self, method: str) -> dict[str, Any]:
        """Published defaults plus the pair's sizes (feature widths, queue, class count)."""
        if method in ("rrd", "rrd_kd"):
            student, teacher = _feature_dim(self.student), _feature_dim(self.teacher)
            return {"student_dim": student, "teacher_dim": teacher, "queue_size": 16384}
        return {"num_classes": self.num_classes} if method == "refilled" else {}


@functools.cache
def _feature_dim(name: str) -> int:
    return build_model(name, 100, 3).feature_dim


def parse_teacher_checkpoints(items: list[str], pairs: list[str]) -> dict[str, str]:
    """``["resnet32x4=path", ...]`` -> ``{teacher name: path}``; a bare path needs one pair."""
    out: dict[str, str] = {}
    for item in items:
        if "=" in item:
            name, path = item.split("=", 1)
            out[name.strip()] = path.strip()
        elif len(pairs) == 1:
            out[pairs[0].split("->")[0]] = item
        else:
            raise SystemExit(
                f"--teacher-checkpoint {item!r}: write NAME=PATH (e.g. resnet32x4=...) when more "
                "than one pair runs"
            )
    return out


def build_full_plan(
    pairs: list[str] | None = None,
    methods: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] = (0, 1, 2),
    teacher_checkpoints: dict[str, str] | None = None,
    epochs: int = RECIPE_EPOCHS,
) -> list[FullPlan]:
    """The full setting's plan (nothing is loaded or trained)."""
    pairs = list(FULL_PAIRS) if pairs is None else pairs
    unknown = [p for p in pairs if p not in PUBLISHED]
    if unknown:
        raise ValueError(f"unknown pairs {unknown}; choose from {list(FULL_PAIRS)}")
    checkpoints = teacher_checkpoints or {}
    return [
        FullPlan(pair, *pair.split("->"), tuple(methods or METHODS), tuple(seeds), epochs,
                 teacher_checkpoint=checkpoints.get(pair.split("->")[0]))
        for pair in pairs
    ]  # fmt: skip


def _plan_from_args(args: argparse.Namespace) -> list[FullPlan]:
    pairs = _parse_list(args.pairs or "all", FULL_PAIRS, "pairs")
    seeds = (0, 1, 2) if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
    methods = tuple(_parse_list(args.methods, METHODS, "methods"))
    checkpoints = parse_teacher_checkpoints(args.teacher_checkpoint, pairs)
    return build_full_plan(pairs, methods, seeds, checkpoints, args.epochs or RECIPE_EPOCHS)


def describe_full_plan(args: argparse.Namespace) -> str:
    """Text of the full setting's plan for ``--plan``."""
    lines = []
    for plan in _plan_from_args(args):
        cfg = plan.config(plan.seeds[0])
        teacher = plan.teacher_checkpoint or "trained first with the same recipe (GPU: hours)"
        lines.append(
            f"full {plan.pair}: {plan.epochs} epochs, SGD lr {cfg.lr} momentum {cfg.momentum} "
            f"wd {cfg.weight_decay}, x{cfg.gamma} at epochs "
            f"{[round(m * plan.epochs) for m in cfg.milestones]}, batch {plan.batch_size}, "
            f"crop {plan.crop_padding} + flip; teacher {teacher}; "
            f"{len(plan.methods)} methods x {len(plan.seeds)} seeds; published {plan.published}"
        )
    return "\n".join(lines)


def load_or_train_teacher(
    plan: FullPlan,
    train: ImageSet,
    test: ImageSet,
    out_dir: Path,
    device: torch.device,
    amp: str = "off",
) -> nn.Module:
    """The pair's CIFAR teacher: from ``plan.teacher_checkpoint``, a cached file, or trained now."""
    model = build_model(plan.teacher, plan.num_classes, 3, seed=0)
    cached = out_dir / "teachers" / f"{plan.teacher}.pt"
    path = plan.teacher_checkpoint or (cached if cached.exists() else None)
    if path is not None:
        return load_teacher_weights(path, model).to(device)
    print(
        f"no checkpoint for {plan.teacher}: training it with the recipe ({plan.epochs} epochs; "
        "about 9 days on a 2-core CPU, hours on a GPU); resumable from "
        f"{out_dir / 'teachers' / plan.teacher}"
    )
    loader = TensorLoader(
        train, plan.batch_size, augment=True, crop_padding=plan.crop_padding, flip=plan.flip,
        seed=0, device=device,
    )  # fmt: skip
    config = plan.config(0, str(device), amp)
    config.checkpoint_dir = str(out_dir / "teachers" / plan.teacher)
    config.resume = True
    fit(model, CrossEntropy(), loader, config)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cached)
    acc = evaluate(model, TensorLoader.for_evaluation(test, 500, device=device))["acc"]
    print(f"{plan.teacher}: {100 * acc:.2f}% test top-1 (published {plan.published['teacher']})")
    return model.eval()


def run_full(
    args: argparse.Namespace, store: Any, device: torch.device, progress: Any
) -> list[str]:
    """Train every method of every pair on every seed (resumable like the CPU settings).

    Returns the specs (configuration fingerprints) of the pairs, for the summary.
    """
    train, test = load_cifar100(args.data_root)
    if args.pool_per_class is not None:  # a smoke test on a few images per class
        train = labelled_subset(train, args.pool_per_class, seed=0)
    specs = []
    for plan in _plan_from_args(args):
        teacher = load_or_train_teacher(plan, train, test, store.out_dir, device, args.amp)
        setting = Setting(
            plan.setting, None, False, plan.epochs, plan.batch_size, 0.05, plan.seeds,
            plan.student,
        )  # fmt: skip
        ws = Workspace(
            setting=setting, pool=train, val=test, test=test, teacher=teacher.eval(),
            teacher_id=teacher_fingerprint(teacher), shared_classes=True, device=device,
            groups={},  # CIFAR-100 has no confusable groups defined here
        )  # fmt: skip
        specs.append(ws.spec)
        todo = pending_jobs([ws], plan.methods, store)  # records the n/a rows
        progress.total += len(plan.methods) * len(plan.seeds)
        progress.done += len(final_jobs(setting, plan.methods, ws)) - len(todo)
        for _, job in todo:
            row, history = _run_full_job(job, plan, ws, args.amp)
            store.append(row, history)
            progress.run(job, row)
        _print_beside_published(plan, store.rows(), ws.spec)
    return specs


def _run_full_job(
    job: Any, plan: FullPlan, ws: Any, amp: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    student = build_model(plan.student, plan.num_classes, 3, seed=job.seed)
    with seeded(job.seed):
        method = build_method(job.method, **plan.method_kwargs(job.method))
    loader = TensorLoader(
        ws.pool, plan.batch_size, augment=True, crop_padding=plan.crop_padding, flip=plan.flip,
        seed=job.seed, device=ws.device,
    )  # fmt: skip
    setup = TensorLoader.for_evaluation(ws.pool, 500, device=ws.device)
    row = base_row(job, ws.spec, "test", plan.epochs, ws.pool)
    history = measured_fit(row, ws, student, ws.test, lambda: fit(
        student, method, loader, plan.config(job.seed, str(ws.device), amp), teacher=ws.teacher,
        eval_loader=TensorLoader.for_evaluation(ws.test, 500, device=ws.device),
        setup_loader=setup if method.needs_setup else None,
    ))  # fmt: skip
    return row, history


def _print_beside_published(plan: FullPlan, rows: list[dict[str, Any]], spec: str) -> None:
    print(f"\n{plan.pair}: ours (last epoch, mean ± std over seeds) vs published")
    if plan.epochs != RECIPE_EPOCHS:
        print(f"  (a {plan.epochs}-epoch run: NOT comparable with the 240-epoch published numbers)")
    for method in (*plan.methods, "crd"):
        ok = verdict.select(rows, spec=spec, method=method, status="ok")
        mean, std, n = verdict.column_stats(ok, "acc", 100.0)
        text = "not run (not implemented here)" if method == "crd" else "n/a"
        if n:
            text = f"{pm(mean, std, 2)} (n={n})"  # one seed: the mean alone
        pub = plan.published.get(method)
        print(f"  {method:<14} ours {text:<26} published {'-' if pub is None else f'{pub:.2f}'}")
