"""What the runs of a setting share: its data splits and its teacher (:class:`Workspace`).

The splits come from the shipped Fashion-MNIST subset; the teacher is the shipped ``teacher_cnn``
(or given weights), or, for the cross-task setting, a 5-class teacher trained once and cached in
the output folder. The teacher's outputs over each image set are computed once and memoised
(:meth:`Workspace.teacher_cache`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import (
    ImageSet,
    TensorLoader,
    cross_task_split,
    labelled_subset,
    load_fashion_mnist,
    partially_labelled,
    select_classes,
    split_validation,
)
from ..methods import CrossEntropy
from ..metrics import (
    FASHION_MNIST_GROUPS,
)
from ..models import build_model
from ..teacher import TeacherCache
from ..training import TrainConfig, evaluate, fit
from .settings import (
    CROSS_TASK_STUDENT_CLASSES,
    CROSS_TASK_TEACHER_CLASSES,
    FASHION_SETTINGS,
    Setting,
)

# ---------------------------------------------------------------------------------------------
# Data and teachers of a setting
# ---------------------------------------------------------------------------------------------


def _digest(data: ImageSet) -> str:
    return hashlib.sha1(data.images.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def teacher_fingerprint(model: nn.Module) -> str:
    """8 hex digits of a model's weights (so results from another teacher are never reused)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def class_groups(data: ImageSet) -> dict[str, tuple[int, ...]]:
    """The confusable groups in ``data``'s labels (after any class selection).

    A group keeps the classes the data set has, relabelled; a group left with fewer than two
    classes has nothing to confuse and is dropped (its accuracy is reported as n/a).
    """
    original = data.original_classes or tuple(range(data.num_classes))
    groups = {}
    for name, members in FASHION_MNIST_GROUPS.items():
        local = tuple(new for new, old in enumerate(original) if old in members)
        if len(local) >= 2:
            groups[name] = local
    return groups


@dataclass
class Workspace:
    """What the runs of one setting share: data splits, the teacher, caches of its outputs."""

    setting: Setting
    pool: ImageSet  # training pool (labels of the student's classes)
    val: ImageSet
    test: ImageSet
    teacher: nn.Module
    teacher_id: str
    shared_classes: bool  # teacher logits are over the student's classes
    device: torch.device
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _caches: dict[str, TeacherCache] = field(default_factory=dict)
    cache_seconds: float = 0.0

    @property
    def num_classes(self) -> int:
        return self.pool.num_classes

    @property
    def spec(self) -> str:
        return self.setting.fingerprint(self.teacher_id)

    def train_set(self, seed: int) -> ImageSet:
        """The student's training set for ``seed`` (only the labelled subset depends on it)."""
        s = self.setting
        if s.labelled_per_class is None:
            return self.pool
        if s.keep_unlabelled:
            return partially_labelled(self.pool, s.labelled_per_class, seed=seed)
        return labelled_subset(self.pool, s.labelled_per_class, seed=seed)

    def teacher_cache(self, data: ImageSet) -> TeacherCache:
        """The teacher's outputs over ``data`` (one pass, memoised by image content), its labels."""
        key = _digest(data)
        if key not in self._caches:
            tic = time.perf_counter()
            loader = TensorLoader.for_evaluation(data, 1000, device=self.device)
            self._caches[key] = TeacherCache.build(
                self.teacher, loader, self.device, storage_device=self.device
            )
            self.cache_seconds += time.perf_counter() - tic
        cache = self._caches[key]
        return TeacherCache(cache.features, cache.logits, data.labels.to(self.device))


def _fashion_splits(setting: Setting) -> tuple[ImageSet, ImageSet, ImageSet]:
    """``(pool, val, test)``: the shipped subset, a validation split, an optional smaller pool."""
    train, test = load_fashion_mnist("subset")
    pool, val = split_validation(train, per_class=setting.val_per_class, seed=0)
    if setting.pool_per_class is not None:
        pool = labelled_subset(pool, setting.pool_per_class, seed=0)
    return pool, val, test


