"""What the benchmark compares: methods, their defaults, settings, the report's labels.

Nothing here trains or reads a file: the names, the paper defaults (:data:`PAPER_DEFAULTS`), the
Fashion-MNIST settings and their sizes (:class:`Setting`, :func:`default_settings`), the command
line's list parser, and the orders and labels the report and its figures share.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# --- Methods: names, labels, paper defaults ---

METHOD_LABELS: dict[str, str] = {
    "ce": "CE",
    "pseudo_label": "Pseudo-label",
    "kd": "KD",
    "rkd": "RKD",
    "rrd": "RRD",
    "rrd_kd": "RRD+KD",
    "refilled": "REFILLED",
    "grkd": "GRKD",
    "grkd_kd": "GRKD+KD",
    "rank_soft": "Rank-soft",
    "rank_listwise": "Rank-listwise",
    "dist": "DIST",
}
#: Every benchmarked method, in the report's order.
METHODS: tuple[str, ...] = tuple(METHOD_LABELS)

#: KD's CE and KD weights (CRD/RepDistiller), with which the combinations train too.
KD_WEIGHTS: dict[str, float] = {"ce_weight": 0.1, "kd_weight": 0.9}

#: The published (or our, where a paper is silent) defaults of each method and their source
#: (``docs/benchmark.md``); REFILLED's last three are the benchmark's (``docs/refilled.md``).
PAPER_DEFAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "ce": ({}, "plain cross-entropy"),
    "pseudo_label": ({"pseudo_weight": 1.0}, "our control"),
    "kd": ({**KD_WEIGHTS, "temperature": 4.0}, "CRD/RepDistiller KD"),
    "rkd": ({"distance_weight": 25.0, "angle_weight": 50.0}, "RepDistiller RKD (CE + 25 D + 50 A)"),
    "rrd": ({"rrd_weight": 1.0, "tau_s": 0.04, "tau_t": 0.10}, "RRD code (Sept 2024)"),
    "rrd_kd": (
        {**KD_WEIGHTS, "rrd_weight": 1.0},
        "KD's weights + the RRD term (controlled; the RRD README's CIFAR runs use 1 / 1 / 1)",
    ),
    "refilled": (
        {
            "lambda1": 1000.0,
            "lambda2": 100.0,
            "tau2": 2.0,
            "restrict_to_batch": False,
            "stage1_labels": "teacher",
            "stage1_fraction": 0.3,
        },
        "REFILLED code; all centred classes as columns, teacher-labelled stage 1 (ours)",
    ),
    "grkd": (
        {"grkd_weight": 1.0, "temperature": 1.0, "reduction": "sum"},
        "the published summary's sum over class pairs (docs/grkd.md: chosen by measurement)",
    ),
    "grkd_kd": (
        {**KD_WEIGHTS, "grkd_weight": 1.0, "temperature": 1.0, "reduction": "sum"},
        "KD's weights + the GRKD term summed over pairs (controlled; docs/grkd.md)",
    ),
    "rank_soft": ({"rank_weight": 1.0, "temperature": 1.0}, "docs/ranking.md (our extension)"),
    "rank_listwise": ({"rank_weight": 1.0, "temperature": 1.0}, "docs/ranking.md (our extension)"),
    "dist": (
        {"ce_weight": 1.0, "beta": 1.0, "gamma": 1.0, "temperature": 1.0},
        "DIST paper Sec. 3 and authors' code (docs/dist.md)",
    ),
}

#: The combinations train with KD's CE and KD weights plus their term, so that ``X + KD`` minus KD
#: is the effect of ``lambda * L_X`` alone; the constructors keep the published 1 / 1 / 1.
CONTROL_WEIGHTS: dict[str, dict[str, float]] = {m: dict(KD_WEIGHTS) for m in ("rrd_kd", "grkd_kd")}

#: Each method's control: the run that differs from it in one thing, its loss term
#: (:data:`CONTROL_DIFFERS`): KD for the combinations (:data:`CONTROL_WEIGHTS`), CE for the rest
#: (KD against CE also differs in the CE weight).
CONTROLS: dict[str, str] = {m: "kd" if m in CONTROL_WEIGHTS else "ce" for m in METHODS if m != "ce"}

#: What a method adds to its control (the report's "differs in" column).
CONTROL_DIFFERS: dict[str, str] = {
    "pseudo_label": "+ CE on the teacher's top class over the unlabelled images",
    "kd": "0.9 KD term, CE weight 1 -> 0.1",
    "rkd": "+ RKD distance and angle terms",
    "rrd": "+ RRD term (and its projection head)",
    "rrd_kd": "+ RRD term (and its projection head)",
    "refilled": "REFILLED's two stages (stage 1 has no CE; stage 2 adds the KL term)",
    "grkd": "+ GRKD term",
    "grkd_kd": "+ GRKD term",
    "rank_soft": "+ soft pairwise rank term",
    "rank_listwise": "+ listwise rank term",
    "dist": "+ DIST inter- and intra-class terms",
}

#: The headline comparison: every method against KD (the strong, simple baseline).
HEADLINE_BASELINE = "kd"

#: The mission's question: does GRKD beat the other relational methods, and DIST, its nearest
#: published rival (relations among class probabilities)? (one family, Holm).
MISSION_METHOD = "grkd"
MISSION_RIVALS: tuple[str, ...] = ("rkd", "rrd", "refilled", "dist")

#: Family-wise error level of the verdicts (Holm over each family of comparisons).
ALPHA = 0.05

#: Methods that read the teacher's logits over the student's classes (n/a in cross-task): why.
NEEDS_SHARED_CLASSES: dict[str, str] = {
    "pseudo_label": "its labels are the teacher's top class; the teacher has none of the student's classes",
    "kd": "matches the teacher's class distribution; the teacher has none of the student's classes",
    "rrd_kd": "its KD term needs the teacher's logits over the student's classes (RRD alone runs)",
    "grkd": "ranks the student's classes by the teacher's logits; the teacher has none of them",
    "grkd_kd": "ranks and matches the teacher's logits; the teacher has none of the student's classes",
    "rank_soft": "ranks the teacher's logits; the teacher has none of the student's classes",
    "rank_listwise": "ranks the teacher's logits; the teacher has none of the student's classes",
    "dist": "correlates the teacher's class probabilities; the teacher has none of the student's classes",
}

#: The ``"pseudo"`` family's control: CE plus CE on the teacher's top class over the unlabelled
#: images; a logit method that beats it gains from more than the teacher's labels.
PSEUDO_LABEL_CONTROL = "pseudo_label"

#: Methods that differ from their control only on unlabelled images (not run where there are none).
NEEDS_UNLABELLED: dict[str, str] = {
    "pseudo_label": "no unlabelled images here, so it is CE exactly (its pseudo-label term is 0)",
}


def has_unlabelled(setting: Setting) -> bool:
    """Whether the setting's training sets hold unlabelled images (transfer, cross-task)."""
    return setting.keep_unlabelled and setting.labelled_per_class is not None


