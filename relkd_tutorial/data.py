"""Data sets, splits and the on-device loader.

Everything a training run needs between "files on disk" and "a normalised batch on the device":

1. :class:`ImageSet`: a whole data set held as one ``uint8`` tensor ``(N, C, H, W)`` plus its
   labels (``-1`` marks an unlabelled image), class names and normalisation constants.
2. Loaders that build an :class:`ImageSet` pair ``(train, test)``:
   :func:`load_fashion_mnist` (the offline default: a 10k/2k stratified subset shipped in the
   repository's ``data/`` folder, the full set from IDX files, or torchvision's download) and
   :func:`load_cifar100` (torchvision's CIFAR-100 files, the papers' benchmark).
3. Split helpers for the benchmark settings: a validation split, the low-data and transfer
   (partially labelled) regimes, and class splits for cross-task distillation.
4. :class:`TensorLoader`: shuffles, augments (padded random crop, horizontal flip) and normalises
   whole batches on the training device. An epoch's order and augmentation are a pure function of
   ``(seed, epoch)``, so resuming from a checkpoint replays exactly the same batches.

Small data sets fit in memory, so we never decode images one by one in Python: a batch is an
index into one tensor, and augmentation is one ``gather`` over the batch (DESIGN.md section 3).

Shapes: ``N`` images, ``B`` batch, ``C`` channels, ``H x W`` pixels, ``K`` classes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Batch:
    """One training batch, as every loader in this package yields it."""

    x: Tensor  # (B, C, H, W) float, normalised, on the training device
    y: Tensor  # (B,) int64; -1 marks an unlabelled image
    index: Tensor  # (B,) int64, each image's position in its data set (keys teacher caches)


# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

#: Fashion-MNIST class names, in label order (Zalando Research, github.com/zalandoresearch).
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Per-channel pixel mean and standard deviation of the full 60k Fashion-MNIST training set,
#: on the [0, 1] scale (population std over all pixels of all images: 0.28604, 0.35302;
#: ``tests/test_data.py`` re-derives them from the IDX files when they are installed).
FASHION_MNIST_MEAN: tuple[float, ...] = (0.2860,)
FASHION_MNIST_STD: tuple[float, ...] = (0.3530,)

#: CIFAR-100 per-channel (R, G, B) mean and std, the values of the RepDistiller/CRD benchmark.
CIFAR100_MEAN: tuple[float, ...] = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: tuple[float, ...] = (0.2675, 0.2565, 0.2761)

#: Where Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The shipped subset inside the data folder (see :func:`data_dir`).
FASHION_MNIST_SUBSET_FILE = "fashion_mnist_subset.npz"

_FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------------------------------------
# ImageSet
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class ImageSet:
    """A whole image data set in memory.

    Attributes:
        images: ``(N, C, H, W)`` ``uint8`` pixels, 0..255.
        labels: ``(N,)`` ``int64`` labels in ``[-1, K)``; ``-1`` marks an unlabelled image.
        class_names: the ``K`` class names, in label order.
        name: a short identifier (shown in reprs; usable as a cache key).
        mean, std: per-channel normalisation constants on the [0, 1] scale (``C`` entries each),
            used by :class:`TensorLoader` unless it is given others. ``None`` if unknown.
        original_classes: after :func:`select_classes`, the original class id of each label
            (``K`` entries); ``None`` when labels are the data set's own ids.
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
        if not isinstance(self.labels, Tensor) or self.labels.dtype != torch.int64:
            raise TypeError(
                f"labels must be an int64 torch.Tensor of shape ({n},), got "
                f"{getattr(self.labels, 'dtype', type(self.labels).__name__)}"
            )
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        self.class_names = [str(c) for c in self.class_names]
        k = len(self.class_names)
        if k == 0:
            raise ValueError("class_names must name at least one class")
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
        fields = {
            "images": self.images,
            "labels": self.labels,
            "class_names": list(self.class_names),
            "name": self.name,
            "mean": self.mean,
            "std": self.std,
            "original_classes": self.original_classes,
        }
        fields.update(changes)
        return ImageSet(**fields)

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

    def with_labels(self, labels: Tensor) -> ImageSet:
        """The same images with other labels (e.g. ``-1`` for images made unlabelled)."""
        return self._replace(labels=labels)

    def to(self, device: str | torch.device) -> ImageSet:
        """A copy with images and labels on ``device``."""
        return self._replace(images=self.images.to(device), labels=self.labels.to(device))

    def class_counts(self) -> Tensor:
        """``(K,)`` number of labelled images per class (unlabelled ``-1`` images not counted)."""
        labelled = self.labels[self.labels >= 0]
        return torch.bincount(labelled, minlength=self.num_classes).cpu()

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) std of the pixels on the [0, 1] scale.

        Computed from exact integer sums ``S1 = sum u``, ``S2 = sum u^2`` over chunks of images:
        ``mean = S1 / (255 M)``, ``var = S2 / (255^2 M) - mean^2`` with ``M`` pixels per channel.
        """
        s1 = torch.zeros(self.images.shape[1], dtype=torch.int64, device=self.images.device)
        s2 = torch.zeros_like(s1)
        for chunk in self.images.split(4096):  # (<=4096, C, H, W)
            wide = chunk.to(torch.int64)
            s1 += wide.sum(dim=(0, 2, 3))
            s2 += (wide * wide).sum(dim=(0, 2, 3))
        m = self.images.numel() // self.images.shape[1]
        mean = s1.double().cpu() / (255.0 * m)  # (C,)
        var = s2.double().cpu() / (255.0**2 * m) - mean**2  # (C,)
        return tuple(mean.tolist()), tuple(var.clamp_min(0).sqrt().tolist())


# ---------------------------------------------------------------------------------------------
# Files: the data folder, checksums, the IDX format
# ---------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """The folder holding the shipped data: ``$RELKD_DATA_DIR`` if set, else the repository's ``data/``.

    The package is meant to be installed editable from a clone (``pip install -e .``), so the
    repository's ``data/`` folder sits next to the package folder.
    """
    override = os.environ.get("RELKD_DATA_DIR")
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1] / "data"


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumError(ValueError):
    """A data file's SHA-256 does not match its manifest: the file is corrupted or was edited."""


