"""REFILLED: RElationship FacIlitated Local cLassifiEr Distillation.

Ye, Lu, Zhan, "Distilling Cross-Task Knowledge via Relationship Matching" (CVPR 2020) and
"Generalized Knowledge Distillation via Relationship Matching" (TPAMI 2022, arXiv 2205.01915).
Only the teacher's *embedding* (pooled penultimate features) is used, never its classifier, so its
classes may differ from the student's. Labels are the student's; ``-1`` marks an unlabelled sample.

Stage 1 (no cross-entropy). With ``phi = normalize(f)`` and ``d`` the Euclidean distance, semi-hard
triplets are mined on the *student* (``y_a = y_p``, ``a != p``, ``y_n != y_a``,
``0 < d^S_an - d^S_ap <= m``, all of them, no gradient through mining), and
``P(a, p, n) = sigmoid((d_an - d_ap) / tau1)`` of the teacher is matched by the student's:

    triplet form:  L1 = mean_triplets 1/2 [P^T log(P^T/P^S) + (1-P^T) log((1-P^T)/(1-P^S))]
    tuple form:    L1 = mean_(a,p) KL(pi^T(a,p) || pi^S(a,p)),
                   pi(a,p) = softmax([-d_ap, -d_an_1, ..., -d_an_M] / tau1).

Stage 2. Class centres from the teacher's features on the student's data,
``c_k = normalize(mean_{i: y_i = k} f^T_i)``; with ``C_B`` the classes among the batch's labelled
samples and ``zeta_ik = <f^T_i, c_k>`` (teacher features not normalised),

    L2 = CE(z, y) + lambda2 (1/B) sum_i KL( softmax(zeta_{i,C_B}/tau2) || softmax(z_{i,C_B}/tau2) ).

Defaults (the authors' code): ``m = 0.2``, ``tau1 = 4``, ``tau2 = 2``, ``lambda1 = 1000`` (the
method multiplies ``L1`` by it), ``lambda2 = 100``, no ``tau2^2`` factor. The 1/2 of the triplet
form, the masking of padded tuple slots, ``L = 0`` with a gradient path when there is no triplet or
no labelled sample, and the error for a batch class without a centre: ``docs/refilled.md``. The math
runs in float32 or wider with autocast off.

Shapes: ``B`` batch, ``D_S``/``D_T`` feature widths, ``C`` student classes, ``T`` triplets,
``G`` (anchor, positive) tuples, ``M`` the largest number of negatives of a tuple.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (
    check_choice,
    check_feature_pair,
    check_float_tensor,
    check_labels,
    check_positive,
    check_same,
    full_precision,
    input_checks_enabled,
    loss_dtype,
)
from ..relations import pairwise_distances, rescaled, semi_hard_triplets, unit_rows

FORMS = ("triplet", "tuple")


# --- Stage 1: relationship matching on semi-hard triplets ---


def embedding_distances(features: Tensor) -> Tensor:
    """``d_ij = ||phi_i - phi_j||``, ``phi = normalize(f)``: ``(B, D)`` -> ``(B, B)``, float32 or wider."""
    phi = unit_rows(features.to(loss_dtype(features)))  # (B, D), exact at any magnitude
    return pairwise_distances(phi)  # (B, B)


def mine_triplets(
    student_features: Tensor, labels: Tensor, margin: float = 0.2
) -> tuple[Tensor, Tensor, Tensor]:
    """REFILLED's semi-hard triplets ``(a, p, n)``, mined on the student's normalised embedding.

    ``y_a = y_p``, ``a != p``, ``y_n != y_a``, ``0 < d^S_an - d^S_ap <= margin`` (``m = 0.2``);
    unlabelled samples take no part; no gradient. ``student_features`` ``(B, D_S)``, ``labels``
    ``(B,)``. Returns three ``(T,)`` int64 tensors sorted by ``(a, p, n)``.
    """
    check_float_tensor("student_features", student_features, 2, "(B, D_S)")
    check_labels("labels", labels, student_features.shape[0])
    check_same("device", "student_features", student_features, "labels", labels)
    margin = check_positive("margin", margin)
    with torch.no_grad(), full_precision(student_features):
        dist = embedding_distances(student_features.detach())  # (B, B)
        return semi_hard_triplets(dist, labels, margin)


def _triplet_form(d_s: Tensor, d_t: Tensor, a: Tensor, p: Tensor, n: Tensor, tau1: float) -> Tensor:
    """``mean_T 1/2 BinaryKL(P^T || P^S)`` with log-sigmoids for stability."""
    b = d_s.shape[0]
    an, ap = a * b + n, a * b + p  # (T,) positions in the flattened (B, B) matrices
    gap_s = (d_s.take(an) - d_s.take(ap)) / tau1  # (T,)  (d_an - d_ap) / tau1
    gap_t = (d_t.take(an) - d_t.take(ap)) / tau1  # (T,)
    log_p_s, log_q_s = F.logsigmoid(gap_s), F.logsigmoid(-gap_s)  # log P^S, log (1 - P^S)
    log_p_t, log_q_t = F.logsigmoid(gap_t), F.logsigmoid(-gap_t)  # log P^T, log (1 - P^T)
    binary_kl = log_p_t.exp() * (log_p_t - log_p_s) + log_q_t.exp() * (log_q_t - log_q_s)  # (T,)
    return 0.5 * binary_kl.mean()


def _tuple_layout(a: Tensor, p: Tensor, batch: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where each triplet goes when its (anchor, positive)'s negatives are padded into one row.

    Row ``g`` is ``[-d_ap, -d_an_1, ..., -d_an_M]`` for the ``g``-th tuple (slot 0 the positive);
    the triplets must be grouped by (anchor, positive). Returns ``group`` ``(T,)``, ``slot``
    ``(T,)`` (``>= 1``), ``first`` ``(G,)`` (each tuple's first triplet) and ``valid``
    ``(G, 1 + M)``.
    """
    key = a * batch + p  # (T,)  one integer per (anchor, positive); grouped: the caller sorts
    _, group, counts = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
    g, m = counts.shape[0], int(counts.max())
    first = torch.cumsum(counts, 0) - counts  # (G,)
    slot = 1 + torch.arange(a.shape[0], device=a.device) - first[group]  # (T,)  1..M
    valid = torch.zeros(g, 1 + m, dtype=torch.bool, device=a.device)  # (G, 1 + M)
    valid[:, 0] = True
    valid[group, slot] = True
    return group, slot, first, valid


