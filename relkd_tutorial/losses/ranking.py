"""Beyond GRKD: a soft pairwise and a listwise ranking loss on the classes (``docs/ranking.md``).

These are our extensions, not from a paper on distillation; they complete the axis the tutorial
draws through KD (pointwise: each class's probability), GRKD (pairwise: the order of every pair of
classes, hard targets) and ranking (the soft pairwise variant keeps the teacher's *margins*; the
listwise one scores whole orders). All three take ``(student_logits, teacher_logits,
temperature, ...)`` and return a batch mean. Below, ``z`` and ``t`` are short for the student's
and the teacher's logits ``z^s`` and ``z^t`` (``docs/notation.md``).

- Soft pairwise: RankNet (Burges et al., ICML 2005) with the teacher's pairwise probabilities as
  targets.
- Listwise: the Plackett-Luce likelihood of the teacher's top-k order, as in ListMLE (Xia et al.,
  ICML 2008) and its top-k form (Xia, Liu, Li, NeurIPS 2009).
"""

from __future__ import annotations

from torch import Tensor, nn

from .._checks import (
    check_logit_pair,
    check_optional_count,
    check_positive,
    full_precision,
    loss_dtype,
)
from ..relations import descending_order, pairwise_logaddexp_sum, soft_wins


def soft_pairwise_rank_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> Tensor:
    """Binary cross-entropy between the student's and the teacher's pairwise probabilities.

    ``L = (1/B) sum_i (2 / (C (C-1))) sum_{j<k} BCE( sigma((z_ij - z_ik)/tau), y_ijk )`` with the
    soft target ``y_ijk = sigma((t_ij - t_ik)/tau_t)`` and
    ``BCE(q, y) = -y log q - (1 - y) log(1 - q)``. Each unordered pair counts once (the BCE is the
    same for ``(j, k)`` and ``(k, j)``); mean over the ``C (C-1)/2`` pairs, then over the batch.

    GRKD is the hard-target limit (``tau_t -> 0``: ``y = [t_j > t_k]``), except that GRKD drops tied
    pairs where this loss gives them ``y = 1/2``. Unlike GRKD, the loss keeps the teacher's margins:
    its gradient wrt ``z_ia`` is ``(soft_wins_S - soft_wins_T)_a / tau`` (times the normalisation),
    which vanishes when ``z_i / tau = t_i / tau_t + const``: the student's logit gaps match the
    teacher's scaled by ``tau / tau_t``. At that minimum the loss equals the mean binary entropy of
    the targets, not 0 (the BCE form, as specified; the KL form would differ by that constant).

    Computed as ``P(v) - sum_a Y_a v_a`` with ``v = z / tau``, ``Y = soft_wins(t / tau_t)`` (see
    :func:`~relkd_tutorial.relations.pairwise_logaddexp_sum`): ``O(B C^2)`` work, ``O(B C)``
    memory. Float32 (float64 for float64 inputs), autocast off, teacher detached.

    Args:
        student_logits: ``(B, C)``, ``C >= 2``.
        teacher_logits: ``(B, C)``.
        temperature: ``tau > 0`` on the student's gaps.
        teacher_temperature: ``tau_t > 0`` on the teacher's gaps.

    Returns:
        Scalar loss.
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    teacher_temp = check_positive("teacher_temperature", teacher_temperature)
    c = z.shape[1]
    if c < 2:
        raise ValueError(f"student_logits has C = {c} classes; a pairwise loss needs C >= 2")
    dtype = loss_dtype(z, t)
    with full_precision(z.device):
        v = z.to(dtype) / temp  # (B, C)
        v = v - v.mean(dim=1, keepdim=True)  # exact (shift invariance); keeps P(v) well scaled
        targets = soft_wins(t.detach().to(dtype) / teacher_temp)  # (B, C)  Y_a = sum_b y_ab
        per_sample = pairwise_logaddexp_sum(v) - (targets * v).sum(dim=1)  # (B,)
        return per_sample.mean() / (c * (c - 1) / 2)


def listwise_rank_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> Tensor:
    """Negative Plackett-Luce log-likelihood of the teacher's top-k order under the student.

    With ``pi`` the teacher's descending order of the classes and ``v = z / tau``:

        L = (1/B) sum_i sum_{r=1..k} [ log sum_{s >= r} exp(v_{i, pi_s}) - v_{i, pi_r} ],

    i.e. the student "picks" the teacher's first class from all ``C``, then its second from the
    remaining ``C - 1``, ... ``k`` times (ListMLE; top-k ListMLE for ``k < C``).

    - Denominators run over *all remaining* ``C - r + 1`` classes, not only the rest of the top-k
      list (choice): the loss is then the likelihood that the top-k come first, in that order, and
      a student ranking an outside class above a top-k class is penalised. With denominators
      restricted to the list it would not be.
    - Sum over the ``k`` positions (not a mean), mean over the batch. ``top_k=None`` uses the full
      order (``k = C``; the last position adds 0). ``k = 1`` is cross-entropy against the
      teacher's arg-max.
    - Teacher ties are broken by class index (stable sort, choice): the loss then depends on that
      tie break. It depends on ``t`` only through this order and is invariant to adding a constant
      to a row of ``z``.

    Autograd through ``logcumsumexp`` (stable for logits of +-1e4); ``O(B C log C)``.
    Float32 (float64 for float64 inputs), autocast off, teacher detached.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        temperature: ``tau > 0``.
        top_k: ``None`` (full order) or ``k >= 1``.

    Returns:
        Scalar loss.
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    k = check_optional_count("top_k", top_k)
    c = z.shape[1]
    k = c if k is None else min(k, c)
    dtype = loss_dtype(z, t)
    with full_precision(z.device):
        order = descending_order(t.detach())[1]  # (B, C)
        v = (z.to(dtype) / temp).gather(1, order)  # (B, C) student scores in the teacher's order
        # log sum_{s >= r} exp(v_s) for every r: a reversed cumulative logsumexp
        tail_lse = v.flip(1).logcumsumexp(dim=1).flip(1)  # (B, C)
        per_sample = (tail_lse[:, :k] - v[:, :k]).sum(dim=1)  # (B,)
        return per_sample.mean()


class SoftPairwiseRankLoss(nn.Module):
    """Module form of :func:`soft_pairwise_rank_loss` holding its temperatures."""

    def __init__(self, temperature: float = 1.0, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.teacher_temperature = check_positive("teacher_temperature", teacher_temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return soft_pairwise_rank_loss(
            student_logits, teacher_logits, self.temperature, self.teacher_temperature
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, teacher_temperature={self.teacher_temperature}"


class ListwiseRankLoss(nn.Module):
    """Module form of :func:`listwise_rank_loss` holding its options."""

    def __init__(self, temperature: float = 1.0, top_k: int | None = None) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.top_k = check_optional_count("top_k", top_k)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return listwise_rank_loss(student_logits, teacher_logits, self.temperature, self.top_k)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, top_k={self.top_k}"
