"""Dot-and-interval plots (:mod:`relkd_tutorial.tutorial.plots_stats`): what is drawn is what
the tables computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from relkd_tutorial.tutorial.plots_stats import INTERVALS_GID, plot_intervals, plot_paired
from relkd_tutorial.tutorial.runs import paired_table, summary_table

ACC = {
    "ce": [0.70, 0.71, 0.69, 0.72],
    "kd": [0.75, 0.77, 0.76, 0.76],
    "rkd": [0.70, 0.73, 0.69, 0.74],
}


def rows() -> list[dict]:
    out = []
    for method, accs in ACC.items():
        for seed, acc in enumerate(accs):
            out.append(
                {"key": f"{method}{seed}", "setting": "transfer", "spec": "s", "phase": "final",
                 "method": method, "params": "{}", "seed": seed, "status": "ok", "note": "",
                 "acc": acc, "acc_tops": acc, "acc_footwear": acc, "kendall_tau": acc / 2,
                 "dist_corr": 0.5, "train_acc": 0.8, "seconds": 1.0, "peak_mem_mb": 1.0}
            )  # fmt: skip
    out.append(dict(out[0], key="g0", method="grkd", acc=0.8))  # one seed: no interval
    return out


def drawn_intervals(ax) -> list[tuple[float, float, float]]:
    """``(y, low, high)`` of every interval line on ``ax``, top row first."""
    (lines,) = [c for c in ax.collections if c.get_gid() == INTERVALS_GID]
    segs = [(float(s[0, 1]), float(s[0, 0]), float(s[1, 0])) for s in lines.get_segments()]
    return sorted(segs, key=lambda s: -s[0])


def test_plot_intervals_color_paints_every_row_alike():
    from matplotlib.colors import to_hex

    table = summary_table(rows(), "acc")
    for color, expected in ((None, len(table)), ("#555555", 1)):
        ax = plot_intervals(Figure().subplots(), table, color=color)
        dots = {to_hex(line.get_color()) for line in ax.get_lines()}
        assert len(dots) == expected
    assert dots == {"#555555"}


def test_plot_intervals_draws_the_tables_means_and_intervals():
    table = summary_table(rows())
    ax = Figure().subplots()
    assert plot_intervals(ax, table, title="transfer") is ax
    with_ci = [r for r in table if not math.isnan(r["low"])]
    got = drawn_intervals(ax)
    assert len(got) == len(with_ci) == 3
    for (_, low, high), r in zip(got, with_ci, strict=True):
        assert (low, high) == pytest.approx((r["low"], r["high"]))
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert [float(d.get_xdata()[0]) for d in dots] == pytest.approx([r["mean"] for r in table])
    assert dots[-1].get_markerfacecolor() == "white"  # GRKD: one seed, hollow, no interval
    ticks = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}
    assert sorted(ticks, key=lambda k: -ticks[k]) == ["CE", "KD", "RKD", "GRKD"]  # first on top
    assert ax.get_xlabel() == "top-1 %" and ax.get_title() == "transfer"
    assert ax.get_xlim()[0] > 0  # a dot plot need not start at zero


def test_bars_always_start_at_zero():
    table = summary_table(rows())
    ax = plot_intervals(Figure().subplots(), table, style="bar")
    assert ax.get_xlim()[0] <= 0.0
    bars = [p.get_width() for p in ax.patches]
    assert bars == pytest.approx([r["mean"] for r in table])
    assert all(p.get_x() == 0 for p in ax.patches)
    assert plot_intervals(Figure().subplots(), table, zero=True).get_xlim()[0] <= 0.0
    with pytest.raises(ValueError, match="style"):
        plot_intervals(Figure().subplots(), table, style="pie")


def test_plot_paired_draws_the_paired_intervals_and_a_zero_line():
    diffs = paired_table(rows(), "ce")
    ax = plot_paired(Figure().subplots(), diffs)
    got = drawn_intervals(ax)
    want = [(d["low"], d["high"]) for d in diffs if d["n"] >= 2]
    assert len(got) == len(want) == 2
    for (_, lo, hi), (w_lo, w_hi) in zip(got, want, strict=True):
        assert (lo, hi) == pytest.approx((w_lo, w_hi))
    zero = [line for line in ax.get_lines() if np.allclose(line.get_xdata(), 0.0)]
    assert zero, "no zero line"
    low, high = ax.get_xlim()
    assert low <= 0.0 <= high
    colors = {d["label"]: d["within_noise"] for d in diffs}
    assert colors["KD"] is False and colors["RKD"] is True  # KD separates, RKD does not
    assert "minus CE" in ax.get_xlabel() and "points" in ax.get_xlabel()


def test_nothing_to_draw_is_an_error():
    with pytest.raises(ValueError, match="nothing to draw"):
        plot_intervals(Figure().subplots(), [{"label": "CE", "mean": math.nan}])