def _tuple_scores(
    d: Tensor, a: Tensor, p: Tensor, n: Tensor, group: Tensor, slot: Tensor, first: Tensor, m1: int
) -> Tensor:
    """The padded ``(G, 1 + M)`` rows ``[-d_ap, -d_an_1, ..., -d_an_M]`` (padding holds 0)."""
    negatives = d.new_zeros(first.shape[0], m1).index_put((group, slot), -d[a, n])  # (G, 1 + M)
    d_ap = d[a[first], p[first]]  # (G,)
    return torch.cat([-d_ap[:, None], negatives[:, 1:]], dim=1)  # (G, 1 + M)


def _masked_kl(log_p: Tensor, log_q: Tensor, valid: Tensor) -> Tensor:
    """Row-wise ``KL(p || q) = sum_j p_j (log p_j - log q_j)`` over the ``valid`` entries only."""
    terms = log_p.exp() * (log_p - log_q)  # (R, J)
    return torch.where(valid, terms, torch.zeros_like(terms)).sum(dim=1)  # (R,)


def _masked_log_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    """``log softmax`` over the ``valid`` entries of each row; invalid entries get probability
    exactly 0 and come out as 0 (so ``p * log p`` is ``0 * 0``, not ``0 * -inf``).
    """
    masked = scores.masked_fill(~valid, float("-inf"))
    log_p = F.log_softmax(masked, dim=1)
    return torch.where(valid, log_p, torch.zeros_like(log_p))


def _tuple_form(d_s: Tensor, d_t: Tensor, a: Tensor, p: Tensor, n: Tensor, tau1: float) -> Tensor:
    """``mean_(a,p) KL(pi^T || pi^S)`` over padded, masked tuples (the official form, no 1/2)."""
    # group each (anchor, positive)'s negatives together: user-supplied triplets may come in any
    # order, and the loss is a function of the set (the mined ones are sorted already)
    order = torch.argsort(a * d_s.shape[0] + p, stable=True)  # (T,)
    a, p, n = a[order], p[order], n[order]
    group, slot, first, valid = _tuple_layout(a, p, d_s.shape[0])
    m1 = valid.shape[1]
    scores_s = _tuple_scores(d_s, a, p, n, group, slot, first, m1)  # (G, 1 + M)
    scores_t = _tuple_scores(d_t, a, p, n, group, slot, first, m1)  # (G, 1 + M)
    log_pi_s = _masked_log_softmax(scores_s / tau1, valid)
    log_pi_t = _masked_log_softmax(scores_t / tau1, valid)
    return _masked_kl(log_pi_t, log_pi_s, valid).mean()


