"""The benchmark: every method on the same teacher, data, schedule and seeds (see :mod:`.cli`).

    python -m relkd_tutorial.bench            # or the ``relkd-bench`` script

Modules; the arrows point from a module to those it imports, never back:

    cli -> report -> figures -> settings        settings: methods, defaults, settings, labels
    report -> verdict -> settings               verdict: comparison families, Holm, the verdicts
    cli -> full -> runner -> workspace -> settings    store: runs.csv, histories.csv, meta.json
    cli -> parallel -> runner                   workspace: splits, the teacher, its cached outputs
    runner -> store, report -> store            runner: one run, the settings' runs, scheduled
    cli -> tune -> runner, tune -> search_space parallel: --jobs, runs in worker processes
    report -> tuned -> verdict, store           search_space, tune: --tune (Optuna), recipes
    tuned -> recipes -> settings, runner -> recipes   recipes: the tuned recipes file
                                                tuned: the tuned and default arms, what tuning does
"""

from .cli import main
from .settings import (
    DEFAULT_SETTINGS,
    METHOD_LABELS,
    METHODS,
    PAPER_DEFAULTS,
    Setting,
    default_settings,
    describe_params,
)
from .store import ResultStore, read_runs
from .workspace import teacher_fingerprint

__all__ = [
    "DEFAULT_SETTINGS",
    "METHODS",
    "METHOD_LABELS",
    "PAPER_DEFAULTS",
    "ResultStore",
    "Setting",
    "default_settings",
    "describe_params",
    "main",
    "read_runs",
    "teacher_fingerprint",
]
