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

import torch
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
from .losses.refilled import (
    FORMS,
    class_centres,
    mine_triplets,
    refilled_classifier_kl,
    refilled_embedding_loss,
)
from .losses.rkd import rkd_angle_loss, rkd_distance_loss
from .losses.rrd import RRDLoss


@dataclass
class StepInputs:
    """Everything a method may use at one training step (all tensors on the training device)."""

    student_features: Tensor  # (B, D_S) pooled penultimate activations
    student_logits: Tensor  # (B, C_S)
    labels: Tensor  # (B,) int64, -1 marks an unlabelled image
    teacher_features: Tensor | None = None  # (B, D_T), no gradient
    teacher_logits: Tensor | None = None  # (B, C_T), no gradient
    index: Tensor | None = None  # (B,) each image's position in its data set

    def __post_init__(self) -> None:
        """Refuse fields of different batch sizes: features, logits and labels of one step must
        describe the same images (each loss only checks the tensors it is given, so a method
        reading features for one term and logits for another would pair different images)."""
        sizes = {
            name: value.shape[0]
            for name, value in vars(self).items()
            if isinstance(value, Tensor) and value.dim() > 0
        }
        if len(set(sizes.values())) > 1:
            raise ValueError(
                f"StepInputs fields must share the batch size B (their first dimension), got {sizes}"
            )


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


class _RankingMethod(Method):
    """Shared shape of the ranking variants: ``ce_weight CE + rank_weight L_rank`` (1 / 1, choice).

    Subclasses set ``self.loss`` (a ranking loss module taking ``(student_logits, teacher_logits)``).
    Terms: ``"ce"``, ``"rank"``.
    """

    needs_teacher = True
    loss: nn.Module

    def __init__(self, ce_weight: float, rank_weight: float) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.rank_weight = check_nonnegative("rank_weight", rank_weight)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms: dict[str, Tensor] = {}
        _weighted(terms, "ce", self.ce_weight, lambda: supervised_cross_entropy(z, inputs.labels))
        _weighted(terms, "rank", self.rank_weight, lambda: self.loss(z, t))
        return _total(terms, z)


class SoftRank(_RankingMethod):
    """Soft pairwise ranking: ``ce_weight CE + rank_weight L_soft`` (weights 1 / 1, choice).

    See :func:`~relkd_tutorial.losses.ranking.soft_pairwise_rank_loss`. Terms: ``"ce"``, ``"rank"``.
    """

    name = "rank_soft"

    def __init__(
        self,
        ce_weight: float = 1.0,
        rank_weight: float = 1.0,
        temperature: float = 1.0,
        teacher_temperature: float = 1.0,
    ) -> None:
        super().__init__(ce_weight, rank_weight)
        self.loss = SoftPairwiseRankLoss(temperature, teacher_temperature)


class ListwiseRank(_RankingMethod):
    """Listwise (Plackett-Luce) ranking: ``ce_weight CE + rank_weight L_PL`` (1 / 1, choice).

    See :func:`~relkd_tutorial.losses.ranking.listwise_rank_loss`. Terms: ``"ce"``, ``"rank"``.
    """

    name = "rank_listwise"

    def __init__(
        self,
        ce_weight: float = 1.0,
        rank_weight: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> None:
        super().__init__(ce_weight, rank_weight)
        self.loss = ListwiseRankLoss(temperature, top_k)


_LOGIT_AND_RELATION_METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (KD, RKD, RKDDistance, RKDAngle, GRKD, GRKDWithKD, SoftRank, ListwiseRank)
}


# ---------------------------------------------------------------------------------------------
# Embedding-based relational methods: RRD (DESIGN 2.3) and REFILLED (DESIGN 2.4)
# ---------------------------------------------------------------------------------------------


class RRD(Method):
    """RRD: ``L = ce_weight * CE + rrd_weight * L_RRD`` (DESIGN 2.3; defaults 1 and 1).

    Learnable part: the student projection head (in ``parameters()``); the teacher head is a frozen
    random projection. State: the queue of teacher embeddings (buffers, so it checkpoints). With
    ``update="after"`` (default) the batch is written in :meth:`after_step`, after the optimizer
    step; with ``update="before"`` it is written inside :meth:`loss_terms`, before the loss.

    Args:
        student_dim: ``D_S``, width of the student's pooled features.
        teacher_dim: ``D_T``, width of the teacher's pooled features.
        embed_dim: projection width ``d`` (128).
        queue_size: ``K`` (16384 as on CIFAR; choose ``K`` at most the training-set size).
        tau_s: student temperature (0.04).
        tau_t: teacher temperature (0.10).
        ce_weight: weight of the cross-entropy on labelled samples (1).
        rrd_weight: weight of ``L_RRD`` (1); RRD uses every sample, labelled or not.
        update: ``"after"`` or ``"before"``.
    """

    name = "rrd"
    needs_teacher = True

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        embed_dim: int = 128,
        queue_size: int = 16384,
        tau_s: float = 0.04,
        tau_t: float = 0.10,
        ce_weight: float = 1.0,
        rrd_weight: float = 1.0,
        update: str = "after",
    ) -> None:
        super().__init__()
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.rrd_weight = check_nonnegative("rrd_weight", rrd_weight)
        self.rrd = RRDLoss(student_dim, teacher_dim, embed_dim, queue_size, tau_s, tau_t, update)

    def _rrd_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        teacher_features = _teacher(inputs, "teacher_features", self.name)
        return {
            "ce": self.ce_weight * supervised_cross_entropy(inputs.student_logits, inputs.labels),
            "rrd": self.rrd_weight * self.rrd(inputs.student_features, teacher_features),
        }

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        return with_total(self._rrd_terms(inputs))

    @torch.no_grad()
    def after_step(self, inputs: StepInputs) -> None:
        """Write the batch's teacher embeddings into the queue (``update="after"`` only)."""
        if self.rrd.update == "after":
            self.rrd.update_queue(_teacher(inputs, "teacher_features", self.name))