#: Methods trained in several stages (REFILLED: embedding, then classifier) and their count.
MULTI_STAGE: dict[str, int] = {"refilled": 2}


def params_tag(params: dict[str, float]) -> str:
    """Canonical text of a trial's overrides (``"{}"`` for the paper defaults)."""
    return json.dumps({k: params[k] for k in sorted(params)}, separators=(",", ":"))


def describe_params(params: dict[str, Any] | str) -> str:
    """Short human form: ``"defaults"``, ``"grkd_weight=3, temperature=2"``, ``"weighting=prob_gap"``."""
    if isinstance(params, str):
        params = json.loads(params) if params else {}
    if not params:
        return "defaults"
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
        for k, v in sorted(params.items())
    )


# --- Ablations: one method's choices, each variant one change from the default ---


@dataclass(frozen=True)
class Variant:
    """One ablation variant: ``params`` (for ``build_method``; ``{}``: the default) change the
    method's default in one ``choice`` (``"group"``, ``"weights"``, ...); ``name`` labels it."""

    name: str
    choice: str
    params: dict[str, Any]


#: The GRKD ablation (``--ablation grkd``): the reconstruction's open choices (``docs/grkd.md``).
#: ``"sum"`` is exactly ``C(C-1)/2`` times ``"mean"`` (tested): that variant is a scale effect.
ABLATIONS: dict[str, tuple[Variant, ...]] = {
    "grkd": (
        Variant("default (all classes, uniform, tau 1)", "default", {}),
        Variant("top-5 group", "group", {"top_k": 5}),
        Variant("top-3 group", "group", {"top_k": 3}),
        Variant("probability-gap weights", "weights", {"weighting": "prob_gap"}),
        Variant("tau 0.5", "temperature", {"temperature": 0.5}),
        Variant("tau 2", "temperature", {"temperature": 2.0}),
        Variant("tau 4", "temperature", {"temperature": 4.0}),
        Variant("mean over pairs", "normalisation (scale)", {"reduction": "mean"}),
    ),
}

