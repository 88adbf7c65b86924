"""The widget computations of notebooks 04 (REFILLED) and 05 (GRKD), designed as
:mod:`relkd_tutorial.tutorial.widgets`; drawn by :mod:`.plots_refilled_grkd`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_float_tensor, check_labels, check_positive, check_same_batch
from ..losses.grkd import grkd_loss
from ..losses.kd import kd_loss
from ..losses.ranking import listwise_rank_loss, soft_pairwise_rank_loss
from ..losses.refilled import embedding_distances, mine_triplets
from ..metrics import kendall_tau

# --- 04 REFILLED ---------------------------------------------------------------------------------


def pca_2d(x: Tensor) -> np.ndarray:
    """The first two principal components of the rows of ``x``: ``(N, D)`` -> ``(N, 2)`` (float64;
    each axis signed so its largest coordinate is positive, no flip between calls; rank 1: the
    second column is 0)."""
    x = check_float_tensor("x", x, 2, "(N, D)").detach().double().cpu()
    xc = x - x.mean(dim=0, keepdim=True)  # (N, D)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)  # vh: (min(N, D), D)
    coords = xc @ vh[:2].t()  # (N, k), k <= 2
    if coords.shape[1] < 2:
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 2 - coords.shape[1])], dim=1)
    big = coords.abs().argmax(dim=0)  # (2,)
    signs = torch.sign(coords[big, torch.arange(2)])  # (2,)
    signs[signs == 0] = 1.0
    return (coords * signs).numpy()  # (N, 2)


def refilled_anchor_view(
    student_features: Tensor,
    teacher_features: Tensor,
    labels: Tensor,
    anchor: int,
    margin: float = 0.2,
    tau1: float = 4.0,
) -> dict:
    """One anchor's semi-hard triplets (mined on the *student*,
    :func:`~relkd_tutorial.losses.refilled.mine_triplets`) and, per triplet ``(anchor, p, n)``,
    both networks' distances ``d = ||phi_i - phi_j||`` on normalised features, comparison
    probabilities ``P = sigmoid((d_an - d_ap) / tau1)`` and the stage-1 loss term
    ``1/2 [P^T log(P^T/P^S) + (1 - P^T) log((1 - P^T)/(1 - P^S))]``. Features ``(B, D_S)``,
    ``(B, D_T)``; ``labels`` ``(B,)`` (``-1``: no triplet). Returns the arguments, ``coords``
    ``(B, 2)`` (PCA of the student's), ``positives`` / ``negatives``, per triplet ``positive``,
    ``negative``, ``d_{ap,an}_{student,teacher}``, ``p_student``, ``p_teacher``, ``loss_terms``,
    their mean ``loss`` (0.0 without triplets) and ``batch_triplets``."""
    f_s = check_float_tensor("student_features", student_features, 2, "(B, D_S)").detach()
    f_t = check_float_tensor("teacher_features", teacher_features, 2, "(B, D_T)").detach()
    check_same_batch("student_features", f_s, "teacher_features", f_t)
    b = f_s.shape[0]
    y = check_labels("labels", labels, b).cpu()
    if isinstance(anchor, bool) or not isinstance(anchor, (int, np.integer)):
        raise TypeError(f"anchor must be an int in [0, {b}), got {type(anchor).__name__}")
    anchor = int(anchor)
    if not 0 <= anchor < b:
        raise ValueError(f"anchor must lie in [0, {b}) (the batch size), got {anchor}")
    margin = check_positive("margin", margin)
    tau1 = check_positive("tau1", tau1)

    f_s, f_t = f_s.double().cpu(), f_t.double().cpu()
    a, p, n = mine_triplets(f_s, y, margin)  # (T,) each, the whole batch
    mine = a == anchor  # (T,)
    p, n = p[mine], n[mine]  # (T_a,)
    d_s = embedding_distances(f_s)  # (B, B)
    d_t = embedding_distances(f_t)  # (B, B)
    gap_s = (d_s[anchor, n] - d_s[anchor, p]) / tau1  # (T_a,)
    gap_t = (d_t[anchor, n] - d_t[anchor, p]) / tau1  # (T_a,)
    log_ps, log_qs = F.logsigmoid(gap_s), F.logsigmoid(-gap_s)  # log P^S, log(1 - P^S)
    log_pt, log_qt = F.logsigmoid(gap_t), F.logsigmoid(-gap_t)  # log P^T, log(1 - P^T)
    terms = 0.5 * (log_pt.exp() * (log_pt - log_ps) + log_qt.exp() * (log_qt - log_qs))  # (T_a,)

    label = int(y[anchor])
    others = torch.arange(b) != anchor  # (B,)
    if label >= 0:
        positives = torch.nonzero((y == label) & others).flatten()
        negatives = torch.nonzero((y != label) & (y >= 0)).flatten()
    else:
        positives = negatives = torch.zeros(0, dtype=torch.long)
    return {
        "anchor": anchor,
        "label": label,
        "margin": margin,
        "tau1": tau1,
        "coords": pca_2d(F.normalize(f_s, dim=1)),
        "positives": positives.numpy(),
        "negatives": negatives.numpy(),
        "positive": p.numpy(),
        "negative": n.numpy(),
        "d_ap_student": d_s[anchor, p].numpy(),
        "d_an_student": d_s[anchor, n].numpy(),
        "d_ap_teacher": d_t[anchor, p].numpy(),
        "d_an_teacher": d_t[anchor, n].numpy(),
        "p_student": log_ps.exp().numpy(),
        "p_teacher": log_pt.exp().numpy(),
        "loss_terms": terms.numpy(),
        "loss": float(terms.mean()) if terms.numel() else 0.0,
        "batch_triplets": int(a.shape[0]),
    }


# --- 05 GRKD -------------------------------------------------------------------------------------


def _logit_rows(teacher: object, student: object) -> tuple[Tensor, Tensor]:
    """Float64 ``(1, C)`` rows of one sample's teacher and student logits (``C >= 2``, finite)."""
    rows = []
    for name, values in (("teacher_logits", teacher), ("student_logits", student)):
        row = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if row.dim() != 1 or row.shape[0] < 2:
            raise ValueError(
                f"{name} must be a flat sequence of C >= 2 numbers, got shape {tuple(row.shape)}"
            )
        if not bool(torch.isfinite(row).all()):
            raise ValueError(f"{name} must be finite, got {row.tolist()}")
        rows.append(row[None, :])
    if rows[0].shape != rows[1].shape:
        raise ValueError(
            f"teacher_logits and student_logits need the same number of classes, got "
            f"{rows[0].shape[1]} and {rows[1].shape[1]}"
        )
    return rows[0], rows[1]


def _loss_and_grad(loss_fn, z: Tensor, t: Tensor) -> tuple[float, np.ndarray]:
    """``(loss, d loss / d z)`` of ``loss_fn(z, t)`` for one ``(1, C)`` row, in float64."""
    z = z.clone().requires_grad_(True)
    loss = loss_fn(z, t)
    (grad,) = torch.autograd.grad(loss, z)
    return float(loss.detach()), grad[0].numpy()


def grkd_pair_view(
    teacher_logits: Sequence[float],
    student_logits: Sequence[float],
    temperature: float = 1.0,
    top_k: int | None = None,
) -> dict:
    """GRKD on one sample: the preference set ``P = {(j, k) : t_j > t_k}`` (ties give no pair;
    ``top_k``: the preferred class among the teacher's top-k), each pair's cost
    ``softplus(-(z_j - z_k) / tau)``, violated where ``z_j <= z_k``, and the loss and gradient of
    :func:`~relkd_tutorial.losses.grkd.grkd_loss`. Returns ``teacher``, ``student``,
    ``preferred``, ``violated`` (``(C, C)``, row = preferred class), ``pair_loss``, ``n_pairs``,
    ``n_violated``, ``loss``, ``grad`` (``(C,)``, sums to 0), ``teacher_order``, ``kendall_tau``
    (tau-b, NaN if a side is all tied), ``temperature``, ``top_k``."""
    t, z = _logit_rows(teacher_logits, student_logits)  # (1, C) each
    tau = check_positive("temperature", temperature)
    c = t.shape[1]
    order = np.argsort(-t[0].numpy(), kind="stable")  # (C,)
    preferred = t[0][:, None] > t[0][None, :]  # (C, C)  [j, k] = t_j > t_k
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        in_top = torch.zeros(c, dtype=torch.bool)
        in_top[torch.as_tensor(order[: min(top_k, c)].copy())] = True
        preferred = preferred & in_top[:, None]  # the preferred class is in the top-k
    gaps = z[0][:, None] - z[0][None, :]  # (C, C)  z_j - z_k
    pair_loss = torch.where(preferred, F.softplus(-gaps / tau), torch.zeros_like(gaps))
    violated = preferred & (gaps <= 0)  # (C, C)
    loss, grad = _loss_and_grad(lambda zz, tt: grkd_loss(zz, tt, tau, top_k), z, t)
    return {
        "teacher": t[0].tolist(),
        "student": z[0].tolist(),
        "temperature": tau,
        "top_k": top_k,
        "preferred": preferred.numpy(),
        "violated": violated.numpy(),
        "pair_loss": pair_loss.numpy(),
        "n_pairs": int(preferred.sum()),
        "n_violated": int(violated.sum()),
        "loss": loss,
        "grad": grad,
        "teacher_order": order.tolist(),
        "kendall_tau": float(kendall_tau(t, z)[0]),
    }


RANKING_LOSSES = ("KD", "GRKD", "soft pairwise", "listwise")


def ranking_loss_gradients(
    teacher_logits: Sequence[float],
    student_logits: Sequence[float],
    kd_temperature: float = 4.0,
    temperature: float = 1.0,
) -> dict[str, dict]:
    """On one sample, ``{name: {"loss": float, "grad": (C,)}}`` wrt the student's logits for
    :data:`RANKING_LOSSES`: KD (pointwise, at ``kd_temperature``), GRKD (pairwise, hard order),
    soft pairwise (the teacher's margins) and listwise (Plackett-Luce over the teacher's order),
    the last three at ``temperature``; each gradient sums to 0 (shift invariance)."""
    t, z = _logit_rows(teacher_logits, student_logits)  # (1, C) each
    kd_t = check_positive("kd_temperature", kd_temperature)
    tau = check_positive("temperature", temperature)
    losses = {
        "KD": lambda zz, tt: kd_loss(zz, tt, kd_t),
        "GRKD": lambda zz, tt: grkd_loss(zz, tt, tau),
        "soft pairwise": lambda zz, tt: soft_pairwise_rank_loss(zz, tt, tau, tau),
        "listwise": lambda zz, tt: listwise_rank_loss(zz, tt, tau),
    }
    out = {}
    for name in RANKING_LOSSES:
        loss, grad = _loss_and_grad(losses[name], z, t)
        out[name] = {"loss": loss, "grad": grad}
    return out
