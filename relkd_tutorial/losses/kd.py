"""Hinton knowledge distillation: match the teacher's softened class distribution.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015), Sec. 2: the
*pointwise* end of the tutorial's axis (GRKD in :mod:`.grkd` matches pairs of classes, the
listwise loss in :mod:`.ranking` whole orders).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .._checks import LossModule, check_logit_pair, check_positive, full_precision


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """``L_KD = T^2 (1/B) sum_i KL( softmax(z^t_i / T) || softmax(z^s_i / T) )``, a scalar.

    Hinton et al. 2015, Sec. 2; ``T^2`` keeps the gradient's scale independent of ``T``
    (``docs/kd.md``). The mean is over the batch (``batchmean``), never over ``B * C``
    (``nn.KLDivLoss``'s default ``mean``, a classic bug that rescales the loss by ``1/C``).
    ``T = 4`` is the CIFAR benchmark's value (RepDistiller). ``student_logits`` ``z^s`` and
    ``teacher_logits`` ``z^t`` (detached) are ``(B, C)``; float32 or wider with autocast off,
    through ``log_softmax`` (logits of +-1e4 stay finite).
    """
    z, t = check_logit_pair(student_logits, teacher_logits)
    temp = check_positive("temperature", temperature)
    with full_precision(z, t) as dtype:
        log_q = F.log_softmax(z.to(dtype) / temp, dim=1)  # (B, C) student
        log_p = F.log_softmax(t.detach().to(dtype) / temp, dim=1)  # (B, C) teacher
        # sum_i sum_c p_ic (log p_ic - log q_ic) / B
        kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True) / z.shape[0]
    return kl * temp**2


class KDLoss(LossModule):
    """Module form of :func:`kd_loss` holding the temperature."""

    fn, checks = staticmethod(kd_loss), {"temperature": check_positive}
