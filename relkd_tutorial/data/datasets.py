"""Where images come from: the shipped Fashion-MNIST subset, IDX files, torchvision's CIFAR-100.

Every loader returns a ``(train, test)`` pair of :class:`~relkd_tutorial.data.ImageSet`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .imageset import ImageSet

#: Fashion-MNIST class names, in label order (Zalando Research, github.com/zalandoresearch).
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)  # fmt: skip

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

#: The package-data folder inside ``relkd_tutorial/`` (see :func:`shipped_data_dir`).
SHIPPED_DATA_FOLDER = "shipped"

#: How to get the shipped files back, for error messages.
RESTORE_SHIPPED = (
    f"`git checkout relkd_tutorial/{SHIPPED_DATA_FOLDER}/` in a clone, or reinstall the package "
    "(pip install --force-reinstall relkd_tutorial)"
)

#: The shipped subset inside the data folder (see :func:`data_dir`).
FASHION_MNIST_SUBSET_FILE = "fashion_mnist_subset.npz"

_FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def shipped_data_dir() -> Path:
    """The package-data folder ``relkd_tutorial/shipped/`` (the Fashion-MNIST subset, its licence,
    ``SHA256SUMS``, the shipped teachers), found with :mod:`importlib.resources` (a clone, an
    editable or a wheel install alike). Raises ``FileNotFoundError`` if the package is imported from
    a zip.
    """
    folder = importlib.resources.files("relkd_tutorial") / SHIPPED_DATA_FOLDER
    if not isinstance(folder, Path):
        raise FileNotFoundError(
            f"relkd_tutorial is imported from an archive ({folder}), so its shipped data has no "
            "folder on disk; install the package normally (pip install .) or set RELKD_DATA_DIR "
            f"to a folder holding the files of relkd_tutorial/{SHIPPED_DATA_FOLDER}/"
        )
    return folder


def data_dir() -> Path:
    """The folder holding the shipped data: ``$RELKD_DATA_DIR`` if set, else :func:`shipped_data_dir`."""
    override = os.environ.get("RELKD_DATA_DIR")
    return Path(override).expanduser() if override else shipped_data_dir()


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 digest of a file's bytes (read whole: the shipped files are a few MB)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ChecksumError(ValueError):
    """A data file's SHA-256 does not match its manifest: the file is corrupted or was edited."""


def read_sha256sums(manifest: str | Path) -> dict[str, str]:
    """Parse a ``sha256sum``-format manifest (``<hex>  <file name>`` per line) into ``{name: hex}``."""
    lines = (line.strip() for line in Path(manifest).read_text().splitlines())
    rows = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    return {name.lstrip("*"): digest.lower() for digest, name in rows}


