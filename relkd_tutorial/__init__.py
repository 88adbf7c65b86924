"""relkd_tutorial: relational knowledge distillation, derived, implemented, tested, benchmarked."""

from ._checks import input_checks, set_input_checks
from .methods import (
    RRD,
    RRDKD,
    CrossEntropy,
    Method,
    Refilled,
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
    "RRD",
    "RRDKD",
    "Refilled",
    "SetupData",
    "Stage",
    "StepInputs",
    "available_methods",
    "build_method",
    "input_checks",
    "set_input_checks",
    "supervised_cross_entropy",
]