#: The setting an ablation runs on by default: the headline, at the main job's sizes. Its seeds
#: and split are the selection's (``search_space.ABLATION_SEEDS``, the validation split).
ABLATION_SETTING = "transfer"


def ablation_variants(method: str) -> tuple[Variant, ...]:
    """The variants of ``method``'s ablation, the default (``params == {}``) first."""
    if method not in ABLATIONS:
        raise ValueError(f"no ablation for {method!r}; choose from {sorted(ABLATIONS)}")
    return ABLATIONS[method]


# --- Settings ---

#: The shipped teacher of the Fashion-MNIST settings (:mod:`relkd_tutorial.pretrained`): the
#: ``_heldout`` one never saw the validation split that selects hyperparameters.
BENCH_TEACHER = "teacher_cnn_fashion_mnist_heldout"

FASHION_SETTINGS: tuple[str, ...] = ("transfer", "low-data", "standard", "cross-task")
ALL_SETTINGS: tuple[str, ...] = (*FASHION_SETTINGS, "full")
DEFAULT_SETTINGS: tuple[str, ...] = ("transfer", "low-data", "standard")
PRESETS: tuple[str, ...] = ("cpu", "quick", "large")
#: The paper-default runs of the tuned methods: on the first 8 seeds (``docs/benchmark.md``).
DEFAULT_ARM_SEEDS = 8
CROSS_TASK_TEACHER_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
CROSS_TASK_STUDENT_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)


@dataclass(frozen=True)
class Setting:
    """One benchmark setting on the shipped Fashion-MNIST subset.

    ``labelled_per_class``: ``n`` labelled images per class (``None``: all); ``keep_unlabelled``:
    keep the rest of the pool with label ``-1`` (transfer); ``epochs``, ``batch_size``, ``lr``:
    the one student schedule (:func:`~.runner.student_config`); ``pool_per_class``: the training
    pool (``None``: the subset minus the ``val_per_class`` validation split); ``teacher_epochs``:
    the cross-task teacher's; ``curves``: test after every epoch; ``default_seeds``: the tuned
    methods' paper-default arm runs on that many first seeds. ``seeds``, ``curves`` and
    ``default_seeds`` do not change a run, so :meth:`fingerprint` leaves them out.
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
    curves: bool = False
    default_seeds: int = 0

    def fingerprint(self, teacher_id: str) -> str:
        """8 hex digits identifying everything that changes a run's result except method and seed."""
        spec = asdict(self)
        del spec["seeds"], spec["curves"], spec["default_seeds"]
        spec["teacher"] = teacher_id
        # the combinations' weights changed what their runs mean: never mix the old protocol's
        spec["control_weights"] = CONTROL_WEIGHTS
        blob = json.dumps(spec, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:8]


