"""Relation primitives shared by every relational loss.

A *relation* is a quantity defined on two or more samples (or two classes) rather than on one:
a distance between two embeddings, the angle they make at a third, the similarity of an embedding
to every slot of a memory queue, or the teacher's preference of one class over another. Every
loss in :mod:`relkd_tutorial.losses` builds its relations from the functions below, so there is
one implementation of each, tested once against a loop written straight from its definition.

Shapes: ``B`` batch, ``D`` feature width, ``K`` queue length, ``C`` classes.

These functions do not validate their inputs; the public losses do (see ``_checks.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12  # clamp for squared distances before the square root (gradient stays finite)


def off_diagonal_mask(n: int, device: torch.device | None = None) -> Tensor:
    """Boolean ``(n, n)`` mask that is ``False`` on the diagonal and ``True`` elsewhere."""
    return ~torch.eye(n, dtype=torch.bool, device=device)


def pairwise_distances(x: Tensor, squared: bool = False, eps: float = EPS) -> Tensor:
    """Euclidean distances between all pairs of rows, ``d_ij = ||x_i - x_j||_2``.

    Computed from the Gram matrix, ``d_ij^2 = G_ii + G_jj - 2 G_ij`` with ``G = x x^T``, which needs
    no ``(B, B, D)`` difference tensor. The squared distance is clamped at ``eps`` before the square
    root so the gradient is finite when two samples coincide, and the diagonal is set to exactly 0
    by a multiplication with a mask (not an in-place write on a tensor autograd needs).

    Args:
        x: ``(B, D)`` embeddings.
        squared: return ``d_ij^2`` instead of ``d_ij``.
        eps: clamp for ``d_ij^2``.

    Returns:
        ``(B, B)`` symmetric matrix with a zero diagonal.
    """
    sq_norms = (x * x).sum(dim=1)  # (B,)
    gram = x @ x.t()  # (B, B)
    d2 = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min(eps)  # (B, B)
    mask = off_diagonal_mask(x.shape[0], x.device).to(d2.dtype)  # (B, B)
    if squared:
        return d2 * mask
    return d2.sqrt() * mask


def mean_off_diagonal(m: Tensor) -> Tensor:
    """Mean of a square ``(B, B)`` matrix over its ``B (B - 1)`` off-diagonal entries."""
    n = m.shape[0]
    return (m * off_diagonal_mask(n, m.device).to(m.dtype)).sum() / (n * (n - 1))


def normalized_pairwise_distances(x: Tensor, eps: float = EPS) -> Tensor:
    """RKD's distance potential ``psi_D(i, j) = d_ij / mu`` (Park et al. 2019, Eq. 4).

    ``mu = mean_{i != j} d_ij`` is the batch's mean pairwise distance, so the potential is invariant
    to a global rescaling of the embedding. ``mu`` is clamped at ``sqrt(eps)`` so a batch of
    identical samples gives a zero matrix rather than 0/0.

    Args:
        x: ``(B, D)`` embeddings, ``B >= 2``.

    Returns:
        ``(B, B)`` matrix with a zero diagonal and off-diagonal mean 1.
    """
    d = pairwise_distances(x, eps=eps)  # (B, B)
    mu = mean_off_diagonal(d).clamp_min(eps**0.5)  # ()
    return d / mu


def angle_cosines(x: Tensor, eps: float = EPS) -> Tensor:
    """RKD's angle potential ``psi_A(i, j, k) = <e_ij, e_kj>`` with the vertex at ``j``.

    ``e_ij = (x_i - x_j) / ||x_i - x_j||`` (Park et al. 2019, Eq. 6). The inner product of two
    differences follows from the Gram matrix ``G = x x^T``:

        <x_i - x_j, x_k - x_j> = G_ik - G_ij - G_jk + G_jj,

    which is divided by ``d_ij d_kj``. No ``(B, B, D)`` tensor is built. Degenerate entries
    (``i = j`` or ``k = j``) are 0, as in the authors' code.

    Args:
        x: ``(B, D)`` embeddings.

    Returns:
        ``(B, B, B)`` tensor ``A[i, j, k]``.
    """
    gram = x @ x.t()  # (B, B)
    d = pairwise_distances(x, eps=eps)  # (B, B), zero diagonal
    inv_d = torch.where(d > 0, 1.0 / d.clamp_min(eps), torch.zeros_like(d))  # (B, B), 0 on diag
    diag = gram.diagonal()  # (B,)  G_jj
    # numerator[i, j, k] = G_ik - G_ij - G_jk + G_jj
    num = (
        gram[:, None, :]  # G_ik -> (B, 1, B)
        - gram[:, :, None]  # G_ij -> (B, B, 1)
        - gram.t()[None, :, :]  # G_jk -> (1, B, B) indexed [., j, k]
        + diag[None, :, None]  # G_jj -> (1, B, 1)
    )  # (B, B, B)
    return num * inv_d[:, :, None] * inv_d.t()[None, :, :]  # / (d_ij d_kj)


def cosine_similarity_matrix(a: Tensor, b: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Cosine similarities ``S_ik = <a_i, b_k> / (||a_i|| ||b_k||)``.

    Args:
        a: ``(B, D)``.
        b: ``(K, D)``; defaults to ``a``.

    Returns:
        ``(B, K)`` matrix with entries in ``[-1, 1]``.
    """
    a_n = F.normalize(a, dim=1, eps=eps)  # (B, D)
    b_n = a_n if b is None else F.normalize(b, dim=1, eps=eps)  # (K, D)
    return a_n @ b_n.t()  # (B, K)


