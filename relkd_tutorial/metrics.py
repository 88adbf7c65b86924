"""Evaluation metrics: accuracy (overall, per class, on confusable groups) and relational fidelity.

Pure functions; label ``-1`` (unlabelled) is ignored by every label-based metric. Relational
fidelity asks whether the student reproduces the teacher's *relations*, whatever its accuracy:
:func:`kendall_tau` (does it order the classes as the teacher does? GRKD's objective) and
:func:`distance_matrix_correlation` (does it lay the samples out like the teacher? RKD-D's).
:func:`collect_outputs` runs a model (and its teacher) over a loader. Shapes: ``N`` samples,
``C`` classes, ``D`` feature width.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ._checks import check_float_tensor, check_labels, check_same
from .data import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES  # re-exported with the groups
from .relations import pairwise_distances
from .teacher import TeacherCache, as_batch, module_device, run_model, teacher_outputs

#: The confusable groups of Fashion-MNIST (class names: ``FASHION_MNIST_CLASSES`` from
#: :mod:`relkd_tutorial.data`): upper-body garments and footwear.
FASHION_MNIST_GROUPS: dict[str, tuple[int, ...]] = {
    "tops": (0, 2, 4, 6),  # T-shirt/top, pullover, coat, shirt
    "footwear": (5, 7, 9),  # sandal, sneaker, ankle boot
}


def _predictions(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Checked ``(predictions (N,), labels (N,))`` restricted to the labelled samples."""
    check_float_tensor("logits", logits, 2, "(N, C)")
    check_labels("labels", labels, logits.shape[0], logits.shape[1])
    keep = labels >= 0  # (N,)
    return logits.argmax(dim=1)[keep], labels[keep]


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy over the labelled samples, ``mean_{i: y_i >= 0} [argmax_c z_ic = y_i]``, for ``(N, C)`` logits (NaN if none is labelled)."""
    pred, y = _predictions(logits, labels)
    return float((pred == y).float().mean()) if y.numel() else float("nan")


def per_class_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """``(C,)`` float64 accuracy of each true class, ``#{y_i = k, pred_i = k} / #{y_i = k}`` (NaN for a class with no sample)."""
    cm = confusion_matrix(logits, labels)  # (C, C)
    return cm.diagonal().double() / cm.sum(dim=1).double()  # (C,); 0 / 0 = NaN without a sample


def group_accuracy(logits: Tensor, labels: Tensor, group: Iterable[int]) -> float:
    """Accuracy over the samples whose *true* class is in ``group`` (e.g.
    ``FASHION_MNIST_GROUPS["tops"]``), whatever class is predicted: the fine-grained part of the
    test set. NaN if none belongs to it.
    """
    pred, y = _predictions(logits, labels)
    members = torch.as_tensor(sorted(set(int(c) for c in group)), device=y.device)  # (G,)
    if members.numel() == 0:
        raise ValueError("group must contain at least one class")
    if int(members.min()) < 0 or int(members.max()) >= logits.shape[1]:
        raise ValueError(f"group {members.tolist()} has classes outside [0, {logits.shape[1]})")
    hits = (pred == y)[torch.isin(y, members)]  # (L_G,) over the group's labelled samples
    return float(hits.float().mean()) if hits.numel() else float("nan")


def confusion_matrix(logits: Tensor, labels: Tensor) -> Tensor:
    """``(C, C)`` int64 counts ``M_kj = #{i : y_i = k, argmax z_i = j}`` (rows: true class), labelled samples only."""
    pred, y = _predictions(logits, labels)
    c = logits.shape[1]
    flat = y * c + pred  # (L,) row-major cell index
    return torch.bincount(flat, minlength=c * c).reshape(c, c)  # (C, C)


