"""Relation primitives shared by every relational loss, each tested once against a loop written
from its definition: sample relations on ``(B, D)`` rows (distances from the centred Gram matrix,
angles, cosines), class relations on ``(B, C)`` scores (preferences, orders with tie blocks, the
pairwise log-partition whose gradient is the soft wins) and triplet relations (REFILLED's
semi-hard triplets). ``B`` batch, ``D`` feature width, ``K`` queue length, ``C`` classes. These
functions do not validate their inputs; the public losses do (``_checks.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12  # clamp for squared distances before the square root (gradient stays finite)

# A pair (i, j) whose squared distance is below COINCIDENT_TOL * eps(dtype) * (|x_i|^2 + |x_j|^2)
# (norms of the centred batch) cannot be told apart from a coincident pair: the Gram formula's
# rounding error is of that size. Such pairs get distance exactly 0 and no direction (choice).
COINCIDENT_TOL = 16.0

# Elements per chunk in the pairwise-class kernel; about 1 MiB of float32, so a chunk's few
# temporaries stay in a CPU core's L2 cache. Memory is O(B * C * chunk), never O(B * C^2).
PAIR_CHUNK_ELEMENTS = 1 << 18


# --- Sample relations ---


def off_diagonal_mask(n: int, device: torch.device | None = None) -> Tensor:
    """Boolean ``(n, n)`` mask that is ``False`` on the diagonal and ``True`` elsewhere."""
    return ~torch.eye(n, dtype=torch.bool, device=device)


def rescaled(x: Tensor, dim: int | None = None) -> Tensor:
    """``x / max|x|``, the maximum over all entries (or along ``dim``, per row), detached.

    Anything invariant to a positive scale (RKD's potentials, cosines, unit vectors) is unchanged,
    but squares inside a Gram matrix or a norm can no longer overflow or underflow (float32 features
    of size ``1e20`` give ``inf``, of size ``1e-20`` give 0). All-zero inputs (rows) are returned
    unchanged. The gradient is that of the unscaled expression: a scale-invariant ``f`` has
    ``grad f(x / c) / c = grad f(x)``.
    """
    x_abs = x.detach().abs()
    top = x_abs.amax() if dim is None else x_abs.amax(dim=dim, keepdim=True)
    return x / torch.where(top > 0, top, torch.ones_like(top))


def unit_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x_i / ||x_i||`` for every row of ``(N, D)`` ``x`` (zero rows stay zero), at any magnitude
    (``F.normalize`` after :func:`rescaled`: alone it squares the entries, so in float32 a row of
    size ``1e20`` would come out as zeros).
    """
    return F.normalize(rescaled(x, dim=1), dim=1, eps=eps)


def _gram_and_squared_distances(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Centred Gram matrix ``G (B, B)``, squared distances ``d2 = G_ii + G_jj - 2 G_ij`` (unclamped)
    and the coincident-pair mask (the diagonal, and pairs within the formula's rounding error).

    Centring keeps ``G_ii`` of the order of the squared distances, so the cancellation is harmless
    unless two rows (nearly) coincide.
    """
    xc = x - x.mean(dim=0, keepdim=True)  # (B, D), centred
    gram = xc @ xc.t()  # (B, B)
    sq = gram.diagonal()  # (B,)
    scale = sq[:, None] + sq[None, :]  # (B, B)
    d2 = scale - 2.0 * gram  # (B, B)
    tol = COINCIDENT_TOL * torch.finfo(x.dtype).eps
    coincident = (d2 <= tol * scale) | torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return gram, d2, coincident


def pairwise_distances(x: Tensor, squared: bool = False, eps: float = EPS) -> Tensor:
    """Euclidean distances ``d_ij = ||x_i - x_j||`` (``d_ij^2`` if ``squared``) of ``(B, D)`` rows,
    ``(B, B)``.

    From the centred Gram matrix, with no ``(B, B, D)`` tensor. Coincident pairs (within rounding)
    and the diagonal are exactly 0 with a zero gradient; elsewhere ``d_ij^2`` is clamped at ``eps``
    before the square root, so every gradient is finite.
    """
    _, d2, coincident = _gram_and_squared_distances(x)
    d2 = d2.clamp_min(eps)  # (B, B)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(coincident, zero, d2 if squared else d2.sqrt())


def gram_and_inverse_distances(x: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """``(G, A)``, both ``(B, B)``: the centred Gram matrix and ``A_ij = 1 / d_ij``, 0 on the
    diagonal and for coincident pairs (no direction; the authors' code gets the same 0 from
    ``F.normalize`` of a zero vector). Every angle is built from them (:func:`angle_cosines`).
    """
    gram, d2, coincident = _gram_and_squared_distances(x)
    inv = d2.clamp_min(eps).rsqrt()  # (B, B)
    return gram, torch.where(coincident, torch.zeros((), dtype=x.dtype, device=x.device), inv)


def mean_off_diagonal(m: Tensor) -> Tensor:
    """Mean of a square ``(B, B)`` matrix over its ``B (B - 1)`` off-diagonal entries."""
    n = m.shape[0]
    return (m * off_diagonal_mask(n, m.device).to(m.dtype)).sum() / (n * (n - 1))


def normalized_pairwise_distances(x: Tensor, eps: float = EPS) -> Tensor:
    """RKD's distance potential ``psi_D(i, j) = d_ij / mu`` (Park et al. 2019, Sec. 3.2.1),
    ``(B, B)``.

    ``mu = mean_{i != j} d_ij`` over the ``B (B - 1)`` off-diagonal pairs (coincident ones count
    with distance 0), clamped at ``sqrt(eps)`` so identical samples give zeros, not 0/0. Invariant
    to a global rescaling and translation of the ``(B, D)`` embedding ``x``, ``B >= 2``.
    """
    d = pairwise_distances(x, eps=eps)  # (B, B)
    mu = mean_off_diagonal(d).clamp_min(eps**0.5)  # ()
    return d / mu


def angle_cosines(x: Tensor, eps: float = EPS) -> Tensor:
    """RKD's angle potential ``psi_A(i, j, k) = <e_ij, e_kj>``, vertex ``j``, as a ``(B, B, B)``
    tensor.

    ``e_ij = (x_i - x_j) / ||x_i - x_j||`` (Park et al. 2019, Sec. 3.2.2), from the centred Gram
    matrix: ``<x_i - x_j, x_k - x_j> = G_ik - G_ij - G_jk + G_jj``, times ``A_ij A_kj``
    (:func:`gram_and_inverse_distances`). Degenerate entries (``i = j``, ``k = j``, coincident
    pairs) are 0, as in the authors' code. The RKD loss never builds this tensor
    (:mod:`.losses.rkd`).
    """
    gram, inv_d = gram_and_inverse_distances(x, eps=eps)  # (B, B) each
    diag = gram.diagonal()  # (B,)  G_jj
    # numerator[i, j, k] = G_ik - G_ij - G_jk + G_jj
    num = (
        gram[:, None, :]  # G_ik -> (B, 1, B)
        - gram[:, :, None]  # G_ij -> (B, B, 1)
        - gram.t()[None, :, :]  # G_jk -> (1, B, B) indexed [., j, k]
        + diag[None, :, None]  # G_jj -> (1, B, 1)
    )  # (B, B, B)
    return num * inv_d[:, :, None] * inv_d.t()[None, :, :]  # * A_ij * A_kj


def cosine_similarity_matrix(a: Tensor, b: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """``S_ik = <a_i, b_k> / (||a_i|| ||b_k||)``, ``(B, K)`` for ``a`` ``(B, D)`` and ``b``
    ``(K, D)`` (default ``a``); a zero row has similarity 0, rows of any magnitude are exact
    (:func:`unit_rows`).
    """
    a_n = unit_rows(a, eps=eps)  # (B, D)
    b_n = a_n if b is None else unit_rows(b, eps=eps)  # (K, D)
    return a_n @ b_n.t()  # (B, K)


# --- Class relations: preferences, orders, ranks ---


def preference_mask(t: Tensor) -> Tensor:
    """GRKD's preference set ``P_ijk = [t_ij > t_ik]`` as a ``(B, C, C)`` bool tensor, ``t``
    ``(B, C)`` (ties and the diagonal: ``False``).
    """
    return t[:, :, None] > t[:, None, :]  # (B, C, C)


def _tie_blocks(sorted_rows: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, last)``, both ``(B, C)`` int64: the first and last position of the block of equal
    values each position of a sorted ``(B, C)`` row (either direction) is in.
    """
    b, c = sorted_rows.shape
    pos = torch.arange(c, device=sorted_rows.device).expand(b, c)  # (B, C)
    differs = sorted_rows[:, 1:] != sorted_rows[:, :-1]  # (B, C - 1)
    true_col = torch.ones(b, 1, dtype=torch.bool, device=sorted_rows.device)
    starts = torch.cat([true_col, differs], dim=1)  # (B, C) a block starts here
    ends = torch.cat([differs, true_col], dim=1)  # (B, C) a block ends here
    first = torch.where(starts, pos, 0).cummax(dim=1).values  # (B, C)
    last = torch.where(ends, pos, c).flip(1).cummin(dim=1).values.flip(1)  # (B, C)
    return first, last


def preference_counts(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(wins, losses)``, both ``(B, C)`` int64: ``wins_ia = #{b : t_ia > t_ib}``,
    ``losses_ia = #{b : t_ib > t_ia}`` (the row and column sums of :func:`preference_mask`).

    A class tied with ``m`` others has ``wins + losses = C - 1 - m``; ``sum_a wins_ia = |P_i|``. One
    sort, ``O(B C log C)``, no ``(B, C, C)`` tensor.
    """
    c = t.shape[1]
    values, order = descending_order(t)  # (B, C) each
    first, last = _tie_blocks(values)  # (B, C) each; without ties, both are the position
    wins = torch.empty_like(last).scatter_(1, order, c - 1 - last)  # #{b: t_b < t_a}
    losses = torch.empty_like(first).scatter_(1, order, first)  # #{b: t_b > t_a}
    return wins, losses


def descending_order(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(values, order)``, both ``(B, C)``: each row's classes from most to least preferred,
    ``values = t.gather(1, order)`` non-increasing. Stable (choice: ties keep their index order;
    what must not depend on the tie break, e.g. GRKD's pair set, uses :func:`tie_block_ends`).

    On the CPU the order comes from NumPy: ``torch.sort`` of many short rows measured about 6x
    slower than ``numpy.argsort`` on the reference machine. Same result either way.
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        a = t.detach().numpy()
        order = torch.from_numpy(np.argsort(-a, axis=1, kind="stable")).to(torch.long)  # (B, C)
        return t.gather(1, order), order
    return t.sort(dim=1, descending=True, stable=True)


def tie_block_ends(sorted_desc: Tensor) -> Tensor:
    """``(B, C)`` int64 in ``[1, C]``: for each position ``a`` of a non-increasing row (e.g. from
    :func:`descending_order`), the first position with a smaller value. Class ``a`` is strictly
    preferred exactly to the positions ``b >= end[a]``; without ties ``end[a] = a + 1``.
    """
    return _tie_blocks(sorted_desc)[1] + 1


def _pairwise_kernel(v: Tensor, need_sum: bool, need_wins: bool) -> tuple[Tensor, Tensor]:
    """``P_i = sum_{a<b} log(e^{v_ia} + e^{v_ib})`` and ``W_ia = sum_{b != a} sigma(v_ia - v_ib)``.

    No autograd (called on detached tensors). Chunks of rows ``a`` over the columns ``b >= a0`` only
    (the pair terms are symmetric), so memory is ``O(B * C * chunk)``. With ``E = exp(v - m)``
    (``m`` the row's mid-range) a pair costs one log and one reciprocal:
    ``log(e^{v_a} + e^{v_b}) = log(E_a + E_b) + m`` and ``sigma(v_a - v_b) = E_a / (E_a + E_b)``,
    exact while ``E`` neither overflows nor underflows (a row range below ``1.7 log(max float)``,
    150 in float32); rows beyond it take the stable ``logaddexp``/``sigmoid`` pass. Both passes run
    and each row takes its own (no host synchronisation; choice).
    """
    vmax = v.max(dim=1, keepdim=True).values  # (B, 1)
    vmin = v.min(dim=1, keepdim=True).values  # (B, 1)
    fast = (vmax - vmin) <= 1.7 * math.log(torch.finfo(v.dtype).max)  # (B, 1) rows in range
    quick = _pairwise_pass(v, need_sum, need_wins, 0.5 * (vmax + vmin))
    stable = _pairwise_pass(v, need_sum, need_wins, None)
    return torch.where(fast[:, 0], quick[0], stable[0]), torch.where(fast, quick[1], stable[1])


def _pairwise_pass(
    v: Tensor, need_sum: bool, need_wins: bool, mid: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One pass of :func:`_pairwise_kernel` over every row: the fast form with the rows' mid-ranges
    ``mid`` ``(B, 1)`` (out-of-range rows come out inf/NaN; two work buffers allocated once, so the
    chunk loop allocates nothing), or the stable form (``mid=None``).
    """
    b, c = v.shape
    fast = mid is not None
    e = (v - mid).exp() if fast else None  # (B, C)
    full = v.new_zeros(b)  # sum over the full C x C square, diagonal included
    row = v.new_zeros(b, c)  # fast: sum_b 1/(E_a + E_b); stable: sum_b sigma(v_a - v_b)
    rows = max(1, min(c, PAIR_CHUNK_ELEMENTS // max(1, b * c)))
    if fast:
        buf_s = v.new_empty(b * rows * c)  # E_a + E_b, then its log
        buf_r = v.new_empty(b * rows * c) if need_wins else buf_s  # 1 / (E_a + E_b)
    for a0 in range(0, c, rows):
        a1 = min(a0 + rows, c)
        n, m = a1 - a0, c - a0
        if fast:
            shape = (b, n, m)  # [i, a - a0, b - a0] for a in [a0, a1), b in [a0, C)
            s = torch.add(e[:, a0:a1, None], e[:, None, a0:], out=buf_s[: b * n * m].view(shape))
            if need_wins:
                r = torch.reciprocal(s, out=buf_r[: b * n * m].view(shape))  # symmetric in a, b
                row[:, a0:a1] += r.sum(dim=2)
                row[:, a1:] += r[:, :, n:].sum(dim=1)  # the transposed (lower) block
            if need_sum:
                logs = s.log_()  # (B, n, m)
                # the n x n diagonal block once, the block right of it twice (its mirror image)
                full += 2.0 * logs.sum(dim=(1, 2)) - logs[:, :, :n].sum(dim=(1, 2))
        else:
            va = v[:, a0:a1, None]  # (B, n, 1)
            vb = v[:, None, a0:]  # (B, 1, m)
            if need_sum:
                lse = torch.logaddexp(va, vb)  # (B, n, m)
                full += 2.0 * lse.sum(dim=(1, 2)) - lse[:, :, :n].sum(dim=(1, 2))
            if need_wins:
                sig = torch.sigmoid(va - vb)  # (B, n, m): sigma(v_a - v_b)
                row[:, a0:a1] += sig.sum(dim=2)
                row[:, a1:] += n - sig[:, :, n:].sum(dim=1)  # sigma(v_b - v_a) = 1 - sigma
    pair_sum = v.new_zeros(b)
    wins = v.new_zeros(b, c)
    if need_sum:
        # remove the diagonal terms log(2 E_a) and halve the symmetric square
        if fast:
            diag = (v - mid + math.log(2.0)).sum(dim=1)  # (B,)
            pair_sum = 0.5 * (full - diag) + mid.squeeze(1) * (c * (c - 1) / 2)
        else:
            pair_sum = 0.5 * (full - (v + math.log(2.0)).sum(dim=1))
    if need_wins:
        # fast: E_a * sum_b 1/(E_a + E_b) includes b = a, which adds 1/2; stable: sigma(0) = 1/2
        wins = (e * row if fast else row) - 0.5
    return pair_sum, wins


class _PairwiseLogAddExpSum(torch.autograd.Function):
    """Autograd wrapper: the forward keeps the soft wins, which are exactly the gradient."""

    @staticmethod
    def forward(ctx, v: Tensor) -> Tensor:  # type: ignore[override]
        need_grad = bool(ctx.needs_input_grad[0])
        pair_sum, wins = _pairwise_kernel(v.detach(), need_sum=True, need_wins=need_grad)
        if need_grad:
            ctx.save_for_backward(wins)
        return pair_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        (wins,) = ctx.saved_tensors
        return grad_out[:, None] * wins  # (B, C)


def pairwise_logaddexp_sum(v: Tensor) -> Tensor:
    """The pairwise log-partition of each row, ``P_i = sum_{a<b} log(exp(v_ia) + exp(v_ib))``,
    ``(B,)``.

    Every pairwise logistic (Bradley-Terry) loss on score gaps reduces to it: for targets
    ``y_ab + y_ba = 1``,

        sum_{a<b} BCE(sigma(v_a - v_b), y_ab) = P(v) - sum_a Y_a v_a,   Y_a = sum_{b != a} y_ab,

    so the ``O(C^2)`` part of GRKD and of the soft pairwise loss depends on the student alone. Its
    gradient is the soft wins ``dP_i / dv_ia = sum_{b != a} sigma(v_ia - v_ib)``
    (:func:`soft_wins`), kept from the forward: the backward costs ``O(B C)``. ``v`` ``(B, C)``
    scores; first order only.
    """
    return _PairwiseLogAddExpSum.apply(v)


def soft_wins(v: Tensor) -> Tensor:
    """Soft win counts ``W_ia = sum_{b != a} sigma(v_ia - v_ib)``, ``(B, C)``,
    ``sum_a W_ia = C (C-1)/2``.

    ``C - 1 - W`` is a soft rank (0 = top); with hard steps it is :func:`preference_counts`'
    ``wins`` plus half the ties. No graph (used for teacher-side targets); it is the gradient of
    :func:`pairwise_logaddexp_sum`.
    """
    return _pairwise_kernel(v.detach(), need_sum=False, need_wins=True)[1]


# --- Triplet relations (REFILLED's stage 1) ---

_TRIPLET_CHUNK = 1 << 24  # entries of the (pairs, B) comparison tensor built at once


def triplet_label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(positive, negative)``, two ``(B, B)`` bool masks of which pairs may be (anchor, positive)
    (``y_a = y_p``, ``a != p``) and (anchor, negative) (``y_a != y_n``); both ``False`` where a
    label of ``labels`` ``(B,)`` is ``-1`` (an unlabelled sample takes no part).
    """
    labelled = labels >= 0  # (B,)
    both = labelled[:, None] & labelled[None, :]  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B)
    not_self = off_diagonal_mask(labels.shape[0], labels.device)  # (B, B)
    return both & same & not_self, both & ~same


def semi_hard_triplets(
    dist: Tensor, labels: Tensor, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """All semi-hard triplets of a batch: ``y_a = y_p``, ``a != p``, ``y_n != y_a`` and

        0 < d_an - d_ap <= margin

    (FaceNet's condition as pytorch-metric-learning's ``TripletMarginMiner(type_of_triplets=
    "semihard")`` enumerates it, which REFILLED's official code uses). ``dist`` ``(B, B)``,
    ``labels`` ``(B,)`` (``-1`` never takes part). Only the ``P`` (anchor, positive) pairs are
    compared with the ``B`` candidates, in chunks of pairs. Returns ``(a, p, n)``, three ``(T,)``
    int64 tensors sorted by ``(a, p, n)`` (``T = 0`` if none); no gradient.
    """
    dist = dist.detach()
    b = dist.shape[0]
    positive, negative = triplet_label_masks(labels)  # (B, B) each
    anchor, pos = positive.nonzero(as_tuple=True)  # (P,) each, sorted by (a, p)
    # A candidate that is not a negative of the anchor gets d_an = -inf, so its gap fails "> 0".
    d_an = torch.where(negative, dist, torch.full_like(dist, float("-inf")))  # (B, B)
    step = max(1, _TRIPLET_CHUNK // max(1, b))
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    for start in range(0, max(1, anchor.shape[0]), step):  # once if P = 0: three empty tensors
        a, p = anchor[start : start + step], pos[start : start + step]  # (P',)
        gap = d_an[a] - dist[a, p][:, None]  # (P', B)  [pair, n] = d_an - d_ap
        pair, n = ((gap > 0) & (gap <= margin)).nonzero(as_tuple=True)  # (T',) each
        found.append((a[pair], p[pair], n))
    a, p, n = (torch.cat(idx) for idx in zip(*found, strict=True))
    return a, p, n