def preference_mask(t: Tensor) -> Tensor:
    """The teacher's pairwise preferences ``P_ijk = [t_ij > t_ik]`` (GRKD's preference set).

    Ties give no preference in either direction, and the diagonal is always ``False``.

    Args:
        t: ``(B, C)`` teacher logits (or any scores; only their order matters).

    Returns:
        ``(B, C, C)`` boolean tensor.
    """
    return t[:, :, None] > t[:, None, :]  # (B, C, C)


def topk_membership(t: Tensor, k: int) -> Tensor:
    """``(B, C)`` boolean mask of the ``k`` largest entries of each row of ``t``."""
    k = min(int(k), t.shape[1])
    idx = t.topk(k, dim=1).indices  # (B, k)
    return torch.zeros_like(t, dtype=torch.bool).scatter(1, idx, True)


# ---------------------------------------------------------------------------------------------
# Triplet relations (added for REFILLED's stage 1; shared so any triplet-based loss reuses them)
# ---------------------------------------------------------------------------------------------

_TRIPLET_CHUNK = 1 << 24  # entries of the (pairs, B) comparison tensor built at once


def triplet_label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Which pairs may serve as (anchor, positive) and which as (anchor, negative).

    ``positive[a, p] = (y_a = y_p) and (a != p)``, ``negative[a, n] = (y_a != y_n)``, and both are
    ``False`` whenever ``y_a`` or the partner's label is ``-1`` (an unlabelled sample takes no
    part in a labelled relation).

    Args:
        labels: ``(B,)`` integer labels, ``-1`` = unlabelled.

    Returns:
        ``(positive, negative)``, two ``(B, B)`` boolean masks.
    """
    labelled = labels >= 0  # (B,)
    both = labelled[:, None] & labelled[None, :]  # (B, B)
    same = labels[:, None] == labels[None, :]  # (B, B)
    not_self = off_diagonal_mask(labels.shape[0], labels.device)  # (B, B)
    return both & same & not_self, both & ~same


def semi_hard_triplets(
    dist: Tensor, labels: Tensor, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """All semi-hard triplets of a batch, mined on a distance matrix.

    A triplet ``(a, p, n)`` is semi-hard when ``y_a = y_p``, ``a != p``, ``y_n != y_a`` and the
    negative lies beyond the positive but inside the margin:

        0 < d_an - d_ap <= margin.

    (FaceNet's semi-hard condition, in the form pytorch-metric-learning's ``TripletMarginMiner``
    with ``type_of_triplets="semihard"`` enumerates, which REFILLED's official code uses.)
    Unlabelled samples (label ``-1``) are never anchor, positive or negative.

    Only the ``P`` (anchor, positive) pairs are compared with all ``B`` candidates, a ``(P, B)``
    tensor (``P ~ B^2 / C`` for ``C`` balanced classes) instead of ``(B, B, B)``, built in chunks of
    pairs so memory stays bounded. No gradient flows through mining (the result is indices).

    Args:
        dist: ``(B, B)`` distances (any dissimilarity; only differences are compared).
        labels: ``(B,)`` integer labels, ``-1`` = unlabelled.
        margin: ``m > 0``.

    Returns:
        ``(a, p, n)``: three ``(T,)`` int64 index tensors, sorted lexicographically by
        ``(a, p, n)``; ``T = 0`` when the batch holds no semi-hard triplet.
    """
    dist = dist.detach()
    b = dist.shape[0]
    positive, negative = triplet_label_masks(labels)  # (B, B) each
    anchor, pos = positive.nonzero(as_tuple=True)  # (P,) each, sorted by (a, p)
    # A candidate that is not a negative of the anchor gets d_an = -inf, so its gap fails "> 0".
    d_an = torch.where(negative, dist, torch.full_like(dist, float("-inf")))  # (B, B)
    step = max(1, _TRIPLET_CHUNK // max(1, b))
    found: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for start in range(0, anchor.shape[0], step):
        a, p = anchor[start : start + step], pos[start : start + step]  # (P',)
        gap = d_an[a] - dist[a, p][:, None]  # (P', B)  [pair, n] = d_an - d_ap
        pair, n = ((gap > 0) & (gap <= margin)).nonzero(as_tuple=True)  # (T',) each
        for out, idx in zip(found, (a[pair], p[pair], n), strict=True):
            out.append(idx)
    if not found[0]:
        return tuple(labels.new_zeros(0, dtype=torch.long) for _ in range(3))  # type: ignore[return-value]
    a, p, n = (torch.cat(idx) if len(idx) > 1 else idx[0] for idx in found)  # (T,) each
    return a, p, n
