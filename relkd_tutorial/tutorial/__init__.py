"""What exists only to serve the notebooks: shared runs, result sentences, widgets, plots.

:mod:`.runs` (the benchmark's runs and their tables), :mod:`.compare` (those results in words,
per-chapter statistics), :mod:`.committed` (notebook 06's view of ``results/``), :mod:`.prose`
(:func:`say` and the no-typed-results rule), :mod:`.plots_stats` (dot-and-interval plots),
:mod:`.schematics` (one figure per method); :mod:`.widgets` computes and :mod:`.plots` draws
(``*_refilled_grkd``: notebooks 04 and 05). Nothing in the core imports this package; the names
below load on first use, so ``from relkd_tutorial.tutorial import say`` does not load the
benchmark.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "say": "prose",
    "Sentence": "prose",
    "benchmark_runs": "runs",
    "summary_table": "runs",
    "paired_table": "runs",
    "paired_vs": "runs",
    "verdict": "compare",
    "plot_intervals": "plots_stats",
    "plot_paired": "plots_stats",
    "draw_schematic": "schematics",
    "available_schematics": "schematics",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