def refilled_embedding_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    labels: Tensor,
    margin: float = 0.2,
    tau1: float = 4.0,
    form: str = "triplet",
    triplets: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """REFILLED stage 1, ``L1`` without ``lambda1`` (module docstring); a scalar.

    ``student_features`` ``(B, D_S)`` and ``teacher_features`` ``(B, D_T)`` (normalised here, the
    teacher's detached), ``labels`` ``(B,)`` (``-1`` = unlabelled), ``margin`` ``m`` (0.2), ``tau1``
    (4), ``form`` ``"triplet"`` (binary KL per triplet) or ``"tuple"`` (softmax over each (anchor,
    positive)'s negatives). ``triplets``: a fixed ``(a, p, n)`` (e.g. for a gradient check), in any
    order; by default :func:`mine_triplets`. No triplet (``B < 3`` included): exactly 0 with a
    gradient path.
    """
    check_feature_pair(student_features, teacher_features)
    check_labels("labels", labels, student_features.shape[0])
    check_same("device", "student_features", student_features, "labels", labels)
    tau1 = check_positive("tau1", tau1)
    check_choice("form", form, FORMS)
    if triplets is None:
        triplets = mine_triplets(student_features, labels, margin)
    a, p, n = _check_triplets(triplets, student_features.shape[0], student_features.device)

    with full_precision(student_features):
        d_s = embedding_distances(student_features)  # (B, B)
        if a.shape[0] == 0:  # no triplet: nothing to match (choice), but keep the graph
            return d_s.sum() * 0.0
        with torch.no_grad():
            d_t = embedding_distances(teacher_features.detach())  # (B, B)
        if form == "triplet":
            return _triplet_form(d_s, d_t, a, p, n, tau1)
        return _tuple_form(d_s, d_t, a, p, n, tau1)


