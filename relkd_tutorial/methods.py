"""Distillation methods: what the training loop calls at every step.

A *method* turns one step's network outputs into a dict of named loss terms. The training loop
(:mod:`relkd_tutorial.train`) knows no method by name: it asks ``method.loss_terms(inputs)`` for
the dict, back-propagates ``terms["loss"]``, logs every other entry, and calls
``method.after_step(inputs)`` so that stateful methods (RRD's queue) can update. Everything a
method needs beyond the step's tensors is declared through attributes and hooks:

- ``needs_teacher``: the loop supplies teacher features and logits (``StepInputs.teacher_*``).
- ``stages()``: a multi-stage schedule (REFILLED); the loop splits the epochs by each stage's
  ``fraction``, builds a fresh optimizer and schedule per stage and calls ``set_stage`` first.
- ``needs_setup`` / ``setup(data)``: one pass of the teacher over the whole un-augmented training
  set before training (REFILLED's global class centres).
- learnable parts (projection heads) are sub-modules, so ``method.parameters()`` joins the
  optimizer; state (a queue) lives in buffers, so ``method.state_dict()`` joins the checkpoint.

Convention for the returned dict: ``"loss"`` is the scalar to back-propagate; every other entry
is a *weighted* contribution (``weight * term``), and the contributions sum to ``"loss"``. So a
plot of the entries shows exactly what the optimizer saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_float_tensor,
    check_labels,
    check_nonnegative,
    check_positive,
)
from .losses.grkd import GRKDLoss
from .losses.kd import kd_loss
from .losses.ranking import ListwiseRankLoss, SoftPairwiseRankLoss
from .losses.rkd import rkd_angle_loss, rkd_distance_loss


@dataclass
class StepInputs:
    """Everything a method may use at one training step (all tensors on the training device)."""

    student_features: Tensor  # (B, D_S) pooled penultimate activations
    student_logits: Tensor  # (B, C_S)
    labels: Tensor  # (B,) int64, -1 marks an unlabelled image
    teacher_features: Tensor | None = None  # (B, D_T), no gradient
    teacher_logits: Tensor | None = None  # (B, C_T), no gradient
    index: Tensor | None = None  # (B,) each image's position in its data set


@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage schedule: a name and its share of the epochs."""

    name: str
    fraction: float = 1.0


@dataclass
class SetupData:
    """The teacher's outputs over the whole un-augmented training set, for ``Method.setup``."""

    teacher_features: Tensor  # (N, D_T)
    teacher_logits: Tensor  # (N, C_T)
    labels: Tensor  # (N,) student labels, -1 = unlabelled


def supervised_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled samples of a batch (label ``-1`` = unlabelled).

    ``CE = -(1/|L|) sum_{i in L} log softmax(z_i)_{y_i}``, ``L = {i : y_i >= 0}``. A batch with no
    labelled sample gives exactly 0 with a gradient path (``0 * logits.sum()``), never 0/0.

    Args:
        logits: ``(B, C)`` student logits.
        labels: ``(B,)`` integer labels in ``[-1, C)``.
    """
    check_float_tensor("logits", logits, 2, "(B, C)")
    check_labels("labels", labels, logits.shape[0], logits.shape[1])
    labelled = labels >= 0  # (B,)
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled].float(), labels[labelled])


def with_total(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add ``"loss"`` = the sum of the weighted contributions to a dict of terms."""
    total = sum(terms.values())
    assert isinstance(total, Tensor)
    return {"loss": total, **terms}


