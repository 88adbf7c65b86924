"""What exists only to serve the notebooks: shared runs, result sentences, widgets, plots.

Nothing in the core imports this package (``docs/architecture.md`` maps its modules); the names
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
    "verdict": "runs",
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
