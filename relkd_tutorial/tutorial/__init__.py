"""What exists only to serve the notebooks: shared runs, result sentences, widgets, plots.

Nothing in the core imports this package (``docs/architecture.md`` maps its modules); the names
below load on first use, so ``from relkd_tutorial.tutorial import say`` does not load the
benchmark.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {  # module: the names it gives the package
    "prose": ("say", "Sentence"),
    "runs": ("benchmark_runs", "summary_table", "paired_table", "paired_vs", "verdict"),
    "plots_stats": ("plot_intervals", "plot_paired"),
    "schematics": ("draw_schematic", "available_schematics"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
