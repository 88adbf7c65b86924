"""Batch transforms (pure functions) and the on-device :class:`TensorLoader`."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_count
from .imageset import Batch, ImageSet


def crop_and_flip_padded(
    padded: Tensor, size: tuple[int, int], offsets: Tensor, flip: Tensor
) -> Tensor:
    """Padded crop and horizontal flip of a batch of already padded images, one ``gather``.

    torchvision's ``RandomCrop(size, padding)`` (fill 0) then ``RandomHorizontalFlip`` with the
    draws made by the caller: output pixel ``(h, w)`` of sample ``b`` reads padded pixel
    ``(offsets[b, 0] + h, offsets[b, 1] + w')``, ``w' = W - 1 - w`` if ``flip[b]``. ``padded``
    ``(B, C, H + 2p, W + 2p)``, ``size`` ``(H, W)``, ``offsets`` ``(B, 2)`` int64 in ``[0, 2p]``,
    ``flip`` ``(B,)`` bool.
    """
    b, c, hp, wp = padded.shape
    h, w = size
    dev = padded.device
    cols = torch.arange(w, device=dev)  # (W,)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + offsets[:, 1:2]  # (B, W)
    rows = torch.arange(h, device=dev) + offsets[:, 0:1]  # (B, H)
    flat = rows[:, :, None] * wp + cols[:, None, :]  # (B, H, W) positions in the padded image
    flat = flat.reshape(b, 1, h * w).expand(b, c, h * w)  # (B, C, H*W)
    out = padded.reshape(b, c, hp * wp).gather(2, flat)  # (B, C, H*W)
    return out.reshape(b, c, h, w)


def normalization_affine(
    mean: Sequence[float], std: Sequence[float], device: str | torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``, each ``(1, C, 1, 1)`` float32, ``scale = 1 / (255 std_c)``,
    ``shift = -mean_c / std_c``: ``u * scale + shift = (u/255 - mean) / std`` in one multiply-add.
    """
    c = len(mean)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``x = (u / 255 - mean_c) / std_c`` per channel, float32, for ``(B, C, H, W)`` pixels ``u`` on the 0..255 scale (``C`` means and stds on [0, 1])."""
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(
            f"mean and std need one entry per channel ({images.shape[1]}), got {len(mean)} "
            f"and {len(std)}"
        )
    scale, shift = normalization_affine(mean, std, images.device)
    return images.float().mul_(scale).add_(shift)  # (B, C, H, W)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of ``(seed, epoch)`` (``numpy``'s
    ``SeedSequence`` mixes the pair, so ``(0, 1)`` and ``(1, 0)`` give unrelated streams).
    """
    state = np.random.SeedSequence(
        [check_count("seed", seed, 0), check_count("epoch", epoch, 0)]
    ).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class TensorLoader:
    """Batches of a whole :class:`ImageSet` held on the training device as one uint8 tensor.

    Each pass yields :class:`Batch` ``(x, y, index)``: ``x`` float32 ``(B, C, H, W)``, exactly
    ``normalize(augment(data.images[index]))`` (``mean``/``std``: default the data's; optionally
    ``channels_last``). All draws of an epoch come from a CPU generator seeded by ``(seed, epoch)``
    (:func:`epoch_generator`): the order (``randperm(N)`` if ``shuffle``), then per position a crop
    offset and a flip. So an epoch is identical on CPU and GPU and ``set_epoch(e)`` replays it; each
    ``iter()`` uses the current epoch and advances it by one.

    Augmentation (``augment``): zero-padded random crop (``crop_padding``, 4) and horizontal flip
    (``flip``), the RepDistiller CIFAR recipe (kept for Fashion-MNIST: a mirrored garment is a
    garment), one gather per batch (:func:`crop_and_flip_padded`; the set is padded once).
    :meth:`for_evaluation` builds the unshuffled, unaugmented loader.

    With ``world_size > 1`` every rank iterates the same global batches of ``batch_size`` and keeps
    its contiguous slice, so together the ranks see the single-process batch; a last short batch is
    split as ``torch.tensor_split`` does (use ``drop_last=True`` for DDP training).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: bool = True,
        crop_padding: int = 4,
        flip: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device | None = None,
        channels_last: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(data, ImageSet):
            raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
        self.batch_size = check_count("batch_size", batch_size)
        self.world_size = check_count("world_size", world_size)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by world_size={world_size} "
                "(each rank takes an equal slice of every global batch)"
            )
        crop_padding = check_count("crop_padding", crop_padding, 0)
        mean = data.mean if mean is None else tuple(float(m) for m in mean)
        std = data.std if std is None else tuple(float(s) for s in std)
        channels = data.images.shape[1]
        if mean is None or std is None:
            raise ValueError(
                f"{data.name} has no normalisation constants: pass mean= and std= "
                "(e.g. from data.pixel_stats())"
            )
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(
                f"mean and std need {channels} entries (std > 0), got {mean} and {std}"
            )
        if not all(math.isfinite(v) for v in (*mean, *std)):
            raise ValueError(f"mean and std must be finite, got {mean} and {std}")
        if len(data) == 0:
            raise ValueError(f"{data.name} is empty: a loader needs at least one image")
        if drop_last and len(data) < self.batch_size:
            raise ValueError(
                f"drop_last=True with batch_size={self.batch_size} and {len(data)} images in "
                f"{data.name} yields no batch: use a batch size <= {len(data)} or drop_last=False"
            )
        self.dataset = data
        self.device = torch.device(device) if device is not None else data.images.device
        self.labels = data.labels.to(self.device)  # (N,)
        self.shuffle = bool(shuffle)
        self.crop_padding = p = crop_padding if augment else 0
        self.image_size = tuple(data.images.shape[2:])  # (H, W)
        # The whole set, zero-padded once for the random crop: (N, C, H + 2p, W + 2p) uint8
        pixels = data.images.to(self.device)
        self._pixels = F.pad(pixels, (p, p, p, p)) if p else pixels
        self.flip = bool(flip) and bool(augment)
        self.drop_last = bool(drop_last)
        self.seed = check_count("seed", seed, 0)
        self.channels_last = bool(channels_last)
        self.mean, self.std = mean, std
        self.rank = rank
        self.epoch = 0
        self._scale, self._shift = normalization_affine(mean, std, self.device)  # (1, C, 1, 1)

    @classmethod
    def for_evaluation(cls, data: ImageSet, batch_size: int = 1000, **kwargs: Any) -> TensorLoader:
        """The evaluation loader: data set order, no augmentation, every image exactly once.

        ``kwargs``: ``device``, ``channels_last``, ``mean``/``std``, ``rank``/``world_size``.
        """
        return cls(data, batch_size, shuffle=False, augment=False, drop_last=False, **kwargs)

    @property
    def augments(self) -> bool:
        """Whether batches are randomly cropped or flipped."""
        return self.crop_padding > 0 or self.flip

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next ``iter()`` produces."""
        self.epoch = check_count("epoch", epoch, 0)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch = epoch + 1
        return self._batches(epoch)

    def epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """The draws of one epoch, on the CPU: ``(order (N,), offsets (N, 2), flip (N,))``;
        ``offsets[i]`` and ``flip[i]`` augment the image at position ``i`` of ``order`` (identity
        without augmentation).
        """
        n, p = len(self.labels), self.crop_padding
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        offsets, flips = torch.zeros(n, 2, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
        if p > 0:
            offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator)
        if self.flip:
            flips = torch.randint(0, 2, (n,), generator=generator).bool()
        return order, offsets, flips

    def _batches(self, epoch: int) -> Iterator[Batch]:
        plan = [t.to(self.device) for t in self.epoch_plan(epoch)]  # order, offsets, flips
        for b in range(len(self)):
            # this rank's contiguous part of the global batch b (torch.tensor_split's rule)
            part = slice(b * self.batch_size, (b + 1) * self.batch_size)
            index, offsets, flips = (t[part].tensor_split(self.world_size)[self.rank] for t in plan)
            images = self._pixels[index]  # (B_r, C, H + 2p, W + 2p) uint8
            if self.augments:
                images = crop_and_flip_padded(images, self.image_size, offsets, flips)
            # normalize(): (u / 255 - mean) / std as one multiply and one add, (B_r, C, H, W)
            x = images.float().mul_(self._scale).add_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x=x, y=self.labels[index], index=index)

    def __repr__(self) -> str:
        return (
            f"TensorLoader({self.dataset.name!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, crop_padding={self.crop_padding}, flip={self.flip}, "
            f"drop_last={self.drop_last}, seed={self.seed}, device={self.device}, "
            f"batches={len(self)})"
        )
