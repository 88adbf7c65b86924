"""Distillation methods, what the training loop calls at every step: :mod:`.base` (the
:class:`Method` interface, :class:`StepInputs`, :class:`CrossEntropy`), :mod:`.logit_relation`
(KD, RKD, GRKD, ranking, DIST, pseudo-labels), :mod:`.embedding` (RRD, REFILLED), :mod:`.compose`
(any method + KD) and :mod:`.registry` (:func:`build_method` by short name).
"""

from .base import (
    CrossEntropy,
    Method,
    SetupData,
    Stage,
    StepInputs,
    supervised_cross_entropy,
    with_total,
)
from .compose import RRDKD, GRKDWithKD, WithKD, with_kd
from .embedding import RRD, Refilled
from .logit_relation import (
    DIST,
    GRKD,
    KD,
    RKD,
    RKD_CONVENTIONS,
    ListwiseRank,
    PseudoLabel,
    RKDAngle,
    RKDDistance,
    SoftRank,
)
from .registry import available_methods, build_method

__all__ = [
    "CrossEntropy",
    "DIST",
    "GRKD",
    "GRKDWithKD",
    "KD",
    "ListwiseRank",
    "Method",
    "PseudoLabel",
    "RKD",
    "RKDAngle",
    "RKDDistance",
    "RKD_CONVENTIONS",
    "RRD",
    "RRDKD",
    "Refilled",
    "SetupData",
    "SoftRank",
    "Stage",
    "StepInputs",
    "available_methods",
    "build_method",
    "WithKD",
    "supervised_cross_entropy",
    "with_kd",
    "with_total",
]
