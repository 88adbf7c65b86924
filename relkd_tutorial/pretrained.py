"""The teacher shipped as package data: load it instead of retraining it.

``relkd_tutorial/shipped/teacher_cnn_fashion_mnist.pt`` is the ``state_dict`` of a ``teacher_cnn``
trained on the shipped Fashion-MNIST subset by ``scripts/train_teacher.py``; the ``.json`` beside
it records its test accuracy, the exact command, the package versions and the training history.
The weights file is covered by ``SHA256SUMS`` in the same folder and read with
``torch.load(weights_only=True)``. ``RELKD_DATA_DIR`` moves the folder (see
:func:`relkd_tutorial.data.data_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .data import RESTORE_SHIPPED, data_dir, verify_sha256
from .models import FeatureClassifier, build_model

SHIPPED_TEACHER = "teacher_cnn_fashion_mnist"  # file stem inside the data folder
SHIPPED_TEACHER_MODEL = "teacher_cnn"


def shipped_teacher_paths() -> tuple[Path, Path]:
    """``(weights .pt, info .json)`` of the shipped teacher."""
    folder = data_dir()
    return folder / f"{SHIPPED_TEACHER}.pt", folder / f"{SHIPPED_TEACHER}.json"


def shipped_teacher_info() -> dict[str, Any]:
    """The shipped teacher's record: accuracy, command, versions, history."""
    _, info_path = shipped_teacher_paths()
    if not info_path.exists():
        raise FileNotFoundError(
            f"{info_path} is missing; restore it with {RESTORE_SHIPPED} or rebuild it with "
            "`python scripts/train_teacher.py`"
        )
    return json.loads(info_path.read_text())


def load_shipped_teacher(device: str | torch.device = "cpu") -> FeatureClassifier:
    """Build ``teacher_cnn`` and load the shipped weights (checksum verified), in eval mode.

    Raises:
        FileNotFoundError: the weights are missing (says how to restore or rebuild them).
        relkd_tutorial.data.ChecksumError: the file does not match its ``SHA256SUMS``.
    """
    weights, _ = shipped_teacher_paths()
    if not weights.exists():
        raise FileNotFoundError(
            f"{weights} is missing; restore it with {RESTORE_SHIPPED} or rebuild it with "
            "`python scripts/train_teacher.py`"
        )
    verify_sha256(weights)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{weights} is not a readable state_dict ({exc}); restore it") from exc
    model = build_model(SHIPPED_TEACHER_MODEL, num_classes=10, in_channels=1)
    model.load_state_dict(state)
    return model.to(device).eval()
