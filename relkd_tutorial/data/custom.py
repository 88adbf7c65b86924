"""Your own images: any torchvision dataset or an ``ImageFolder`` -> the package's data path.

:func:`from_torchvision` decodes a map-style dataset of ``(image, label)`` pairs into fixed-size
``uint8`` images with torchvision's ``transforms.v2`` (optional resize and 1/3-channel
conversion). Within a memory budget (``max_bytes`` of decoded pixels) it returns an
:class:`~relkd_tutorial.data.ImageSet` for the on-device ``TensorLoader``; beyond it an
:class:`ImageStream` that decodes each image when asked, for a ``DataLoader``. :func:`image_loader`
builds the loader for either, :func:`image_folder` reads ``root/<class>/<image>``. ``mean``/``std``
are given or computed from the decoded pixels.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .._checks import check_count
from .imageset import ImageSet, pixel_sums, stats_from_sums
from .loader import TensorLoader, epoch_generator, normalize

#: Default memory budget of :func:`from_torchvision`: 2 GiB of decoded uint8 pixels.
DEFAULT_MAX_BYTES = 2 * 1024**3


class _Decoder:
    """One image -> ``(C, H, W)`` uint8 tensor (resize, channel conversion), with clear errors."""

    def __init__(self, size: int | Sequence[int] | None, channels: int | None) -> None:
        from torchvision.transforms import v2  # lazy: only this path needs torchvision

        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        convert = {None: [], 1: [v2.Grayscale(1)], 3: [v2.RGB()]}[channels]
        steps: list[Any] = [v2.ToImage(), v2.ToDtype(torch.uint8, scale=True), *convert]
        if size is not None:
            pair = (size, size) if type(size) is int else tuple(size)  # type(True) is bool
            if len(pair) != 2 or not all(type(s) is int and s >= 1 for s in pair):
                raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
            steps.append(v2.Resize(pair, antialias=True))
        self.transform = v2.Compose(steps)
        self.shape: tuple[int, ...] | None = None  # of the first image, which all must share

    def __call__(self, image: Any, i: int) -> Tensor:
        if isinstance(image, np.ndarray) and image.ndim == 2:
            image = image[:, :, None]  # (H, W) -> (H, W, 1), as ToImage expects
        what = (
            f"image {i} is a {type(image).__name__}; expected a PIL image, a (C, H, W) tensor "
            "(uint8, or float in [0, 1]) or an (H, W[, C]) uint8 array"
        )
        if isinstance(image, Tensor) and image.is_floating_point() and image.numel():
            low, high = float(image.min()), float(image.max())
            if not (0.0 <= low and high <= 1.0):
                raise ValueError(
                    f"image {i} is a float tensor with values in [{low:.3g}, {high:.3g}], not "
                    "[0, 1]: it looks normalised already (a Normalize transform); build the "
                    "dataset without it, the package normalises the raw pixels itself"
                )
        try:
            pixels = self.transform(image)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{what} ({err})") from err
        if not isinstance(pixels, Tensor):  # v2 passes unknown types through unchanged
            raise TypeError(what)
        pixels = pixels.as_subclass(Tensor)  # (C, H, W) uint8
        if self.shape is None:
            self.shape = tuple(pixels.shape)
        elif tuple(pixels.shape) != self.shape:
            hint = (
                "pass size=(H, W) to resize every image"
                if pixels.shape[0] == self.shape[0]
                else "pass channels=1 or channels=3 to convert every image"
            )
            raise ValueError(
                f"image {i} has shape (C, H, W) = {tuple(pixels.shape)} but image 0 has "
                f"{self.shape}: images of one data set must share a shape; {hint}"
            )
        return pixels


def _label(value: Any, i: int) -> int:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"label {i} is {value!r} ({type(value).__name__}); labels must be integer class "
            "indices (0..K-1, -1 = unlabelled): map them with the dataset's target_transform"
        )
    return int(value)


@dataclasses.dataclass(eq=False, repr=False)
class ImageStream(Dataset):
    """A dataset too big for memory, decoded image by image: item ``i`` is ``(x, y, i)``.

    ``x`` is ``(C, H, W)`` float32, normalised with ``mean``/``std``; ``y`` an int64 label.
    With ``augment=True`` (the training view) ``x`` is randomly cropped (zero padding
    ``crop_padding``) and flipped, the :class:`TensorLoader` recipe, drawing from torch's RNG
    (in a ``DataLoader`` worker: the worker's seed).
    """

    dataset: Any
    labels: Tensor
    class_names: list[str]
    decoder: _Decoder
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    _: dataclasses.KW_ONLY
    augment: bool = False
    crop_padding: int = 4

    def __post_init__(self) -> None:
        self.augment = bool(self.augment)
        self.crop_padding = check_count("crop_padding", self.crop_padding, 0)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def with_augmentation(self, augment: bool = True, crop_padding: int = 4) -> ImageStream:
        """The same images, with or without the random crop and flip."""
        return dataclasses.replace(self, augment=augment, crop_padding=crop_padding)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        pixels = self.decoder(self.dataset[i][0], i)  # (C, H, W) uint8
        if self.augment:
            from torchvision.transforms import v2

            h, w = pixels.shape[1:]
            pixels = v2.RandomCrop((h, w), padding=self.crop_padding)(pixels)
            pixels = v2.RandomHorizontalFlip()(pixels)
        x = normalize(pixels[None], self.mean, self.std)[0]  # (C, H, W) float32
        return x, self.labels[i], torch.tensor(i)

    def __repr__(self) -> str:
        shape = self.decoder.shape
        return (
            f"ImageStream(name={self.name!r}, n={len(self)}, image shape={shape}, "
            f"classes={self.num_classes}, augment={self.augment})"
        )


_RANDOM_TRANSFORMS = ("ColorJitter", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix")


def _check_transform(transform: Any) -> None:
    """Refuse a normalising ``dataset.transform``; warn about a random one.

    The images are decoded once into uint8 pixels and normalised by the package: a ``Normalize``
    in the dataset's transform would be clipped away silently, and a random augmentation would be
    frozen into an :class:`ImageSet` (and redrawn at every access of an :class:`ImageStream`,
    pixel statistics included).
    """
    names = [type(t).__name__ for t in getattr(transform, "transforms", [transform])]
    if "Normalize" in names:
        raise ValueError(
            f"the dataset's transform normalises the images ({names}); from_torchvision needs "
            "the raw images and normalises them itself: build the dataset without Normalize"
        )
    random = [n for n in names if n.startswith("Random") or n in _RANDOM_TRANSFORMS]
    if random:
        warnings.warn(
            f"the dataset's transform draws random augmentations {random}: from_torchvision "
            "decodes each image once, so they would be frozen into the data set (or redrawn on "
            "every access of an ImageStream); build the dataset without them and augment with "
            "TensorLoader(augment=True) or ImageStream.with_augmentation()",
            stacklevel=3,
        )


def from_torchvision(
    dataset: Any,
    *,
    size: int | Sequence[int] | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImageSet | ImageStream:
    """Turn a map-style dataset of ``(image, int label)`` pairs into the package's data path: an
    :class:`ImageSet` if the decoded ``uint8`` pixels (``N * C * H * W`` bytes) fit ``max_bytes``,
    else an :class:`ImageStream`.

    ``dataset``: any torchvision dataset (``ImageFolder``, ``CIFAR10``, ...) or an object with
    ``__len__`` and ``__getitem__``, built *without* a normalising ``transform``. ``size``: resize
    to ``(H, W)`` (an int for squares; required when sizes differ); ``channels``: convert to 1 or 3;
    ``mean``/``std``: on the [0, 1] scale, computed from the pixels if ``None``; ``class_names``:
    default ``dataset.classes``, else ``"0".."K-1"``; ``name``: default the dataset's class name.
    Raises ``ValueError`` (empty; shapes differ without ``size``/``channels``) or ``TypeError`` (a
    label that is not an integer class index, an image that is not an image).
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty: it holds no images")
    _check_transform(getattr(dataset, "transform", None))
    max_bytes = check_count("max_bytes", max_bytes)
    decoder = _Decoder(size, channels)
    name = name or type(dataset).__name__
    first = decoder(dataset[0][0], 0)  # fixes the shape every image must have
    in_memory, need_stats = n * first.numel() <= max_bytes, mean is None or std is None
    # a stream's ImageSet (for its checks) is a view repeating the first image: no pixel copied
    shape = (n, *first.shape)  # (N, C, H, W)
    images = torch.empty(shape, dtype=torch.uint8) if in_memory else first.expand(shape)
    labels = torch.empty(n, dtype=torch.int64)
    sums: list[Any] = [0, 0, 0]  # a stream's pixel sums S1, S2, M (pixel_sums)
    for i in range(n):
        image, label = dataset[i]
        labels[i] = _label(label, i)
        if in_memory:
            images[i] = first if i == 0 else decoder(image, i)
        elif need_stats:
            sums = [a + b for a, b in zip(sums, pixel_sums(decoder(image, i)[None]), strict=True)]
    names = getattr(dataset, "classes", None) if class_names is None else class_names
    names = range(int(labels.max()) + 1) if names is None else names  # "0".."K-1" (n >= 1)
    data = ImageSet(images, labels, names, name, mean, std)  # type: ignore[arg-type]
    if need_stats:
        got = data.pixel_stats() if in_memory else stats_from_sums(*sums)
        data = data._replace(
            mean=got[0] if mean is None else mean, std=got[1] if std is None else std
        )
    if in_memory:
        return data
    return ImageStream(dataset, labels, data.class_names, decoder, data.mean, data.std, name)  # type: ignore[arg-type]


def image_folder(
    root: str | Path,
    *,
    size: int | Sequence[int] | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ImageSet | ImageStream:
    """A folder with one sub-folder of images per class (``root/<class>/<image>``) as
    :func:`from_torchvision` returns it, with its options (``size``, ``channels``, ``mean``,
    ``std``, ``max_bytes``); torchvision's ``ImageFolder``: classes in sorted order, every image
    read as RGB (pass ``channels=1`` for grayscale), ``name`` the folder's.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or holds no class folder with an image.
    """
    from torchvision.datasets import ImageFolder  # lazy: only this path needs torchvision

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    try:
        dataset = ImageFolder(str(root))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{root} holds no images in the expected layout root/<class name>/<image file> "
            f"(one sub-folder per class; extensions .png, .jpg, ...): {err}"
        ) from None
    options = dict(size=size, channels=channels, mean=mean, std=std, max_bytes=max_bytes)
    return from_torchvision(dataset, name=root.name, **options)


class EpochSampler(Sampler[int]):
    """A shuffling sampler whose order is a pure function of ``(seed, epoch)``; ``fit`` calls
    :meth:`set_epoch` before each epoch (as for ``DistributedSampler``)."""

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.shuffle = n, bool(shuffle)
        self.seed = check_count("seed", seed, 0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_count("epoch", epoch, 0)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch))
        return iter(order.tolist())


