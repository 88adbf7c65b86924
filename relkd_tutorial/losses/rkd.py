"""RKD: relational knowledge distillation with distance and angle potentials.

Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019, Sec. 3.2. The student matches
the *structure* of the teacher's batch of pooled features (widths ``D_S``, ``D_T`` may differ):
pairwise distances normalised by their batch mean, and the angles of all triplets.

Conventions of the authors' code (so published weights carry over): Huber with ``delta = 1``;
the mean runs over all ``B^2`` ordered pairs / ``B^3`` ordered triplets, degenerate ones (``i = j``,
or duplicate samples: distance 0, cosine 0) included, which scales the loss by about
``(B - 1)/B`` resp. ``((B - 1)/B)^2``. Pairs closer than the Gram formula's rounding error count as
coincident (choice). Both potentials are scale invariant, so each side is divided by its largest
entry first (:func:`~relkd_tutorial.relations.rescaled`): any representable magnitude gives the
same loss. The angle loss never builds the ``(B, B, D)`` or ``(B, B, B)`` tensors: a custom
autograd function computes the loss and its gradient from two ``(B, B)`` matrices, one chunk of
vertices at a time (memory ``O(B^2 + chunk B^2)``, work ``O(B^2 D + B^3)``;
``benchmarks/losses.py`` measures it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_feature_pair, check_nonnegative, check_optional_count, full_precision
from ..relations import gram_and_inverse_distances, normalized_pairwise_distances, rescaled

# Elements of one (vertices, B, B) chunk; 2^16 float32 = 256 KiB keeps a chunk's temporaries in
# a CPU core's L2 cache, which measured faster than larger chunks on the reference machine.
ANGLE_CHUNK_ELEMENTS = 1 << 16


def rkd_distance_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """``L_RKD-D = mean_{i,j} huber( psi_D^s(i,j), psi_D^t(i,j) )``, ``psi_D = d_ij / mu``, a
    scalar.

    Park et al. 2019, Sec. 3.2.1; ``mu = mean_{i != j} d_ij`` per side
    (:func:`~relkd_tutorial.relations.normalized_pairwise_distances`); ``delta = 1``; mean over all
    ``B^2`` pairs. ``student_features`` ``(B, D_S)``, ``B >= 2``; ``teacher_features`` ``(B, D_T)``,
    detached. Float32 or wider.
    """
    s, t = check_feature_pair(
        student_features, teacher_features, 2, "the RKD distance potential (a pair)"
    )
    with full_precision(s, t) as dtype:
        # rescaled(): psi_D is scale invariant; this keeps its squares finite and non-zero
        psi_s = normalized_pairwise_distances(rescaled(s.to(dtype)))  # (B, B)
        with torch.no_grad():
            psi_t = normalized_pairwise_distances(rescaled(t.detach().to(dtype)))  # (B, B)
        return F.smooth_l1_loss(psi_s, psi_t, reduction="mean", beta=1.0)


def _chunk_cosines(gram: Tensor, r: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
    """``(cos, outer)``, both ``(n, B, B)``, for a chunk of ``n`` vertices ``j``:
    ``cos[j, i, k] = a_ji a_jk (G_ik - r_ji - r_jk)`` and ``outer[j, i, k] = a_ji a_jk``.

    ``r_ji = G_ji - G_jj / 2``, so ``G_ik - r_ji - r_jk`` is ``<x_i - x_j, x_k - x_j>``;
    ``a = 1 / d`` (0 if degenerate). ``gram`` is ``(B, B)``, ``r`` and ``a`` the chunk's ``(n, B)``
    rows.
    """
    num = gram[None, :, :] - r[:, :, None]  # (n, B, B)
    num.sub_(r[:, None, :])  # G_ik - r_ji - r_jk
    outer = a[:, :, None] * a[:, None, :]  # (n, B, B)
    return num.mul_(outer), outer


class _RKDAngleHuber(torch.autograd.Function):
    """``mean_{i,j,k} huber(cos^s_ijk - cos^t_ijk)`` and its gradient wrt ``(G^s, A^s)``.

    Per chunk of vertices ``j``: ``e = cos^s - cos^t``, ``huber(e) = g (e - g/2)`` with
    ``g = clamp(e, -1, 1)``. With ``cos_jik = a_ji a_jk N_jik``,
    ``N_jik = G_ik - G_ij - G_jk + G_jj`` and ``M_jik = g_jik a_ji a_jk / B^3``:

        dL/dG_ik += sum_j M_jik          dL/dG_ji -= 2 sum_k M_jik
        dL/dG_jj += sum_ik M_jik         dL/dA_ji  = 2 d_ji sum_k g_jik cos_jik / B^3

    Autograd carries these ``(B, B)`` gradients to the features through ``G = x_c x_c^T`` and
    ``A = 1/d``. First order only.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, gram_s: Tensor, inv_s: Tensor, gram_t: Tensor, inv_t: Tensor, rows: int
    ) -> Tensor:
        b = gram_s.shape[0]
        need_grad = bool(ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        r_s = gram_s - 0.5 * gram_s.diagonal()[:, None]  # (B, B) r_ji = G_ji - G_jj / 2
        r_t = gram_t - 0.5 * gram_t.diagonal()[:, None]  # (B, B)
        total = gram_s.new_zeros(())
        if need_grad:
            d_gram = torch.zeros_like(gram_s)  # (B, B)
            d_inv = torch.zeros_like(inv_s)  # (B, B)
            dist_s = torch.where(inv_s > 0, inv_s.reciprocal(), torch.zeros_like(inv_s))  # (B, B)
        for j0 in range(0, b, rows):
            j1 = min(j0 + rows, b)
            cos_s, outer = _chunk_cosines(gram_s, r_s[j0:j1], inv_s[j0:j1])  # (n, B, B)
            cos_t, _ = _chunk_cosines(gram_t, r_t[j0:j1], inv_t[j0:j1])  # (n, B, B)
            err = torch.sub(cos_s, cos_t, out=cos_t)  # (n, B, B)  e = cos^s - cos^t
            slope = err.clamp(-1.0, 1.0)  # (n, B, B)  g = huber'(e)
            flat = slope.view(-1)
            total += torch.dot(flat, err.view(-1)) - 0.5 * torch.dot(flat, flat)
            if not need_grad:
                continue
            gc_rows = (slope * cos_s).sum(dim=2)  # (n, B)  sum_k g_jik cos_jik
            m = slope.mul_(outer)  # (n, B, B)  M (unscaled)
            d_gram += m.sum(dim=0)  # dL/dG_ik
            m_rows = m.sum(dim=2)  # (n, B)  sum_k M_jik
            d_gram[j0:j1] -= 2.0 * m_rows  # dL/dG_ji
            d_gram.diagonal()[j0:j1] += m_rows.sum(dim=1)  # dL/dG_jj
            d_inv[j0:j1] = 2.0 * dist_s[j0:j1] * gc_rows  # dL/dA_ji
        scale = 1.0 / b**3
        if need_grad:
            ctx.save_for_backward(d_gram * scale, d_inv * scale)
        return total * scale

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        d_gram, d_inv = ctx.saved_tensors
        return grad_out * d_gram, grad_out * d_inv, None, None, None


def rkd_angle_loss(
    student_features: Tensor, teacher_features: Tensor, *, chunk_size: int | None = None
) -> Tensor:
    """``L_RKD-A = mean_{i,j,k} huber( psi_A^s(i,j,k), psi_A^t(i,j,k) )``, vertex at ``j``, a
    scalar.

    Park et al. 2019, Sec. 3.2.2: ``psi_A(i,j,k) = <e_ij, e_kj>``,
    ``e_ij = (x_i - x_j) / ||x_i - x_j||``; ``delta = 1``; mean over all ``B^3`` ordered triplets.
    The cosines come from the Gram identity (:func:`~relkd_tutorial.relations.angle_cosines`), the
    loss and its gradient chunk by chunk of ``chunk_size`` vertices (default
    ``max(1, 2^16 // B^2)``; ``_RKDAngleHuber``). ``student_features`` ``(B, D_S)``, ``B >= 3``;
    ``teacher_features`` ``(B, D_T)``, detached. Float32 or wider, autocast off.
    """
    s, t = check_feature_pair(
        student_features, teacher_features, 3, "the RKD angle potential (a triplet)"
    )
    rows = check_optional_count("chunk_size", chunk_size)
    b = s.shape[0]
    rows = rows if rows is not None else max(1, ANGLE_CHUNK_ELEMENTS // (b * b))
    with full_precision(s, t) as dtype:
        # rescaled(): cosines are scale invariant; this keeps the Gram matrix finite, non-zero
        gram_s, inv_s = gram_and_inverse_distances(rescaled(s.to(dtype)))  # (B, B) each
        with torch.no_grad():
            gram_t, inv_t = gram_and_inverse_distances(rescaled(t.detach().to(dtype)))
        return _RKDAngleHuber.apply(gram_s, inv_s, gram_t, inv_t, rows)


class RKDLoss(nn.Module):
    """``distance_weight * L_RKD-D + angle_weight * L_RKD-A`` (a term with weight 0 is skipped).

    Defaults: the CIFAR convention 25 / 50 beside cross-entropy (RepDistiller, mdistiller); the
    authors' metric-learning convention is 1 / 2 with no cross-entropy.
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        self.distance_weight = check_nonnegative("distance_weight", distance_weight)
        self.angle_weight = check_nonnegative("angle_weight", angle_weight)

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        total = student_features.new_zeros((), dtype=torch.float32)
        terms = ((self.distance_weight, rkd_distance_loss), (self.angle_weight, rkd_angle_loss))
        for weight, loss in terms:
            if weight > 0:
                value = loss(student_features, teacher_features)
                total = total.to(value.dtype) + weight * value
        return total

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
