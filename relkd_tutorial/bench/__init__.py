"""The benchmark: every method on the same teacher, data, schedule and seeds (see :mod:`.cli`).

    python -m relkd_tutorial.bench            # or the ``relkd-bench`` script

Its modules and the one-way arrows between them: ``docs/architecture.md``.
"""

# ruff: noqa: F401 - the imports below are the subpackage's public names

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