def image_loader(
    data: ImageSet | ImageStream,
    batch_size: int,
    *,
    train: bool = True,
    augment: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> TensorLoader | DataLoader:
    """The training (``train=True``: shuffled, augmented, last short batch dropped) or evaluation
    loader of ``data``: a :class:`TensorLoader` for an :class:`ImageSet`, a ``DataLoader`` over
    an :class:`ImageStream` (``num_workers`` processes decode; ``fit`` moves batches to its
    device). ``augment`` defaults to ``train`` (random crop with padding 4 and horizontal flip).
    """
    augment = train if augment is None else bool(augment)
    if isinstance(data, ImageSet):
        if not train:
            return TensorLoader.for_evaluation(data, batch_size, device=device)
        return TensorLoader(
            data, batch_size, augment=augment, drop_last=len(data) > batch_size, seed=seed,
            device=device,
        )  # fmt: skip
    if not isinstance(data, ImageStream):
        raise TypeError(f"data must be an ImageSet or an ImageStream, got {type(data).__name__}")
    batch_size = check_count("batch_size", batch_size)
    stream = data.with_augmentation(augment)
    return DataLoader(
        stream,
        batch_size=batch_size,
        sampler=EpochSampler(len(stream), shuffle=train, seed=seed),
        drop_last=train and len(stream) > batch_size,
        num_workers=check_count("num_workers", num_workers, 0),
        generator=torch.Generator().manual_seed(seed),
    )
