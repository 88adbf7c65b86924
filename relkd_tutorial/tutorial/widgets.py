"""What the notebooks' widgets compute: pure functions from plain inputs to plain outputs.

A widget is sliders (in the notebook), a computation (here) and a picture (:mod:`.plots`). A
function here takes all its state as arguments, returns floats and NumPy arrays, raises an error
naming a bad argument, and calls the package's losses and relations (in float64) rather than
re-implementing them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    check_count,
    check_feature_pair,
    check_float_tensor,
    check_labels,
    check_optional_count,
    check_positive,
)
from ..losses.grkd import grkd_loss
from ..losses.kd import kd_loss
from ..losses.ranking import listwise_rank_loss, soft_pairwise_rank_loss
from ..losses.refilled import embedding_distances, mine_triplets
from ..losses.rkd import rkd_angle_loss, rkd_distance_loss
from ..losses.rrd import rrd_decomposition, rrd_log_probs
from ..metrics import kendall_tau
from ..relations import normalized_pairwise_distances, triplet_label_masks


def _as_float64(name: str, x: object, ndim: int, shape_doc: str) -> Tensor:
    """``x`` (a tensor or array-like) as a finite float64 CPU tensor of rank ``ndim``."""
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric with shape {shape_doc}") from exc
    return check_float_tensor(name, x.detach().to("cpu", torch.float64), ndim, shape_doc)


def _as_labels(name: str, y: object, n: int) -> Tensor:
    t = y.detach().cpu() if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    return check_labels(name, t, n).long()


def _num_classes(labels: Tensor, num_classes: int | None) -> int:
    labelled = labels[labels >= 0]
    if labelled.numel() == 0:
        raise ValueError("labels hold no labelled sample (all are -1)")
    c = int(labelled.max()) + 1 if num_classes is None else int(num_classes)
    if c < int(labelled.max()) + 1:
        raise ValueError(f"num_classes={c} but labels go up to {int(labelled.max())}")
    return c


# --- shared -------------------------------------------------------------------------------------


def _entropy(p: Tensor) -> float:
    """Shannon entropy ``H(p) = -sum_c p_c log p_c`` in nats of ``(C,)`` probabilities
    (``0 log 0 = 0``)."""
    return float(-(torch.special.xlogy(p, p)).sum())


def group_order(groups: Mapping[str, Sequence[int]], num_classes: int) -> list[int]:
    """A class order that puts each group's members next to each other, the rest last.

    ``group_order({"tops": (0, 2, 4, 6), "footwear": (5, 7, 9)}, 10)`` is
    ``[0, 2, 4, 6, 5, 7, 9, 1, 3, 8]``: reorder a class-by-class matrix with it and the groups
    become blocks on its diagonal. A class outside ``[0, num_classes)`` or in two groups raises.
    """
    order: list[int] = []
    for name, members in groups.items():
        for c in members:
            c = int(c)
            if not 0 <= c < num_classes:
                raise ValueError(f"group {name!r} has class {c} outside [0, {num_classes})")
            if c in order:
                raise ValueError(f"class {c} is in more than one group")
            order.append(c)
    return order + [c for c in range(num_classes) if c not in order]


def _grouped_matrix(
    matrix: object, groups: Mapping[str, Sequence[int]]
) -> tuple[Tensor, Tensor, Tensor]:
    """A square ``(C, C)`` matrix as float64, each class's group id ``(C,)`` (-1: none) and the
    ``(C, C)`` mask of pairs in one group (the diagonal of a grouped class included)."""
    m = _as_float64("matrix", matrix, 2, "(C, C)")
    c = m.shape[0]
    if m.shape != (c, c):
        raise ValueError(f"matrix must be square (C, C), got {tuple(m.shape)}")
    group_order(groups, c)  # validates: classes in range, no class in two groups
    group_of = torch.full((c,), -1, dtype=torch.long)
    for g, members in enumerate(groups.values()):
        group_of[[int(k) for k in members]] = g
    return m, group_of, (group_of[:, None] == group_of[None, :]) & (group_of[:, None] >= 0)


def block_contrast(
    matrix: object, groups: Mapping[str, Sequence[int]], *, skip_diagonal: bool = True
) -> dict[str, float]:
    """Mean of a ``(C, C)`` similarity matrix inside the groups (``within``: ``j``, ``k`` in one
    group, ``j != k`` if ``skip_diagonal``) vs ``between`` (``j`` in a group, ``k`` in another or
    none, and vice versa), and ``ratio = within / between`` (``inf`` if 0). ``groups``: e.g.
    :data:`relkd_tutorial.metrics.FASHION_MNIST_GROUPS`; learnt groups give ``within > between``."""
    m, group_of, same = _grouped_matrix(matrix, groups)
    if skip_diagonal:
        same &= ~torch.eye(m.shape[0], dtype=torch.bool)
    in_some = group_of >= 0  # (C,)
    between = (in_some[:, None] | in_some[None, :]) & (group_of[:, None] != group_of[None, :])
    if not bool(same.any()) or not bool(between.any()):
        raise ValueError("need a group of >= 2 classes and a class outside it")
    within_v, between_v = float(m[same].mean()), float(m[between].mean())
    ratio = within_v / between_v if between_v != 0 else math.inf
    return {"within": within_v, "between": between_v, "ratio": ratio}


def within_group_share(matrix: object, groups: Mapping[str, Sequence[int]]) -> float:
    """The share of a non-negative ``(C, C)`` matrix's off-diagonal mass inside a group,
    ``sum_{j != k, g(j) = g(k)} M_jk / sum_{j != k} M_jk`` (for the soft confusion matrix: how
    much of the probability on wrong classes goes to the true class's own group)."""
    m, _, same = _grouped_matrix(matrix, groups)
    if bool((m < 0).any()):
        raise ValueError("matrix must be non-negative")
    off = ~torch.eye(m.shape[0], dtype=torch.bool)  # (C, C)
    total = float(m[off].sum())
    if total <= 0:
        raise ValueError("the matrix has no off-diagonal mass")
    return float(m[same & off].sum()) / total


def _class_means(x: Tensor, y: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """Per class ``k < c`` the mean row of ``x`` ``(N, D)`` over ``y == k`` (0 if none; ``-1``
    ignored), ``(c, D)``, and the counts ``(c,)``."""
    keep = y >= 0  # (N,)
    sums = torch.zeros(c, x.shape[1], dtype=torch.float64).index_add_(0, y[keep], x[keep])
    counts = torch.bincount(y[keep], minlength=c).double()
    return sums / counts.clamp_min(1)[:, None], counts


# --- 00 setup and data --------------------------------------------------------------------------


def class_soft_confusion(
    logits: object, labels: object, temperature: float = 1.0, num_classes: int | None = None
) -> np.ndarray:
    """The teacher's mean softened distribution per true class, a "soft" confusion matrix
    ``M_kj = mean_{i : y_i = k} softmax(t_i / T)_j`` (rows sum to 1; off the diagonal, the "dark
    knowledge" KD transfers). ``logits`` ``(N, C)``, ``labels`` ``(N,)`` (``-1`` ignored).
    Returns ``(C, C)`` float64, a NaN row for a class without a sample."""
    t = _as_float64("logits", logits, 2, "(N, C)")
    y = _as_labels("labels", labels, t.shape[0])
    temp = check_positive("temperature", temperature)
    c = t.shape[1] if num_classes is None else _num_classes(y, num_classes)
    if c != t.shape[1]:
        raise ValueError(f"num_classes={c} but logits have {t.shape[1]} columns")
    if int(y.max()) >= c:
        raise ValueError(f"labels go up to {int(y.max())} but there are {c} classes")
    out, counts = _class_means(F.softmax(t / temp, dim=1), y, c)  # (C, C), (C,)
    out[counts == 0] = math.nan
    return out.numpy()


def class_mean_cosine(
    features: object, labels: object, num_classes: int | None = None
) -> np.ndarray:
    """Cosine similarity of the class-mean features, ``S_jk = cos(mu_j, mu_k)`` with
    ``mu_k = mean_{i : y_i = k} f_i``: the geometry the relational methods transfer, class by
    class. ``features`` ``(N, D)``, ``labels`` ``(N,)`` (``-1`` ignored). Returns ``(C, C)``
    float64, NaN rows and columns for classes without a sample."""
    f = _as_float64("features", features, 2, "(N, D)")
    y = _as_labels("labels", labels, f.shape[0])
    c = _num_classes(y, num_classes)
    means, counts = _class_means(f, y, c)  # (C, D), (C,)
    unit = F.normalize(means, dim=1, eps=1e-12)  # (C, D)
    out = unit @ unit.t()  # (C, C)
    out[counts == 0, :] = math.nan
    out[:, counts == 0] = math.nan
    return out.numpy()


# --- 01 KD --------------------------------------------------------------------------------------


def softened_distribution(logits: object, temperature: float) -> dict[str, object]:
    """One image's softened teacher distribution ``p = softmax(t / T)`` and its entropy.

    ``logits``: ``(C,)``; ``temperature``: ``T > 0``. Returns ``probs`` ``(C,)``, ``entropy``
    ``H(p)`` in nats, ``max_entropy`` ``log C`` (uniform, reached as ``T -> inf``), ``top``
    (the argmax, the same at every ``T``) and ``temperature``.
    """
    t = _as_float64("logits", logits, 1, "(C,)")
    temp = check_positive("temperature", temperature)
    c = t.shape[0]
    if c < 2:
        raise ValueError(f"logits need at least 2 classes, got {c}")
    p = F.softmax(t / temp, dim=0)  # (C,)
    return {
        "probs": p.numpy(),
        "entropy": _entropy(p),
        "max_entropy": math.log(c),
        "top": int(t.argmax()),
        "temperature": temp,
    }


def entropy_curve(logits: object, temperatures: Sequence[float]) -> np.ndarray:
    """``H(softmax(t / T))`` for each ``T`` in ``temperatures`` (non-decreasing in ``T``)."""
    return np.array([softened_distribution(logits, T)["entropy"] for T in temperatures])


# --- 02 RKD -------------------------------------------------------------------------------------


def transform_points(
    points: object,
    *,
    scale: float = 1.0,
    angle_deg: float = 0.0,
    shift: Sequence[float] = (0.0, 0.0),
    moved_index: int | None = None,
    move: Sequence[float] = (0.0, 0.0),
) -> np.ndarray:
    """A student copy of a 2-D teacher cloud ``(N, 2)``: ``x' = s R(angle) x + shift`` (a
    similarity: distances scaled, angles kept; angle counter-clockwise in degrees), then point
    ``moved_index`` moved by ``move`` (non-rigid: its relations change). ``(N, 2)`` float64."""
    x = _as_float64("points", points, 2, "(N, 2)")
    if x.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {tuple(x.shape)}")
    s = check_positive("scale", scale)
    theta = math.radians(float(angle_deg))
    cos, sin = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)  # (2, 2)
    out = s * x @ rot.t() + _as_float64("shift", shift, 1, "(2,)")  # (N, 2)
    if moved_index is not None:
        i = int(moved_index)
        if not 0 <= i < x.shape[0]:
            raise ValueError(f"moved_index must be in [0, {x.shape[0]}), got {moved_index}")
        out[i] += _as_float64("move", move, 1, "(2,)")
    return out.numpy()


def rkd_relations(teacher_points: object, student_points: object) -> dict[str, object]:
    """Both sides' RKD distance potentials and the two RKD losses, in float64.

    ``psi_D(i, j) = d_ij / mu`` (:func:`~relkd_tutorial.relations.normalized_pairwise_distances`),
    ``L_D = mean_{i,j} huber(psi_D^S - psi_D^T)``, ``L_A = mean_{i,j,k} huber(psi_A^S - psi_A^T)``
    (:mod:`relkd_tutorial.losses.rkd`), from ``(N, D_T)`` and ``(N, D_S)`` points (``N >= 3``;
    the widths may differ). Returns ``psi_teacher``, ``psi_student`` ``(N, N)``,
    ``distance_loss`` and ``angle_loss``.
    """
    t = _as_float64("teacher_points", teacher_points, 2, "(N, D_T)")
    s = _as_float64("student_points", student_points, 2, "(N, D_S)")
    if t.shape[0] != s.shape[0]:
        raise ValueError(
            f"teacher_points and student_points need the same N, got {t.shape[0]} and {s.shape[0]}"
        )
    if t.shape[0] < 3:
        raise ValueError(f"need N >= 3 points for an angle, got {t.shape[0]}")
    return {
        "psi_teacher": normalized_pairwise_distances(t).numpy(),
        "psi_student": normalized_pairwise_distances(s).numpy(),
        "distance_loss": float(rkd_distance_loss(s, t)),
        "angle_loss": float(rkd_angle_loss(s, t)),
    }


# --- 03 RRD -------------------------------------------------------------------------------------


def rrd_sample_view(
    student_emb: object, teacher_emb: object, queue: object, tau_s: float, tau_t: float
) -> dict[str, object]:
    """One sample's two distributions over the queue ``(K, d)``, sorted by the teacher:
    ``p^T(k) = softmax_k(<u, q_k> / tau_t)``, ``p^S(k) = softmax_k(<s, q_k> / tau_s)`` (inputs
    L2-normalised), ``L = KL(p^T || p^S) + H(p^T)`` (:func:`~relkd_tutorial.losses.rrd.
    rrd_decomposition`). Returns ``order``, ``p_teacher``, ``p_student`` (in that order), ``loss``,
    ``kl``, ``entropy``, ``effective_slots_{teacher,student}`` = ``exp(H)`` of each side,
    ``tau_s``, ``tau_t``."""
    s = _as_float64("student_emb", student_emb, 1, "(d,)")
    u = _as_float64("teacher_emb", teacher_emb, 1, "(d,)")
    q = _as_float64("queue", queue, 2, "(K, d)")
    tau_s, tau_t = check_positive("tau_s", tau_s), check_positive("tau_t", tau_t)
    if s.shape != u.shape or q.shape[1] != s.shape[0]:
        raise ValueError(
            f"student_emb {tuple(s.shape)}, teacher_emb {tuple(u.shape)} and queue "
            f"{tuple(q.shape)} must share the width d"
        )
    parts = rrd_decomposition(s[None], u[None], q, tau_s, tau_t)
    p_s, p_t = (log_p[0].exp() for log_p in rrd_log_probs(s[None], u[None], q, tau_s, tau_t))
    order = torch.sort(p_t, descending=True, stable=True).indices  # (K,)
    return {
        "order": order.numpy(),
        "p_teacher": p_t[order].numpy(),
        "p_student": p_s[order].numpy(),
        "loss": float(parts["loss"]),
        "kl": float(parts["kl"]),
        "entropy": float(parts["entropy"]),
        "effective_slots_teacher": math.exp(float(parts["entropy"])),
        "effective_slots_student": math.exp(_entropy(p_s)),
        "tau_s": tau_s,
        "tau_t": tau_t,
    }


# --- 04 REFILLED ---------------------------------------------------------------------------------


def pca_2d(x: Tensor) -> np.ndarray:
    """The first two principal components of the rows of ``x``: ``(N, D)`` -> ``(N, 2)`` (float64;
    each axis signed so its largest coordinate is positive, no flip between calls; rank 1: the
    second column is 0)."""
    x = check_float_tensor("x", x, 2, "(N, D)").detach().double().cpu()
    xc = x - x.mean(dim=0, keepdim=True)  # (N, D)
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)  # vh: (min(N, D), D)
    coords = xc @ vh[:2].t()  # (N, k), k <= 2
    coords = F.pad(coords, (0, 2 - coords.shape[1]))  # (N, 2): rank 1 gets a zero second column
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
    ``negative``, ``p_student``, ``p_teacher``, ``loss_terms``, their mean ``loss`` (0.0 without
    triplets) and ``batch_triplets``."""
    f_s, f_t = check_feature_pair(student_features, teacher_features)
    b = f_s.shape[0]
    y = check_labels("labels", labels, b).cpu()
    anchor = check_count("anchor", anchor, 0)
    if anchor >= b:
        raise ValueError(f"anchor must lie in [0, {b}) (the batch size), got {anchor}")
    margin = check_positive("margin", margin)
    tau1 = check_positive("tau1", tau1)

    f_s, f_t = f_s.detach().double().cpu(), f_t.detach().double().cpu()
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

    positives, negatives = (torch.nonzero(m[anchor]).flatten() for m in triplet_label_masks(y))
    return {
        "anchor": anchor,
        "label": int(y[anchor]),
        "margin": margin,
        "tau1": tau1,
        "coords": pca_2d(F.normalize(f_s, dim=1)),
        "positives": positives.numpy(),
        "negatives": negatives.numpy(),
        "positive": p.numpy(),
        "negative": n.numpy(),
        "p_student": log_ps.exp().numpy(),
        "p_teacher": log_pt.exp().numpy(),
        "loss_terms": terms.numpy(),
        "loss": float(terms.mean()) if terms.numel() else 0.0,
        "batch_triplets": int(a.shape[0]),
    }


# --- 05 GRKD -------------------------------------------------------------------------------------


def _logit_rows(teacher: object, student: object) -> tuple[Tensor, Tensor]:
    """Float64 ``(1, C)`` rows of one sample's teacher and student logits (``C >= 2``, finite)."""
    t = _as_float64("teacher_logits", teacher, 1, "(C,) with C >= 2")
    z = _as_float64("student_logits", student, 1, "(C,) with C >= 2")
    if t.shape != z.shape or t.shape[0] < 2:
        raise ValueError(
            "teacher_logits and student_logits need the same number of classes, C >= 2, got "
            f"{t.shape[0]} and {z.shape[0]}"
        )
    return t[None], z[None]


