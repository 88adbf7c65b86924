"""Split helpers for the benchmark settings: validation, low-data, transfer, cross-task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_count, check_positive
from .imageset import ImageSet


def _class_permutations(labels: Tensor, num_classes: int, seed: int) -> list[Tensor]:
    """For each class, the CPU indices of its images in a random order fixed by ``seed``; the
    classes are walked in order, so the first ``n`` of a class are a prefix of its first ``n + 1``.
    """
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(check_count("seed", seed, 0))
    members = [torch.nonzero(labels == k).flatten() for k in range(num_classes)]  # (N_k,) each
    return [m[torch.randperm(len(m), generator=generator)] for m in members]  # drawn in class order


def _pick_per_class(
    labels: Tensor, n_per_class: int, seed: int, class_names: Sequence[str]
) -> Tensor:
    n_per_class = check_count("n_per_class", n_per_class)
    chosen = []
    for k, order in enumerate(_class_permutations(labels, len(class_names), seed)):
        if len(order) < n_per_class:
            raise ValueError(
                f"class {k} ({class_names[k]!r}) has {len(order)} labelled images, fewer than "
                f"n_per_class={n_per_class}"
            )
        chosen.append(order[:n_per_class])
    return torch.cat(chosen).sort().values  # (K * n_per_class,)


def sample_per_class(
    labels: Tensor, n_per_class: int, *, seed: int = 0, num_classes: int | None = None
) -> Tensor:
    """CPU int64 indices of ``n_per_class`` random images of every class, sorted (stratified,
    deterministic given ``seed``, nested in ``n_per_class``; ``-1`` never chosen). ``num_classes``:
    default ``labels.max() + 1``; a class with too few images raises ``ValueError`` naming it.
    """
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes <= 0:
        raise ValueError("labels hold no labelled image")
    return _pick_per_class(labels, n_per_class, seed, [str(k) for k in range(num_classes)])


def labelled_subset(data: ImageSet, n_per_class: int, *, seed: int = 0) -> ImageSet:
    """The low-data regime: only ``n_per_class`` labelled images of each class, nothing else.

    The images keep their relative order. The same ``seed`` picks the same images as
    :func:`partially_labelled`, so "low-data" and "transfer" differ only by the unlabelled rest.
    """
    idx = _pick_per_class(data.labels, n_per_class, seed, data.class_names)
    picked = data.subset(idx.to(data.images.device))
    return picked._replace(name=f"{data.name}:{n_per_class}-per-class")


def partially_labelled(data: ImageSet, n_per_class: int, *, seed: int = 0) -> ImageSet:
    """The transfer regime: every image kept, only ``n_per_class`` per class keep their label.

    All other images get label ``-1`` (unlabelled): the loop trains them with the distillation
    terms only. The labelled images are those :func:`labelled_subset` picks with the same seed.
    """
    idx = _pick_per_class(data.labels, n_per_class, seed, data.class_names).to(data.labels.device)
    labels = torch.full_like(data.labels, -1)  # (N,)
    labels[idx] = data.labels[idx]
    return data._replace(labels=labels, name=f"{data.name}:{n_per_class}-labelled-per-class")


def split_validation(
    data: ImageSet, *, per_class: int | None = None, fraction: float | None = None, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """Carve a stratified validation set out of a training set: ``(train, val)``.

    Exactly one of ``per_class`` or ``fraction`` (of each class, rounded, at least 1). Disjoint, all
    images between them, relative order kept; unlabelled images stay in ``train``.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    counts = data.class_counts().tolist()  # (K,)
    if per_class is not None:
        take = [check_count("per_class", per_class)] * data.num_classes
    else:
        if check_positive("fraction", fraction) >= 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        take = [max(1, round(fraction * c)) for c in counts]
    for k, (t, c) in enumerate(zip(take, counts, strict=True)):
        if t >= c:
            raise ValueError(
                f"class {k} ({data.class_names[k]!r}) of {data.name} has {c} labelled images; "
                f"a validation split of {t} would leave none for training"
            )
    orders = _class_permutations(data.labels, data.num_classes, seed)
    is_val = torch.zeros(len(data), dtype=torch.bool)  # (N,)
    for order, t in zip(orders, take, strict=True):
        is_val[order[:t]] = True
    is_val = is_val.to(data.images.device)
    train = data.subset(~is_val)._replace(name=f"{data.name}:train")
    val = data.subset(is_val)._replace(name=f"{data.name}:val")
    return train, val


def _check_classes(data: ImageSet, classes: Sequence[int], name: str) -> list[int]:
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError(f"{name} must list at least one class")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{name} lists a class twice: {classes}")
    unknown = [c for c in classes if not 0 <= c < data.num_classes]
    if unknown:
        raise ValueError(
            f"{name} has unknown class ids {unknown}; {data.name} has classes "
            f"0..{data.num_classes - 1}"
        )
    return classes


def select_classes(data: ImageSet, classes: Sequence[int]) -> ImageSet:
    """Keep the images of ``classes`` and relabel them ``0..k-1`` in the order given.

    New label ``j`` is old class ``classes[j]``: ``class_names`` are reordered to match and
    ``original_classes`` records the mapping (composed with any earlier selection). Images keep
    their relative order. Unlabelled images (``-1``) have no class and are dropped.
    """
    classes = _check_classes(data, classes, "classes")
    relabel = torch.full((data.num_classes + 1,), -1, dtype=torch.int64)  # last slot: label -1
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    new_labels = relabel.to(data.labels.device)[data.labels]  # (N,), -1 = other class/unlabelled
    keep = new_labels >= 0  # (N,)
    before = data.original_classes or tuple(range(data.num_classes))
    return data._replace(
        images=data.images[keep],
        labels=new_labels[keep],
        class_names=[data.class_names[c] for c in classes],
        name=f"{data.name}:classes{classes}".replace(" ", ""),
        original_classes=tuple(before[c] for c in classes),
    )


def cross_task_split(
    data: ImageSet,
    teacher_classes: Sequence[int],
    student_classes: Sequence[int],
    *,
    share_images: bool = False,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """Teacher and student training sets on different label sets (REFILLED's cross-task setting).

    ``(teacher_set, student_set)``, each :func:`select_classes` of its class list. The images of a
    class in both lists are split (choice): the teacher gets a random ``ceil(n/2)``, the student the
    rest (``seed``), so the student never trains on an image the teacher saw;
    ``share_images=True`` gives both all of them.
    """
    teacher_classes = _check_classes(data, teacher_classes, "teacher_classes")
    student_classes = _check_classes(data, student_classes, "student_classes")
    shared = sorted(set(teacher_classes) & set(student_classes))
    if share_images or not shared:
        return select_classes(data, teacher_classes), select_classes(data, student_classes)
    orders = _class_permutations(data.labels, data.num_classes, seed)
    teacher_part = torch.zeros(len(data), dtype=torch.bool)  # (N,) shared-class images kept by T
    student_part = torch.zeros(len(data), dtype=torch.bool)  # (N,) shared-class images kept by S
    for k in shared:
        half = (len(orders[k]) + 1) // 2
        teacher_part[orders[k][:half]] = True
        student_part[orders[k][half:]] = True
    device = data.images.device
    teacher = select_classes(data.subset(~student_part.to(device)), teacher_classes)
    student = select_classes(data.subset(~teacher_part.to(device)), student_classes)
    return teacher, student
