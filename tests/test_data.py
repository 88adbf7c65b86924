"""Tests of the data layer: shipped subset, IDX and CIFAR-100 readers, splits, TensorLoader."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import relkd_tutorial.data.datasets as datasets_module
from relkd_tutorial.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    ChecksumError,
    ImageSet,
    TensorLoader,
    cross_task_split,
    data_dir,
    labelled_subset,
    load_cifar100,
    load_fashion_mnist,
    normalize,
    partially_labelled,
    read_sha256sums,
    sample_per_class,
    select_classes,
    sha256_of,
    shipped_data_dir,
    split_validation,
    verify_sha256,
)
from relkd_tutorial.data.datasets import read_idx
from relkd_tutorial.data.loader import crop_and_flip_padded, epoch_generator

REPO = Path(__file__).resolve().parents[1]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subset() -> tuple[ImageSet, ImageSet]:
    return load_fashion_mnist("subset")


def tagged_set(labels: list[int] | torch.Tensor, num_classes: int, channels: int = 1) -> ImageSet:
    """A small ImageSet whose image ``i`` carries ``i`` in its first two pixels (to track identity)."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(labels)
    images = torch.randint(0, 256, (n, channels, 6, 5), dtype=torch.uint8)
    ids = torch.arange(n)
    images[:, 0, 0, 0] = (ids % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (ids // 256).to(torch.uint8)
    return ImageSet(
        images=images,
        labels=labels,
        class_names=[f"c{k}" for k in range(num_classes)],
        name="tagged",
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


def ids_of(data: ImageSet) -> torch.Tensor:
    """The original positions of a :func:`tagged_set`'s images."""
    return data.images[:, 0, 0, 0].long() + 256 * data.images[:, 0, 0, 1].long()


def write_idx(path: Path, array: np.ndarray, code: int, compress: bool) -> None:
    """Write an IDX file straight from the format's definition (independent of the reader)."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim)
    raw += struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(big_endian[code]).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def write_fake_fashion(folder: Path, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Fake Fashion-MNIST IDX files (train gzipped, test plain): returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for stem, n, compress in (("train", n_train, True), ("t10k", n_test, False)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}", images, 0x08, compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", labels, 0x08, compress)
        arrays[stem] = (images, labels)
    return arrays


def naive_crop_flip(images: torch.Tensor, padding: int, offsets, flips) -> torch.Tensor:
    """Reference: pad each image, slice its window, mirror it — one sample at a time."""
    _, _, h, w = images.shape
    out = []
    for img, (dy, dx), fl in zip(images, offsets.tolist(), flips.tolist(), strict=True):
        padded = F.pad(img, (padding, padding, padding, padding))  # (C, H+2p, W+2p)
        crop = padded[:, dy : dy + h, dx : dx + w]
        out.append(crop.flip(-1) if fl else crop)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# The shipped subset
# ---------------------------------------------------------------------------------------------


def test_subset_sizes_dtypes_and_strata(subset):
    train, test = subset
    for data, n, per_class in ((train, 10_000, 1_000), (test, 2_000, 200)):
        assert data.images.shape == (n, 1, 28, 28) and data.images.dtype == torch.uint8
        assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
        assert data.class_counts().tolist() == [per_class] * 10
        assert data.class_names == list(FASHION_MNIST_CLASSES)
        assert (data.mean, data.std) == (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    # real images, not blank: the mean pixel is near the full data set's
    assert abs(train.pixel_stats()[0][0] - FASHION_MNIST_MEAN[0]) < 0.01


def test_manifest_covers_shipped_files():
    manifest = read_sha256sums(data_dir() / "SHA256SUMS")
    assert set(manifest) == {
        "fashion_mnist_subset.npz",
        "LICENSE-fashion-mnist.txt",
        "teacher_cnn_fashion_mnist.pt",  # the shipped teacher (tests/test_pretrained.py)
        "teacher_cnn_fashion_mnist.json",
        # the cross-task teacher, classes 0-4 (notebook 04, tests/test_tutorial_chapters.py)
        "teacher_cnn_fashion_mnist_classes0-4.pt",
        "teacher_cnn_fashion_mnist_classes0-4.json",
        # the benchmark's teacher: never saw the validation split (tests/test_heldout_teacher.py)
        "teacher_cnn_fashion_mnist_heldout.pt",
        "teacher_cnn_fashion_mnist_heldout.json",
    }
    for name, digest in manifest.items():
        assert sha256_of(data_dir() / name) == digest
    assert "Copyright (c) 2017 Zalando SE" in (data_dir() / "LICENSE-fashion-mnist.txt").read_text()
    assert (data_dir() / "fashion_mnist_subset.npz").stat().st_size < 8e6


def test_data_dir_points_at_repository_and_honours_override(monkeypatch, tmp_path):
    monkeypatch.delenv("RELKD_DATA_DIR", raising=False)
    assert data_dir() == shipped_data_dir() == REPO / "relkd_tutorial" / "shipped"
    monkeypatch.setenv("RELKD_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path


def test_shipped_data_in_a_zip_archive_says_to_set_the_override(monkeypatch, tmp_path):
    # importlib.resources gives a zipfile.Path, not a folder on disk, for a zip-imported package
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("relkd_tutorial/shipped/SHA256SUMS", "")
    monkeypatch.setattr(
        datasets_module.importlib.resources,
        "files",
        lambda name: zipfile.Path(archive, f"{name}/"),
    )
    monkeypatch.delenv("RELKD_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="archive.*RELKD_DATA_DIR"):
        data_dir()
    monkeypatch.setenv("RELKD_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path


def test_corrupted_subset_fails_naming_the_file(monkeypatch, tmp_path):
    for name in ("fashion_mnist_subset.npz", "SHA256SUMS"):
        shutil.copy(data_dir() / name, tmp_path / name)
    monkeypatch.setenv("RELKD_DATA_DIR", str(tmp_path))
    load_fashion_mnist("subset")  # the intact copy passes
    with open(tmp_path / "fashion_mnist_subset.npz", "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumError) as err:
        load_fashion_mnist("subset")
    message = str(err.value)
    assert str(tmp_path / "fashion_mnist_subset.npz") in message
    assert "git checkout relkd_tutorial/shipped/" in message


def test_missing_subset_and_manifest_say_how_to_restore(monkeypatch, tmp_path):
    monkeypatch.setenv("RELKD_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="git checkout relkd_tutorial/shipped/"):
        load_fashion_mnist("subset")
    shutil.copy(shipped_data_dir() / "fashion_mnist_subset.npz", tmp_path)
    with pytest.raises(FileNotFoundError, match="SHA256SUMS.*git checkout relkd_tutorial/shipped/"):
        load_fashion_mnist("subset")
    (tmp_path / "SHA256SUMS").write_text("00  other.npz\n")
    with pytest.raises(ChecksumError, match="no entry for fashion_mnist_subset.npz"):
        verify_sha256(tmp_path / "fashion_mnist_subset.npz")


@needs_debian
def test_subset_is_traceable_to_the_full_set(subset):
    full_train, full_test = load_fashion_mnist("full")
    with np.load(data_dir() / "fashion_mnist_subset.npz", allow_pickle=False) as npz:
        sources = {s: torch.from_numpy(npz[f"{s}_source_index"]) for s in ("train", "test")}
    for part, full, split in ((subset[0], full_train, "train"), (subset[1], full_test, "test")):
        index = sources[split]
        assert bool((index[1:] > index[:-1]).all())  # sorted, no repeats
        assert torch.equal(part.images, full.images[index])
        assert torch.equal(part.labels, full.labels[index])


def test_build_script_is_deterministic_and_self_consistent(tmp_path):
    spec = importlib.util.spec_from_file_location("build", REPO / "scripts/build_fashion_subset.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    written = write_fake_fashion(tmp_path / "src", n_train=60, n_test=40)
    args = ["--source", str(tmp_path / "src"), "--train-per-class", "4", "--test-per-class", "2"]
    build.main([*args, "--out", str(tmp_path / "a")])
    build.main([*args, "--out", str(tmp_path / "b")])
    assert (tmp_path / "a/SHA256SUMS").read_text() == (tmp_path / "b/SHA256SUMS").read_text()
    for name in read_sha256sums(tmp_path / "a/SHA256SUMS"):
        verify_sha256(tmp_path / "a" / name)
    assert "--train-per-class 4" in (tmp_path / "a/README.md").read_text()
    with np.load(tmp_path / "a/fashion_mnist_subset.npz", allow_pickle=False) as npz:
        for split, stem, per_class in (("train", "train", 4), ("test", "t10k", 2)):
            images, labels = written[stem]
            index = npz[f"{split}_source_index"]
            assert np.array_equal(npz[f"{split}_images"], images[index])
            assert np.array_equal(npz[f"{split}_labels"], labels[index])
            assert np.bincount(npz[f"{split}_labels"], minlength=10).tolist() == [per_class] * 10


# ---------------------------------------------------------------------------------------------
# IDX files and the full Fashion-MNIST
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    ("code", "dtype", "shape"),
    [
        (0x08, np.uint8, (5, 3, 4)),
        (0x09, np.int8, (7,)),
        (0x0C, np.int32, (3, 2)),
        (0x0B, np.int16, (4, 1)),
        (0x0D, np.float32, (2, 3)),
        (0x0E, np.float64, (6,)),
    ],
)
def test_read_idx_round_trip(tmp_path, compress, code, dtype, shape):
    rng = np.random.default_rng(code)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, array, code, compress)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    assert np.array_equal(back, array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 3), np.uint8), 0x08, compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="holds 11 data bytes but its header"):
        read_idx(tmp_path / "short")


def test_full_reads_any_folder_gzipped_or_not(tmp_path):
    written = write_fake_fashion(tmp_path / "FashionMNIST" / "raw", n_train=30, n_test=20)
    train, test = load_fashion_mnist("full", root=tmp_path)  # found in <root>/FashionMNIST/raw
    for data, stem in ((train, "train"), (test, "t10k")):
        images, labels = written[stem]
        assert torch.equal(data.images[:, 0], torch.from_numpy(images))
        assert torch.equal(data.labels, torch.from_numpy(labels).long())
        assert data.images.shape[1:] == (1, 28, 28)


def test_missing_full_data_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("full", root=tmp_path)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message
    assert 'load_fashion_mnist("download"' in message
    with pytest.raises(ValueError, match="source must be"):
        load_fashion_mnist("everything")


@needs_debian
def test_debian_folder_and_normalisation_constants():
    train, test = load_fashion_mnist("full")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    mean, std = train.pixel_stats()  # the constants are these values rounded to 4 decimals
    assert mean[0] == pytest.approx(FASHION_MNIST_MEAN[0], abs=5e-5)
    assert std[0] == pytest.approx(FASHION_MNIST_STD[0], abs=5e-5)


# ---------------------------------------------------------------------------------------------
# CIFAR-100 in its real pickle format (torchvision's reader, integrity check live)
# ---------------------------------------------------------------------------------------------


def cifar_planes(i: int) -> np.ndarray:
    """``(3, 32, 32)`` planes R, G, B of fake image ``i``: every pixel and plane distinct."""
    h, w = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([(h * 7 + w + i + 85 * c) % 256 for c in range(3)]).astype(np.uint8)


def write_fake_cifar100(root: Path, n_train: int = 6, n_test: int = 4) -> dict[str, str]:
    """Write ``root/cifar-100-python/{train,test,meta}`` as CIFAR-100 does; return their md5s."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        rows = np.stack([cifar_planes(offset + i).reshape(3072) for i in range(n)])  # (n, 3072)
        entry = {
            "batch_label": f"{name} batch",
            "filenames": [f"img_{i}.png" for i in range(n)],
            "data": rows,  # R plane, then G, then B, each row-major 32x32
            "fine_labels": [(7 * i + offset) % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {
        "fine_label_names": [f"fine_{k}" for k in range(100)],
        "coarse_label_names": [f"coarse_{k}" for k in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return {
        n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in ("train", "test", "meta")
    }


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    md5 = write_fake_cifar100(tmp_path)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    return tmp_path


def test_cifar100_real_format_channels_and_labels(fake_cifar):
    train, test = load_cifar100(fake_cifar)
    assert train.images.shape == (6, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 32, 32)
    assert train.class_names == [f"fine_{k}" for k in range(100)]
    assert (train.mean, train.std) == (CIFAR100_MEAN, CIFAR100_STD)
    for data, offset in ((train, 0), (test, 100)):
        assert data.labels.tolist() == [(7 * i + offset) % 100 for i in range(len(data))]
        for i in range(len(data)):  # channel c is plane c (R, G, B), pixel (h, w) in place
            assert torch.equal(data.images[i], torch.from_numpy(cifar_planes(offset + i)))


def test_cifar100_integrity_check_stays_live(fake_cifar):
    with open(fake_cifar / "cifar-100-python" / "train", "ab") as handle:
        handle.write(b"\x00")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar100(fake_cifar)


def test_cifar100_accepts_an_injected_dataset_class(tmp_path):
    from torchvision.datasets import CIFAR100

    md5 = write_fake_cifar100(tmp_path, n_train=3, n_test=2)

    class FakeCIFAR100(CIFAR100):
        train_list = [["train", md5["train"]]]
        test_list = [["test", md5["test"]]]
        meta = {**CIFAR100.meta, "md5": md5["meta"]}

    train, test = load_cifar100(tmp_path, dataset_class=FakeCIFAR100)
    assert (len(train), len(test)) == (3, 2)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_cifar100(tmp_path / "empty", dataset_class=FakeCIFAR100)


# ---------------------------------------------------------------------------------------------
# ImageSet
# ---------------------------------------------------------------------------------------------


def test_imageset_validates_its_fields():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([0, 1, -1, 2])
    ImageSet(images, labels, ["a", "b", "c"])
    with pytest.raises(TypeError, match="uint8"):
        ImageSet(images.float(), labels, ["a", "b", "c"])
    with pytest.raises(TypeError, match="int64"):
        ImageSet(images, labels.int(), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"\[-1, 2\)"):
        ImageSet(images, labels, ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        ImageSet(images, labels[:3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="one entry per channel"):
        ImageSet(images, labels, ["a", "b", "c"], mean=(0.1, 0.2), std=(1.0, 1.0))


def test_imageset_subset_and_repr():
    data = tagged_set([0, 1, 2, 0, 1, 2], 3)
    part = data.subset(torch.tensor([4, 1]))
    assert ids_of(part).tolist() == [4, 1] and part.labels.tolist() == [1, 1]
    mask = torch.tensor([True, False, True, False, False, False])
    assert ids_of(data.subset(mask)).tolist() == [0, 2]
    assert "labelled=6/6" in repr(data)


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def test_sample_per_class_is_stratified_deterministic_and_nested():
    labels = torch.tensor([k for k in range(4) for _ in range(20)] + [-1] * 10)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    idx = sample_per_class(labels, 5, seed=3)
    assert torch.bincount(labels[idx], minlength=4).tolist() == [5] * 4  # never picks -1
    assert bool((idx[1:] > idx[:-1]).all())
    assert torch.equal(idx, sample_per_class(labels, 5, seed=3))
    assert not torch.equal(idx, sample_per_class(labels, 5, seed=4))
    assert set(sample_per_class(labels, 3, seed=3).tolist()) <= set(idx.tolist())


def test_split_helpers_reject_bad_input():
    data = tagged_set([0] * 5 + [1] * 3, 2)
    with pytest.raises(ValueError, match=r"class 1 \('c1'\) has 3 labelled images, fewer than"):
        labelled_subset(data, 4)
    with pytest.raises(ValueError, match="positive"):
        partially_labelled(data, 0)
    with pytest.raises(ValueError, match="seed"):
        sample_per_class(data.labels, 1, seed=-1)
    with pytest.raises(ValueError, match="exactly one"):
        split_validation(data)
    with pytest.raises(ValueError, match="exactly one"):
        split_validation(data, per_class=1, fraction=0.5)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        split_validation(data, fraction=1.0)
    with pytest.raises(ValueError, match="leave none for training"):
        split_validation(data, per_class=3)
    with pytest.raises(ValueError, match=r"unknown class ids \[2\]"):
        select_classes(data, [0, 2])
    with pytest.raises(ValueError, match="twice"):
        select_classes(data, [1, 1])
    with pytest.raises(ValueError, match="at least one"):
        cross_task_split(data, [], [1])


def test_low_data_and_transfer_pick_the_same_labelled_images():
    labels = torch.arange(200) % 5
    data = tagged_set(labels, 5)
    low = labelled_subset(data, 7, seed=2)
    transfer = partially_labelled(data, 7, seed=2)
    assert low.class_counts().tolist() == [7] * 5 and len(low) == 35
    assert len(transfer) == 200 and transfer.class_counts().tolist() == [7] * 5
    assert torch.equal(ids_of(transfer), torch.arange(200))  # every image kept, in order
    labelled = transfer.labels >= 0
    assert torch.equal(ids_of(transfer)[labelled], ids_of(low))
    assert torch.equal(transfer.labels[labelled], low.labels)
    assert torch.equal(low.labels, labels[ids_of(low)])  # labels stay with their images


@pytest.mark.parametrize("kwargs", [{"per_class": 3}, {"fraction": 0.25}])
def test_validation_split_is_stratified_disjoint_and_complete(kwargs):
    labels = torch.tensor([k % 4 for k in range(48)] + [-1] * 5)  # 12 per class + unlabelled
    data = tagged_set(labels, 4)
    train, val = split_validation(data, seed=5, **kwargs)
    assert val.class_counts().tolist() == [3] * 4
    assert train.class_counts().tolist() == [9] * 4
    train_ids, val_ids = set(ids_of(train).tolist()), set(ids_of(val).tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(53))
    assert set(range(48, 53)) <= train_ids  # unlabelled images stay in train
    assert torch.equal(train.labels, labels[ids_of(train)])
    again = split_validation(data, seed=5, **kwargs)[1]
    assert torch.equal(ids_of(again), ids_of(val))


def test_select_classes_relabels_and_composes():
    data = tagged_set([0, 3, 1, 3, 2, -1, 1], 4)
    picked = select_classes(data, [3, 1])
    assert ids_of(picked).tolist() == [1, 2, 3, 6]
    assert picked.labels.tolist() == [0, 1, 0, 1]
    assert picked.class_names == ["c3", "c1"] and picked.original_classes == (3, 1)
    again = select_classes(picked, [1])
    assert again.original_classes == (1,) and again.class_names == ["c1"]
    assert ids_of(again).tolist() == [2, 6] and again.labels.tolist() == [0, 0]


def test_cross_task_split_disjoint_and_overlapping_classes():
    labels = torch.arange(100) % 10
    data = tagged_set(labels, 10)
    teacher, student = cross_task_split(data, range(5), range(5, 10))
    assert teacher.num_classes == student.num_classes == 5
    assert not set(ids_of(teacher).tolist()) & set(ids_of(student).tolist())
    assert (
        student.original_classes == (5, 6, 7, 8, 9) and student.class_counts().tolist() == [10] * 5
    )

    teacher, student = cross_task_split(data, [0, 1, 2], [2, 3], seed=1)
    assert teacher.class_counts().tolist() == [10, 10, 5]  # class 2 shared: split in halves
    assert student.class_counts().tolist() == [5, 10]
    assert not set(ids_of(teacher).tolist()) & set(ids_of(student).tolist())
    assert torch.equal(labels[ids_of(student)], torch.tensor([2, 3])[student.labels])
    same = cross_task_split(data, [0, 1, 2], [2, 3], seed=1)
    assert torch.equal(ids_of(same[1]), ids_of(student))

    teacher, student = cross_task_split(data, [0, 1, 2], [2, 3], share_images=True)
    assert teacher.class_counts().tolist() == [10, 10, 10] and student.class_counts()[0] == 10


# ---------------------------------------------------------------------------------------------
# Batch transforms
# ---------------------------------------------------------------------------------------------


def crop_and_flip(images, padding, offsets, flip):
    """Zero-pad by ``padding`` pixels, crop at ``offsets`` ``(B, 2)``, mirror where ``flip``."""
    padded = F.pad(images, (padding,) * 4)
    return crop_and_flip_padded(padded, tuple(images.shape[2:]), offsets, flip)


@pytest.mark.parametrize(("padding", "channels"), [(0, 1), (2, 3), (4, 1)])
def test_crop_and_flip_matches_the_per_sample_definition(padding, channels):
    gen = torch.Generator().manual_seed(padding)
    images = torch.randint(0, 256, (9, channels, 7, 6), dtype=torch.uint8, generator=gen)
    offsets = torch.randint(0, 2 * padding + 1, (9, 2), generator=gen)
    flips = torch.rand(9, generator=gen) < 0.5
    out = crop_and_flip(images, padding, offsets, flips)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, naive_crop_flip(images, padding, offsets, flips))


def test_crop_and_flip_identity_pure_flip_and_shift():
    images = torch.randint(0, 256, (3, 2, 5, 5), dtype=torch.uint8)
    centre = torch.full((3, 2), 2)
    no = torch.zeros(3, dtype=torch.bool)
    assert torch.equal(crop_and_flip(images, 2, centre, no), images)
    assert torch.equal(crop_and_flip(images, 2, centre, ~no), images.flip(-1))
    down = crop_and_flip(images, 2, torch.tensor([[0, 2]] * 3), no)  # window 2 rows higher
    assert torch.equal(down[:, :, 2:], images[:, :, :3]) and int(down[:, :, :2].abs().sum()) == 0


def test_normalize_formula():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    x = normalize(images, CIFAR100_MEAN, CIFAR100_STD)
    mean = torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(
        x,
        (images.double() / 255 - mean.double()) / std.double(),
        rtol=0,
        atol=1e-5,
        check_dtype=False,
    )
    assert x.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# TensorLoader
# ---------------------------------------------------------------------------------------------


def collect(loader, epoch=None):
    if epoch is not None:
        loader.set_epoch(epoch)
    batches = list(loader)
    return (
        torch.cat([b.x for b in batches]),
        torch.cat([b.y for b in batches]),
        torch.cat([b.index for b in batches]),
        [len(b.y) for b in batches],
    )


def test_every_sample_once_per_epoch_and_batch_count(subset):
    data = subset[1]  # 2,000 images
    loader = TensorLoader(data, 300, seed=0)
    x, y, index, sizes = collect(loader, epoch=0)
    assert len(loader) == 7 and sizes == [300] * 6 + [200]
    assert torch.equal(index.sort().values, torch.arange(2000))
    assert x.shape == (2000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, data.labels[index])
    dropping = TensorLoader(data, 300, drop_last=True)
    assert len(dropping) == 6 and collect(dropping)[3] == [300] * 6


def test_order_is_a_pure_function_of_seed_and_epoch(subset):
    data = subset[1]
    loader = TensorLoader(data, 512, seed=7)
    x3, y3, i3, _ = collect(loader, epoch=3)
    x3b, y3b, i3b, _ = collect(TensorLoader(data, 512, seed=7), epoch=3)  # a fresh loader
    assert torch.equal(x3, x3b) and torch.equal(i3, i3b) and torch.equal(y3, y3b)
    assert not torch.equal(collect(loader, epoch=4)[2], i3)
    assert not torch.equal(collect(TensorLoader(data, 512, seed=8), epoch=3)[2], i3)
    # without set_epoch, each pass advances the epoch: passes 0 and 1 are epochs 0 and 1
    auto = TensorLoader(data, 512, seed=7)
    first, second = collect(auto)[2], collect(auto)[2]
    assert torch.equal(first, collect(loader, epoch=0)[2])
    assert torch.equal(second, collect(loader, epoch=1)[2])
    assert auto.epoch == 2


def test_batches_reconstruct_from_images_at_index(subset):
    data = subset[1]
    loader = TensorLoader(data, 256, seed=1, crop_padding=3)
    loader.set_epoch(2)
    order, offsets, flips = loader.epoch_plan(2)
    position = 0
    for batch in loader:
        n = len(batch.index)
        assert torch.equal(batch.index, order[position : position + n])
        expected = naive_crop_flip(
            data.images[batch.index],
            3,
            offsets[position : position + n],
            flips[position : position + n],
        )
        assert torch.equal(batch.x, normalize(expected, data.mean, data.std))
        assert torch.equal(batch.y, data.labels[batch.index])
        position += n
    assert position == len(data)


def test_augmentation_moves_pixels_and_flips(subset):
    data = subset[1]
    plain = collect(TensorLoader.for_evaluation(data))[0]  # (N, 1, 28, 28)
    crop_only = TensorLoader(data, 500, seed=2, crop_padding=4, flip=False)
    x, _, index, _ = collect(crop_only, epoch=0)
    offsets = crop_only.epoch_plan(0)[1]
    assert x.shape == plain.shape and x.dtype == plain.dtype
    moved = (offsets != 4).any(dim=1)  # (N,) not the identity crop
    changed = (x != plain[index]).flatten(1).any(dim=1)
    assert bool(changed[moved].float().mean() > 0.95) and not bool(changed[~moved].any())
    flip_only = TensorLoader(data, 500, seed=2, crop_padding=0, flip=True)
    x, _, index, _ = collect(flip_only, epoch=0)
    flips = flip_only.epoch_plan(0)[2]
    assert 0.45 < float(flips.float().mean()) < 0.55
    assert torch.equal(x[flips], plain[index][flips].flip(-1))
    assert torch.equal(x[~flips], plain[index][~flips])


def test_evaluation_loader_is_ordered_and_unaugmented(subset):
    data = subset[1]
    loader = TensorLoader.for_evaluation(data, 700)
    assert not loader.augments and not loader.shuffle
    for epoch in (0, 5):
        x, y, index, sizes = collect(loader, epoch=epoch)
        assert sizes == [700, 700, 600]
        assert torch.equal(index, torch.arange(2000)) and torch.equal(y, data.labels)
        assert torch.equal(x, normalize(data.images, data.mean, data.std))
    assert not TensorLoader(data, 100, augment=False).augments


def test_normalisation_gives_zero_mean_unit_std(subset):
    data = subset[0]
    mean, std = data.pixel_stats()
    x = collect(TensorLoader.for_evaluation(data, 2500, mean=mean, std=std))[0].double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(correction=0)) - 1) < 1e-5
    x = collect(TensorLoader.for_evaluation(data, 2500))[0].double()  # full-set constants
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1) < 0.01


def test_channels_last_and_explicit_device():
    data = tagged_set(torch.arange(40) % 4, 4, channels=3)
    loader = TensorLoader(data, 16, channels_last=True, device="cpu", crop_padding=1)
    batch = next(iter(loader))
    assert batch.x.is_contiguous(memory_format=torch.channels_last)
    assert batch.x.device.type == "cpu" and batch.index.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_batches_equal_cpu_batches():
    data = tagged_set(torch.arange(64) % 4, 4, channels=3)
    cpu = collect(TensorLoader(data, 16, seed=3), epoch=1)
    gpu = collect(TensorLoader(data, 16, seed=3, device="cuda"), epoch=1)
    assert torch.equal(gpu[2].cpu(), cpu[2])
    torch.testing.assert_close(gpu[0].cpu(), cpu[0])


@pytest.mark.parametrize("drop_last", [False, True])
def test_distributed_shards_partition_each_global_batch(drop_last):
    data = tagged_set(torch.arange(53) % 5, 5)
    single = list(TensorLoader(data, 12, seed=4, drop_last=drop_last, crop_padding=2))
    shards = [
        list(
            TensorLoader(
                data, 12, seed=4, drop_last=drop_last, crop_padding=2, rank=r, world_size=3
            )
        )
        for r in range(3)
    ]
    assert all(len(s) == len(single) for s in shards)
    for b, whole in enumerate(single):
        parts = [s[b] for s in shards]
        if len(whole.y) == 12:
            assert [len(p.y) for p in parts] == [4, 4, 4]
        assert torch.equal(torch.cat([p.index for p in parts]), whole.index)
        assert torch.equal(torch.cat([p.x for p in parts]), whole.x)
    if not drop_last:  # the last global batch holds 5 images: split 2, 2, 1
        assert [len(s[-1].y) for s in shards] == [2, 2, 1]


def test_loader_rejects_bad_arguments():
    data = tagged_set(torch.arange(10) % 2, 2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(data, 0)
    with pytest.raises(ValueError, match="divisible by world_size"):
        TensorLoader(data, 5, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        TensorLoader(data, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="crop_padding"):
        TensorLoader(data, 4, crop_padding=-1)
    with pytest.raises(ValueError, match="epoch"):
        TensorLoader(data, 4).set_epoch(-1)
    with pytest.raises(TypeError, match="ImageSet"):
        TensorLoader(data.images, 4)
    anonymous = ImageSet(data.images, data.labels, data.class_names)
    with pytest.raises(ValueError, match="pixel_stats"):
        TensorLoader(anonymous, 4)


def test_epoch_generator_depends_on_both_seed_and_epoch():
    draws = {
        (s, e): torch.randint(0, 2**31, (4,), generator=epoch_generator(s, e))
        for s in range(3)
        for e in range(3)
    }
    assert len({tuple(v.tolist()) for v in draws.values()}) == 9
    assert torch.equal(
        draws[(1, 2)], torch.randint(0, 2**31, (4,), generator=epoch_generator(1, 2))
    )
