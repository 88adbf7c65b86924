"""The report's plots, from the rows and tables of :mod:`.report`: each draws onto a given
matplotlib ``Axes`` and returns it; :func:`report_figures` draws them all."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .settings import (
    METHOD_LABELS,
    METHODS,
    METRIC_LABELS,
    _method_order,
    _ordered_settings,
    _scale,
    label,
)
from .verdict import find_entry, finished


def _std(e: dict[str, Any], metric: str) -> float:
    """The entry's standard deviation of ``metric``, 0 where there is none (one seed)."""
    return 0.0 if math.isnan(e[f"{metric}_std"]) else e[f"{metric}_std"]


def _per_method(ax: Any, entries: Sequence[dict[str, Any]], ylabel: str, setting: str) -> Any:
    """A panel's method axis (the entries' labels), y label, title and grid."""
    ax.set_xticks(range(len(entries)), [e["label"] for e in entries], rotation=45, ha="right")
    ax.set(ylabel=ylabel, title=setting)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_accuracy(summary: Sequence[dict[str, Any]], setting: str, ax: Any) -> Any:
    """Top-1, tops and footwear accuracy (mean ± std over seeds) per method."""
    entries = [e for e in summary if e["setting"] == setting and e["status"] != "n/a"]
    for offset, metric, marker in ((-0.2, "acc", "o"), (0.0, "acc_tops", "s"),
                                   (0.2, "acc_footwear", "^")):  # fmt: skip
        ax.errorbar([i + offset for i in range(len(entries))],
                    [100 * e[f"{metric}_mean"] for e in entries],
                    yerr=[100 * _std(e, metric) for e in entries], fmt=marker, capsize=3,
                    label=METRIC_LABELS[metric])  # fmt: skip
    return _per_method(ax, entries, "test accuracy (%)", setting)


def plot_metric(summary: Sequence[dict[str, Any]], setting: str, ax: Any, metric: str) -> Any:
    """One metric (e.g. Kendall tau) per method, mean ± std over seeds."""
    entries = [
        e for e in summary
        if e["setting"] == setting and e["status"] != "n/a" and not math.isnan(e[f"{metric}_mean"])
    ]  # fmt: skip
    k = _scale(metric)
    ax.bar(range(len(entries)), [k * e[f"{metric}_mean"] for e in entries],
           yerr=[k * _std(e, metric) for e in entries], capsize=3, color="C2")  # fmt: skip
    return _per_method(ax, entries, METRIC_LABELS[metric], setting)


