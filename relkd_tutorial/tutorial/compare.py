"""What the method chapters (01-05) say about runs, on top of :mod:`.runs`; every number computed.

:func:`protocol_sentence` (what the runs are), :func:`difference_phrase` / :func:`against` (one
paired difference in words with its 95% interval and claim: the benchmark's Holm-corrected one
where the row has it, else read from the interval), :func:`control_table` (each method against
its one-term-different control, ``docs/benchmark.md``), :func:`seed_table` / :func:`paired_rows`
(a chapter's own small experiment, in rows that :mod:`.plots_stats` draws).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..bench.settings import PERCENT, label
from ..bench.verdict import comparisons
from ..stats import format_p, paired_difference
from .prose import Sentence, say
from .runs import Runs, Table, seed_stats


def protocol_sentence(runs: Runs) -> Sentence:
    """One sentence: the setting, pool, labels, student, epochs, batch, learning rate and seeds."""
    s = runs.setting
    rows = [r for r in runs if r.get("status") == "ok"]
    if not rows:
        raise ValueError("no finished run to describe")
    seeds = list(s.seeds)
    seed_text = (
        f"{seeds[0]}–{seeds[-1]}"
        if seeds == list(range(seeds[0], seeds[-1] + 1))
        else (", ".join(map(str, seeds)))
    )
    src = ", ".join("the local cache" if "cache" in p else "the committed results"
                    for p in runs.sources if runs.sources[p])  # fmt: skip
    return say(
        "The benchmark's `{name}` setting ({src}): a pool of {n_train:,} training images of which "
        "{n_labelled:,} keep their label ({per} per class), `{student}` students trained for "
        "{epochs} epochs with batches of {batch} (SGD with Nesterov momentum, learning rate "
        "{lr:g} with cosine decay), {n_seeds} paired seeds ({seed_text}), evaluated on the "
        "test split.",
        name=s.name, src=src or "none", n_train=int(rows[0]["n_train"]),
        n_labelled=int(rows[0]["n_labelled"]), per=s.labelled_per_class, student=s.student,
        epochs=s.epochs, batch=s.batch_size, lr=s.lr, n_seeds=len(seeds), seed_text=seed_text,
    )  # fmt: skip


def _claim(diff: Mapping[str, Any]) -> str:
    """The row's ``claim`` if it has one, else "within noise" unless the interval excludes 0."""
    if diff.get("claim"):
        return diff["claim"]
    if diff.get("within_noise", True):
        return "within noise"
    return "beats" if diff["mean"] > 0 else "trails"


def verdict(diff: Mapping[str, Any]) -> str:
    """``"beats"`` / ``"trails"`` (the claim, or the interval excludes 0), else ``"is within
    noise of"``."""
    claim = _claim(diff)
    return "is within noise of" if claim == "within noise" else claim


def _numbers(diff: Mapping[str, Any], digits: int) -> tuple[str, str, str]:
    """Mean (with its unit: points for accuracies), low and high, signed, ``digits`` decimals."""
    unit = " points" if diff.get("metric", "acc") in PERCENT else ""
    mean, low, high = (format(float(diff[k]), f"+.{digits}f") for k in ("mean", "low", "high"))
    return mean + unit, low, high


def difference_phrase(diff: Mapping[str, Any]) -> str:
    """``"+5.32 points (95% paired interval −1.20 to +11.84, 8 seeds): beats"`` from a row of
    :func:`~.runs.paired_table` (accuracies in points, two decimals; other metrics three)."""
    if not math.isfinite(float(diff["mean"])):
        raise ValueError("the difference has no finite mean")
    mean, low, high = _numbers(diff, 2 if diff.get("metric", "acc") in PERCENT else 3)
    if not (math.isfinite(float(diff["low"])) and math.isfinite(float(diff["high"]))):
        return f"{mean} (one seed: no interval)"
    return f"{mean} (95% paired interval {low} to {high}, {diff['n']} seeds): {_claim(diff)}"


def against(diff: Mapping[str, Any], digits: int = 1) -> str:
    """``"beats CE (+2.3 points, 95% CI +0.4 to +4.2, Holm p 0.03)"`` from a comparison entry."""
    mean, low, high = _numbers(diff, digits)
    text = f"{verdict(diff)} {label(diff['baseline'])} ({mean}"
    if not math.isnan(diff["low"]):
        text += f", 95% CI {low} to {high}"
    if "p_holm" in diff and not math.isnan(diff["p_holm"]):
        text += f", Holm p {format_p(diff['p_holm'])}"
    return text + ")"


def control_table(rows: Sequence[dict[str, Any]], metric: str = "acc") -> Table:
    """Every method of ``rows`` (the benchmark's) minus its control, paired by seed (label
    ``"RRD − CE"``; accuracies in points); a method whose control is absent is left out."""
    entries = comparisons(rows, families=("control",), metrics=(metric,))
    for e in entries:
        e["label"] = f"{label(e['method'])} − {label(e['baseline'])}"
    unit = "points" if metric in PERCENT else ""
    return Table(entries, ["label", "n", "mean", "low", "high", "claim"], metric, unit)


def seed_table(
    values: Mapping[str, Sequence[float]], *, scale: float = 1.0
) -> list[dict[str, Any]]:
    """Per name, its ``label`` and :func:`~.runs.seed_stats`; ``values[name][r]`` is the metric
    of seed ``r``, times ``scale`` (100: percent)."""
    return [
        {"label": name, **seed_stats([scale * float(x) for x in xs])} for name, xs in values.items()
    ]


def paired_rows(
    values: Mapping[str, Sequence[float]], baseline: str, *, scale: float = 1.0
) -> list[dict[str, Any]]:
    """Every name but ``baseline`` minus ``baseline``, paired by seed (same seeds, same order):
    ``label`` (``"A − B"``), ``method``, ``baseline``, ``n``, ``mean``, ``std``, ``low``,
    ``high``, ``within_noise`` (no interval, or it covers 0) and ``claim`` (uncorrected)."""
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among {list(values)}")
    base = [scale * float(x) for x in values[baseline]]
    out = []
    for name, xs in values.items():
        if name == baseline:
            continue
        d = paired_difference([scale * float(x) for x in xs], base)
        row = {
            "label": f"{name} − {baseline}", "method": name, "baseline": baseline, "n": d.n,
            "mean": d.mean, "std": d.std, "low": d.low, "high": d.high,
            "within_noise": d.within_noise or math.isnan(d.low),
        }  # fmt: skip
        out.append({**row, "claim": _claim(row)})
    return out
