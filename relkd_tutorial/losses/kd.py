"""Hinton knowledge distillation: match the teacher's softened class distribution.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015), Sec. 2. This is the
*pointwise* end of the axis the tutorial draws: each class's probability is matched on its own
(GRKD in :mod:`.grkd` matches pairs of classes, the listwise loss in :mod:`.ranking` whole orders).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_logit_pair, check_positive, full_precision, loss_dtype


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """``L_KD = T^2 (1/B) sum_i KL( softmax(z^t_i / T) || softmax(z^s_i / T) )``.

    Hinton et al. 2015, Sec. 2; the ``T^2`` factor keeps the gradient's scale independent of
    ``T`` (its gradient wrt ``z^s_i`` is ``T (p^s_i - p^t_i) / B`` with ``p^s = softmax(z^s/T)``,
    ``p^t = softmax(z^t/T)``; symbols as in ``docs/notation.md``, equations in ``docs/kd.md``). The reduction is over the batch (``batchmean``), never over ``B * C``
    (``nn.KLDivLoss``'s default ``mean`` divides by ``B * C``, a classic bug that silently rescales
    the loss by ``1/C``). ``T = 4`` is the CIFAR benchmark's value (RepDistiller).

    The teacher is detached. Computed in float32 (float64 if an input is float64) with autocast
    off; log-probabilities come from ``log_softmax``, so logits of +-1e4 stay finite.

    Args:
        student_logits: ``(B, C)`` student logits ``z^s``.
        teacher_logits: ``(B, C)`` teacher logits ``z^t`` (no gradient flows into them).
        temperature: ``T > 0``.

    Returns:
        Scalar loss.
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    dtype = loss_dtype(z, t)
    with full_precision(z.device):
        log_q = F.log_softmax(z.to(dtype) / temp, dim=1)  # (B, C) student
        log_p = F.log_softmax(t.detach().to(dtype) / temp, dim=1)  # (B, C) teacher
        # sum_i sum_c p_ic (log p_ic - log q_ic) / B
        kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True) / z.shape[0]
    return kl * temp**2


class KDLoss(nn.Module):
    """Module form of :func:`kd_loss` holding the temperature."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return kd_loss(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
