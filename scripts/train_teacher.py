"""Train the teachers shipped in relkd_tutorial/shipped/ (teacher_cnn on the Fashion-MNIST subset).

    python scripts/train_teacher.py            # the shipped run (see relkd_tutorial/shipped/*.json)
    python scripts/train_teacher.py --classes 0,1,2,3,4   # the shipped cross-task teacher
    python scripts/train_teacher.py --epochs 2 --out /tmp/t   # a quick try

``--classes`` trains on those classes only (relabelled ``0..k-1`` in the order given, as
``relkd_tutorial.select_classes`` does) and evaluates on the same classes of the test set: the
cross-task teacher of notebook 04, with the same recipe, epochs and seed as the ten-class one, so
that the two differ in their label set and not in how long they were trained. Its files are
``teacher_cnn_fashion_mnist_classes0-4.{pt,json}``.

Writes ``<out>/teacher_cnn_fashion_mnist.pt`` (a float32 state_dict) and ``.json`` (accuracy,
command, versions, history) and, when ``out`` is the data folder, updates ``SHA256SUMS``.
Checkpoints go to ``runs/teacher`` each epoch, so an interrupted run continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from relkd_tutorial.data import (
    TensorLoader,
    data_dir,
    load_fashion_mnist,
    select_classes,
    sha256_of,
)
from relkd_tutorial.methods import CrossEntropy
from relkd_tutorial.models import build_model, count_parameters
from relkd_tutorial.pretrained import SHIPPED_TEACHER, SHIPPED_TEACHER_MODEL, shipped_teacher_stem
from relkd_tutorial.training import TrainConfig, evaluate, fit


def _command(args: list[str]) -> str:
    """The command line, without the flags that only choose where files go."""
    drop = {"--out", "--checkpoint-dir"}
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--crop-padding", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="default: the data folder")
    parser.add_argument("--checkpoint-dir", default="runs/teacher")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--classes", default=None, help="comma-separated classes to train on (default: all ten)"
    )
    args = parser.parse_args(argv)
    classes = None if args.classes is None else [int(c) for c in args.classes.split(",")]
    stem = SHIPPED_TEACHER if classes is None else shipped_teacher_stem(classes)
    out = args.out or data_dir()
    out.mkdir(parents=True, exist_ok=True)

    train, test = load_fashion_mnist("subset")
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
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    start = time.perf_counter()
    history = fit(model, CrossEntropy(), train_loader, config, eval_loader=test_loader)
    seconds = time.perf_counter() - start
    result = evaluate(model, test_loader)

    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    state = {k: v.to(model.state_dict()[k].dtype) for k, v in state.items()}  # keep int buffers
    torch.save(state, out / f"{stem}.pt")
    data = "shipped Fashion-MNIST subset (10,000 train / 2,000 test)"
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
        update_manifest(out, [f"{stem}.pt"])
    print(f"teacher test accuracy {result['acc']:.4f} after {args.epochs} epochs, {seconds:.0f} s")


if __name__ == "__main__":
    main()
