"""Distillation methods: what the training loop calls at every step.

- :mod:`~relkd_tutorial.methods.base`: :class:`Method` (the seams the loop uses: ``needs_teacher``,
  ``needs_setup``/``setup``, ``stages``/``set_stage``, ``loss_terms``, ``after_step``),
  :class:`StepInputs`, :class:`Stage`, :class:`SetupData`, :class:`CrossEntropy`;
- :mod:`~relkd_tutorial.methods.logit_relation`: KD, RKD, GRKD, the ranking variants, DIST and
  the pseudo-label control;
- :mod:`~relkd_tutorial.methods.embedding`: RRD and REFILLED (heads, a queue, stages, a setup pass);
- :mod:`~relkd_tutorial.methods.compose`: any method + KD (:func:`with_kd`; ``"rrd_kd"``,
  ``"grkd_kd"``, ``"<name>+kd"``);
- :mod:`~relkd_tutorial.methods.registry`: :func:`build_method` by short name.
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
