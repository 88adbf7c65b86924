"""Evaluation metrics: accuracy (overall, per class, on confusable groups) and relational fidelity.

All functions are pure: tensors in, numbers or tensors out, no model. Label ``-1`` marks an
unlabelled sample and is ignored by every label-based metric. Shapes: ``N`` samples, ``C``
classes, ``D`` feature width.

Relational fidelity asks whether the student reproduces the teacher's *relations*, whatever its
accuracy:

- :func:`kendall_tau`: per sample, the rank agreement of the teacher's and the student's class
  scores (does the student order the classes as the teacher does? GRKD's objective);
- :func:`distance_matrix_correlation`: over a batch, the Pearson correlation of the teacher's and
  the student's pairwise feature distances (does the student lay the samples out like the
  teacher? RKD-D's objective).

:func:`collect_outputs` runs a model (and optionally its teacher) over a loader and returns the
tensors these metrics take.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._checks import check_float_tensor, check_labels, check_same_batch, check_same_shape
from .data import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES  # re-exported with the groups
from .relations import pairwise_distances
from .teacher import TeacherCache, as_batch, module_device, split_outputs, teacher_outputs

#: The confusable groups of Fashion-MNIST (class names: ``FASHION_MNIST_CLASSES`` from
#: :mod:`relkd_tutorial.data`): upper-body garments and footwear.
FASHION_MNIST_TOPS: tuple[int, ...] = (0, 2, 4, 6)  # T-shirt/top, pullover, coat, shirt
FASHION_MNIST_FOOTWEAR: tuple[int, ...] = (5, 7, 9)  # sandal, sneaker, ankle boot
FASHION_MNIST_GROUPS: dict[str, tuple[int, ...]] = {
    "tops": FASHION_MNIST_TOPS,
    "footwear": FASHION_MNIST_FOOTWEAR,
}


def _predictions(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Checked ``(predictions (N,), labels (N,))`` restricted to the labelled samples."""
    check_float_tensor("logits", logits, 2, "(N, C)")
    check_labels("labels", labels, logits.shape[0], logits.shape[1])
    keep = labels >= 0  # (N,)
    return logits.argmax(dim=1)[keep], labels[keep]


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy over the labelled samples: ``mean_{i: y_i >= 0} [argmax_c z_ic = y_i]``.

    Args:
        logits: ``(N, C)`` scores.
        labels: ``(N,)`` int labels in ``[-1, C)``.

    Returns:
        A float in ``[0, 1]``, or NaN if no sample is labelled.
    """
    pred, y = _predictions(logits, labels)
    return float((pred == y).float().mean()) if y.numel() else float("nan")


def per_class_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Accuracy of each true class: ``acc_k = #{i: y_i = k, pred_i = k} / #{i: y_i = k}``.

    Args:
        logits: ``(N, C)``.
        labels: ``(N,)`` in ``[-1, C)``.

    Returns:
        ``(C,)`` float64, NaN for a class with no sample.
    """
    cm = confusion_matrix(logits, labels)  # (C, C)
    support = cm.sum(dim=1).double()  # (C,)
    return torch.where(
        support > 0,
        cm.diagonal().double() / support.clamp_min(1),
        torch.full_like(support, math.nan),
    )


def group_accuracy(logits: Tensor, labels: Tensor, group: Iterable[int]) -> float:
    """Accuracy over the samples whose *true* class is in ``group`` (e.g. the tops).

    The prediction may be any class: a coat predicted as a bag is as wrong as a coat predicted as
    a shirt. So this is the usual accuracy on a subset of the test set, the one where the
    fine-grained confusions live (:data:`FASHION_MNIST_GROUPS`).

    Args:
        logits: ``(N, C)``.
        labels: ``(N,)`` in ``[-1, C)``.
        group: class labels, e.g. :data:`FASHION_MNIST_TOPS`.

    Returns:
        A float in ``[0, 1]``, NaN if no labelled sample belongs to the group.
    """
    pred, y = _predictions(logits, labels)
    members = torch.as_tensor(sorted(set(int(c) for c in group)), device=y.device)  # (G,)
    if members.numel() == 0:
        raise ValueError("group must contain at least one class")
    if int(members.min()) < 0 or int(members.max()) >= logits.shape[1]:
        raise ValueError(f"group {members.tolist()} has classes outside [0, {logits.shape[1]})")
    inside = torch.isin(y, members)  # (L,)
    if not bool(inside.any()):
        return float("nan")
    return float((pred[inside] == y[inside]).float().mean())