class Method(nn.Module):
    """Base class of all methods. Subclasses implement :meth:`loss_terms`."""

    name: str = "method"
    needs_teacher: bool = False
    needs_setup: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.stage = self.stages()[0].name

    def stages(self) -> list[Stage]:
        """The schedule: one stage covering all epochs unless a method says otherwise."""
        return [Stage("main", 1.0)]

    def set_stage(self, name: str) -> None:
        """Switch to the named stage (called by the loop before each stage's first epoch)."""
        names = [s.name for s in self.stages()]
        if name not in names:
            raise ValueError(f"{type(self).__name__} has stages {names}, not {name!r}")
        self.stage = name

    def setup(self, data: SetupData) -> None:  # noqa: B027 - optional hook
        """Optional one-off pass over the training set's teacher outputs (see ``needs_setup``)."""

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        """Return ``{"loss": total, name: weighted term, ...}`` for one step."""
        raise NotImplementedError

    def after_step(self, inputs: StepInputs) -> None:  # noqa: B027 - optional hook
        """Optional per-step state update after the optimizer step (e.g. a queue write)."""

    def forward(self, inputs: StepInputs) -> dict[str, Tensor]:
        return self.loss_terms(inputs)


class CrossEntropy(Method):
    """Plain supervised training: ``L = CE(z, y)``. The baseline every method is compared with."""

    name = "ce"

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        return with_total({"ce": supervised_cross_entropy(inputs.student_logits, inputs.labels)})


# --------------------------------------------------------------------------------------------
# Logit and relation methods: KD, RKD, GRKD and the ranking variants
# (losses in relkd_tutorial.losses.{kd, rkd, grkd, ranking})
# --------------------------------------------------------------------------------------------


def _teacher(inputs: StepInputs, field: str, method: str) -> Tensor:
    """The teacher tensor a method needs, or a clear error if the loop did not supply it."""
    value = getattr(inputs, field)
    if value is None:
        raise ValueError(f"method {method!r} needs StepInputs.{field} (it has needs_teacher=True)")
    return value.detach()


def _weighted(
    terms: dict[str, Tensor], name: str, weight: float, compute: Callable[[], Tensor]
) -> None:
    """Add ``weight * compute()`` as ``terms[name]``; a weight of 0 skips the term entirely."""
    if weight > 0:
        terms[name] = weight * compute()


def _total(terms: dict[str, Tensor], student_logits: Tensor) -> dict[str, Tensor]:
    """``with_total(terms)``; if every weight was 0, a zero ``"loss"`` that still has a graph."""
    if not terms:
        return {"loss": 0.0 * student_logits.sum()}
    return with_total(terms)


class KD(Method):
    """Hinton KD: ``L = ce_weight * CE + kd_weight * L_KD(T)``.

    Defaults are the CRD/RepDistiller benchmark convention ``0.1 CE + 0.9 KD`` with ``T = 4``
    (DESIGN Sec. 2.1). Terms: ``"ce"``, ``"kd"``; CE on the labelled samples only, KD on all.
    """

    name = "kd"
    needs_teacher = True

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 0.9, temperature: float = 4.0):
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.kd_weight = check_nonnegative("kd_weight", kd_weight)
        self.temperature = check_positive("temperature", temperature)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
        _weighted(terms, "kd", self.kd_weight, lambda: kd_loss(z, t, self.temperature))
        return _total(terms, z)


RKD_CONVENTIONS = {"cifar": (1.0, 25.0, 50.0), "metric": (0.0, 1.0, 2.0)}


