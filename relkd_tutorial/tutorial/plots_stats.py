"""Dot-and-interval plots: the one way the course draws a comparison of methods.

A mean over seeds (:func:`.runs.summary_table`) or a paired difference (:func:`.runs.paired_table`,
beside a line at zero) is a dot with a line for its 95% interval; one seed: a hollow dot. Bars
(``style="bar"``) start at zero. The interval lines are one ``LineCollection`` with the gid
:data:`INTERVALS_GID`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes

from ..bench.settings import METRIC_LABELS, PERCENT, label
from .plots import _titled

INTERVALS_GID = "intervals"


def _entries(table: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rows = [r for r in table if not math.isnan(float(r.get("mean", math.nan)))]
    if not rows:
        raise ValueError("nothing to draw: no row of the table has a finite mean")
    return rows


def _draw(ax: Axes, rows: Sequence[Mapping[str, Any]], colors: Sequence[str], zero: bool,
          xlabel: str, title: str | None, bars: bool = False) -> Axes:  # fmt: skip
    """Each row's dot (over a bar from zero with ``bars``) and interval line (the first row on
    top); ``zero``: the axis includes 0."""
    ys = list(range(len(rows)))[::-1]  # the first row on top
    if bars:
        ax.barh(ys, [r["mean"] for r in rows], color=colors, alpha=0.35, height=0.6)
    keep = [i for i, r in enumerate(rows) if not (math.isnan(r["low"]) or math.isnan(r["high"]))]
    lines = ax.hlines(
        [ys[i] for i in keep], [rows[i]["low"] for i in keep], [rows[i]["high"] for i in keep],
        colors=[colors[i] for i in keep] or "k", linewidth=2,
    )  # fmt: skip
    lines.set_gid(INTERVALS_GID)
    for y, r, c in zip(ys, rows, colors, strict=True):
        hollow = math.isnan(r["low"])
        ax.plot([r["mean"]], [y], "o", color=c, markerfacecolor="white" if hollow else c,
                markersize=7, zorder=3)  # fmt: skip
    ax.set_yticks(ys, [str(r.get("label", r.get("method", ""))) for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    if zero:
        low, high = ax.get_xlim()
        ax.set_xlim(min(0.0, low), max(0.0, high))
    return _titled(ax, title, xlabel)


def plot_intervals(
    ax: Axes,
    table: Sequence[Mapping[str, Any]],
    *,
    style: str = "dot",
    zero: bool = False,
    title: str | None = None,
    xlabel: str | None = None,
    color: str | None = None,
) -> Axes:
    """Each method's mean (dot, or ``style="bar"``: a bar from zero) and its 95% interval, one
    row per ``label`` of a :func:`summary_table`. The axis includes zero with bars or ``zero``;
    ``xlabel`` defaults to the metric's label; ``color`` gives every row one colour (e.g. beside
    a :func:`plot_paired`, whose red and green mean a verdict), else one per method.
    """
    if style not in ("dot", "bar"):
        raise ValueError(f"style must be 'dot' or 'bar', got {style!r}")
    rows = _entries(table)
    colors = [color or f"C{i % 10}" for i in range(len(rows))]
    xlabel = xlabel or METRIC_LABELS.get(getattr(table, "metric", None), "mean")
    return _draw(ax, rows, colors, style == "bar" or zero, xlabel, title, style == "bar")


def plot_paired(
    ax: Axes,
    diffs: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    xlabel: str | None = None,
) -> Axes:
    """Paired differences of a :func:`paired_table` against its baseline: dot, 95% interval and
    a line at zero. An interval that excludes zero is in colour (green above, red below), one
    that covers it grey ("within noise"); one seed: a hollow dot, no interval.
    """
    rows = _entries(diffs)
    colors = [
        "0.5" if r["within_noise"] else ("tab:green" if r["mean"] > 0 else "tab:red") for r in rows
    ]
    ax.axvline(0.0, color="k", linewidth=1, zorder=1)
    baseline = next((r.get("baseline") for r in rows if r.get("baseline")), None)
    metric = getattr(diffs, "metric", None)
    name = METRIC_LABELS.get(metric, "difference").replace(" %", "")
    unit = "points, " if metric in PERCENT else ""
    vs = f" minus {label(baseline)}" if baseline else ""
    return _draw(ax, rows, colors, True, xlabel or f"{name}{vs} ({unit}95% paired CI)", title)
