"""The held-out teacher never saw the split that selects hyperparameters (issue 17, item 1).

Fast, no training: the index set its record names is recomputed from the shipped subset and the
rule, its digest and count must match the record, and it must be disjoint from the validation
split of every preset (the test split is another file of Fashion-MNIST altogether); its weights
match ``SHA256SUMS``; the benchmark's teacher is the one switch ``BENCH_TEACHER`` names.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from relkd_tutorial import pretrained
from relkd_tutorial.bench import settings as bs
from relkd_tutorial.bench import workspace
from relkd_tutorial.data import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_SUBSET_FILE,
    TensorLoader,
    data_dir,
    find_idx_folder,
    load_fashion_mnist,
    read_sha256sums,
    sample_per_class,
    split_validation,
    verify_sha256,
)
from relkd_tutorial.training import evaluate

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "train_teacher", REPO / "scripts/train_teacher.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _val_per_class() -> set[int]:
    """Every validation size the benchmark uses: each preset's and fast mode's settings."""
    sizes = {s.val_per_class for s in bs.default_settings(fast=True).values()}
    for preset in bs.PRESETS:
        sizes |= {s.val_per_class for s in bs.default_settings(False, preset).values()}
    return sizes


def _val_indices(train, n: int) -> np.ndarray:
    """The positions of ``split_validation(train, per_class=n, seed=0)``'s validation images."""
    _, val = split_validation(train, per_class=n, seed=0)
    idx = sample_per_class(train.labels, n, seed=0, num_classes=train.num_classes)
    # the same images, so these positions are the split's (checked, not assumed)
    assert torch.equal(train.images[idx], val.images) and torch.equal(train.labels[idx], val.labels)
    return idx.numpy()


def test_smaller_validation_splits_are_subsets_of_larger_ones() -> None:
    train, _ = load_fashion_mnist("subset")
    sizes = sorted(_val_per_class())
    assert {30, 100} <= set(sizes)  # fast mode's and the presets'
    for small, large in zip(sizes, sizes[1:], strict=False):
        assert set(_val_indices(train, small)) <= set(_val_indices(train, large))


def test_the_heldout_record_names_an_index_set_disjoint_from_every_validation_split() -> None:
    info = pretrained.shipped_teacher_info(stem=pretrained.HELDOUT_TEACHER)
    rec = info["trained_on"]
    n = rec["val_per_class_excluded"]
    assert n >= max(_val_per_class())
    train, _ = load_fashion_mnist("subset")
    script = _script()
    expected, keep = script.heldout_training_set(train, n)
    assert rec["count"] == len(keep) == len(train) - n * train.num_classes == len(expected)
    assert rec["indices_sha256"] == script.index_digest(keep)
    for size in _val_per_class():
        assert not set(keep) & set(_val_indices(train, size)), size
    # the digest is of the set: another set (one image swapped in) gives another digest
    other = np.sort(np.concatenate([keep[1:], _val_indices(train, n)[:1]]))
    assert script.index_digest(other) != rec["indices_sha256"]
    assert script.index_digest(keep[::-1]) == rec["indices_sha256"]
    # the test split is the other Fashion-MNIST file: its images are never among the training ones
    with np.load(data_dir() / FASHION_MNIST_SUBSET_FILE) as npz:
        assert npz["test_source_index"].shape == (2000,)
    assert "split_validation" in rec["rule"] and "--exclude-validation" in info["command"]
    assert info["test_accuracy"] >= 0.88


def test_the_heldout_weights_match_their_checksum_and_load() -> None:
    weights, record = pretrained.shipped_teacher_paths(stem=pretrained.HELDOUT_TEACHER)
    sums = read_sha256sums(weights.parent / "SHA256SUMS")
    assert weights.name in sums and record.name in sums
    verify_sha256(weights)
    verify_sha256(record)
    teacher = pretrained.load_shipped_teacher(stem=pretrained.HELDOUT_TEACHER)
    _, test = load_fashion_mnist("subset")
    acc = evaluate(teacher, TensorLoader.for_evaluation(test, 500))["acc"]
    info = pretrained.shipped_teacher_info(stem=pretrained.HELDOUT_TEACHER)
    assert abs(acc - info["test_accuracy"]) <= 1 / 2000  # its record is what these weights score
    old = pretrained.load_shipped_teacher()
    assert workspace.teacher_fingerprint(teacher) != workspace.teacher_fingerprint(old)
    with pytest.raises(ValueError, match="unknown ten-class teacher"):
        pretrained.load_shipped_teacher(stem="teacher_cnn_elsewhere")
    with pytest.raises(ValueError, match="not both"):
        pretrained.load_shipped_teacher(classes=(0, 1), stem=pretrained.HELDOUT_TEACHER)


def test_the_benchmark_teacher_is_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bs.BENCH_TEACHER in pretrained.SHIPPED_TEN_CLASS_TEACHERS
    for stem in (pretrained.SHIPPED_TEACHER, pretrained.HELDOUT_TEACHER):
        monkeypatch.setattr(workspace, "BENCH_TEACHER", stem)
        got = workspace.fashion_teacher(None, torch.device("cpu"))
        want = pretrained.load_shipped_teacher(stem=stem)
        assert workspace.teacher_fingerprint(got) == workspace.teacher_fingerprint(want)


@pytest.mark.skipif(
    find_idx_folder([DEBIAN_FASHION_MNIST_DIR]) is None, reason="needs dataset-fashion-mnist"
)
def test_the_disjoint_teachers_images_are_outside_the_shipped_subset() -> None:
    images, keep = _script().disjoint_training_set(per_class=1000, seed=0)
    with np.load(data_dir() / FASHION_MNIST_SUBSET_FILE) as npz:
        shipped = npz["train_source_index"]
    assert len(keep) == 10_000 and not np.isin(keep, shipped).any()
    assert images.class_counts().tolist() == [1000] * 10