class RRDKD(RRD):
    """RRD+KD: ``L = ce_weight * CE + kd_weight * L_KD(T) + rrd_weight * L_RRD``.

    Defaults 1, 1 (T = 4), 1 as in the RRD authors' CIFAR runs. ``L_KD`` is Hinton's
    ``T^2 (1/B) sum_i KL(softmax(t_i/T) || softmax(z_i/T))`` from :mod:`relkd_tutorial.losses.kd`,
    applied to every sample (the teacher needs no label). Other arguments as :class:`RRD`.
    """

    name = "rrd_kd"

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        embed_dim: int = 128,
        queue_size: int = 16384,
        tau_s: float = 0.04,
        tau_t: float = 0.10,
        ce_weight: float = 1.0,
        rrd_weight: float = 1.0,
        kd_weight: float = 1.0,
        kd_temperature: float = 4.0,
        update: str = "after",
    ) -> None:
        super().__init__(
            student_dim,
            teacher_dim,
            embed_dim,
            queue_size,
            tau_s,
            tau_t,
            ce_weight,
            rrd_weight,
            update,
        )
        self.kd_weight = check_nonnegative("kd_weight", kd_weight)
        self.kd_temperature = check_positive("kd_temperature", kd_temperature)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        if inputs.teacher_logits is None:
            raise ValueError("rrd_kd needs StepInputs.teacher_logits, shape (B, C); got None")
        terms = self._rrd_terms(inputs)
        kd = kd_loss(inputs.student_logits, inputs.teacher_logits, self.kd_temperature)
        return with_total({"ce": terms["ce"], "kd": self.kd_weight * kd, "rrd": terms["rrd"]})


