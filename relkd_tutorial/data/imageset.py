"""The in-memory data set (:class:`ImageSet`) and the :class:`Batch` every loader yields."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """One training batch, as every loader in this package yields it."""

    x: Tensor  # (B, C, H, W) float, normalised, on the training device
    y: Tensor  # (B,) int64; -1 marks an unlabelled image
    index: Tensor  # (B,) int64, each image's position in its data set (keys teacher caches)


@dataclass(eq=False, repr=False)
class ImageSet:
    """A whole image data set in memory: ``images`` ``(N, C, H, W)`` uint8, ``labels`` ``(N,)``
    int64 in ``[-1, K)`` (``-1`` = unlabelled), the ``K`` ``class_names``, a short ``name``,
    per-channel ``mean``/``std`` on the [0, 1] scale (``None`` if unknown) and, after
    :func:`select_classes`, the ``original_classes`` of each label.
    """

    images: Tensor
    labels: Tensor
    class_names: list[str]
    name: str = "images"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    original_classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor) or self.images.dtype != torch.uint8:
            raise TypeError(
                "images must be a uint8 torch.Tensor of shape (N, C, H, W), got "
                f"{getattr(self.images, 'dtype', type(self.images).__name__)}"
            )
        if self.images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        if self.images.is_meta:
            raise ValueError("images are on the meta device, which holds no pixels")
        if not isinstance(self.labels, Tensor) or self.labels.dtype != torch.int64:
            raise TypeError(
                f"labels must be an int64 torch.Tensor of shape ({n},), got "
                f"{getattr(self.labels, 'dtype', type(self.labels).__name__)}"
            )
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.labels.device != self.images.device:
            raise ValueError(
                f"images are on {self.images.device} but labels on {self.labels.device}: keep "
                "both on one device"
            )
        if isinstance(self.class_names, str):
            raise TypeError(
                f"class_names must be a list of names, got the string {self.class_names!r}"
            )
        self.class_names = [str(c) for c in self.class_names]
        k = len(self.class_names)
        if k == 0:
            raise ValueError("class_names must name at least one class")
        twice = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
        if twice:
            raise ValueError(f"class_names must be distinct; named more than once: {twice}")
        if n and (int(self.labels.min()) < -1 or int(self.labels.max()) >= k):
            raise ValueError(
                f"labels must lie in [-1, {k}) for {k} classes, got values in "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        channels = self.images.shape[1]
        for field in ("mean", "std"):
            value = getattr(self, field)
            if value is None:
                continue
            value = tuple(float(v) for v in value)
            if len(value) != channels:
                raise ValueError(
                    f"{field} must have one entry per channel ({channels}), got {len(value)}"
                )
            if not all(math.isfinite(v) for v in value):
                raise ValueError(f"{field} must be finite, got {value}")
            setattr(self, field, value)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.original_classes is not None:
            self.original_classes = tuple(int(c) for c in self.original_classes)
            if len(self.original_classes) != k:
                raise ValueError(
                    f"original_classes must have one entry per class ({k}), "
                    f"got {len(self.original_classes)}"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        labelled = int((self.labels >= 0).sum())
        return (
            f"ImageSet(name={self.name!r}, images=({n}, {c}, {h}, {w}) uint8 on "
            f"{self.images.device}, classes={self.num_classes}, labelled={labelled}/{n})"
        )

    @property
    def num_classes(self) -> int:
        """``K``, the number of classes."""
        return len(self.class_names)

    def _replace(self, **changes: Any) -> ImageSet:
        """A new, checked :class:`ImageSet` with some fields changed."""
        return dataclasses.replace(self, **changes)

    def subset(self, indices: Tensor | Sequence[int]) -> ImageSet:
        """The images at ``indices`` (an index list/tensor or a boolean mask), in that order."""
        idx = torch.as_tensor(indices, device=self.images.device)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"a boolean mask must have shape ({len(self)},), got {tuple(idx.shape)}"
                )
        elif idx.dtype != torch.int64 or idx.dim() != 1:
            raise TypeError(f"indices must be a 1-D int64 or bool tensor, got {idx.dtype}")
        return self._replace(images=self.images[idx], labels=self.labels[idx])

    def to(self, device: str | torch.device) -> ImageSet:
        """A copy with images and labels on ``device``."""
        return self._replace(images=self.images.to(device), labels=self.labels.to(device))

    def class_counts(self) -> Tensor:
        """``(K,)`` number of labelled images per class (unlabelled ``-1`` images not counted)."""
        labelled = self.labels[self.labels >= 0]
        return torch.bincount(labelled, minlength=self.num_classes).cpu()

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) std of the pixels on the [0, 1] scale."""
        sums = [pixel_sums(chunk) for chunk in self.images.split(4096)]  # (<=4096, C, H, W) each
        return stats_from_sums(*(sum(parts) for parts in zip(*sums, strict=True)))


def pixel_sums(images: Tensor) -> tuple[Tensor, Tensor, int]:
    """Exact integer sums ``S1 = sum u``, ``S2 = sum u^2`` per channel of ``(B, C, H, W)`` uint8
    pixels ``u``, and the number ``M`` of pixels per channel."""
    wide = images.to(torch.int64)  # (B, C, H, W)
    return wide.sum(dim=(0, 2, 3)), (wide * wide).sum(dim=(0, 2, 3)), wide[:, 0].numel()


def stats_from_sums(s1: Tensor, s2: Tensor, m: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean = S1 / (255 M)`` and ``std = sqrt(S2 / (255^2 M) - mean^2)`` per channel."""
    mean = s1.double().cpu() / (255.0 * m)  # (C,)
    var = s2.double().cpu() / (255.0**2 * m) - mean**2  # (C,)
    return tuple(mean.tolist()), tuple(var.clamp_min(0).sqrt().tolist())
