"""Print a Markdown table of every model: input, parameters, feature width.

    python scripts/param_counts.py                          # the table (a few seconds)
    python scripts/param_counts.py --throughput --threads 2  # + training img/s of the CPU nets

``--throughput`` times forward + backward + SGD step on random 28x28x1 batches of 128 (after a
warm-up), with and without ``channels_last``, and reports the median of ``--repeats`` timings.
It also times whole epochs of :func:`relkd_tutorial.training.fit` (cross-entropy, batch 128) over
2,048 augmented Fashion-MNIST images from the package's :class:`TensorLoader`, so the loop's and
the loader's overhead show. Other processes on the machine change these numbers: run it on an
idle machine (check ``uptime``) and report the load with the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from relkd_tutorial.models import CIFAR_MODEL_NAMES, CPU_MODEL_NAMES, build_model, count_parameters

ROWS = [(name, 1, 28, 10) for name in CPU_MODEL_NAMES]
ROWS += [(name, 3, 32, 10) for name in CPU_MODEL_NAMES]
ROWS += [(name, 3, 32, 100) for name in CIFAR_MODEL_NAMES]


def table() -> str:
    lines = [
        "| model | input | classes | params | feature dim |",
        "|---|---|---|---|---|",
    ]
    for name, c, size, classes in ROWS:
        model = build_model(name, num_classes=classes, in_channels=c, seed=0)
        n = count_parameters(model)
        shown = f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"
        lines.append(
            f"| `{name}` | {c}x{size}x{size} | {classes} | {shown} ({n:,}) | {model.feature_dim} |"
        )
    return "\n".join(lines)


def train_throughput(name: str, channels_last: bool, steps: int, repeats: int) -> float:
    """Median training images/s on 28x28x1 batches of 128."""
    model = build_model(name, num_classes=10, in_channels=1, seed=0)
    x = torch.randn(128, 1, 28, 28)
    y = torch.randint(0, 10, (128,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        _, logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * 128 / (time.perf_counter() - tic))
    return statistics.median(rates)


def fit_throughput(name: str, channels_last: bool, repeats: int) -> float:
    """Median training images/s of ``fit`` epochs (after a first, warm-up epoch)."""
    from relkd_tutorial.data import TensorLoader, load_fashion_mnist
    from relkd_tutorial.methods import CrossEntropy
    from relkd_tutorial.training import TrainConfig, fit

    train_set, _ = load_fashion_mnist()
    images = train_set.subset(torch.arange(2048))
    loader = TensorLoader(images, 128, augment=True, channels_last=channels_last, seed=0)
    model = build_model(name, num_classes=10, in_channels=1, seed=0)
    config = TrainConfig(
        epochs=repeats + 1,
        schedule="constant",
        device="cpu",
        channels_last=channels_last,
        progress=False,
    )
    history = fit(model, CrossEntropy(), loader, config)
    return statistics.median(len(images) / r["seconds"] for r in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throughput", action="store_true", help="also time the CPU nets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(table(), flush=True)
    if args.throughput:
        print()
        print(
            f"training img/s, 28x28x1, batch 128, {torch.get_num_threads()} threads, median of {args.repeats}"
        )
        print()
        print(
            "| model | step, contiguous | step, channels_last "
            "| fit() epoch, contiguous | fit() epoch, channels_last |"
        )
        print("|---|---|---|---|---|")
        for name in CPU_MODEL_NAMES:
            steps = 4 if name == "teacher_cnn" else 20
            rates = [
                train_throughput(name, False, steps, args.repeats),
                train_throughput(name, True, steps, args.repeats),
                fit_throughput(name, False, args.repeats),
                fit_throughput(name, True, args.repeats),
            ]
            print(f"| `{name}` | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
