"""Time RRD and REFILLED (forward + backward) over batch size, feature width and queue length.

Each case is a small function ``case(B, D, ...) -> callable`` whose call runs one forward and one
backward pass, so the main loss benchmark can import and reuse them. Run:

    PYTHONPATH=$PWD python benchmarks/losses_embed.py            # full grid
    PYTHONPATH=$PWD python benchmarks/losses_embed.py --quick    # B in {64, 128}, K = 4096 only

Timings are the median over ``--repeats`` calls after one warm-up call, in milliseconds, on the
device chosen by ``--device`` (default: cuda if available, else cpu).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from relkd_tutorial.losses.refilled import (
    class_centres,
    mine_triplets,
    refilled_classifier_kl,
    refilled_embedding_loss,
)
from relkd_tutorial.losses.rrd import RRDLoss

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _features(b: int, d: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g).relu().to(device)  # pooled post-ReLU features


def _labels(b: int, classes: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(b) % classes).to(device)


def rrd_case(b: int, d: int, k: int, device: torch.device = DEVICE) -> Callable[[], None]:
    """RRD with its heads (embed 128), a full queue of ``k`` keys, student and teacher width ``d``."""
    criterion = RRDLoss(d, d, embed_dim=128, queue_size=k).to(device)
    for start in range(0, k, 4096):  # fill the queue once
        criterion.update_queue(_features(min(4096, k - start), d, start, device))
    fs = _features(b, d, 1, device).requires_grad_(True)
    ft = _features(b, d, 2, device)

    def run() -> None:
        criterion(fs, ft).backward()

    return run


def refilled_stage1_case(
    b: int, d: int, form: str = "triplet", classes: int = 10, device: torch.device = DEVICE
) -> Callable[[], None]:
    """REFILLED stage 1 (mining + loss), student and teacher width ``d``."""
    fs = _features(b, d, 1, device).requires_grad_(True)
    ft = _features(b, d, 2, device)
    y = _labels(b, classes, device)

    def run() -> None:
        refilled_embedding_loss(fs, ft, y, form=form).backward()

    return run


def refilled_stage2_case(
    b: int, d: int, classes: int = 10, device: torch.device = DEVICE
) -> Callable[[], None]:
    """REFILLED stage 2 distillation term (local classifier KL), global centres given."""
    ft = _features(b, d, 2, device)
    y = _labels(b, classes, device)
    centres = class_centres(
        _features(4 * classes, d, 3, device), _labels(4 * classes, classes, device), classes
    )
    z = torch.randn(b, classes, device=device, requires_grad=True)

    def run() -> None:
        refilled_classifier_kl(z, ft, y, centres).backward()

    return run


def time_ms(run: Callable[[], None], repeats: int) -> float:
    run()  # warm-up
    samples = []
    for _ in range(repeats):
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [64, 128] if args.quick else [64, 128, 256, 512]
    queues = [4096] if args.quick else [4096, 16384]
    widths = [64, 256]
    print(f"device={DEVICE} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"median of {args.repeats} forward+backward calls, milliseconds\n")

    print("RRD (embed 128, full queue)")
    print(f"{'B':>5} {'D':>5} {'K':>6} {'ms':>9}")
    for b in batches:
        for d in widths:
            for k in queues:
                print(f"{b:>5} {d:>5} {k:>6} {time_ms(rrd_case(b, d, k), args.repeats):>9.2f}")

    c = args.classes
    print(f"\nREFILLED ({c} classes, labels balanced; stage 1 includes mining)")
    print(
        f"{'B':>5} {'D':>5} {'triplets':>9} {'tuples':>7} {'s1 triplet':>11} {'s1 tuple':>9} {'s2 KL':>7}"
    )
    for b in batches:
        for d in widths:
            a, p, _ = mine_triplets(_features(b, d, 1, DEVICE), _labels(b, c, DEVICE))
            tuples = torch.unique(a * b + p).numel()
            t1 = time_ms(refilled_stage1_case(b, d, "triplet", c), args.repeats)
            t2 = time_ms(refilled_stage1_case(b, d, "tuple", c), args.repeats)
            t3 = time_ms(refilled_stage2_case(b, d, c), args.repeats)
            print(f"{b:>5} {d:>5} {a.numel():>9} {tuples:>7} {t1:>11.2f} {t2:>9.2f} {t3:>7.2f}")


if __name__ == "__main__":
    main()
