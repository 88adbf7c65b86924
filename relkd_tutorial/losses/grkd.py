"""GRKD: group relative knowledge distillation, a pairwise ranking loss on the classes.

Li, Zhou, Chen, "Group Relative Knowledge Distillation", arXiv 2504.20482 (2025). Only the
abstract is public: the student should preserve the teacher's *pairwise preference orderings*
among classes. The formula comes from an unverified third-party summary (no code was released);
every "(choice)" is ours (``docs/grkd.md``), and the ones the benchmark ablates are the options:
the group (``top_k``), the pair weights, the temperature and the ``1/|P_i|`` normalisation.

How it is computed (``z``, ``t``: the student's and the teacher's logits). A pairwise logistic
(Bradley-Terry) loss with hard targets ``y_ab = [t_a > t_b]`` (``1/2`` for ties) minus the tied
pairs, so with ``v = z / tau`` and ``P(v)`` of
:func:`~relkd_tutorial.relations.pairwise_logaddexp_sum`:

    sum_{(a,b) in P} softplus(v_b - v_a) = P(v) - sum_a Y_a v_a - sum_{a<b tied} [lse(v_a, v_b) - (v_a + v_b)/2],

``Y_a = wins_a + ties_a / 2`` (:func:`~relkd_tutorial.relations.preference_counts`). The
``O(C^2)`` part ``P(v)`` is the student's alone; the teacher enters through ``O(C)`` counts. The
gradient ``soft_wins(v) - Y`` pushes each class towards its teacher rank. The top-k group and the
probability-gap weights use a chunked masked kernel instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    LossModule,
    check_choice,
    check_logit_pair,
    check_optional_count,
    check_positive,
    full_precision,
)
from ..relations import (
    PAIR_CHUNK_ELEMENTS,
    descending_order,
    pairwise_logaddexp_sum,
    preference_counts,
    tie_block_ends,
)

WEIGHTINGS = ("uniform", "prob_gap")
REDUCTIONS = ("mean", "sum")


def _tied_pairs_term(v_sorted: Tensor, ends: Tensor) -> Tensor:
    """``sum_{a<b tied} [logaddexp(v_a, v_b) - (v_a + v_b) / 2]`` per row, ``(B,)``, differentiable.

    ``v_sorted`` ``(B, C)`` holds the student's scores in the teacher's descending order, ``ends``
    the tie blocks (:func:`~relkd_tutorial.relations.tie_block_ends`): the tied pairs are
    ``(a, a + delta)`` with ``a + delta < ends[a]``; the loop runs over every ``delta < C``.
    """
    b, c = v_sorted.shape
    span = ends - torch.arange(1, c + 1, device=ends.device)  # (B, C) tied partners after a
    total = v_sorted.new_zeros(b)
    for delta in range(1, c):  # up to the longest possible block: no host read of the longest
        first, second = v_sorted[:, : c - delta], v_sorted[:, delta:]  # (B, C - delta) each
        term = torch.logaddexp(first, second) - 0.5 * (first + second)  # (B, C - delta)
        total = total + (term * (span[:, : c - delta] >= delta)).sum(dim=1)
    return total


class _MaskedPairwiseLogistic(torch.autograd.Function):
    """``sum_{a < rows, b >= ends[a]} w_ab softplus(v_b - v_a)`` per row, with its gradient.

    In the teacher's sorted order, one chunk of preferred classes ``a`` at a time over the columns
    ``b >= a0``; invalid pairs get ``x = -inf`` (``softplus`` and ``sigmoid`` give exactly 0). The
    gradient (``d softplus(v_b - v_a) / dv_b = sigma(v_b - v_a) = -d/dv_a``) is accumulated in the
    forward and saved as one ``(B, C)`` tensor; memory ``O(B * C * chunk)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, v_sorted: Tensor, ends: Tensor, rows: int, prob_sorted: Tensor | None
    ) -> Tensor:
        b, c = v_sorted.shape
        v = v_sorted.detach()
        total = v.new_zeros(b)
        grad = torch.zeros_like(v)  # (B, C)
        cols = torch.arange(c, device=v.device)  # (C,)
        n = max(1, PAIR_CHUNK_ELEMENTS // max(1, b * c))
        for a0 in range(0, rows, n):
            a1 = min(a0 + n, rows)
            x = v[:, None, a0:] - v[:, a0:a1, None]  # (B, n, C - a0)  v_b - v_a
            invalid = cols[None, None, a0:] < ends[:, a0:a1, None]  # (B, n, C - a0)
            x.masked_fill_(invalid, float("-inf"))
            loss_terms = F.softplus(x)  # (B, n, C - a0), 0 on invalid pairs
            slopes = torch.sigmoid(x)  # (B, n, C - a0), 0 on invalid pairs
            if prob_sorted is not None:
                w = prob_sorted[:, a0:a1, None] - prob_sorted[:, None, a0:]  # (B, n, C - a0)
                w.clamp_min_(0.0)  # >= 0 on valid pairs already; rounding only
                loss_terms.mul_(w)
                slopes.mul_(w)
            total += loss_terms.sum(dim=(1, 2))
            grad[:, a0:a1] -= slopes.sum(dim=2)
            grad[:, a0:] += slopes.sum(dim=1)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_out[:, None] * grad, None, None, None


def grkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    weighting: str = "uniform",
    reduction: str = "mean",
) -> Tensor:
    """``L_GR = (1/B) sum_i (1/|P_i|) sum_{(j,k) in P_i} w_ijk softplus( -(z^s_ij - z^s_ik) / tau )``.

    Li, Zhou, Chen 2025 (the formula from an unverified summary; the paper's body was not
    accessible): each pair ``j`` preferred to ``k`` by the teacher costs
    ``-log sigma((log q_j - log q_k)/tau)`` for the student's softmax ``q``.

    - ``P_i = {(j, k) : z^t_ij > z^t_ik}``, ties give no pair. With ``top_k``: only pairs whose
      preferred class is among the teacher's top-k (stable order, ties broken by class index;
      choice).
    - ``weighting``: ``"uniform"`` (``w = 1``, default) or ``"prob_gap"``, ``p^t_ij - p^t_ik`` with
      ``p^t = softmax(z^t)`` (choice); the normalisation stays ``1/|P_i|``.
    - ``reduction``: ``"mean"`` (default, the equation) or ``"sum"`` (no ``1/|P_i|``: the scale
      grows like ``C^2/2``, or ``kC`` with ``top_k``; choice, for the ablation). Both average over
      the batch.
    - A row whose teacher logits are all tied contributes exactly 0 and still counts in ``1/B``
      (choice). ``tau = 1`` by default (choice).

    Tested properties: with uniform weights it depends on ``t`` only through its order; it is
    invariant to adding a constant to a row of ``z``; each row's gradient sums to 0. Uniform weights
    over all classes cost ``O(B C^2)`` work and ``O(B C)`` memory; ``top_k`` ``O(B k C)``;
    ``"prob_gap"`` over all classes uses the masked kernel (about 3x slower). ``student_logits`` and
    ``teacher_logits`` ``(B, C)``; float32 or wider, autocast off, teacher detached.
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    k = check_optional_count("top_k", top_k)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("reduction", reduction, REDUCTIONS)
    b, c = z.shape
    with full_precision(z, t) as dtype:
        v = z.to(dtype) / temp  # (B, C)
        v = v - v.mean(dim=1, keepdim=True)  # exact (shift invariance); keeps P(v) well scaled
        t = t.detach().to(dtype)  # (B, C)
        values, order = descending_order(t)  # (B, C) each
        ends = tie_block_ends(values)  # (B, C)
        if (k is None or k >= c) and weighting == "uniform":
            wins, losses = preference_counts(t)  # (B, C) each
            n_pairs = wins.sum(dim=1)  # (B,)
            numerator = pairwise_logaddexp_sum(v)  # (B,)  the O(C^2) part: student only
            # Y = wins + ties / 2, then remove the tied pairs (without ties: Y = wins, tied = 0)
            targets = wins + 0.5 * (c - 1 - wins - losses)  # (B, C)
            tied = _tied_pairs_term(v.gather(1, order), ends)  # (B,)
            numerator = numerator - (targets.to(dtype) * v).sum(dim=1) - tied
        else:
            rows = c if k is None else min(k, c)
            n_pairs = (c - ends[:, :rows]).sum(dim=1)  # (B,)
            prob = None
            if weighting == "prob_gap":
                prob = F.softmax(t, dim=1).gather(1, order)  # (B, C) teacher probs, sorted
            numerator = _MaskedPairwiseLogistic.apply(v.gather(1, order), ends, rows, prob)
        has_pairs = n_pairs > 0  # (B,)
        if reduction == "mean":
            numerator = numerator / n_pairs.clamp_min(1).to(dtype)
        per_sample = torch.where(has_pairs, numerator, torch.zeros_like(numerator))  # (B,)
        return per_sample.mean()


class GRKDLoss(LossModule):
    """Module form of :func:`grkd_loss` holding its options."""

    fn = staticmethod(grkd_loss)
    checks = {
        "temperature": check_positive,
        "top_k": check_optional_count,
        "weighting": lambda name, value: check_choice(name, value, WEIGHTINGS),
        "reduction": lambda name, value: check_choice(name, value, REDUCTIONS),
    }