class RKD(Method):
    """RKD on the pooled penultimate features: ``ce_weight CE + distance_weight L_D + angle_weight L_A``.

    ``convention="cifar"`` (default): weights 1 / 25 / 50 (RepDistiller, mdistiller);
    ``convention="metric"``: the authors' metric-learning setting 0 / 1 / 2 (no CE). An explicit
    weight overrides the convention's. A term with weight 0 is neither computed nor reported
    (the angle term is the expensive one). Terms: ``"ce"``, ``"rkd_distance"``, ``"rkd_angle"``.
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
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
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


class GRKD(Method):
    """GRKD: ``ce_weight CE + grkd_weight L_GR`` (lambda = 1, tau = 1; DESIGN Sec. 2.5).

    ``top_k`` / ``weighting`` select the group and the pair weights of
    :func:`~relkd_tutorial.losses.grkd.grkd_loss`. Terms: ``"ce"``, ``"grkd"``.
    """

    name = "grkd"
    needs_teacher = True

    def __init__(
        self,
        ce_weight: float = 1.0,
        grkd_weight: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        weighting: str = "uniform",
    ) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.grkd_weight = check_nonnegative("grkd_weight", grkd_weight)
        self.loss = GRKDLoss(temperature, top_k, weighting)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
        _weighted(terms, "grkd", self.grkd_weight, lambda: self.loss(z, t))
        return _total(terms, z)


class GRKDWithKD(GRKD):
    """GRKD+KD: ``ce_weight CE + kd_weight L_KD(T=4) + grkd_weight L_GR``, weights 1 / 1 / 1.

    (choice: the RRD+KD / CRD+KD convention of weight 1 for each term.)
    Terms: ``"ce"``, ``"kd"``, ``"grkd"``.
    """

    name = "grkd_kd"

    def __init__(
        self,
        ce_weight: float = 1.0,
        grkd_weight: float = 1.0,
        kd_weight: float = 1.0,
        temperature: float = 1.0,
        kd_temperature: float = 4.0,
        top_k: int | None = None,
        weighting: str = "uniform",
    ) -> None:
        super().__init__(ce_weight, grkd_weight, temperature, top_k, weighting)
        self.kd_weight = check_nonnegative("kd_weight", kd_weight)
        self.kd_temperature = check_positive("kd_temperature", kd_temperature)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
        _weighted(terms, "kd", self.kd_weight, lambda: kd_loss(z, t, self.kd_temperature))
        _weighted(terms, "grkd", self.grkd_weight, lambda: self.loss(z, t))
        return _total(terms, z)


class SoftRank(Method):
    """Soft pairwise ranking: ``ce_weight CE + rank_weight L_soft`` (weights 1 / 1, choice).

    See :func:`~relkd_tutorial.losses.ranking.soft_pairwise_rank_loss`. Terms: ``"ce"``, ``"rank"``.
    """

    name = "rank_soft"
    needs_teacher = True

    def __init__(
        self,
        ce_weight: float = 1.0,
        rank_weight: float = 1.0,
        temperature: float = 1.0,
        teacher_temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.rank_weight = check_nonnegative("rank_weight", rank_weight)
        self.loss = SoftPairwiseRankLoss(temperature, teacher_temperature)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
        _weighted(terms, "rank", self.rank_weight, lambda: self.loss(z, t))
        return _total(terms, z)


class ListwiseRank(Method):
    """Listwise (Plackett-Luce) ranking: ``ce_weight CE + rank_weight L_PL`` (1 / 1, choice).

    See :func:`~relkd_tutorial.losses.ranking.listwise_rank_loss`. Terms: ``"ce"``, ``"rank"``.
    """

    name = "rank_listwise"
    needs_teacher = True

    def __init__(
        self,
        ce_weight: float = 1.0,
        rank_weight: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.rank_weight = check_nonnegative("rank_weight", rank_weight)
        self.loss = ListwiseRankLoss(temperature, top_k)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
        _weighted(terms, "rank", self.rank_weight, lambda: self.loss(z, t))
        return _total(terms, z)


_LOGIT_AND_RELATION_METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (KD, RKD, RKDDistance, RKDAngle, GRKD, GRKDWithKD, SoftRank, ListwiseRank)
}


def _registry() -> dict[str, type[Method]]:
    return {"ce": CrossEntropy, **_LOGIT_AND_RELATION_METHODS}


def build_method(name: str, **kwargs: object) -> Method:
    """Build a method by its short name (``"ce"``, ``"kd"``, ``"rkd"``, ``"grkd"``, ...)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(registry)}")
    return registry[name](**kwargs)  # type: ignore[arg-type]


def available_methods() -> list[str]:
    """Short names accepted by :func:`build_method`."""
    return sorted(_registry())