def confusion_matrix(logits: Tensor, labels: Tensor) -> Tensor:
    """Counts ``M_kj = #{i : y_i = k, argmax z_i = j}`` (rows: true class; columns: predicted).

    Args:
        logits: ``(N, C)``.
        labels: ``(N,)`` in ``[-1, C)``; unlabelled samples are not counted.

    Returns:
        ``(C, C)`` int64.
    """
    pred, y = _predictions(logits, labels)
    c = logits.shape[1]
    flat = y * c + pred  # (L,) row-major cell index
    return torch.bincount(flat, minlength=c * c).reshape(c, c)  # (C, C)


def kendall_tau(
    teacher_logits: Tensor, student_logits: Tensor, chunk_size: int | None = None
) -> Tensor:
    """Kendall's tau-b between the teacher's and the student's class scores, per sample.

    For one sample with scores ``t, s in R^C``, over the ``n0 = C (C - 1) / 2`` class pairs
    ``j < k``: ``n_c`` pairs are ordered the same way by both (concordant), ``n_d`` the opposite
    way (discordant), ``n_t`` are tied in ``t``, ``n_s`` tied in ``s``. Then

        tau_b = (n_c - n_d) / sqrt((n0 - n_t) (n0 - n_s))

    (Kendall 1945; scipy's default variant). We chose tau-b over tau-a because ties are real
    here (e.g. a saturated or quantised score) and tau-b stays in ``[-1, 1]`` and equals 1 for
    identical orders even with ties. Vectorised with sign matrices ``S_t[j, k] = sign(t_j - t_k)``:
    ``n_c - n_d = sum_{j<k} S_t S_s = (1/2) sum_{j,k} S_t S_s``, ``n0 - n_t = (1/2) sum |S_t|``, so

        tau_b = sum_{j,k} S_t S_s / sqrt(sum_{j,k} |S_t| * sum_{j,k} |S_s|).

    A sample whose scores are all tied on either side has an undefined tau: NaN.

    Args:
        teacher_logits: ``(N, C)``, ``C >= 2``.
        student_logits: ``(N, C)``.
        chunk_size: samples per chunk (the sign matrices are ``(chunk, C, C)``); default keeps
            them at about 16M entries.

    Returns:
        ``(N,)`` float64 tensor of tau-b values in ``[-1, 1]``.
    """
    check_float_tensor("teacher_logits", teacher_logits, 2, "(N, C)")
    check_float_tensor("student_logits", student_logits, 2, "(N, C)")
    check_same_shape("teacher_logits", teacher_logits, "student_logits", student_logits)
    n, c = teacher_logits.shape
    if c < 2:
        raise ValueError(f"kendall_tau needs at least 2 classes, got logits of shape {(n, c)}")
    if chunk_size is None:
        chunk_size = max(1, 2**24 // (c * c))
    out = []
    for lo in range(0, n, chunk_size):
        t = teacher_logits[lo : lo + chunk_size].double()  # (b, C)
        s = student_logits[lo : lo + chunk_size].double()  # (b, C)
        sign_t = torch.sign(t[:, :, None] - t[:, None, :])  # (b, C, C)
        sign_s = torch.sign(s[:, :, None] - s[:, None, :])  # (b, C, C)
        num = (sign_t * sign_s).sum(dim=(1, 2))  # (b,)  2 (n_c - n_d)
        den = (sign_t.abs().sum(dim=(1, 2)) * sign_s.abs().sum(dim=(1, 2))).sqrt()  # (b,)
        out.append(
            torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, math.nan))
        )
    return torch.cat(out)  # (N,)


