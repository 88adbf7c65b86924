"""Distillation methods, what the training loop calls at every step: :mod:`.base` (the
:class:`Method` interface, :class:`StepInputs`, :class:`CrossEntropy`), :mod:`.logit_relation`
(KD, RKD, GRKD, ranking, DIST, pseudo-labels), :mod:`.embedding` (RRD, REFILLED), :mod:`.compose`
(any method + KD) and :mod:`.registry` (:func:`build_method` by short name).
"""

# ruff: noqa: F401 - the imports below are the subpackage's public names

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