def verify_sha256(path: str | Path, manifest: str | Path | None = None) -> None:
    """Check a file against its entry in a ``SHA256SUMS`` manifest (default: the same folder);
    raises ``FileNotFoundError`` (no manifest) or :class:`ChecksumError` naming the file and how to
    restore it.
    """
    path = Path(path)
    manifest = Path(manifest) if manifest is not None else path.parent / "SHA256SUMS"
    restore = (
        f"Restore the shipped files with {RESTORE_SHIPPED}, or rebuild them with "
        "`python scripts/build_fashion_subset.py` (needs the full IDX files)."
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
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}  # fmt: skip


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, into an array of the stored shape.

    Format: magic ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian ``uint32`` sizes, the values in C
    order, big-endian (``<type>`` in :data:`_IDX_DTYPES`); gzip is recognised by its magic bytes.
    Raises ``ValueError`` if the file is not IDX or its length does not match its header.
    """
    path = Path(path)
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw  # gzip's magic bytes
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


def find_idx_folder(candidates: Sequence[str | Path]) -> Path | None:
    """The first folder holding all four Fashion-MNIST IDX files (each plain or ``.gz``)."""
    stems = _FASHION_MNIST_FILES.values()
    folders = (Path(folder) for folder in candidates)
    return next((f for f in folders if all(_idx_file(f, s) is not None for s in stems)), None)


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((folder / n for n in (stem, stem + ".gz") if (folder / n).is_file()), None)


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


def load_fashion_mnist(
    source: str = "subset", root: str | Path | None = None
) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST as ``(train, test)`` :class:`ImageSet` s of ``(N, 1, 28, 28)`` uint8 images.

    ``source``: ``"subset"`` (default, offline: the stratified 1,000 + 200 per class subset, checked
    against ``SHA256SUMS``, in :func:`data_dir`), ``"full"`` (the 60,000 / 10,000 IDX files in
    ``root``, ``root/FashionMNIST/raw`` or Debian's ``dataset-fashion-mnist`` folder) or
    ``"download"`` (torchvision, into ``root``, default ``~/.cache/relkd_tutorial``). Missing data
    raises ``FileNotFoundError`` saying what to install; a bad subset :class:`ChecksumError`.
    """
    if source == "subset":
        if root is not None:
            raise ValueError(
                'root is not used with source="subset" (set RELKD_DATA_DIR to move the data folder)'
            )
        path = data_dir() / FASHION_MNIST_SUBSET_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"The shipped Fashion-MNIST subset {path} is missing. It is package data of "
                f"relkd_tutorial: restore it with {RESTORE_SHIPPED}, or point RELKD_DATA_DIR at "
                "a folder holding it and its SHA256SUMS. Alternatively use "
                'load_fashion_mnist("full") or ("download").'
            )
        verify_sha256(path)
        with np.load(path, allow_pickle=False) as npz:
            return _fashion_pair(npz, "fashion_mnist_subset")
    if source == "full":
        given = [] if root is None else [Path(root), Path(root) / "FashionMNIST" / "raw"]
        candidates = [*given, DEBIAN_FASHION_MNIST_DIR]
        folder = find_idx_folder(candidates)
        if folder is None:
            looked = "\n".join(f"  - {p}" for p in candidates)
            files = ", ".join(f"{stem}[.gz]" for stem in _FASHION_MNIST_FILES.values())
            raise FileNotFoundError(
                "The full Fashion-MNIST IDX files were not found. Looked in:\n"
                f"{looked}\n"
                "Any one of these fixes it:\n"
                "  1. Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` (installs them "
                f"in {DEBIAN_FASHION_MNIST_DIR}/);\n"
                f"  2. put the four files ({files}) in a folder and pass root=<that folder> "
                "(or <root>/FashionMNIST/raw/, torchvision's layout);\n"
                '  3. with internet: load_fashion_mnist("download", root=<a folder>);\n'
                "  or use the 10k/2k subset shipped with the repository: "
                'load_fashion_mnist("subset").'
            )
        return _fashion_pair(read_fashion_mnist_idx(folder), "fashion_mnist")
    if source == "download":
        from torchvision.datasets import FashionMNIST  # lazy: only this path needs torchvision

        root = Path(root) if root is not None else Path.home() / ".cache" / "relkd_tutorial"
        arrays = {}
        for split, train in (("train", True), ("test", False)):
            ds = FashionMNIST(str(root), train=train, download=True)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = ds.data.numpy(), ds.targets
        return _fashion_pair(arrays, "fashion_mnist")
    raise ValueError(f'source must be "subset", "full" or "download", got {source!r}')


def _fashion_pair(arrays: Any, name: str) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` one-channel :class:`ImageSet` s from the arrays
    ``{train,test}_{images,labels}`` (``(N, 28, 28)`` uint8 pixels, ``(N,)`` labels)."""
    sets = []
    for s in ("train", "test"):
        x = torch.as_tensor(np.asarray(arrays[f"{s}_images"], dtype=np.uint8)).unsqueeze(1)
        y = torch.as_tensor(np.asarray(arrays[f"{s}_labels"]), dtype=torch.int64)
        classes, stats = list(FASHION_MNIST_CLASSES), (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
        sets.append(ImageSet(x.contiguous(), y, classes, f"{name}/{s}", *stats))
    return sets[0], sets[1]


def load_cifar100(
    root: str | Path | None = None, download: bool = False, *, dataset_class: type | None = None
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100 as ``(train, test)`` :class:`ImageSet` s of ``(N, 3, 32, 32)`` uint8 RGB images.

    torchvision's copy under ``root`` (default ``~/.cache/relkd_tutorial``; ``download`` needs
    internet), the 100 fine labels, RepDistiller's :data:`CIFAR100_MEAN` / :data:`CIFAR100_STD`.
    ``dataset_class`` (default ``torchvision.datasets.CIFAR100``) lets tests use small fake files.
    Raises ``FileNotFoundError`` with what to do.
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
        images = images.permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        name = f"cifar100/{split}"
        sets.append(ImageSet(images, labels, list(ds.classes), name, CIFAR100_MEAN, CIFAR100_STD))
    return sets[0], sets[1]