def distance_matrix_correlation(
    teacher_features: Tensor, student_features: Tensor, rel_tol: float = 1e-6
) -> float:
    """Pearson correlation of the teacher's and student's pairwise distances over a batch.

    With ``d^t_ij = ||f^t_i - f^t_j||`` and ``d^s_ij = ||f^s_i - f^s_j||`` (feature widths may
    differ), the ``P = N (N - 1) / 2`` pairs ``i < j`` give two vectors; the result is their Pearson
    correlation ``r_D = cov(d^t, d^s) / (std(d^t) std(d^s))``. It is 1 when the student's distances
    are an increasing affine function of the teacher's (e.g. a rotated, rescaled copy), and it
    ignores the global scale of each feature space, like RKD's normalised distances.
    Computed in float64. This is *not* Székely's distance correlation (dCor), which double-centres
    the distance matrices and measures dependence; this one measures agreement of geometry.

    Args:
        teacher_features: ``(N, D_T)``, ``N >= 3``.
        student_features: ``(N, D_S)``.
        rel_tol: a side whose distances have ``std <= rel_tol * mean`` counts as having all
            distances equal (choice: 1e-6 is above float32 rounding, so the rounding noise of an
            equilateral configuration is not reported as a correlation).

    Returns:
        A float in ``[-1, 1]``; NaN if either side has all pairwise distances equal.
    """
    check_float_tensor("teacher_features", teacher_features, 2, "(N, D_T)")
    check_float_tensor("student_features", student_features, 2, "(N, D_S)")
    check_same_batch("teacher_features", teacher_features, "student_features", student_features)
    n = teacher_features.shape[0]
    if n < 3:
        raise ValueError(f"distance_matrix_correlation needs N >= 3 samples (>= 2 pairs), got {n}")
    iu = torch.triu_indices(n, n, offset=1, device=teacher_features.device)  # (2, P)
    d_t = pairwise_distances(teacher_features.double())[iu[0], iu[1]]  # (P,)
    d_s = pairwise_distances(student_features.double())[iu[0], iu[1]]  # (P,)
    for d in (d_t, d_s):
        if float(d.std(correction=0)) <= rel_tol * float(d.mean()):
            return float("nan")  # all distances equal (up to rounding): correlation undefined
    d_t, d_s = d_t - d_t.mean(), d_s - d_s.mean()  # (P,), centred
    return float((d_t * d_s).sum() / (d_t.square().sum() * d_s.square().sum()).sqrt())


@dataclass
class Outputs:
    """A model's outputs over a whole loader, on the CPU, in loader order."""

    features: Tensor  # (N, D)
    logits: Tensor  # (N, C)
    labels: Tensor  # (N,)
    index: Tensor | None = None  # (N,) sample indices, if the loader yields them
    teacher_features: Tensor | None = None  # (N, D_T)
    teacher_logits: Tensor | None = None  # (N, C_T)


@torch.no_grad()
def collect_outputs(
    model: nn.Module,
    loader: Iterable[object],
    teacher: nn.Module | TeacherCache | None = None,
    device: torch.device | str | None = None,
) -> Outputs:
    """Run ``model`` (in eval mode; its mode is restored) and optionally ``teacher`` over a loader.

    Args:
        model: returns ``(features, logits)``.
        loader: yields ``Batch`` or ``(x, y[, index])``.
        teacher: a module (run live, eval mode) or a :class:`TeacherCache` (needs indices).
        device: where to run (default: the model's device).

    Returns:
        :class:`Outputs` with CPU tensors, ready for the metrics above.
    """
    device = module_device(model) if device is None else device
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {k: [] for k in ("f", "z", "y", "i", "tf", "tz")}
    try:
        for item in loader:
            batch = as_batch(item, device)
            f, z = split_outputs(model(batch.x), "model")
            parts["f"].append(f.float().cpu())
            parts["z"].append(z.float().cpu())
            parts["y"].append(batch.y.cpu())
            if batch.index is not None:
                parts["i"].append(batch.index.cpu())
            if teacher is not None:
                tf, tz = teacher_outputs(teacher, batch)
                parts["tf"].append(tf.cpu())
                parts["tz"].append(tz.cpu())
    finally:
        model.train(was_training)
    if not parts["y"]:
        raise ValueError("collect_outputs got an empty loader")

    def cat(key: str) -> Tensor | None:
        return torch.cat(parts[key]) if parts[key] and len(parts[key]) == len(parts["y"]) else None

    return Outputs(
        features=torch.cat(parts["f"]),
        logits=torch.cat(parts["z"]),
        labels=torch.cat(parts["y"]),
        index=cat("i"),
        teacher_features=cat("tf"),
        teacher_logits=cat("tz"),
    )
