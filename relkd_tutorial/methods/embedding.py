"""Embedding-based relational methods, the stateful ones: RRD (a learnable head, a queue) and REFILLED (two stages, a setup pass)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import (
    check_choice,
    check_float_tensor,
    check_labels,
    check_nonnegative,
    check_optional_count,
    check_positive,
)
from ..losses.refilled import (
    FORMS,
    centre_labels,
    class_centres,
    refilled_classifier_kl,
    refilled_embedding_loss,
)
from ..losses.rrd import RRDLoss
from .base import (
    Method,
    SetupData,
    Stage,
    StepInputs,
    _teacher,
    supervised_cross_entropy,
    with_total,
)


class RRD(Method):
    """RRD: ``L = ce_weight * CE + rrd_weight * L_RRD`` (defaults 1 and 1; ``docs/rrd.md``).

    The options are :class:`~relkd_tutorial.losses.rrd.RRDLoss`'s (``student_dim``/``teacher_dim``:
    the pooled feature widths ``D_S``/``D_T``). The student head is learnable, the queue is a buffer
    (it checkpoints); ``update="after"`` writes the batch in :meth:`after_step`, ``"before"`` inside
    :meth:`loss_terms`. RRD uses every sample, labelled or not; CE the labelled ones.
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

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        teacher_features = _teacher(inputs, "teacher_features", self.name)
        terms = self._ce_terms(inputs, keep_zero=True)
        terms["rrd"] = self.rrd_weight * self.rrd(inputs.student_features, teacher_features)
        return with_total(terms)

    @torch.no_grad()
    def after_step(self, inputs: StepInputs) -> None:
        """Write the batch's teacher embeddings into the queue (``update="after"`` only)."""
        if self.rrd.update == "after":
            self.rrd.update_queue(_teacher(inputs, "teacher_features", self.name))


#: Which samples REFILLED's stage 1 mines triplets among (``Refilled(stage1_labels=...)``).
STAGE1_LABELS = ("labelled", "teacher")


class Refilled(Method):
    """REFILLED (``docs/refilled.md``): two stages, ``"embedding"`` then ``"classifier"``.

    - ``"embedding"`` (the first ``stage1_fraction`` of the epochs, 0.3; the papers train each stage
      equally long): ``L = lambda1 * L1`` (1000), relationship matching on semi-hard triplets mined
      on the student (``form`` ``"triplet"`` or ``"tuple"``, ``margin`` 0.2, ``tau1`` 4).
      ``stage1_labels="labelled"`` (the papers) mines the labelled samples only; ``"teacher"`` also
      the unlabelled ones, under the class of the teacher's embedding-induced classifier
      (:func:`~relkd_tutorial.losses.refilled.centre_labels`).
    - ``"classifier"``: ``L = ce_weight * CE + lambda2 * KL`` (1 / 100, ``tau2`` 2) against the
      teacher's local classifier over the batch's classes (``restrict_to_batch=False``: every class
      with a centre).

    ``centres="global"`` (default) computes the class centres once in :meth:`setup` over the whole
    training set (``needs_setup``; the ``class_centres`` buffer, checkpointed; ``num_classes``:
    default the largest setup label plus one), ``"local"`` from each batch (the CVPR version). The
    teacher's logits are never used, so it may have been trained on other classes.
    """

    name = "refilled"
    needs_teacher = True
    class_centres: Tensor

    def __init__(
        self,
        stage1_fraction: float = 0.3,
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
        stage1_labels: str = "labelled",
    ) -> None:
        # set before Method.__init__, which reads stages()
        self.stage1_fraction = check_positive("stage1_fraction", stage1_fraction)
        if self.stage1_fraction >= 1:
            raise ValueError(f"stage1_fraction must lie in (0, 1), got {stage1_fraction}")
        super().__init__()
        self.form = check_choice("form", form, FORMS)
        self.centre_mode = check_choice("centres", centres, ("global", "local"))
        self.stage1_labels = check_choice("stage1_labels", stage1_labels, STAGE1_LABELS)
        self.needs_setup = centres == "global"
        self.margin = check_positive("margin", margin)
        self.tau1 = check_positive("tau1", tau1)
        self.tau2 = check_positive("tau2", tau2)
        self.lambda1 = check_nonnegative("lambda1", lambda1)
        self.lambda2 = check_nonnegative("lambda2", lambda2)
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.num_classes = check_optional_count("num_classes", num_classes)
        self.restrict_to_batch = bool(restrict_to_batch)
        # (C, D_T); empty until setup() (its shape is only known then; see _load_from_state_dict)
        self.register_buffer("class_centres", torch.zeros(0, 0))

    def stages(self) -> list[Stage]:
        f1 = self.stage1_fraction
        return [Stage("embedding", f1), Stage("classifier", 1.0 - f1)]

    @torch.no_grad()
    def setup(self, data: SetupData) -> None:
        """Global class centres from the teacher's features on the student's training set (``centres="global"`` only)."""
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
            labels = inputs.labels
            if self.stage1_labels == "teacher":
                centres = self._centres_for(inputs, teacher_features)
                labels = centre_labels(
                    teacher_features, labels, centres.to(teacher_features.device)
                )
            l1 = refilled_embedding_loss(  # on the semi-hard triplets it mines under `labels`
                inputs.student_features, teacher_features, labels, self.margin, self.tau1, self.form
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