def read_sha256sums(manifest: str | Path) -> dict[str, str]:
    """Parse a ``sha256sum``-format manifest (``<hex>  <file name>`` per line) into ``{name: hex}``."""
    entries: dict[str, str] = {}
    for line in Path(manifest).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split(maxsplit=1)
        entries[name.lstrip("*")] = digest.lower()
    return entries


def verify_sha256(path: str | Path, manifest: str | Path | None = None) -> None:
    """Check a file against its entry in a ``SHA256SUMS`` manifest (default: same folder).

    Raises:
        FileNotFoundError: the manifest is missing.
        ChecksumError: no entry for the file, or the digest differs. The message names the file
            and says how to restore it.
    """
    path = Path(path)
    manifest = Path(manifest) if manifest is not None else path.parent / "SHA256SUMS"
    restore = (
        "Restore the shipped files with `git checkout data/` from the repository root, or "
        "rebuild them with `python scripts/build_fashion_subset.py` (needs the full IDX files)."
    )
    if not manifest.is_file():
        raise FileNotFoundError(f"checksum manifest {manifest} is missing. {restore}")
    expected = read_sha256sums(manifest).get(path.name)
    if expected is None:
        raise ChecksumError(f"{manifest} has no entry for {path.name}. {restore}")
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} is corrupted or was modified: its SHA-256 is {actual}, but {manifest} "
            f"records {expected}. {restore}"
        )


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST/Fashion-MNIST format), gzipped or not.

    The format (yann.lecun.com/exdb/mnist): a 4-byte magic number ``0x00 0x00 <type> <ndim>``,
    then ``ndim`` big-endian ``uint32`` sizes, then the values in C order, big-endian. ``<type>``
    is ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32 or
    ``0x0E`` float64. Gzip is recognised by its magic bytes ``1f 8b``, not by the file name.

    Returns:
        An array of the stored shape, in native byte order.

    Raises:
        ValueError: the file is not IDX, or its length does not match its header.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: its header needs {header} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path} holds {len(raw) - header} data bytes but its header {shape} needs {expected}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------