def kendall_tau(
    teacher_logits: Tensor, student_logits: Tensor, chunk_size: int | None = None
) -> Tensor:
    """Kendall's tau-b between the teacher's and the student's class scores, per sample: ``(N,)``
    float64.

    Over the ``n0 = C (C - 1) / 2`` class pairs, with ``n_c`` concordant, ``n_d`` discordant,
    ``n_t`` / ``n_s`` tied pairs in ``t`` / ``s``:
    ``tau_b = (n_c - n_d) / sqrt((n0 - n_t) (n0 - n_s))`` (Kendall 1945; scipy's default; tau-b
    because ties are real here and it stays in ``[-1, 1]``). With sign matrices
    ``S[j, k] = sign(x_j - x_k)``: ``tau_b = sum S_t S_s / sqrt(sum |S_t| * sum |S_s|)``. All-tied
    scores give NaN. Logits ``(N, C)``, ``C >= 2``; ``chunk_size`` samples at a time (default: sign
    matrices of about 16M entries).
    """
    check_float_tensor("teacher_logits", teacher_logits, 2, "(N, C)")
    check_float_tensor("student_logits", student_logits, 2, "(N, C)")
    check_same("shape", "teacher_logits", teacher_logits, "student_logits", student_logits)
    n, c = teacher_logits.shape
    if c < 2:
        raise ValueError(f"kendall_tau needs at least 2 classes, got logits of shape {(n, c)}")
    chunk_size = max(1, 2**24 // (c * c)) if chunk_size is None else chunk_size
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


def distance_matrix_correlation(teacher_features: Tensor, student_features: Tensor) -> float:
    """Pearson correlation of the teacher's and the student's pairwise distances over a batch.

    Over the ``N (N - 1) / 2`` pairs ``i < j``, ``r_D = cov(d^t, d^s) / (std(d^t) std(d^s))`` in
    float64: 1 when the student's distances are an increasing affine function of the teacher's, the
    global scale of each space ignored (not Szekely's distance correlation, which measures
    dependence). Features ``(N, D_T)`` and ``(N, D_S)``, ``N >= 3``. NaN if either side's distances
    are all equal (``std <= 1e-6 mean``; choice: 1e-6 is above float32 rounding).
    """
    check_float_tensor("teacher_features", teacher_features, 2, "(N, D_T)")
    check_float_tensor("student_features", student_features, 2, "(N, D_S)")
    check_same(
        "batch size", "teacher_features", teacher_features, "student_features", student_features
    )
    n = teacher_features.shape[0]
    if n < 3:
        raise ValueError(f"distance_matrix_correlation needs N >= 3 samples (>= 2 pairs), got {n}")
    iu = torch.triu_indices(n, n, offset=1, device=teacher_features.device)  # (2, P)
    d_t = pairwise_distances(teacher_features.double())[iu[0], iu[1]]  # (P,)
    d_s = pairwise_distances(student_features.double())[iu[0], iu[1]]  # (P,)
    for d in (d_t, d_s):
        if float(d.std(correction=0)) <= 1e-6 * float(d.mean()):
            return float("nan")  # all distances equal (up to rounding): correlation undefined
    d_t, d_s = d_t - d_t.mean(), d_s - d_s.mean()  # (P,), centred
    return float((d_t * d_s).sum() / (d_t.square().sum() * d_s.square().sum()).sqrt())


@dataclasses.dataclass
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
    model: nn.Module, loader: Iterable[object], teacher: nn.Module | TeacherCache | None = None
) -> Outputs:
    """Run ``model`` (in eval mode, restored after) and optionally ``teacher`` (a module, or a
    :class:`TeacherCache` needing indices) over ``loader`` on the model's device; returns
    :class:`Outputs` of CPU tensors in loader order, for the metrics above.
    """
    device = module_device(model)
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {f.name: [] for f in dataclasses.fields(Outputs)}
    try:
        for item in loader:
            batch = as_batch(item, device)
            f, z = run_model(model, batch.x, "model")
            got = {"features": f.float(), "logits": z.float(), "labels": batch.y}
            got["index"] = batch.index
            if teacher is not None:
                got["teacher_features"], got["teacher_logits"] = teacher_outputs(teacher, batch)
            for key, value in got.items():
                if value is not None:
                    parts[key].append(value.cpu())
    finally:
        model.train(was_training)
    if not parts["labels"]:
        raise ValueError("collect_outputs got an empty loader")
    # a field is None unless every batch had it (index, the teacher's outputs)
    full = {k: torch.cat(v) for k, v in parts.items() if v and len(v) == len(parts["labels"])}
    return Outputs(**full)