def _loss_and_grad(loss_fn, z: Tensor, t: Tensor) -> dict[str, object]:
    """``{"loss": loss, "grad": d loss / d z}`` of ``loss_fn(z, t)`` for one ``(1, C)`` row, in
    float64 (the grad ``(C,)``)."""
    z = z.clone().requires_grad_(True)
    loss = loss_fn(z, t)
    (grad,) = torch.autograd.grad(loss, z)
    return {"loss": float(loss.detach()), "grad": grad[0].numpy()}


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
    ``n_violated``, ``loss``, ``grad`` (``(C,)``, sums to 0), ``teacher_order`` and
    ``kendall_tau`` (tau-b, NaN if a side is all tied)."""
    t, z = _logit_rows(teacher_logits, student_logits)  # (1, C) each
    tau = check_positive("temperature", temperature)
    c = t.shape[1]
    order = np.argsort(-t[0].numpy(), kind="stable")  # (C,)
    preferred = t[0][:, None] > t[0][None, :]  # (C, C)  [j, k] = t_j > t_k
    if (top_k := check_optional_count("top_k", top_k)) is not None:
        in_top = torch.zeros(c, dtype=torch.bool)
        in_top[torch.as_tensor(order[: min(top_k, c)].copy())] = True
        preferred = preferred & in_top[:, None]  # the preferred class is in the top-k
    gaps = z[0][:, None] - z[0][None, :]  # (C, C)  z_j - z_k
    pair_loss = torch.where(preferred, F.softplus(-gaps / tau), torch.zeros_like(gaps))
    violated = preferred & (gaps <= 0)  # (C, C)
    return {
        "teacher": t[0].tolist(),
        "student": z[0].tolist(),
        "preferred": preferred.numpy(),
        "violated": violated.numpy(),
        "pair_loss": pair_loss.numpy(),
        "n_pairs": int(preferred.sum()),
        "n_violated": int(violated.sum()),
        **_loss_and_grad(lambda zz, tt: grkd_loss(zz, tt, tau, top_k), z, t),  # loss, grad
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
    return {name: _loss_and_grad(losses[name], z, t) for name in RANKING_LOSSES}
