"""relkd_tutorial: relational knowledge distillation, derived, implemented, tested, benchmarked."""

from ._checks import input_checks, set_input_checks
from .fastmode import fast_mode
from .methods import (
    CrossEntropy,
    Method,
    SetupData,
    Stage,
    StepInputs,
    available_methods,
    build_method,
    supervised_cross_entropy,
)

__version__ = "0.1.0"

__all__ = [
    "CrossEntropy",
    "Method",
    "SetupData",
    "Stage",
    "StepInputs",
    "available_methods",
    "build_method",
    "fast_mode",
    "input_checks",
    "set_input_checks",
    "supervised_cross_entropy",
]