def plot_differences(diffs: Sequence[dict[str, Any]], setting: str, ax: Any) -> Any:
    """Top-1 paired differences against CE and KD with their 95% intervals (horizontal)."""
    labels = []
    for baseline, color in (("ce", "C0"), ("kd", "C1")):
        for d in diffs:
            if (d["setting"], d["baseline"], d["metric"]) != (setting, baseline, "acc"):
                continue
            lo = d["mean"] - d["low"] if d["n"] >= 2 else 0.0
            hi = d["high"] - d["mean"] if d["n"] >= 2 else 0.0
            ax.errorbar(d["mean"], len(labels), xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
            labels.append(f"{label(d['method'])} − {METHOD_LABELS[baseline]}")
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set(xlabel=f"paired difference, {METRIC_LABELS['acc']} (points), 95% CI", title=setting)
    ax.grid(axis="x", alpha=0.3)
    return ax


CURVE_LABELS = {
    "eval_acc": "test accuracy (%)",
    "train_acc": "training accuracy (%, labelled images)",
}


def curve_value(
    rows: Sequence[dict[str, Any]], histories: dict[str, list[dict[str, float]]], setting: str
) -> str:
    """``"eval_acc"`` if the setting's final runs recorded test accuracy per epoch, else
    ``"train_acc"`` (so a setting without ``curves`` still gets a meaningful panel)."""
    for r in finished(rows, setting):
        if any(not math.isnan(h.get("eval_acc", math.nan)) for h in histories.get(r["key"], [])):
            return "eval_acc"
    return "train_acc"


def plot_curves(
    rows: Sequence[dict[str, Any]],
    histories: dict[str, list[dict[str, float]]],
    setting: str,
    ax: Any,
    value: str = "eval_acc",
) -> Any:
    """Learning curves of the final runs: ``value`` per epoch, mean over seeds, per method;
    ``"eval_acc"`` (recorded where ``curves=True``) or ``"train_acc"`` (on the labelled images
    of each epoch's batches, recorded for every run)."""
    finals = finished(rows, setting)
    for i, method in enumerate(sorted({r["method"] for r in finals}, key=_method_order)):
        curves = [
            histories[r["key"]] for r in finals if r["method"] == method and r["key"] in histories
        ]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = [sum(c[e][value] for c in curves) / len(curves) for e in range(n)]
        k = 100.0 if value.endswith("acc") else 1.0
        ax.plot(range(1, n + 1), [k * m for m in mean], label=label(method),
                color=f"C{i % 10}", ls="-" if i < 10 else "--")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(CURVE_LABELS.get(value, value))
    ax.set_title(f"{setting}: learning curves (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return ax


def seconds_of(summary: Sequence[dict[str, Any]], setting: str, method: str) -> float | None:
    """The mean training seconds per run of ``method`` in ``setting`` (``None``: not run, n/a)."""
    e = find_entry(summary, setting=setting, method=method)
    return None if e is None or e["status"] == "n/a" else e["seconds_mean"]


def plot_seconds(summary: Sequence[dict[str, Any]], ax: Any) -> Any:
    """Training seconds per run, per method and setting (where the time goes)."""
    settings = _ordered_settings(summary)
    width = 0.8 / max(1, len(settings))
    for j, s in enumerate(settings):
        values = [seconds_of(summary, s, method) or 0.0 for method in METHODS]
        ax.bar([i + j * width for i in range(len(METHODS))], values, width, label=s)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(METHODS))],
                  [METHOD_LABELS[m] for m in METHODS], rotation=45, ha="right")  # fmt: skip
    ax.set_ylabel("seconds per training run")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def _grid(n: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A figure of ``n`` panels of ``size`` (width, height) each, two per row. Built without pyplot
    (choice): no GUI backend is touched and nothing stays open; a notebook shows it with
    ``display(fig)``."""
    from matplotlib.figure import Figure

    cols = min(n, 2)
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(size[0] * cols, size[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def report_figures(
    rows: Sequence[dict[str, Any]],
    summary: Sequence[dict[str, Any]],
    diffs: Sequence[dict[str, Any]],
    histories: dict[str, Any],
) -> dict[str, Any]:
    """The report's figures by file stem (accuracy, differences, kendall_tau, curves, seconds)
    from one arm's ``rows``, their summary and their differences against CE and KD."""
    settings = _ordered_settings([r for r in rows if r["phase"] == "final"])
    if not settings:
        return {}
    taus = [s for s in settings if any(e["setting"] == s and not math.isnan(
        e.get("kendall_tau_mean", math.nan)) for e in summary)]  # fmt: skip
    panels = {  # stem: the settings with a panel (seconds: one of all), its size, how one is drawn
        "accuracy": (settings, (5.0, 4.0), lambda s, ax: plot_accuracy(summary, s, ax)),
        "differences": (settings, (5.0, 5.5), lambda s, ax: plot_differences(diffs, s, ax)),
        "kendall_tau": (taus, (5.0, 4.0), lambda s, ax: plot_metric(summary, s, ax, "kendall_tau")),
        "curves": (settings, (5.0, 4.0), lambda s, ax: plot_curves(
            rows, histories, s, ax, value=curve_value(rows, histories, s))),
        "seconds": (["all"], (9.0, 4.0), lambda _, ax: plot_seconds(summary, ax)),
    }  # fmt: skip
    figures: dict[str, Any] = {}
    for stem, (chosen, size, draw) in panels.items():
        if not chosen:
            continue
        fig, axes = _grid(len(chosen), size)
        for s, ax in zip(chosen, axes, strict=False):
            draw(s, ax)
        if stem == "accuracy":
            axes[0].legend(fontsize=8)
        fig.tight_layout()
        figures[stem] = fig
    return figures
