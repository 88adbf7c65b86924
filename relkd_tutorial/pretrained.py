"""The teachers shipped as package data: load them instead of retraining them.

``relkd_tutorial/shipped/teacher_cnn_fashion_mnist.pt`` is the ``state_dict`` of a
``teacher_cnn`` trained on the shipped subset by ``scripts/train_teacher.py``; the ``.json`` beside
it records its test accuracy, the command, the versions and the history. Weights are checked
against ``SHA256SUMS`` and read with ``weights_only=True``. Beside it: the **cross-task** teacher
(same recipe, classes 0-4 only, ``--classes 0,1,2,3,4``; notebook 04) and the **held-out** one
(:data:`HELDOUT_TEACHER`, trained without the benchmark's validation split,
``--exclude-validation 100``; its record's ``trained_on`` names the rule and the SHA-256 of its
positions, ``index_digest`` in that script). The benchmark's teacher is ``bench.settings.BENCH_TEACHER``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .data.datasets import RESTORE_SHIPPED, data_dir, verify_sha256
from .models import FeatureClassifier, build_model

SHIPPED_TEACHER = "teacher_cnn_fashion_mnist"  # file stem inside the data folder
SHIPPED_TEACHER_MODEL = "teacher_cnn"
#: The ten-class teacher trained without the benchmark's validation split (at 100 per class,
#: seed 0, a superset of every preset's split): ``train_teacher.py --exclude-validation 100``.
HELDOUT_TEACHER = f"{SHIPPED_TEACHER}_heldout"
#: The ten-class teacher trained on 10,000 images of the full training file outside the subset,
#: so it has seen neither the pool nor the validation split: ``--disjoint-from-subset``.
DISJOINT_TEACHER = f"{SHIPPED_TEACHER}_disjoint"
#: The ten-class teachers a ``stem`` may name.
SHIPPED_TEN_CLASS_TEACHERS: tuple[str, ...] = (SHIPPED_TEACHER, HELDOUT_TEACHER, DISJOINT_TEACHER)
#: The classes of the shipped cross-task teacher (notebook 04: the student learns 5-9).
CROSS_TASK_TEACHER_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)


def shipped_teacher_stem(classes: Sequence[int] | None = None) -> str:
    """The file stem of the shipped teacher trained on ``classes`` (``None``: all ten).

    ``(0, 1, 2, 3, 4)`` gives ``teacher_cnn_fashion_mnist_classes0-4``; a class list that is not a
    run of consecutive classes is written out (``classes0_2_5``).
    """
    if classes is None:
        return SHIPPED_TEACHER
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < 10 for c in classes):
        raise ValueError(f"classes must be distinct Fashion-MNIST classes 0..9, got {classes}")
    if len(classes) == 10 and classes == list(range(10)):
        return SHIPPED_TEACHER
    if classes == list(range(classes[0], classes[-1] + 1)):
        return f"{SHIPPED_TEACHER}_classes{classes[0]}-{classes[-1]}"
    return f"{SHIPPED_TEACHER}_classes" + "_".join(map(str, classes))


def shipped_teacher_paths(
    classes: Sequence[int] | None = None, stem: str | None = None
) -> tuple[Path, Path]:
    """``(weights .pt, info .json)`` of the shipped teacher (of ``classes``; ``None``: all ten;
    ``stem``: one of :data:`SHIPPED_TEN_CLASS_TEACHERS`)."""
    if stem is None:
        stem = shipped_teacher_stem(classes)
    elif classes is not None:
        raise ValueError("give classes or stem, not both")
    elif stem not in SHIPPED_TEN_CLASS_TEACHERS:
        raise ValueError(
            f"unknown ten-class teacher {stem!r}; choose from {SHIPPED_TEN_CLASS_TEACHERS}"
        )
    folder = data_dir()
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def _check_shipped(path: Path, classes: Sequence[int] | None, stem: str | None) -> Path:
    """``path``, or a ``FileNotFoundError`` saying how to restore or rebuild it."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; restore it with {RESTORE_SHIPPED} or rebuild it with "
            "`python scripts/train_teacher.py`"
            + ("" if classes is None else f" --classes {','.join(map(str, classes))}")
            + {
                HELDOUT_TEACHER: " --exclude-validation 100",
                DISJOINT_TEACHER: " --disjoint-from-subset",
            }.get(stem or "", "")  # fmt: skip
        )
    return path


def shipped_teacher_info(
    classes: Sequence[int] | None = None, stem: str | None = None
) -> dict[str, Any]:
    """The shipped teacher's record: accuracy, command, versions, history (what it trained on)."""
    info = _check_shipped(shipped_teacher_paths(classes, stem)[1], classes, stem)
    return json.loads(info.read_text())


def load_shipped_teacher(
    device: str | torch.device = "cpu",
    classes: Sequence[int] | None = None,
    stem: str | None = None,
) -> FeatureClassifier:
    """``teacher_cnn`` with the shipped weights (checksum verified), in eval mode on ``device``.

    ``classes``: the cross-task teacher of those classes (``len(classes)`` logits, class
    ``classes[j]`` as logit ``j``); ``stem``: another ten-class teacher (e.g.
    :data:`HELDOUT_TEACHER`). Raises ``FileNotFoundError`` (says how to restore or rebuild) or
    :class:`~relkd_tutorial.data.ChecksumError`.
    """
    weights = _check_shipped(shipped_teacher_paths(classes, stem)[0], classes, stem)
    verify_sha256(weights)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{weights} is not a readable state_dict ({exc}); restore it") from exc
    num_classes = 10 if classes is None else len(list(classes))
    model = build_model(SHIPPED_TEACHER_MODEL, num_classes=num_classes, in_channels=1)
    model.load_state_dict(state)
    return model.to(device).eval()