def _fashion_imageset(images: np.ndarray | Tensor, labels: Any, name: str) -> ImageSet:
    """Wrap ``(N, 28, 28)`` uint8 pixels and labels as a one-channel :class:`ImageSet`."""
    x = torch.as_tensor(np.asarray(images, dtype=np.uint8)).unsqueeze(1).contiguous()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    return ImageSet(
        images=x,  # (N, 1, 28, 28)
        labels=y,
        class_names=list(FASHION_MNIST_CLASSES),
        name=name,
        mean=FASHION_MNIST_MEAN,
        std=FASHION_MNIST_STD,
    )


def find_idx_folder(candidates: Sequence[str | Path]) -> Path | None:
    """The first folder holding all four Fashion-MNIST IDX files (each plain or ``.gz``)."""
    for folder in candidates:
        folder = Path(folder)
        if all(_idx_file(folder, stem) is not None for stem in _FASHION_MNIST_FILES.values()):
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_fashion_mnist_idx(folder: str | Path) -> dict[str, np.ndarray]:
    """Read the four Fashion-MNIST IDX files of a folder into ``{train,test}_{images,labels}``."""
    folder = Path(folder)
    arrays = {}
    for key, stem in _FASHION_MNIST_FILES.items():
        path = _idx_file(folder, stem)
        if path is None:
            raise FileNotFoundError(f"{folder} has no {stem} or {stem}.gz")
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
    return arrays


def _missing_fashion_mnist(searched: Sequence[Path]) -> FileNotFoundError:
    looked = "\n".join(f"  - {p}" for p in searched)
    files = ", ".join(f"{stem}[.gz]" for stem in _FASHION_MNIST_FILES.values())
    return FileNotFoundError(
        "The full Fashion-MNIST IDX files were not found. Looked in:\n"
        f"{looked}\n"
        "Any one of these fixes it:\n"
        "  1. Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` (installs them in "
        f"{DEBIAN_FASHION_MNIST_DIR}/);\n"
        f"  2. put the four files ({files}) in a folder and pass root=<that folder> "
        "(or <root>/FashionMNIST/raw/, torchvision's layout);\n"
        '  3. with internet: load_fashion_mnist("download", root=<a folder>);\n'
        '  or use the 10k/2k subset shipped with the repository: load_fashion_mnist("subset").'
    )


