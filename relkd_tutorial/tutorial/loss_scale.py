"""Why the loss scale decides a comparison (notebook 05, §9): three measurements.

A method's objective is ``sum_k w_k L_k``, so a distillation term's weight decides how loudly the
teacher speaks against the labels. :func:`initial_gradient_shares`: each weighted term's share
``n_k / sum_j n_j`` of the student's gradient norm at initialisation, ``n_k = ||d(w_k L_k)/d
theta||_2``. :func:`trial_rows` reads the committed Optuna journal into one row per trial with its
weight multiplier (:func:`weight_multiplier`) and validation top-1; :func:`rank_at` ranks a method
at the trial nearest a multiplier (that trial also differs in the other knobs: evidence of what
the search saw, not a controlled sweep). :func:`label_triplets` and :func:`semi_hard_count`: the
triplets REFILLED's stage 1 can use in a batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import fmean, geometric_mean
from typing import Any

import torch
from torch import Tensor

from ..bench.runner import run_parts
from ..bench.search_space import SEARCH_SPACE, WEIGHT, method_defaults
from ..bench.settings import METHOD_LABELS, METHODS
from ..bench.tune import open_storage
from ..bench.verdict import markdown_table as _table
from ..bench.workspace import Workspace
from ..losses.refilled import centre_labels, mine_triplets
from ..methods import SetupData, StepInputs
from ..training import gradient_shares, stage_plan, term_gradient_norms
from .plots import _titled

# --- Gradient shares at initialisation

#: ``(row label, benchmark method, overrides of its benchmark arguments)``: every benchmark
#: method, and GRKD with the mean over class pairs (the benchmark's default sums them).
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    *((METHOD_LABELS[m], m, {}) for m in METHODS),
    ("GRKD, mean over pairs", "grkd", {"reduction": "mean"}),
)


def fill_rrd_queue(method: Any, batches: Sequence[Any], cache: Any) -> None:
    """Write the teacher's embeddings of ``batches`` into RRD's queue until it is full, as its
    ``after_step`` does over the first ``K / B`` steps, so the term has negatives to contrast."""
    size = method.rrd.queue.keys.shape[0]
    for b in batches:
        if int(method.rrd.queue.filled) >= size:
            break
        t_feat, t_logits = cache.lookup(b.index)
        z = torch.zeros(len(b.y), 1)
        method.after_step(StepInputs(z, z, b.y, t_feat, t_logits, b.index))


def initial_gradient_shares(
    ws: Workspace,
    seeds: Sequence[int],
    variants: Sequence[tuple[str, str, dict[str, Any]]] = VARIANTS,
) -> list[dict[str, Any]]:
    """Each weighted term's share of the student's gradient norm on what the first step of a
    benchmark run sees (per seed: its training set, student and first unaugmented batch).
    REFILLED is measured in each stage; RRD with its queue filled by the following batches (empty,
    its term would have no gradient). One row per (variant, stage, term), in ``variants`` order:
    ``label``, ``method``, ``term``, ``share`` and ``norm`` (means over seeds)."""
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    per_seed: dict[tuple[str, str, str], list[dict[str, float]]] = {}  # each seed's norms
    for seed in seeds:
        for label, name, overrides in variants:
            student, method, loader, _, cache = run_parts(ws, name, overrides, seed)  # a run's
            batches = list(loader)
            if method.needs_setup:
                method.setup(SetupData(cache.features, cache.logits, cache.labels))
            if hasattr(method, "rrd"):
                fill_rrd_queue(method, batches[1:], cache)
            stages = [s.name for s in method.stages()]
            for stage in stages:  # each stage from the same initial student
                method.set_stage(stage)
                row = label if len(stages) == 1 else f"{label} ({stage})"
                norms = term_gradient_norms(method, copy.deepcopy(student), batches[0], cache)
                per_seed.setdefault((row, name, stage), []).append(norms)
    return [
        {"label": row, "method": name, "term": term,
         "share": fmean(gradient_shares(n)[term] for n in results),
         "norm": fmean(n[term] for n in results)}
        for (row, name, _), results in per_seed.items() for term in results[0]
    ]  # fmt: skip


# --- The tuning's trials: weight multiplier, validation score, rank


def weight_knobs(method: str) -> tuple[str, ...]:
    """The loss weights of ``method`` that the tuning searched (its ``WEIGHT``-scaled knobs).

    REFILLED: ``lambda2`` only. Its ``lambda1`` scales stage 1, which has no other term (no
    cross-entropy), so it sets that stage's step size rather than a balance between terms.
    """
    knobs = tuple(k for k, s in SEARCH_SPACE.get(method, {}).items() if s is WEIGHT)
    return ("lambda2",) if method == "refilled" else knobs


def weight_multiplier(method: str, params: Mapping[str, float]) -> float:
    """The geometric mean over :func:`weight_knobs` of ``params[k] / default_k`` (``1`` at the
    paper defaults; a missing weight counts as its default). ValueError: no loss weight to scale,
    or a weight that is not positive."""
    knobs = weight_knobs(method)
    defaults = method_defaults(method) or {}
    if not knobs or any(k not in defaults for k in knobs):
        raise ValueError(f"method {method!r} has no tuned loss weight (knobs: {knobs})")
    values = {k: float(params.get(k, defaults[k])) for k in knobs}
    for k, value in values.items():
        if not value > 0:
            raise ValueError(f"{method}: weight {k}={value} must be positive")
    return geometric_mean(values[k] / defaults[k] for k in knobs)


def trial_rows(path: str | Path, setting: str | None = None) -> list[dict[str, Any]]:
    """The complete trials of the Optuna journal at ``path`` (``results/tuning/tuning.journal``),
    in study then trial order (``setting`` keeps one setting's): ``setting``, ``method``,
    ``number``, ``value`` (mean validation top-1, a fraction; 0 diverged), ``params`` and
    ``multiplier`` (``nan`` without a weight). FileNotFoundError: no file (Optuna would create
    one); ValueError: two studies of one method and setting (their trials would mix)."""
    import optuna

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tuning journal at {path}")
    storage = open_storage(path)  # the tuning's own: a journal file, Optuna's log quiet
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for name in optuna.study.get_all_study_names(storage):
        parts = name.split("|")  # relkd|setting|...|method|...: the tuning's study names
        if len(parts) != 7 or parts[0] != "relkd":
            raise ValueError(f"study {name!r} is not a study of the benchmark's tuning")
        key = (parts[1], parts[3])
        if setting is not None and key[0] != setting:
            continue
        if key in seen:
            raise ValueError(f"two studies of {key} in {path.name}: {seen[key]!r} and {name!r}")
        seen[key] = name
        study = optuna.load_study(study_name=name, storage=storage)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            m = weight_multiplier(key[1], t.params) if weight_knobs(key[1]) else math.nan
            rows.append({"setting": key[0], "method": key[1], "number": t.number,
                         "value": float(t.value), "params": dict(t.params), "multiplier": m})  # fmt: skip
    return rows


def _of(rows: Sequence[Mapping[str, Any]], method: str) -> list[Mapping[str, Any]]:
    found = [r for r in rows if r["method"] == method]
    if not found:
        raise ValueError(f"no trial of {method!r} in the rows (methods: {sorted(methods(rows))})")
    if len({r["setting"] for r in found}) > 1:
        raise ValueError(f"the rows of {method!r} hold several settings: keep one (trial_rows)")
    return found


def methods(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The methods of ``rows`` in the benchmark's order."""
    present = {r["method"] for r in rows}
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def tuned_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each method's best validation score over its trials (its tuned score)."""
    return {m: max(r["value"] for r in _of(rows, m)) for m in methods(rows)}


def nearest_trial(
    rows: Sequence[Mapping[str, Any]], method: str, multiplier: float
) -> Mapping[str, Any]:
    """The trial of ``method`` whose weight multiplier is nearest ``multiplier`` on a log scale
    (a tie goes to the earlier trial)."""
    if not (isinstance(multiplier, (int, float)) and multiplier > 0 and math.isfinite(multiplier)):
        raise ValueError(f"multiplier must be a positive finite number, got {multiplier!r}")
    trials = [r for r in _of(rows, method) if math.isfinite(r["multiplier"])]
    if not trials:
        raise ValueError(f"{method!r} has no loss weight: no multiplier to be near")
    target = math.log(multiplier)
    return min(trials, key=lambda r: (abs(math.log(r["multiplier"]) - target), r["number"]))


def rank_at(rows: Sequence[Mapping[str, Any]], method: str, multiplier: float) -> dict[str, Any]:
    """``method``'s rank among the methods' tuned validation scores if it ran at the trial
    nearest ``multiplier``: ``trial``, ``value``, ``rank`` (one plus the other methods scoring
    strictly higher), ``of``, ``tuned_rank`` (at its own tuned score) and ``scores``."""
    trial = nearest_trial(rows, method, multiplier)
    scores = tuned_scores(rows)
    tuned_rank = 1 + sum(v > scores[method] for m, v in scores.items() if m != method)
    scores[method] = trial["value"]
    rank = 1 + sum(v > trial["value"] for m, v in scores.items() if m != method)
    return {"trial": trial, "value": trial["value"], "rank": rank, "of": len(scores),
            "tuned_rank": tuned_rank, "scores": scores}  # fmt: skip


def rank_table(
    rows: Sequence[Mapping[str, Any]], multipliers: Sequence[float] = (0.1, 1.0, 10.0)
) -> list[dict[str, Any]]:
    """One row per method with a weight: its tuned rank and multiplier, and its rank at the trial
    nearest each of ``multipliers`` (column ``"x<m>"``, with that trial's multiplier)."""
    out = []
    for m in filter(weight_knobs, methods(rows)):
        best = max(_of(rows, m), key=lambda r: (r["value"], -r["number"]))
        row: dict[str, Any] = {
            "method": METHOD_LABELS.get(m, m),
            "tuned": f"{rank_at(rows, m, best['multiplier'])['tuned_rank']} "
            f"(x{best['multiplier']:.2g})",
        }
        for x in multipliers:
            r = rank_at(rows, m, x)
            row[f"x{x:g}"] = f"{r['rank']} (x{r['trial']['multiplier']:.2g})"
        ranks = [rank_at(rows, m, r["multiplier"])["rank"] for r in _of(rows, m)]
        row["ranks over its trials"] = f"{min(ranks)} to {max(ranks)}"
        out.append(row)
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` (dicts with the same keys) as a Markdown table, columns in key order."""
    if not rows:
        raise ValueError("no rows to tabulate")
    return _table(" | ".join(rows[0]), ([str(r[c]) for c in rows[0]] for r in rows))


# --- REFILLED's triplets per batch


def label_triplets(labels: Tensor) -> int:
    """How many ``(a, p, n)`` the labels allow: ``y_a = y_p``, ``a != p``, ``y_n != y_a``, all
    three labelled (``-1`` = unlabelled). With ``n_c`` labelled samples of class ``c`` and ``L``
    labelled in all, ``sum_c n_c (n_c - 1) (L - n_c)``: the most stage 1 could mine."""
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-d integer tensor (B,) with -1 for unlabelled")
    counts = torch.bincount(labels[labels >= 0].long()).double()
    total = counts.sum()
    return int((counts * (counts - 1) * (total - counts)).sum())


def semi_hard_count(features: Tensor, labels: Tensor, margin: float = 0.2) -> int:
    """How many semi-hard triplets REFILLED's miner
    (:func:`~relkd_tutorial.losses.refilled.mine_triplets`) finds on ``features`` ``(B, D)``."""
    return int(mine_triplets(features, labels, margin)[0].shape[0])


def refilled_budget(
    ws: Workspace, seed: int = 0, stage1_fraction: float = 0.3, margin: float = 0.2
) -> dict[str, Any]:
    """What REFILLED's stage 1 gets: ``batch`` and ``labelled`` (sizes of a run's first batch),
    its ``label_triplets``, ``semi_hard`` triplets mined on the student at initialisation among
    the labelled samples (the papers') and ``semi_hard_teacher`` with the unlabelled ones under
    the teacher's centre-classifier label (the benchmark's), and ``stage1_epochs`` of ``epochs``
    (:func:`~relkd_tutorial.training.stage_plan`) and ``stage1_steps``."""
    params = {"stage1_fraction": stage1_fraction}
    student, method, loader, _, cache = run_parts(ws, "refilled", params, seed)  # as a run's
    batch = next(iter(loader))
    method.setup(SetupData(cache.features, cache.logits, cache.labels))
    with torch.no_grad():  # (B, D_S), as the first training step sees them
        features = student.to(batch.x.device).train()(batch.x)[0]
    teacher_labels = centre_labels(cache.lookup(batch.index)[0], batch.y, method.class_centres)
    stage1 = stage_plan(method.stages(), ws.setting.epochs)[0]
    return {
        "batch": int(batch.y.shape[0]),
        "labelled": int((batch.y >= 0).sum()),
        "label_triplets": label_triplets(batch.y),
        "semi_hard": semi_hard_count(features, batch.y, margin),
        "semi_hard_teacher": semi_hard_count(features, teacher_labels, margin),
        "stage1_epochs": stage1.epochs,
        "epochs": ws.setting.epochs,
        "stage1_steps": stage1.epochs * len(loader),
    }


# --- Drawing (onto given axes)


def plot_weight_scores(
    ax: Any,
    rows: Sequence[Mapping[str, Any]],
    highlight: str | None = None,
    title: str | None = None,
) -> None:
    """Validation top-1 against the weight multiplier, one line per method (trials sorted by
    multiplier, log axis); ``highlight`` draws one method bold and the others faint."""
    for i, m in enumerate(m for m in methods(rows) if weight_knobs(m)):
        trials = sorted(_of(rows, m), key=lambda r: r["multiplier"])
        faint = highlight is not None and m != highlight
        ax.plot([r["multiplier"] for r in trials], [100 * r["value"] for r in trials], marker="o",
                ms=3 if faint else 4, lw=0.8 if faint else 1.4, alpha=0.25 if faint else 0.85,
                color=f"C{i % 10}", ls="-" if i < 10 else "--", label=METHOD_LABELS.get(m, m))  # fmt: skip
    ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xscale("log")
    xlabel = "loss-weight multiplier (x the paper default; log scale)"
    _titled(ax, title, xlabel, "validation top-1 %")


def plot_rank_view(
    axes: Sequence[Any], rows: Sequence[Mapping[str, Any]], method: str, multiplier: float
) -> dict[str, Any]:
    """Left: ``method``'s trials with the trial nearest ``multiplier`` circled. Right: every
    method's tuned validation score, ``method``'s replaced by that trial's. Returns
    :func:`rank_at`'s result."""
    left, right = axes
    view = rank_at(rows, method, multiplier)
    plot_weight_scores(left, rows, highlight=method)
    trial = view["trial"]
    left.axvline(multiplier, color="k", lw=1.0)
    left.plot([trial["multiplier"]], [100 * trial["value"]], "o", ms=14, mfc="none", mec="k")
    left.set_title(f"{METHOD_LABELS.get(method, method)}: nearest trial x{trial['multiplier']:.3g}")
    order = sorted(view["scores"], key=lambda m: view["scores"][m])
    colors = ["k" if m == method else "0.75" for m in order]
    right.barh(range(len(order)), [100 * view["scores"][m] for m in order], color=colors)
    right.set_yticks(range(len(order)), [METHOD_LABELS.get(m, m) for m in order])
    low = 100 * min(view["scores"].values())
    right.set_xlim(max(0.0, low - 5), 100 * max(view["scores"].values()) + 2)
    right.set_xlabel("validation top-1 % (others: tuned)")
    right.set_title(f"rank {view['rank']} of {view['of']} (tuned: {view['tuned_rank']})")
    return view
