"""What exists only to serve the notebooks: shared runs, result sentences, widget computations, plots.

- :mod:`~relkd_tutorial.tutorial.runs`: :func:`benchmark_runs` gives every chapter the
  benchmark's own runs (committed ``results/`` first, then an on-disk cache trained once per
  machine), and :func:`summary_table` / :func:`paired_table` / :func:`paired_vs` their statistics.
- :mod:`~relkd_tutorial.tutorial.committed`: notebook 06's view of the committed ``results/``,
  setting by setting (complete, partial or absent, with the command that adds what is missing),
  a family of comparisons as a table for :func:`plot_paired`, and the verdict summary.
- :mod:`~relkd_tutorial.tutorial.prose`: :func:`say` renders a result sentence from computed
  values; the rule it shares with ``tests/test_generated_prose.py`` (no typed result numbers).
- :mod:`~relkd_tutorial.tutorial.plots_stats`: dot-and-interval plots of those tables.
- :mod:`~relkd_tutorial.tutorial.schematics`: :func:`draw_schematic`, one boxes-and-arrows
  figure per method (what flows from the teacher to the student).
- :mod:`~relkd_tutorial.tutorial.widgets` computes (pure functions, plain outputs) and
  :mod:`~relkd_tutorial.tutorial.plots` draws (onto a given ``Axes``); the ``*_refilled_grkd``
  modules do the same for notebooks 04 and 05.

Nothing in the core imports this package. The names below are imported on first use, so
``from relkd_tutorial.tutorial import say`` does not load the benchmark.
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
