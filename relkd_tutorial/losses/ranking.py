"""Beyond GRKD: a soft pairwise and a listwise ranking loss on the classes (``docs/ranking.md``).

Our extensions, not from a distillation paper: they complete the axis KD (pointwise), GRKD
(pairwise, hard targets), soft pairwise (keeps the teacher's *margins*), listwise (whole
orders). Both take ``(student_logits, teacher_logits, temperature, ...)`` ``(B, C)`` and return a
batch mean; ``z``/``t`` below are the student's and the teacher's logits. Soft pairwise: RankNet
(Burges et al., ICML 2005) with the teacher's pairwise probabilities as targets. Listwise: the
Plackett-Luce likelihood of the teacher's top-k order, ListMLE (Xia et al., ICML 2008) and its
top-k form (Xia, Liu, Li, NeurIPS 2009).
"""

from __future__ import annotations

from torch import Tensor

from .._checks import (
    LossModule,
    check_logit_pair,
    check_optional_count,
    check_positive,
    full_precision,
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
    soft target ``y_ijk = sigma((t_ij - t_ik)/tau_t)``, ``C >= 2``. GRKD is the hard-target limit
    ``tau_t -> 0`` (except that GRKD drops tied pairs, here ``y = 1/2``). The gradient wrt ``z_ia``
    is ``(soft_wins_S - soft_wins_T)_a / tau`` (normalised), zero when
    ``z_i / tau = t_i / tau_t + const``; the minimum is the targets' mean binary entropy, not 0 (the
    BCE form, as specified). Computed as ``P(v) - sum_a Y_a v_a``
    (:func:`~relkd_tutorial.relations.pairwise_logaddexp_sum`): ``O(B C^2)`` work, ``O(B C)``
    memory. Float32 or wider, autocast off, teacher detached.
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    teacher_temp = check_positive("teacher_temperature", teacher_temperature)
    c = z.shape[1]
    if c < 2:
        raise ValueError(f"student_logits has C = {c} classes; a pairwise loss needs C >= 2")
    with full_precision(z, t) as dtype:
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

        L = (1/B) sum_i sum_{r=1..k} [ log sum_{s >= r} exp(v_{i, pi_s}) - v_{i, pi_r} ]

    (ListMLE; top-k ListMLE for ``k < C``; ``top_k=None``: ``k = C``; ``k = 1`` is cross-entropy on
    the teacher's arg-max). Choices: denominators run over *all* remaining classes, so a class
    outside the top-k ranked above one inside is penalised; a sum over positions, a mean over the
    batch; teacher ties broken by class index (stable sort). Through ``logcumsumexp``,
    ``O(B C log C)``; float32 or wider, autocast off, teacher detached.
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    k = check_optional_count("top_k", top_k)
    c = z.shape[1]
    k = c if k is None else min(k, c)
    with full_precision(z, t) as dtype:
        order = descending_order(t.detach())[1]  # (B, C)
        v = (z.to(dtype) / temp).gather(1, order)  # (B, C) student scores in the teacher's order
        # log sum_{s >= r} exp(v_s) for every r: a reversed cumulative logsumexp
        tail_lse = v.flip(1).logcumsumexp(dim=1).flip(1)  # (B, C)
        per_sample = (tail_lse[:, :k] - v[:, :k]).sum(dim=1)  # (B,)
        return per_sample.mean()


class SoftPairwiseRankLoss(LossModule):
    """Module form of :func:`soft_pairwise_rank_loss` holding its temperatures."""

    fn = staticmethod(soft_pairwise_rank_loss)
    checks = {"temperature": check_positive, "teacher_temperature": check_positive}


class ListwiseRankLoss(LossModule):
    """Module form of :func:`listwise_rank_loss` holding its options."""

    fn = staticmethod(listwise_rank_loss)
    checks = {"temperature": check_positive, "top_k": check_optional_count}
