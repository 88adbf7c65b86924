"""Train the teachers shipped in relkd_tutorial/shipped/ (teacher_cnn on the Fashion-MNIST subset).

    python scripts/train_teacher.py            # the shipped run (see relkd_tutorial/shipped/*.json)
    python scripts/train_teacher.py --classes 0,1,2,3,4   # the shipped cross-task teacher
    python scripts/train_teacher.py --epochs 2 --out /tmp/t   # a quick try

``--classes`` trains on those classes only (relabelled ``0..k-1`` in the order given, as
``relkd_tutorial.select_classes`` does) and evaluates on the same classes of the test set: the
cross-task teacher of notebook 04, with the same recipe, epochs and seed as the ten-class one, so
that the two differ in their label set and not in how long they were trained. Its files are
``teacher_cnn_fashion_mnist_classes0-4.{pt,json}``.

``--exclude-validation N`` trains on the shipped training images minus the benchmark's validation
split at ``N`` images per class (``split_validation(train, per_class=N, seed=0)``, the split the
benchmark selects hyperparameters on; seed 0's split at fewer per class is a subset of it, so
``N = 100`` excludes the validation split of every preset). Same recipe, epochs and seed; its
files are ``teacher_cnn_fashion_mnist_heldout.{pt,json}`` and the record names the rule, the
count and a SHA-256 of the sorted positions (in the shipped subset) it trained on.

``--disjoint-from-subset`` trains on 1,000 images per class of the *full* Fashion-MNIST training
file that are not in the shipped subset (Debian's ``dataset-fashion-mnist``; seed 0): a teacher
that has seen neither the pool nor the validation split. Its files are
``teacher_cnn_fashion_mnist_disjoint.{pt,json}``; the record names the positions in the full
training file (by SHA-256) it trained on.

Writes ``<out>/teacher_cnn_fashion_mnist.pt`` (a float32 state_dict) and ``.json`` (accuracy,
command, versions, history) and, when ``out`` is the data folder, updates ``SHA256SUMS``.
Checkpoints go to ``runs/teacher`` each epoch, so an interrupted run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from relkd_tutorial.data import (
    FASHION_MNIST_SUBSET_FILE,
    ImageSet,
    TensorLoader,
    data_dir,
    load_fashion_mnist,
    sample_per_class,
    select_classes,
    sha256_of,
)
from relkd_tutorial.methods import CrossEntropy
from relkd_tutorial.models import build_model, count_parameters
from relkd_tutorial.pretrained import (
    DISJOINT_TEACHER,
    HELDOUT_TEACHER,
    SHIPPED_TEACHER_MODEL,
    shipped_teacher_stem,
)
from relkd_tutorial.training import TrainConfig, evaluate, fit


def index_digest(indices) -> str:
    """SHA-256 (hex) of a set of positions: sorted, unique, as little-endian int64 bytes (the
    ``indices_sha256`` of a record's ``trained_on``)."""
    arr = np.unique(np.asarray(indices, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()


def _command(args: list[str]) -> str:
    """The command line, without the flags that only choose where files go."""
    drop = {"--out", "--checkpoint-dir"}  # (they only choose where files go)
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in drop:
            skip = True
        elif a != "--resume" and a.split("=")[0] not in drop:
            kept.append(a)
    return " ".join(["python scripts/train_teacher.py", *map(shlex.quote, kept)])


def update_manifest(folder: Path, names: list[str]) -> None:
    manifest = folder / "SHA256SUMS"
    lines = manifest.read_text().splitlines() if manifest.exists() else []
    keep = [ln for ln in lines if ln.split()[-1].lstrip("*") not in names]
    keep += [f"{sha256_of(folder / n)}  {n}" for n in names]
    manifest.write_text("\n".join(sorted(keep, key=lambda ln: ln.split()[-1])) + "\n")


def heldout_training_set(train: ImageSet, val_per_class: int) -> tuple[ImageSet, np.ndarray]:
    """The shipped training images minus the validation split at ``val_per_class`` (seed 0).

    The validation split of ``split_validation(train, per_class=n, seed=0)`` is exactly
    ``sample_per_class(train.labels, n, seed=0)`` (both take the first ``n`` of each class's
    seed-0 order). Returns the remaining images and their sorted positions in ``train``.
    """
    val = sample_per_class(train.labels, val_per_class, seed=0, num_classes=train.num_classes)
    keep = np.setdiff1d(np.arange(len(train)), val.numpy())
    return train.subset(torch.from_numpy(keep)), keep


def disjoint_training_set(per_class: int = 1000, seed: int = 0) -> tuple[ImageSet, np.ndarray]:
    """``per_class`` images of each class of the full training file that the subset does not hold.

    Stratified, chosen with ``numpy.random.default_rng(seed)`` among the positions of the full
    Fashion-MNIST training file that are not in the shipped subset's ``train_source_index``.
    Returns the images (in file order) and their sorted positions in the full file.
    """
    full, _ = load_fashion_mnist("full")
    with np.load(data_dir() / FASHION_MNIST_SUBSET_FILE) as npz:
        shipped = npz["train_source_index"]
    labels = full.labels.numpy()
    free = np.ones(len(full), dtype=bool)
    free[shipped] = False
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(full.num_classes):
        members = np.flatnonzero((labels == k) & free)
        chosen.append(rng.choice(members, size=per_class, replace=False))
    keep = np.sort(np.concatenate(chosen))
    assert not np.isin(keep, shipped).any()
    return full.subset(torch.from_numpy(keep)), keep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--crop-padding", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="default: the data folder")
    parser.add_argument("--checkpoint-dir", default=None, help="default: runs/<file stem>")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--classes", default=None, help="comma-separated classes to train on (default: all ten)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--exclude-validation",
        type=int,
        default=None,
        metavar="N",
        help="train without the benchmark's validation split at N images per class (seed 0)",
    )
    source.add_argument(
        "--disjoint-from-subset",
        action="store_true",
        help="train on 1,000 images per class of the full training file not in the subset",
    )
    args = parser.parse_args(argv)
    classes = None if args.classes is None else [int(c) for c in args.classes.split(",")]
    if classes is not None and (args.exclude_validation or args.disjoint_from_subset):
        parser.error("--classes trains the cross-task teacher; it takes no other data option")
    stem = shipped_teacher_stem(classes)
    out = args.out or data_dir()
    out.mkdir(parents=True, exist_ok=True)

    train, test = load_fashion_mnist("subset")
    data = "shipped Fashion-MNIST subset (10,000 train / 2,000 test)"
    trained_on: dict | None = None
    if args.exclude_validation is not None:
        stem = HELDOUT_TEACHER
        n = args.exclude_validation
        train, keep = heldout_training_set(train, n)
        data = (
            f"shipped Fashion-MNIST subset minus the benchmark's validation split "
            f"(split_validation(train, per_class={n}, seed=0)): {len(train):,} train / "
            f"{len(test):,} test"
        )
        trained_on = {
            "rule": f"shipped subset's training images minus split_validation(per_class={n}, seed=0)",
            "indices_into": "the shipped subset's training images (fashion_mnist_subset.npz)",
            "val_per_class_excluded": n,
            "count": len(keep),
            "indices_sha256": index_digest(keep),
        }
    elif args.disjoint_from_subset:
        stem = DISJOINT_TEACHER
        train, keep = disjoint_training_set(1000, seed=args.seed)
        data = (
            f"{len(train):,} images of the full Fashion-MNIST training file, none of them in the "
            f"shipped subset (1,000 per class, seed {args.seed}); {len(test):,} test"
        )
        trained_on = {
            "rule": "1,000 per class of the full training file outside the subset's "
            f"train_source_index, numpy default_rng({args.seed})",
            "indices_into": "the full Fashion-MNIST training file (train-images-idx3-ubyte)",
            "count": len(keep),
            "indices_sha256": index_digest(keep),
        }
    checkpoint_dir = args.checkpoint_dir or f"runs/{stem}"
    if classes is not None:
        train, test = select_classes(train, classes), select_classes(test, classes)
    train_loader = TensorLoader(
        train,
        args.batch_size,
        augment=True,
        crop_padding=args.crop_padding,
        flip=True,
        seed=args.seed,
    )
    test_loader = TensorLoader.for_evaluation(test)
    model = build_model(
        SHIPPED_TEACHER_MODEL, num_classes=train.num_classes, in_channels=1, seed=args.seed
    )
    config = TrainConfig(
        epochs=args.epochs,
        optimizer="sgd",
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="cosine",
        channels_last=True,
        device=args.device,
        seed=args.seed,
        checkpoint_dir=checkpoint_dir,
        resume=args.resume,
    )
    start = time.perf_counter()
    history = fit(model, CrossEntropy(), train_loader, config, eval_loader=test_loader)
    seconds = time.perf_counter() - start
    result = evaluate(model, test_loader)

    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    state = {k: v.to(model.state_dict()[k].dtype) for k, v in state.items()}  # keep int buffers
    torch.save(state, out / f"{stem}.pt")
    if classes is not None:
        data = (
            f"shipped Fashion-MNIST subset, classes {classes} only ({len(train):,} train / "
            f"{len(test):,} test), relabelled 0..{len(classes) - 1} in that order"
        )
    info = {
        "model": SHIPPED_TEACHER_MODEL,
        "parameters": count_parameters(model),
        "data": data,
        "classes": classes if classes is not None else list(range(10)),
        **({} if trained_on is None else {"trained_on": trained_on}),
        "test_accuracy": result["acc"],
        "command": _command(argv or sys.argv[1:]),
        "seconds": round(seconds, 1),
        "device": str(next(model.parameters()).device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "history": history,
    }
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1) + "\n")
    if out.resolve() == data_dir().resolve():
        update_manifest(out, [f"{stem}.pt", f"{stem}.json"])
    print(f"teacher test accuracy {result['acc']:.4f} after {args.epochs} epochs, {seconds:.0f} s")


if __name__ == "__main__":
    main()
