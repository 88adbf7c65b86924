"""Small statistics helpers the method chapters (03-05) share, on top of :mod:`.runs`.

- :func:`control_table`: each method of the benchmark's runs against its **control**, the run
  that differs from it in one loss term (:data:`relkd_tutorial.bench.settings.CONTROLS`; the
  benchmark's ``"control"`` family of :func:`relkd_tutorial.bench.verdict.comparisons`, paired by
  seed, Holm-corrected over the methods present).
- :func:`against`: one such comparison as words for a :func:`~.prose.say` sentence ("beats CE
  (+2.3 points, 95% CI +0.4 to +4.2, Holm p 0.03)").
- :func:`seed_table` / :func:`paired_rows`: the same statistics for a chapter's own small
  experiment (notebook 04's cross-task students): per method the mean, the sample standard
  deviation (``n - 1``) and the 95% ``t`` interval over seeds, and each method minus a baseline
  paired by seed, in rows that :func:`~.plots_stats.plot_intervals` and
  :func:`~.plots_stats.plot_paired` draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..bench.settings import METHOD_LABELS, PERCENT
from ..bench.verdict import comparisons
from ..stats import format_p, mean_std, paired_difference
from .runs import Table


def control_table(
    rows: Sequence[dict[str, Any]], metric: str = "acc", *, confidence: float = 0.95
) -> Table:
    """Every method of ``rows`` minus its control, paired by seed (label ``"RRD − CE"``).

    Accuracies in percentage points. Rows: the benchmark's (:func:`.runs.benchmark_runs`); a
    method whose control is not among them is left out.
    """
    entries = comparisons(rows, families=("control",), metrics=(metric,), confidence=confidence)
    for e in entries:
        e["label"] = f"{_name(e['method'])} − {_name(e['baseline'])}"
    unit = "points" if metric in PERCENT else ""
    return Table(entries, ["label", "n", "mean", "low", "high", "claim"], metric, unit)


def _name(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def against(diff: Mapping[str, Any], digits: int = 1) -> str:
    """``"beats CE (+2.3 points, 95% CI +0.4 to +4.2, Holm p 0.03)"`` from a comparison entry.

    The verb is the benchmark's claim (``"beats"`` / ``"trails"`` only when the interval excludes
    0 and the Holm-adjusted p-value is at most 0.05), else "is within noise of".
    """
    verb = "is within noise of" if diff["claim"] == "within noise" else diff["claim"]
    unit = " points" if diff.get("metric", "acc") in PERCENT else ""
    f = f"+.{digits}f"
    text = f"{verb} {_name(diff['baseline'])} ({format(diff['mean'], f)}{unit}"
    if not math.isnan(diff["low"]):
        text += f", 95% CI {format(diff['low'], f)} to {format(diff['high'], f)}"
    if "p_holm" in diff and not math.isnan(diff["p_holm"]):
        text += f", Holm p {format_p(diff['p_holm'])}"
    return text + ")"


def seed_table(
    values: Mapping[str, Sequence[float]], *, scale: float = 1.0, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Per name: ``label``, ``n``, ``mean``, sample ``std``, and the ``t`` interval of the mean.

    ``values[name][r]`` is the metric of seed ``r``; ``scale`` multiplies it (100: percent).
    With one seed ``std``, ``low`` and ``high`` are NaN.
    """
    out = []
    for name, xs in values.items():
        xs = [scale * float(x) for x in xs]
        mean, std, n = mean_std(xs)
        ci = paired_difference(xs, [0.0] * n, confidence)
        out.append({"label": name, "n": n, "mean": mean, "std": std, "low": ci.low,
                    "high": ci.high})  # fmt: skip
    return out


def paired_rows(
    values: Mapping[str, Sequence[float]],
    baseline: str,
    *,
    scale: float = 1.0,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Every name but ``baseline`` minus ``baseline``, paired by seed (same seeds, same order).

    Rows with ``label`` (``"A − B"``), ``method``, ``baseline``, ``n``, ``mean``, sample ``std``,
    ``low``, ``high``, ``within_noise`` (the interval covers 0, or there is none) and ``claim``
    (``"beats"`` / ``"trails"`` / ``"within noise"``, no multiple-comparison correction).
    """
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among {list(values)}")
    base = [scale * float(x) for x in values[baseline]]
    out = []
    for name, xs in values.items():
        if name == baseline:
            continue
        d = paired_difference([scale * float(x) for x in xs], base, confidence)
        noise = d.within_noise or math.isnan(d.low)
        out.append({
            "label": f"{name} − {baseline}", "method": name, "baseline": baseline, "n": d.n,
            "mean": d.mean, "std": d.std, "low": d.low, "high": d.high, "within_noise": noise,
            "claim": "within noise" if noise else ("beats" if d.mean > 0 else "trails"),
        })  # fmt: skip
    return out