def _check_triplets(
    triplets: object, batch: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    if not (isinstance(triplets, (tuple, list)) and len(triplets) == 3):
        raise TypeError("triplets must be a tuple (a, p, n) of three (T,) index tensors")
    out = []
    for name, t in zip(("a", "p", "n"), triplets, strict=True):
        if not isinstance(t, Tensor) or t.dtype != torch.long or t.dim() != 1:
            raise TypeError(f"triplets[{name!r}] must be a (T,) int64 tensor")
        if t.shape[0] != triplets[0].shape[0]:
            raise ValueError("triplets a, p, n must have the same length T")
        if input_checks_enabled() and t.numel() and (int(t.min()) < 0 or int(t.max()) >= batch):
            raise ValueError(f"triplets[{name!r}] has an index outside [0, {batch})")
        out.append(t.to(device))
    return out[0], out[1], out[2]


# --- Stage 2: the teacher's embedding-induced local classifier ---


def class_centres(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``c_k = normalize(mean_{i: y_i = k} f_i)``, ``(C, D)`` unit rows; a class without samples
    gets a zero row. ``features`` ``(N, D)`` (teacher features, not normalised first), ``labels``
    ``(N,)`` in ``[-1, C)`` (``-1`` ignored). Float32 or wider, no gradient.
    """
    check_float_tensor("features", features, 2, "(N, D)")
    check_labels("labels", labels, features.shape[0], num_classes)
    check_same("device", "features", features, "labels", labels)
    with torch.no_grad(), full_precision(features):
        f = rescaled(features.detach().to(loss_dtype(features)))  # (N, D); the centres are
        # unit vectors, so a common scale does not change them, but the sums cannot overflow
        row = torch.where(labels >= 0, labels, torch.full_like(labels, num_classes))  # (N,)
        sums = f.new_zeros(num_classes + 1, f.shape[1]).index_add_(0, row, f)  # (C + 1, D)
        counts = torch.bincount(row, minlength=num_classes + 1).to(f.dtype)  # (C + 1,)
        means = sums[:num_classes] / counts[:num_classes, None].clamp(min=1)  # (C, D)
        return unit_rows(means)  # zero rows stay zero


def centre_labels(teacher_features: Tensor, labels: Tensor, centres: Tensor) -> Tensor:
    """Labels for stage-1 mining from the teacher's embedding: ``(B,)`` int64, every sample
    labelled.

    ``y'_i = y_i`` if ``y_i >= 0``, else ``argmax_k <f^T_i, c_k>`` over the classes with a non-zero
    centre (the stage-2 classifier ``zeta`` over every class with a centre; the teacher's logits are
    never read). Ties go to the lowest class; no gradient. ``teacher_features`` ``(B, D_T)``,
    ``labels`` ``(B,)`` in ``[-1, C)``, ``centres`` ``(C, D_T)`` (:func:`class_centres`). Raises
    ``ValueError`` if no class has a centre.
    """
    check_float_tensor("teacher_features", teacher_features, 2, "(B, D_T)")
    check_float_tensor("centres", centres, 2, "(C, D_T)")
    check_same("embedding width", "teacher_features", teacher_features, "centres", centres)
    check_labels("labels", labels, teacher_features.shape[0], centres.shape[0])
    check_same("device", "teacher_features", teacher_features, "centres", centres)
    check_same("device", "teacher_features", teacher_features, "labels", labels)
    with torch.no_grad(), full_precision(teacher_features, centres) as dtype:
        has_centre = centres.abs().sum(dim=1) > 0  # (C,)
        if not bool(has_centre.any()):
            raise ValueError("centres has no non-zero row: no class to label the samples with")
        zeta = teacher_features.detach().to(dtype) @ centres.detach().to(dtype).t()  # (B, C)
        zeta = zeta.masked_fill(~has_centre[None, :], float("-inf"))
        return torch.where(labels >= 0, labels, zeta.argmax(dim=1))  # (B,)


def batch_classes(labels: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` boolean mask of ``C_B``, the classes present among the labelled samples."""
    row = torch.where(labels >= 0, labels, torch.full_like(labels, num_classes))  # (B,)
    present = torch.zeros(num_classes + 1, dtype=torch.bool, device=labels.device)
    return present.index_fill(0, row, True)[:num_classes]


def refilled_classifier_kl(
    student_logits: Tensor,
    teacher_features: Tensor,
    labels: Tensor,
    centres: Tensor,
    tau2: float = 2.0,
    restrict_to_batch: bool = True,
) -> Tensor:
    """REFILLED stage 2's distillation term, without ``lambda2`` and the cross-entropy; a scalar.

    ``(1/B) sum_i KL(softmax(zeta_{i,C_B}/tau2) || softmax(z_{i,C_B}/tau2))``,
    ``zeta_ik = <f^T_i, c_k>``, averaged over all ``B`` rows, unlabelled ones included (choice).
    ``restrict_to_batch=False``: every class with a centre instead of ``C_B`` (beyond the paper).
    ``student_logits`` ``(B, C)``, ``teacher_features`` ``(B, D_T)`` (no gradient), ``labels``
    ``(B,)``, ``centres`` ``(C, D_T)`` (a zero row = no centre; such a class in the batch raises
    ``ValueError``), ``tau2`` (2). No column selected: 0 with a gradient path.
    """
    check_float_tensor("student_logits", student_logits, 2, "(B, C)")
    check_float_tensor("teacher_features", teacher_features, 2, "(B, D_T)")
    check_float_tensor("centres", centres, 2, "(C, D_T)")
    check_same("batch size", "student_logits", student_logits, "teacher_features", teacher_features)
    check_same("embedding width", "teacher_features", teacher_features, "centres", centres)
    num_classes = student_logits.shape[1]
    if centres.shape[0] != num_classes:
        raise ValueError(
            f"centres must have shape ({num_classes}, {teacher_features.shape[1]}) (one row per "
            f"student class), got {tuple(centres.shape)}"
        )
    check_labels("labels", labels, student_logits.shape[0], num_classes)
    check_same("device", "student_logits", student_logits, "teacher_features", teacher_features)
    check_same("device", "student_logits", student_logits, "labels", labels)
    check_same("device", "student_logits", student_logits, "centres", centres)
    tau2 = check_positive("tau2", tau2)

    with full_precision(student_logits, teacher_features, centres) as dtype:
        has_centre = centres.detach().abs().sum(dim=1) > 0  # (C,)
        present = batch_classes(labels, num_classes)  # (C,)
        if input_checks_enabled() and bool((present & ~has_centre).any()):
            missing = torch.nonzero(present & ~has_centre).flatten().tolist()
            raise ValueError(
                f"classes {missing} are in the batch but have no class centre (a zero row in "
                "centres): the centres were computed on data without these classes, or their "
                "teacher features average to zero"
            )
        columns = present if restrict_to_batch else has_centre  # (C,)
        z = student_logits.to(dtype)  # (B, C)
        some = columns.any()  # no column: 0 with a gradient path (all columns keep it finite)
        valid = (columns | ~some)[None, :].expand_as(z)  # (B, C)
        with torch.no_grad():
            zeta = teacher_features.detach().to(dtype) @ centres.detach().to(dtype).t()  # (B, C)
            log_p_t = _masked_log_softmax(zeta / tau2, valid)  # (B, C)
        log_p_s = _masked_log_softmax(z / tau2, valid)  # (B, C)
        return torch.where(some, _masked_kl(log_p_t, log_p_s, valid).mean(), z.sum() * 0.0)