def load_fashion_mnist(
    source: str = "subset", root: str | Path | None = None
) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST as ``(train, test)`` :class:`ImageSet` s of ``(N, 1, 28, 28)`` uint8 images.

    Args:
        source: where the images come from:

            - ``"subset"`` (default, offline): the stratified 10,000 train (1,000 per class) /
              2,000 test (200 per class) subset in ``data/fashion_mnist_subset.npz``, checked
              against ``data/SHA256SUMS`` first (see :func:`data_dir` for the folder).
            - ``"full"``: the full 60,000 / 10,000 images from IDX files, gzipped or not. Searched
              in ``root`` and ``root/FashionMNIST/raw`` (if ``root`` is given), then in
              ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
            - ``"download"``: ``torchvision.datasets.FashionMNIST(root, download=True)`` (needs
              internet the first time; default root ``~/.cache/relkd_tutorial``).
        root: a folder, for ``"full"`` and ``"download"``.

    Raises:
        FileNotFoundError: the data is missing; the message says what to install or where to
            put the files.
        ChecksumError: the shipped subset does not match its checksum.
    """
    if source == "subset":
        if root is not None:
            raise ValueError(
                'root is not used with source="subset" (set RELKD_DATA_DIR to move the data folder)'
            )
        return _load_fashion_subset()
    if source == "full":
        candidates = []
        if root is not None:
            candidates += [Path(root), Path(root) / "FashionMNIST" / "raw"]
        candidates.append(DEBIAN_FASHION_MNIST_DIR)
        folder = find_idx_folder(candidates)
        if folder is None:
            raise _missing_fashion_mnist(candidates)
        arrays = read_fashion_mnist_idx(folder)
        return (
            _fashion_imageset(
                arrays["train_images"], arrays["train_labels"], "fashion_mnist/train"
            ),
            _fashion_imageset(arrays["test_images"], arrays["test_labels"], "fashion_mnist/test"),
        )
    if source == "download":
        from torchvision.datasets import FashionMNIST  # lazy: only this path needs torchvision

        root = Path(root) if root is not None else Path.home() / ".cache" / "relkd_tutorial"
        sets = []
        for split, train in (("train", True), ("test", False)):
            ds = FashionMNIST(str(root), train=train, download=True)
            sets.append(_fashion_imageset(ds.data.numpy(), ds.targets, f"fashion_mnist/{split}"))
        return sets[0], sets[1]
    raise ValueError(f'source must be "subset", "full" or "download", got {source!r}')


def _load_fashion_subset() -> tuple[ImageSet, ImageSet]:
    path = data_dir() / FASHION_MNIST_SUBSET_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"The shipped Fashion-MNIST subset {path} is missing. It is part of the git "
            "repository: install from a clone (`pip install -e .`), restore it with "
            "`git checkout data/`, or point RELKD_DATA_DIR at a folder holding it and its "
            'SHA256SUMS. Alternatively use load_fashion_mnist("full") or ("download").'
        )
    verify_sha256(path)
    with np.load(path, allow_pickle=False) as npz:
        return (
            _fashion_imageset(
                npz["train_images"], npz["train_labels"], "fashion_mnist_subset/train"
            ),
            _fashion_imageset(npz["test_images"], npz["test_labels"], "fashion_mnist_subset/test"),
        )


# ---------------------------------------------------------------------------------------------
# CIFAR-100
# ---------------------------------------------------------------------------------------------


def load_cifar100(
    root: str | Path | None = None,
    download: bool = False,
    *,
    dataset_class: type | None = None,
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100 as ``(train, test)`` :class:`ImageSet` s of ``(N, 3, 32, 32)`` uint8 images.

    Reads torchvision's copy (``root/cifar-100-python/{train,test,meta}``, md5-checked by
    torchvision) with the 100 fine labels and their names from ``meta``; channels are R, G, B.
    Normalisation: the RepDistiller constants :data:`CIFAR100_MEAN` / :data:`CIFAR100_STD`.

    Args:
        root: the folder holding ``cifar-100-python/`` (default ``~/.cache/relkd_tutorial``).
        download: let torchvision download the archive (needs internet).
        dataset_class: the dataset class to read with (default
            ``torchvision.datasets.CIFAR100``); a subclass lets tests use small fake files.

    Raises:
        FileNotFoundError: files missing or failing torchvision's md5 check, with what to do.
    """
    if dataset_class is None:
        from torchvision.datasets import CIFAR100  # lazy: only this path needs torchvision

        dataset_class = CIFAR100
    root = Path(root) if root is not None else Path.home() / ".cache" / "relkd_tutorial"
    sets = []
    for split, train in (("train", True), ("test", False)):
        try:
            ds = dataset_class(str(root), train=train, download=download)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"CIFAR-100 was not found, or failed its md5 check, under {root}/cifar-100-python "
                f"({err}). Pass download=True on a machine with internet, or extract "
                "cifar-100-python.tar.gz (www.cs.toronto.edu/~kriz/cifar.html) into root."
            ) from err
        images = torch.as_tensor(np.asarray(ds.data, dtype=np.uint8))  # (N, 32, 32, 3)
        sets.append(
            ImageSet(
                images=images.permute(0, 3, 1, 2).contiguous(),  # (N, 3, 32, 32)
                labels=torch.as_tensor(ds.targets, dtype=torch.int64),
                class_names=list(ds.classes),
                name=f"cifar100/{split}",
                mean=CIFAR100_MEAN,
                std=CIFAR100_STD,
            )
        )
    return sets[0], sets[1]


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _check_non_negative(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _class_permutations(labels: Tensor, num_classes: int, seed: int) -> list[Tensor]:
    """For each class ``k``, the CPU indices of its images in a random order fixed by ``seed``.

    The generator is seeded once and walks the classes in order, so class ``k``'s order does not
    depend on how many images are later taken from it: the first ``n`` of a class are always a
    prefix of its first ``n + 1`` (nested low-data subsets for the same seed).
    """
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(_check_non_negative("seed", seed))
    orders = []
    for k in range(num_classes):
        members = torch.nonzero(labels == k).flatten()  # (N_k,)
        orders.append(members[torch.randperm(len(members), generator=generator)])
    return orders


def _pick_per_class(
    labels: Tensor, n_per_class: int, seed: int, class_names: Sequence[str]
) -> Tensor:
    n_per_class = _check_count("n_per_class", n_per_class)
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
    """CPU int64 indices of ``n_per_class`` random images of every class, sorted ascending.

    Stratified and deterministic given ``seed``; unlabelled images (``-1``) are never chosen.
    For the same seed a smaller ``n_per_class`` gives a subset of a larger one.

    Args:
        labels: ``(N,)`` int64 labels in ``[-1, K)``.
        n_per_class: how many images to take from each class.
        num_classes: ``K`` (default ``labels.max() + 1``); every class must have enough images.

    Raises:
        ValueError: a class has fewer than ``n_per_class`` labelled images (names the class).
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
    idx = _pick_per_class(data.labels, n_per_class, seed, data.class_names)
    idx = idx.to(data.labels.device)
    labels = torch.full_like(data.labels, -1)  # (N,)
    labels[idx] = data.labels[idx]
    return data.with_labels(labels)._replace(name=f"{data.name}:{n_per_class}-labelled-per-class")


def split_validation(
    data: ImageSet,
    *,
    per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """Carve a stratified validation set out of a training set: returns ``(train, val)``.

    Give exactly one of ``per_class`` (images per class) or ``fraction`` (of each class,
    rounded to the nearest integer, at least 1). The two parts are disjoint, hold every image
    between them and keep their relative order; unlabelled images (``-1``) always stay in
    ``train``. Deterministic given ``seed``.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    counts = data.class_counts().tolist()  # (K,)
    if per_class is not None:
        take = [_check_count("per_class", per_class)] * data.num_classes
    else:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction must be a number in (0, 1), got {type(fraction).__name__}")
        if not 0.0 < fraction < 1.0:
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
    return ImageSet(
        images=data.images[keep],
        labels=new_labels[keep],
        class_names=[data.class_names[c] for c in classes],
        name=f"{data.name}:classes{classes}".replace(" ", ""),
        mean=data.mean,
        std=data.std,
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

    Returns ``(teacher_set, student_set)``, each :func:`select_classes` of its class list and so
    relabelled ``0..k-1``. The class sets may be disjoint (e.g. teacher 0-4, student 5-9) or
    overlap. The images of a class in both sets are split (choice): the teacher gets a random
    ``ceil(n/2)`` of them and the student the other ``floor(n/2)`` (fixed by ``seed``), so the
    student never trains on an image the teacher was trained on, as when the teacher comes from
    another task. ``share_images=True`` gives both all of them. For evaluation, call
    :func:`select_classes` on the test set with each class list.
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


# ---------------------------------------------------------------------------------------------
# Batch transforms (pure functions) and the on-device loader
# ---------------------------------------------------------------------------------------------


def crop_and_flip(images: Tensor, padding: int, offsets: Tensor, flip: Tensor) -> Tensor:
    """Padded crop and horizontal flip of a whole batch, with no loop over samples.

    Sample ``b`` is zero-padded by ``padding`` pixels on every side, cropped back to ``H x W``
    starting at row ``offsets[b, 0]`` and column ``offsets[b, 1]`` (each in ``[0, 2 padding]``;
    ``(padding, padding)`` is the identity), then mirrored left-right if ``flip[b]``. This is
    torchvision's ``RandomCrop(size, padding)`` (fill 0) followed by ``RandomHorizontalFlip``, with
    the random draws made by the caller.

    Args:
        images: ``(B, C, H, W)`` any dtype (uint8 in the loader).
        padding: pixels of zero padding per side, ``>= 0``.
        offsets: ``(B, 2)`` int64 top-left corners in the padded image.
        flip: ``(B,)`` bool.

    Returns:
        ``(B, C, H, W)``, same dtype and device as ``images``.
    """
    b, _, h, w = images.shape
    if offsets.shape != (b, 2) or flip.shape != (b,):
        raise ValueError(
            f"offsets must be ({b}, 2) and flip ({b},), got {tuple(offsets.shape)} and "
            f"{tuple(flip.shape)}"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    return crop_and_flip_padded(padded, (h, w), offsets, flip)


def crop_and_flip_padded(
    padded: Tensor, size: tuple[int, int], offsets: Tensor, flip: Tensor
) -> Tensor:
    """:func:`crop_and_flip` on images that are already padded (the loader pads once, up front).

    The crop and the flip are one ``gather``: output pixel ``(h, w)`` of sample ``b`` reads
    padded pixel ``(offsets[b, 0] + h, offsets[b, 1] + w')``, with ``w' = W - 1 - w`` if
    ``flip[b]`` else ``w``.

    Args:
        padded: ``(B, C, H + 2p, W + 2p)``.
        size: the output ``(H, W)``.
        offsets: ``(B, 2)`` int64 top-left corners, in ``[0, 2p]``.
        flip: ``(B,)`` bool.
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
    """``(scale, shift)``, each ``(1, C, 1, 1)`` float32, with ``u * scale + shift = (u/255 - mean)/std``.

    ``scale = 1 / (255 std_c)`` and ``shift = -mean_c / std_c``: one multiply and one add per pixel
    turns ``uint8`` pixels ``u`` into normalised floats.
    """
    c = len(mean)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``x = (u / 255 - mean_c) / std_c`` per channel ``c``, in float32.

    Args:
        images: ``(B, C, H, W)`` pixels ``u`` on the 0..255 scale (uint8 or float).
        mean, std: ``C`` entries each, on the [0, 1] scale.
    """
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(
            f"mean and std need one entry per channel ({images.shape[1]}), got {len(mean)} "
            f"and {len(std)}"
        )
    scale, shift = normalization_affine(mean, std, images.device)
    return images.float().mul_(scale).add_(shift)  # (B, C, H, W)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state is a pure function of ``(seed, epoch)``.

    ``numpy.random.SeedSequence`` mixes the pair into one 64-bit seed, so nearby pairs such as
    ``(0, 1)`` and ``(1, 0)`` give unrelated streams.
    """
    state = np.random.SeedSequence(
        [_check_non_negative("seed", seed), _check_non_negative("epoch", epoch)]
    ).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class TensorLoader:
    """Batches of a whole :class:`ImageSet` held on the training device as one uint8 tensor.

    Each pass yields :class:`Batch` ``(x, y, index)``: ``x`` float32 ``(B, C, H, W)`` normalised
    (optionally ``channels_last``), ``y`` the labels and ``index`` the images' positions in
    ``data``, so ``x`` is exactly ``normalize(augment(data.images[index]))``.

    Randomness. All draws of an epoch come from a CPU generator seeded by ``(seed, epoch)``
    (:func:`epoch_generator`): first the order (``randperm(N)``), then for every position of that
    order a crop offset and a flip. So an epoch's batches are a pure function of
    ``(seed, epoch)``, identical on CPU and GPU, and resuming at epoch ``e`` (``set_epoch(e)``)
    replays the run exactly. As with ``DistributedSampler``, ``set_epoch`` chooses the epoch;
    unlike it, each ``iter()`` uses the current epoch and advances it by one, so a loop that
    never calls ``set_epoch`` still sees a new order every epoch.

    Augmentation (training only): zero-padded random crop and random horizontal flip
    (:func:`crop_and_flip`), the RepDistiller CIFAR recipe (padding 4, choice kept for
    Fashion-MNIST; horizontal mirroring keeps a garment a garment). The set is zero-padded once,
    at construction, so a batch costs one index and one gather (memory: ``(H+2p)(W+2p)`` bytes
    per image and channel instead of ``HW``). Turn off with ``augment=False``;
    :meth:`for_evaluation` builds the unshuffled, unaugmented loader.

    Distributed use: with ``world_size > 1`` every rank iterates the same global batches of
    ``batch_size`` images and keeps its contiguous slice (``batch_size / world_size`` images);
    together the ranks see exactly the single-process batch, augmentation included. Every rank
    yields the same number of batches. With ``drop_last=False`` the last, short batch is split
    as ``torch.tensor_split`` does (sizes differ by at most one; a rank may get none): use
    ``drop_last=True`` for DDP training.

    Args:
        data: the images; moved to ``device`` once.
        batch_size: global batch size ``B``.
        shuffle: a new random order each epoch (else the data set's order).
        augment: apply crop and flip (as configured below).
        crop_padding: padding of the random crop in pixels (0 = no crop).
        flip: random horizontal flip with probability 1/2.
        drop_last: drop the last batch if it is shorter than ``batch_size``.
        seed: base seed of the epoch generators.
        device: where batches live (default: where ``data`` is).
        channels_last: return ``x`` in ``torch.channels_last`` memory format.
        mean, std: normalisation constants (default: ``data.mean`` / ``data.std``).
        rank, world_size: this process's shard (see above).
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
        self.batch_size = _check_count("batch_size", batch_size)
        self.world_size = _check_count("world_size", world_size)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by world_size={world_size} "
                "(each rank takes an equal slice of every global batch)"
            )
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
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
        self.seed = _check_non_negative("seed", seed)
        self.channels_last = bool(channels_last)
        self.mean, self.std = mean, std
        self.rank = rank
        self.epoch = 0
        self._scale, self._shift = normalization_affine(mean, std, self.device)  # (1, C, 1, 1)

    @classmethod
    def for_evaluation(
        cls,
        data: ImageSet,
        batch_size: int = 1000,
        *,
        device: str | torch.device | None = None,
        channels_last: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> TensorLoader:
        """The evaluation loader: data set order, no augmentation, every image exactly once."""
        return cls(
            data,
            batch_size,
            shuffle=False,
            augment=False,
            drop_last=False,
            device=device,
            channels_last=channels_last,
            mean=mean,
            std=std,
            rank=rank,
            world_size=world_size,
        )

    @property
    def augments(self) -> bool:
        """Whether batches are randomly cropped or flipped."""
        return self.crop_padding > 0 or self.flip

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order and augmentation the next ``iter()`` produces."""
        self.epoch = _check_non_negative("epoch", epoch)

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.epoch
        self.epoch = epoch + 1
        return self._batches(epoch)

    def epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """The draws of one epoch, on the CPU: ``(order (N,), offsets (N, 2), flip (N,))``.

        ``order`` is the sequence of image indices; ``offsets[i]`` and ``flip[i]`` augment the
        image at position ``i`` of that sequence. Without augmentation offsets are the identity
        crop and flips are all ``False``.
        """
        n, p = len(self.labels), self.crop_padding
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        if p > 0:
            offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator)
        else:
            offsets = torch.zeros(n, 2, dtype=torch.int64)
        if self.flip:
            flips = torch.randint(0, 2, (n,), generator=generator).bool()
        else:
            flips = torch.zeros(n, dtype=torch.bool)
        return order, offsets, flips

    def _rank_slice(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's contiguous part of the global batch ``[start, stop)`` (tensor_split rule)."""
        size, w, r = stop - start, self.world_size, self.rank
        base, extra = divmod(size, w)
        lo = start + r * base + min(r, extra)
        return lo, lo + base + (1 if r < extra else 0)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        order, offsets, flips = (t.to(self.device) for t in self.epoch_plan(epoch))
        n = len(self.labels)
        for b in range(len(self)):
            lo, hi = self._rank_slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            index = order[lo:hi]  # (B_r,)
            images = self._pixels[index]  # (B_r, C, H + 2p, W + 2p) uint8
            if self.augments:
                images = crop_and_flip_padded(images, self.image_size, offsets[lo:hi], flips[lo:hi])
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