def default_settings(fast: bool, preset: str = "cpu") -> dict[str, Setting]:
    """The Fashion-MNIST settings of fast mode (``fast=True``, any preset) or of a size
    ``preset``: ``"cpu"`` (the main job on a CPU), ``"quick"`` (a smaller pool, fewer seeds) or
    ``"large"`` (the default on a GPU: longer schedules, whose recipes must be tuned first with
    ``--tune --preset large --recipes FILE``). Why these sizes: ``docs/benchmark.md``."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if fast:
        common = dict(pool_per_class=150, val_per_class=30, seeds=(0, 1))
        return {
            "transfer": Setting("transfer", 20, True, epochs=4, default_seeds=2, **common),
            "low-data": Setting("low-data", 20, False, epochs=10, batch_size=64, **common),
            "standard": Setting("standard", None, False, epochs=6, curves=True, **common),
            "cross-task": Setting("cross-task", 20, True, epochs=4, teacher_epochs=2, **common),
        }
    arm = DEFAULT_ARM_SEEDS
    if preset == "cpu":
        return {
            "transfer": Setting("transfer", 50, True, epochs=5, seeds=tuple(range(16)),
                                default_seeds=arm),
            "low-data": Setting("low-data", 50, False, epochs=30, batch_size=64,
                                seeds=tuple(range(8)), default_seeds=arm),
            "standard": Setting("standard", None, False, epochs=20, seeds=(0, 1, 2), curves=True),
            "cross-task": Setting("cross-task", 50, True, epochs=5, teacher_epochs=6,
                                  seeds=tuple(range(5))),
        }  # fmt: skip
    if preset == "quick":
        return {
            "transfer": Setting("transfer", 50, True, epochs=8, seeds=(0, 1, 2, 3),
                                pool_per_class=300),
            "low-data": Setting("low-data", 50, False, epochs=20, batch_size=64, seeds=(0, 1, 2),
                                pool_per_class=300),
            "standard": Setting("standard", None, False, epochs=10, seeds=(0,), curves=True,
                                pool_per_class=200),
            "cross-task": Setting("cross-task", 50, True, epochs=8, teacher_epochs=6,
                                  seeds=(0, 1, 2), pool_per_class=300),
        }  # fmt: skip
    return {
        "transfer": Setting("transfer", 50, True, epochs=15, seeds=tuple(range(8)),
                            default_seeds=arm),
        "low-data": Setting("low-data", 50, False, epochs=60, batch_size=64,
                            seeds=tuple(range(5)), default_seeds=arm),
        "standard": Setting("standard", None, False, epochs=30, curves=True),
        "cross-task": Setting("cross-task", 50, True, epochs=15, teacher_epochs=6),
    }  # fmt: skip


def _parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if "all" in items:
        return list(allowed)
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {list(allowed)} (comma-separated)")
    return items


# --- The report's orders and labels (tables and figures) ---

SETTING_TITLES = {
    "transfer": "transfer (headline): n labelled per class + the rest unlabelled",
    "low-data": "low-data: n labelled per class, nothing else",
    "standard": "standard: the whole pool labelled",
    "cross-task": "cross-task: teacher on classes 0-4, student on 5-9",
    "full": "full: CIFAR-100, RepDistiller recipe",
}
METRICS = ("acc", "acc_tops", "acc_footwear", "kendall_tau", "dist_corr")
METRIC_LABELS = {
    "acc": "top-1 %",
    "acc_tops": "tops %",
    "acc_footwear": "footwear %",
    "kendall_tau": "Kendall tau",
    "dist_corr": "dist. corr.",
}
PERCENT = {"acc", "acc_tops", "acc_footwear"}
BASELINES = ("ce", "kd")
DIFF_METRICS = ("acc", "acc_tops", "acc_footwear", "kendall_tau")


def _scale(metric: str) -> float:
    return 100.0 if metric in PERCENT else 1.0


def label(method: str) -> str:
    """The report's name of ``method`` (its own name where it has none)."""
    return METHOD_LABELS.get(method, method)


def pm(mean: float, std: float, digits: int) -> str:
    """``"mean ± std"`` at ``digits`` decimals, ``"mean"`` alone where ``std`` is NaN (one seed)."""
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def _ordered_settings(rows: Iterable[dict[str, Any]]) -> list[str]:
    present = {r["setting"] for r in rows}
    return [s for s in ALL_SETTINGS if s in present] + sorted(present - set(ALL_SETTINGS))


def _method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)