class Refilled(Method):
    """REFILLED (DESIGN 2.4): two stages, ``"embedding"`` then ``"classifier"``.

    - ``"embedding"`` (the first ``embedding_fraction`` of the epochs, default 0.3):
      ``L = lambda1 * L1`` (no cross-entropy), relationship matching on semi-hard triplets mined on
      the student; ``form="triplet"`` or ``"tuple"``.
    - ``"classifier"`` (the rest): ``L = ce_weight * CE + lambda2 * KL`` against the teacher's
      embedding-induced local classifier over the batch's classes.

    Class centres: ``centres="global"`` (default) computes them once in :meth:`setup` from the
    teacher's features over the whole training set (``needs_setup`` is then ``True``) and keeps
    them in the ``class_centres`` buffer (checkpointed); ``centres="local"`` computes them from each
    batch (the CVPR version). The teacher's logits are never used, so the teacher may have been
    trained on other classes.

    Args:
        embedding_fraction: share of the epochs for stage 1, in ``(0, 1)`` (0.3; the papers train
            each stage for 200 epochs, i.e. 0.5 of an equal budget).
        form: ``"triplet"`` or ``"tuple"`` stage-1 loss.
        centres: ``"global"`` or ``"local"``.
        margin: semi-hard margin ``m`` (0.2).
        tau1: stage-1 temperature (4).
        tau2: stage-2 temperature (2).
        lambda1: stage-1 weight (1000).
        lambda2: stage-2 KL weight (100).
        ce_weight: stage-2 cross-entropy weight (1).
        num_classes: student class count for the global centres; by default the largest label in
            the setup data plus one (classes beyond it have no centre and raise if they occur).
        restrict_to_batch: ``True`` (the paper) uses only the batch's classes as columns;
            ``False`` uses every class with a centre.
    """

    name = "refilled"
    needs_teacher = True
    class_centres: Tensor

    def __init__(
        self,
        embedding_fraction: float = 0.3,
        form: str = "triplet",
        centres: str = "global",
        margin: float = 0.2,
        tau1: float = 4.0,
        tau2: float = 2.0,
        lambda1: float = 1000.0,
        lambda2: float = 100.0,
        ce_weight: float = 1.0,
        num_classes: int | None = None,
        restrict_to_batch: bool = True,
    ) -> None:
        if isinstance(embedding_fraction, bool) or not isinstance(embedding_fraction, (int, float)):
            raise TypeError("embedding_fraction must be a number in (0, 1)")
        if not 0 < embedding_fraction < 1:
            raise ValueError(f"embedding_fraction must lie in (0, 1), got {embedding_fraction}")
        # set before Method.__init__, which reads stages()
        self.embedding_fraction = float(embedding_fraction)
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if centres not in ("global", "local"):
            raise ValueError(f"centres must be 'global' or 'local', got {centres!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes}")
        self.form = form
        self.centre_mode = centres
        self.needs_setup = centres == "global"
        self.margin = check_positive("margin", margin)
        self.tau1 = check_positive("tau1", tau1)
        self.tau2 = check_positive("tau2", tau2)
        self.lambda1 = check_nonnegative("lambda1", lambda1)
        self.lambda2 = check_nonnegative("lambda2", lambda2)
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.num_classes = num_classes
        self.restrict_to_batch = bool(restrict_to_batch)
        # (C, D_T); empty until setup() (its shape is only known then; see _load_from_state_dict)
        self.register_buffer("class_centres", torch.zeros(0, 0))
        self.last_num_triplets = 0  # diagnostics: triplets mined at the last stage-1 step

    def stages(self) -> list[Stage]:
        f1 = self.embedding_fraction
        return [Stage("embedding", f1), Stage("classifier", 1.0 - f1)]

    @torch.no_grad()
    def setup(self, data: SetupData) -> None:
        """Global class centres from the teacher's features on the student's training set.

        Does nothing with ``centres="local"``. Labels ``-1`` are ignored.
        """
        if self.centre_mode != "global":
            return
        check_float_tensor("data.teacher_features", data.teacher_features, 2, "(N, D_T)")
        check_labels("data.labels", data.labels, data.teacher_features.shape[0])
        if not bool((data.labels >= 0).any()):
            raise ValueError("data.labels has no labelled sample: no class centre can be computed")
        num_classes = max(self.num_classes or 0, int(data.labels.max()) + 1)
        centres = class_centres(
            data.teacher_features, data.labels.to(data.teacher_features.device), num_classes
        )
        self.class_centres = centres.to(self.class_centres.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # the centres' shape is only known after setup(): adopt the checkpoint's shape
        key = prefix + "class_centres"
        if key in state_dict:
            self.class_centres = torch.empty_like(state_dict[key], device=self.class_centres.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _centres_for(self, inputs: StepInputs, teacher_features: Tensor) -> Tensor:
        num_classes = inputs.student_logits.shape[1]
        if self.centre_mode == "local":
            return class_centres(teacher_features, inputs.labels, num_classes)
        centres = self.class_centres  # (C', D_T)
        if centres.numel() == 0:
            raise RuntimeError(
                "refilled with centres='global' needs setup(SetupData) before the classifier stage"
            )
        if centres.shape[0] > num_classes:
            raise ValueError(
                f"the global centres cover {centres.shape[0]} classes but student_logits has "
                f"{num_classes} columns"
            )
        pad = centres.new_zeros(num_classes - centres.shape[0], centres.shape[1])  # no centre
        return torch.cat([centres, pad]) if pad.shape[0] else centres  # (C, D_T)

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        teacher_features = _teacher(inputs, "teacher_features", self.name)
        if self.stage == "embedding":
            a, p, n = mine_triplets(inputs.student_features, inputs.labels, self.margin)
            self.last_num_triplets = int(a.shape[0])
            l1 = refilled_embedding_loss(
                inputs.student_features,
                teacher_features,
                inputs.labels,
                self.margin,
                self.tau1,
                self.form,
                triplets=(a, p, n),
            )
            return with_total({"relation": self.lambda1 * l1})
        centres = self._centres_for(inputs, teacher_features)
        kl = refilled_classifier_kl(
            inputs.student_logits,
            teacher_features,
            inputs.labels,
            centres,
            self.tau2,
            self.restrict_to_batch,
        )
        ce = supervised_cross_entropy(inputs.student_logits, inputs.labels)
        return with_total({"ce": self.ce_weight * ce, "local_kl": self.lambda2 * kl})


def _registry() -> dict[str, type[Method]]:
    return {
        "ce": CrossEntropy,
        **_LOGIT_AND_RELATION_METHODS,
        "rrd": RRD,
        "rrd_kd": RRDKD,
        "refilled": Refilled,
    }


def build_method(name: str, **kwargs: object) -> Method:
    """Build a method by its short name (``"ce"``, ``"kd"``, ``"rkd"``, ``"grkd"``, ...)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(registry)}")
    return registry[name](**kwargs)  # type: ignore[arg-type]


def available_methods() -> list[str]:
    """Short names accepted by :func:`build_method`."""
    return sorted(_registry())
