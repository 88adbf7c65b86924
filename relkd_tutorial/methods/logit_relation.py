"""Logit and relation methods: KD, RKD, GRKD, the ranking variants, DIST, the pseudo-label control. None keeps state between steps."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

from torch import Tensor

from .._checks import (
    LossModule,
    check_choice,
    check_float_tensor,
    check_labels,
    check_nonnegative,
    check_positive,
)
from ..losses.dist import dist_inter_loss, dist_intra_loss
from ..losses.grkd import GRKDLoss
from ..losses.kd import kd_loss
from ..losses.ranking import ListwiseRankLoss, SoftPairwiseRankLoss
from ..losses.rkd import rkd_angle_loss, rkd_distance_loss
from .base import Method, StepInputs, _teacher, _total, _weighted, masked_cross_entropy


class KD(Method):
    """Hinton KD: ``L = ce_weight * CE + kd_weight * L_KD(T)``; terms ``"ce"``, ``"kd"``.

    Defaults: the CRD/RepDistiller convention ``0.1 CE + 0.9 KD``, ``T = 4`` (``docs/kd.md``); CE
    on the labelled samples, KD on all.
    """

    name = "kd"
    needs_teacher = True

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 0.9, temperature: float = 4.0):
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.kd_weight = check_nonnegative("kd_weight", kd_weight)
        self.temperature = check_positive("temperature", temperature)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        kd = partial(kd_loss, temperature=self.temperature)
        return self._logit_terms(inputs, ("kd", self.kd_weight, kd))


RKD_CONVENTIONS = {"cifar": (1.0, 25.0, 50.0), "metric": (0.0, 1.0, 2.0)}


class RKD(Method):
    """RKD on the pooled features: ``ce_weight CE + distance_weight L_D + angle_weight L_A``.

    ``convention="cifar"`` (default): 1 / 25 / 50 (RepDistiller, mdistiller); ``"metric"``: the
    authors' metric-learning 0 / 1 / 2. An explicit weight overrides the convention's; a term with
    weight 0 is neither computed nor reported. Terms ``"ce"``, ``"rkd_distance"``, ``"rkd_angle"``.
    """

    name = "rkd"
    needs_teacher = True
    default_weights: tuple[float | None, float | None, float | None] = (None, None, None)

    def __init__(
        self,
        ce_weight: float | None = None,
        distance_weight: float | None = None,
        angle_weight: float | None = None,
        convention: str = "cifar",
    ) -> None:
        super().__init__()
        base = RKD_CONVENTIONS[check_choice("convention", convention, tuple(RKD_CONVENTIONS))]
        given = (ce_weight, distance_weight, angle_weight)
        ce, dist, angle = (
            g if g is not None else d if d is not None else b
            for g, d, b in zip(given, self.default_weights, base, strict=True)
        )
        self.convention = convention
        self.ce_weight = check_nonnegative("ce_weight", ce)
        self.distance_weight = check_nonnegative("distance_weight", dist)
        self.angle_weight = check_nonnegative("angle_weight", angle)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        f_s = inputs.student_features
        f_t = _teacher(inputs, "teacher_features", self.name)
        z = inputs.student_logits
        terms = self._ce_terms(inputs)
        _weighted(terms, "rkd_distance", self.distance_weight, lambda: rkd_distance_loss(f_s, f_t))
        _weighted(terms, "rkd_angle", self.angle_weight, lambda: rkd_angle_loss(f_s, f_t))
        return _total(terms, z)


class RKDDistance(RKD):
    """RKD-D: the distance potential only (``angle_weight`` defaults to 0)."""

    name = "rkd_d"
    default_weights = (None, None, 0.0)


class RKDAngle(RKD):
    """RKD-A: the angle potential only (``distance_weight`` defaults to 0)."""

    name = "rkd_a"
    default_weights = (None, 0.0, None)


class _LogitLossMethod(Method):
    """``ce_weight CE + <term>_weight L`` for a loss module ``loss_class`` on the student's and the
    teacher's logits (both weights 1 by default, choice); terms ``"ce"`` and ``term``.

    The constructor takes the two weights, then ``loss_class``'s options with its defaults, by
    position or name; they are its signature (``help()``, IDEs and ``build_method`` read it).
    """

    needs_teacher = True
    term: str  # the loss term's name; its weight is the attribute ``<term>_weight``
    loss_class: type[LossModule]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        weights = [
            inspect.Parameter(w, kind, default=1.0, annotation="float")
            for w in ("ce_weight", f"{cls.term}_weight")
        ]
        options = inspect.signature(cls.loss_class).parameters.values()
        cls.__signature__ = inspect.Signature([*weights, *options], return_annotation=None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        bound = self.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        ce_weight, weight, *options = bound.arguments.values()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        setattr(self, f"{self.term}_weight", check_nonnegative(f"{self.term}_weight", weight))
        self.loss = self.loss_class(*options)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        weight = getattr(self, f"{self.term}_weight")
        return self._logit_terms(inputs, (self.term, weight, self.loss))


class GRKD(_LogitLossMethod):
    """GRKD: ``ce_weight CE + grkd_weight L_GR`` (1 / 1, ``tau = 1``; ``docs/grkd.md``); the other
    options are :func:`~relkd_tutorial.losses.grkd.grkd_loss`'s. Terms ``"ce"``, ``"grkd"``.
    """

    name = "grkd"
    term = "grkd"
    loss_class = GRKDLoss


class SoftRank(_LogitLossMethod):
    """Soft pairwise ranking (:func:`~relkd_tutorial.losses.ranking.soft_pairwise_rank_loss`)."""

    name = "rank_soft"
    term = "rank"
    loss_class = SoftPairwiseRankLoss


class ListwiseRank(_LogitLossMethod):
    """Listwise Plackett-Luce ranking (:func:`~relkd_tutorial.losses.ranking.listwise_rank_loss`)."""

    name = "rank_listwise"
    term = "rank"
    loss_class = ListwiseRankLoss


class DIST(Method):
    """DIST: ``ce_weight CE + beta tau^2 L_inter + gamma tau^2 L_intra`` (Huang et al. 2022).

    :func:`~relkd_tutorial.losses.dist.dist_loss`; defaults 1 / 1 / 1, ``tau = 1`` (the paper's
    weights, the authors' code's default; ``docs/dist.md``). A term with weight 0 is neither
    computed nor reported. Terms ``"ce"``, ``"dist_inter"``, ``"dist_intra"``.
    """

    name = "dist"
    needs_teacher = True

    def __init__(
        self,
        ce_weight: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.beta = check_nonnegative("beta", beta)
        self.gamma = check_nonnegative("gamma", gamma)
        self.temperature = check_positive("temperature", temperature)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        inter = partial(dist_inter_loss, temperature=self.temperature)
        intra = partial(dist_intra_loss, temperature=self.temperature)
        return self._logit_terms(
            inputs, ("dist_inter", self.beta, inter), ("dist_intra", self.gamma, intra)
        )


def pseudo_label_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy on the teacher's top class over the unlabelled images of a batch.

    ``L_PL = -(1/|U|) sum_{i in U} log softmax(z_i)_{argmax_c t_ic}``, ``U = {i : y_i = -1}``:
    hard labels, no temperature (Lee, 2013, with the teacher as the labeller); ties go to the
    lowest class. No unlabelled image: exactly 0 with a gradient path
    (:func:`~relkd_tutorial.methods.base.masked_cross_entropy`). ``student_logits`` and
    ``teacher_logits`` (over the student's classes) ``(B, C)``, ``labels`` ``(B,)`` in ``[-1, C)``.
    """
    check_float_tensor("student_logits", student_logits, 2, "(B, C)")
    check_float_tensor("teacher_logits", teacher_logits, 2, "(B, C)")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "pseudo-labels need the teacher's logits over the student's classes: teacher_logits "
            f"{tuple(teacher_logits.shape)} != student_logits {tuple(student_logits.shape)}"
        )
    check_labels("labels", labels, student_logits.shape[0], student_logits.shape[1])
    return masked_cross_entropy(student_logits, teacher_logits.argmax(dim=1), labels < 0)


class PseudoLabel(Method):
    """The pseudo-label control: ``ce_weight CE(labels) + pseudo_weight L_PL`` (1 / 1, choice).

    CE on the teacher's top class over the unlabelled images (:func:`pseudo_label_loss`): how much
    of a logit method's gain in transfer is the teacher's *labels* rather than its dark knowledge. A
    batch without unlabelled images is pure CE. Terms ``"ce"``, ``"pseudo"``.
    """

    name = "pseudo_label"
    needs_teacher = True

    def __init__(self, ce_weight: float = 1.0, pseudo_weight: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.pseudo_weight = check_nonnegative("pseudo_weight", pseudo_weight)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        pseudo = partial(pseudo_label_loss, labels=inputs.labels)
        return self._logit_terms(inputs, ("pseudo", self.pseudo_weight, pseudo))


_LOGIT_AND_RELATION_METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (KD, RKD, RKDDistance, RKDAngle, GRKD, SoftRank, ListwiseRank, DIST, PseudoLabel)
}