def load_teacher_weights(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a ``state_dict`` file, or the ``"model"`` entry of a training checkpoint, into ``model``."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict(state)
    return model.eval()


def fashion_teacher(path: str | Path | None, device: torch.device) -> nn.Module:
    """The shipped ``teacher_cnn`` (default) or ``teacher_cnn`` weights from ``path``."""
    if path is None:
        from ..pretrained import load_shipped_teacher

        return load_shipped_teacher(device)
    return load_teacher_weights(path, build_model("teacher_cnn", 10, 1)).to(device)


def cross_task_teacher(
    pool: ImageSet,
    test: ImageSet,
    setting: Setting,
    out_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any]]:
    """The 5-class teacher of the cross-task setting, trained once and cached in ``out_dir``.

    ``teacher_cnn`` trained with cross-entropy on classes 0-4 of the pool (crop 2 + flip, SGD +
    Nesterov, lr 0.05, cosine, ``setting.teacher_epochs`` epochs, seed 0), like the shipped
    teacher but shorter. Cached as ``cross_task_teacher_<digest>.pt`` with a JSON record.
    """
    teacher_set, _ = cross_task_split(
        pool, CROSS_TASK_TEACHER_CLASSES, CROSS_TASK_STUDENT_CLASSES, seed=0
    )
    tag = hashlib.sha1(f"{_digest(teacher_set)}|{setting.teacher_epochs}".encode()).hexdigest()[:8]
    weights = out_dir / f"cross_task_teacher_{tag}.pt"
    record_path = weights.with_suffix(".json")
    model = build_model("teacher_cnn", len(CROSS_TASK_TEACHER_CLASSES), 1, seed=0)
    if weights.exists() and record_path.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.to(device).eval(), json.loads(record_path.read_text())
    log(
        f"training the cross-task teacher (teacher_cnn on classes 0-4, {len(teacher_set)} images, "
        f"{setting.teacher_epochs} epochs; once, cached in {weights.name})"
    )
    loader = TensorLoader(teacher_set, 128, augment=True, crop_padding=2, flip=True, seed=0)
    config = TrainConfig(
        epochs=max(1, setting.teacher_epochs),
        lr=0.05,
        nesterov=True,
        schedule="cosine",
        device=str(device),
        seed=0,
        progress=False,
    )
    tic = time.perf_counter()
    fit(model, CrossEntropy(), loader, config)
    seconds = time.perf_counter() - tic
    teacher_test = select_classes(test, CROSS_TASK_TEACHER_CLASSES)
    acc = evaluate(model, TensorLoader.for_evaluation(teacher_test, device=device))["acc"]
    record = {
        "classes": list(CROSS_TASK_TEACHER_CLASSES),
        "train_images": len(teacher_set),
        "epochs": setting.teacher_epochs,
        "test_accuracy_on_its_classes": acc,
        "seconds": round(seconds, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    log(f"cross-task teacher: {100 * acc:.1f}% on classes 0-4 of the test set, {seconds:.0f} s")
    return model.to(device).eval(), record


def build_workspace(
    setting: Setting,
    out_dir: Path,
    device: torch.device,
    teacher_path: str | Path | None = None,
    log: Callable[[str], None] = print,
    teacher: nn.Module | None = None,
) -> Workspace:
    """Splits and teacher of a Fashion-MNIST setting (``teacher`` overrides the shipped one)."""
    if setting.name not in FASHION_SETTINGS:
        raise ValueError(f"setting must be one of {FASHION_SETTINGS}, got {setting.name!r}")
    pool, val, test = _fashion_splits(setting)
    shared = True
    if setting.name == "cross-task":
        model, _ = cross_task_teacher(pool, test, setting, out_dir, device, log)
        _, pool = cross_task_split(
            pool, CROSS_TASK_TEACHER_CLASSES, CROSS_TASK_STUDENT_CLASSES, seed=0
        )
        val = select_classes(val, CROSS_TASK_STUDENT_CLASSES)
        test = select_classes(test, CROSS_TASK_STUDENT_CLASSES)
        shared = False
    else:
        model = teacher if teacher is not None else fashion_teacher(teacher_path, device)
    model = model.to(device).eval()
    return Workspace(
        setting=setting,
        pool=pool,
        val=val,
        test=test,
        teacher=model,
        teacher_id=teacher_fingerprint(model),
        shared_classes=shared,
        device=device,
        groups=class_groups(test),
    )
