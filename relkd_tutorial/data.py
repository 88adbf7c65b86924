"""Data sets, splits and the on-device loader (to be written; see issue 2)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Batch:
    """One training batch, as every loader in this package yields it."""

    x: Tensor  # (B, C, H, W) float, normalised, on the training device
    y: Tensor  # (B,) int64; -1 marks an unlabelled image
    index: Tensor  # (B,) int64, each image's position in its data set (keys teacher caches)
