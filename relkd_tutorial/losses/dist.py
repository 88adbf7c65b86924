"""DIST: distil the *relations* among class probabilities, not the probabilities themselves.

Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022,
Sec. 3. KD's exact match of the teacher's class probabilities is relaxed to a match of Pearson
correlations between the teacher's and the student's softened probabilities: per image over the
classes (**inter-class**) and per class over the batch (**intra-class**). Pearson's correlation
ignores any positive affine change, so the relation, not the value, is distilled
(``docs/dist.md`` compares it with GRKD, which keeps only the order of each pair).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    LossModule,
    check_logit_pair,
    check_min_batch,
    check_nonnegative,
    check_positive,
    full_precision,
    loss_dtype,
)

#: Floor of the Pearson denominator ``||a - mean a|| * ||b - mean b||`` (the authors' code uses the
#: same value). Only a constant vector, whose correlation is undefined, reaches it.
PEARSON_EPS = 1e-8


def _one_minus_pearson(a: Tensor, b: Tensor) -> Tensor:
    """``1 - (1/R) sum_r rho(a_r, b_r)`` for student rows ``a`` and (detached) teacher rows ``b``,
    ``(R, K)``.

    ``rho(a, b) = <a - mean a, b - mean b> / max(||a - mean a|| ||b - mean b||, eps)``. The floor
    :data:`PEARSON_EPS` is reached only by a constant row (undefined correlation), which then counts
    as ``rho = 0`` (a constant teacher row: 1 and no gradient).
    """
    a_c = a - a.mean(dim=1, keepdim=True)  # (R, K)
    b_c = b - b.mean(dim=1, keepdim=True)  # (R, K)
    norms = a_c.norm(dim=1) * b_c.norm(dim=1)  # (R,)
    rho = (a_c * b_c).sum(dim=1) / norms.clamp_min(PEARSON_EPS)  # (R,)
    return 1.0 - rho.mean()


def _probabilities(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float
) -> tuple[Tensor, Tensor, float]:
    """Checked inputs softened at ``tau``: ``(Y^s (B, C), Y^t (B, C), tau)``, in the loss dtype."""
    z, t = check_logit_pair(student_logits, teacher_logits)
    if z.shape[1] < 2:
        raise ValueError(
            f"student_logits has {z.shape[1]} class; DIST's relations need at least 2 classes"
        )
    temp = check_positive("temperature", temperature)
    dtype = loss_dtype(z, t)
    y_s = F.softmax(z.to(dtype) / temp, dim=1)  # (B, C) student
    y_t = F.softmax(t.detach().to(dtype) / temp, dim=1)  # (B, C) teacher
    return y_s, y_t, temp


def dist_inter_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """DIST's inter-class term ``tau^2 (1 - (1/B) sum_i rho(Y^s_i,:, Y^t_i,:))``, in
    ``[0, 2 tau^2]``.

    ``Y = softmax(z / tau)`` row-wise, ``rho`` Pearson's correlation over the ``C >= 2`` classes of
    image ``i`` (:func:`dist_loss`); logits ``(B, C)``, the teacher's detached.
    """
    with full_precision(student_logits):
        y_s, y_t, temp = _probabilities(student_logits, teacher_logits, temperature)
        return temp**2 * _one_minus_pearson(y_s, y_t)


def dist_intra_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """DIST's intra-class term ``tau^2 (1 - (1/C) sum_j rho(Y^s_:,j, Y^t_:,j))``, in
    ``[0, 2 tau^2]``.

    :func:`dist_inter_loss` on the transposed probability matrices: the correlation over the batch's
    ``B >= 2`` images of class ``j``'s probabilities (softened over the classes first).
    """
    with full_precision(student_logits):
        y_s, y_t, temp = _probabilities(student_logits, teacher_logits, temperature)
        check_min_batch("student_logits", y_s, 2, "DIST's intra-class relation")
        return temp**2 * _one_minus_pearson(y_s.T, y_t.T)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    """``L_DIST = beta tau^2 L_inter + gamma tau^2 L_intra`` (Huang et al. 2022, Sec. 3).

    With ``Y^s = softmax(z^s / tau)``, ``Y^t = softmax(z^t / tau)`` (row-wise, ``(B, C)``) and
    Pearson's ``rho(u, v) = <u - mean u, v - mean v> / (||u - mean u|| ||v - mean v||)``,

        L_inter = 1 - (1/B) sum_i rho(Y^s_i,:, Y^t_i,:)   (each image's distribution over classes)
        L_intra = 1 - (1/C) sum_j rho(Y^s_:,j, Y^t_:,j)   (each class's probabilities over the batch)

    Each term is in ``[0, 2]`` before ``tau^2`` and 0 when the student's probabilities are a
    positive affine map of the teacher's, row by row (inter) or column by column (intra). Defaults
    ``beta = gamma = 1``, ``tau = 1``: the paper's weights and the authors' code's default
    (``docs/dist.md``). A weight of 0 skips its term (``gamma = 0`` accepts a batch of one image).
    Float32 or wider, autocast off, teacher detached.
    """
    beta = check_nonnegative("beta", beta)
    gamma = check_nonnegative("gamma", gamma)
    z, _ = check_logit_pair(student_logits, teacher_logits)
    check_positive("temperature", temperature)
    total = 0.0 * z.to(loss_dtype(z)).sum()  # both weights 0: a zero that keeps the graph
    if beta > 0:
        total = beta * dist_inter_loss(student_logits, teacher_logits, temperature)
    if gamma > 0:
        intra = gamma * dist_intra_loss(student_logits, teacher_logits, temperature)
        total = intra if beta == 0 else total + intra
    return total


class DISTLoss(LossModule):
    """Module form of :func:`dist_loss` holding ``beta``, ``gamma`` and the temperature."""

    fn = staticmethod(dist_loss)
    checks = {"beta": check_nonnegative, "gamma": check_nonnegative, "temperature": check_positive}
