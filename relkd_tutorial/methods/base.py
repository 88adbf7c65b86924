"""The :class:`Method` interface: what the training loop calls at every step.

A method turns one step's network outputs into a dict of named loss terms; the loop knows no
method by name. It back-propagates ``terms["loss"]``, logs every other entry and calls
``method.after_step(inputs)`` (RRD's queue). A method declares what else it needs:
``needs_teacher`` (the loop fills ``StepInputs.teacher_*``), ``stages()`` (REFILLED: the epochs
split by each stage's ``fraction``, a fresh optimizer per stage, ``set_stage`` first),
``needs_setup``/``setup(data)`` (one teacher pass over the un-augmented training set first);
learnable heads are sub-modules (they join the optimizer), state lives in buffers (it joins the
checkpoint). Every entry but ``"loss"`` is a *weighted* contribution, and they sum to ``"loss"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float_tensor, check_labels, full_precision, loss_dtype


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
        """Refuse fields of different batch sizes: each loss checks only the tensors it is given, so
        a method reading features for one term and logits for another would pair different images.
        """
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


def masked_cross_entropy(logits: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
    """``-(1/|K|) sum_{i in K} log softmax(z_i)_{targets_i}`` over the rows ``K`` where ``keep``.

    No ``K``: exactly 0 with a gradient path (``0 * logits.sum()``), never 0/0. Float32 (float64 for
    float64 logits), autocast off, no host synchronisation: the kept rows are moved to the front (a
    stable sort) and the rest ignored, so the mean adds the same numbers in the same order as over
    ``logits[K]``. ``logits`` ``(B, C)``, ``targets`` ``(B,)`` int64, ``keep`` ``(B,)`` bool.
    """
    first = torch.argsort((~keep).to(torch.uint8), stable=True)  # (B,) kept rows first
    targets = torch.where(keep, targets, -1)[first]  # (B,) -1: ignored
    with full_precision(logits):
        z = logits[first].to(loss_dtype(logits))  # (B, C)
        ce = F.cross_entropy(z, targets, ignore_index=-1)  # 0/0 if nothing is kept
    return torch.where(keep.any(), ce, logits.sum() * 0.0)


def supervised_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled samples ``L = {i : y_i >= 0}`` of a batch.

    ``CE = -(1/|L|) sum_{i in L} log softmax(z_i)_{y_i}`` (:func:`masked_cross_entropy`);
    ``logits`` ``(B, C)``, ``labels`` ``(B,)`` in ``[-1, C)``, ``-1`` = unlabelled.
    """
    check_float_tensor("logits", logits, 2, "(B, C)")
    check_labels("labels", labels, logits.shape[0], logits.shape[1])
    return masked_cross_entropy(logits, labels, labels >= 0)


def with_total(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add ``"loss"`` = the sum of the weighted contributions to a dict of terms."""
    total = sum(terms.values())
    assert isinstance(total, Tensor)
    return {"loss": total, **terms}


class Method(nn.Module):
    """Base class of all methods. Subclasses implement :meth:`loss_terms`."""

    name: str = "method"
    ce_weight: float  # the methods with a supervised CE term (see _ce_terms)
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

    #: ``(name, weight, compute)`` of a term to add right after the CE term, set for one call by a
    #: composition (:class:`~relkd_tutorial.methods.compose.WithKD`) and cleared when added.
    _after_ce: tuple[str, float, Callable[[], Tensor]] | None = None

    def _ce_terms(self, inputs: StepInputs, keep_zero: bool = False) -> dict[str, Tensor]:
        """``{"ce": ce_weight * CE}`` (no term at weight 0 unless ``keep_zero``), then
        ``_after_ce``: the terms every method with a ``ce_weight`` starts from, in this order.
        """
        terms: dict[str, Tensor] = {}
        if keep_zero or self.ce_weight > 0:
            ce = supervised_cross_entropy(inputs.student_logits, inputs.labels)
            terms["ce"] = self.ce_weight * ce
        if self._after_ce is not None:
            name, weight, compute = self._after_ce
            self._after_ce = None
            _weighted(terms, name, weight, compute)
        return terms

    def _logit_terms(
        self, inputs: StepInputs, *losses: tuple[str, float, Callable[[Tensor, Tensor], Tensor]]
    ) -> dict[str, Tensor]:
        """:meth:`_ce_terms`, then each ``(name, weight, loss)`` as ``weight * loss(z, t)`` on the
        student's and the teacher's logits (a weight of 0: not computed), and ``"loss"``."""
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        terms = self._ce_terms(inputs)
        for name, weight, loss in losses:
            _weighted(terms, name, weight, functools.partial(loss, z, t))
        return _total(terms, z)

    def forward(self, inputs: StepInputs) -> dict[str, Tensor]:
        return self.loss_terms(inputs)


class CrossEntropy(Method):
    """Plain supervised training: ``L = CE(z, y)``. The baseline every method is compared with."""

    name = "ce"
    ce_weight = 1.0

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        return with_total(self._ce_terms(inputs, keep_zero=True))


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
    return with_total(terms) if terms else {"loss": 0.0 * student_logits.sum()}
