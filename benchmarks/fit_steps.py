"""Training steps per second of ``fit``, two versions of the package side by side.

    python benchmarks/fit_steps.py --before /path/to/other/checkout [--after .]
                                   [--methods kd,grkd,rrd] [--rounds 5] [--steps 40]
                                   [--batch-size 128] [--threads 1]

What one measurement is: a child process (``PYTHONPATH`` = the checkout) trains ``student_cnn_s``
with ``fit`` for one epoch of ``--steps`` batches of the shipped Fashion-MNIST subset
(``TensorLoader``, no augmentation) against the shipped teacher's ``TeacherCache`` (as the
benchmark does), quiet, no checkpoint; after one warm-up epoch it reports the median epoch time
(``history[0]["seconds"]``: the steps and the epoch's end, not the process start) of 3 fits.
Each round runs every (method, version) once, the versions in alternating order, so a change in
the machine's load hits both alike; the table gives the medians over rounds, steps per second and
the ratio after / before (``> 1``: faster). It prints torch's CPU capability
(``torch.backends.cpu.get_cpu_capability()``) and the load average: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(method_name: str, steps: int, batch_size: int, threads: int) -> None:
    """Run in the version's own process: print ``{"file", "seconds": [...]}`` as JSON."""
    import torch

    import relkd_tutorial
    from relkd_tutorial.data import TensorLoader, load_fashion_mnist
    from relkd_tutorial.methods import build_method
    from relkd_tutorial.models import build_model
    from relkd_tutorial.pretrained import load_shipped_teacher
    from relkd_tutorial.teacher import TeacherCache
    from relkd_tutorial.training import TrainConfig, fit

    torch.set_num_threads(threads)
    train, _ = load_fashion_mnist("subset")
    data = train.subset(torch.arange(steps * batch_size))
    teacher = load_shipped_teacher("cpu")
    cache = TeacherCache.build(
        teacher, TensorLoader(data, batch_size, shuffle=False, augment=False)
    )
    config = TrainConfig(epochs=1, device="cpu", progress=False, handle_signals=False)
    seconds = []
    for _ in range(4):  # the first is a warm-up
        student = build_model("student_cnn_s", 10, 1, seed=0)
        kwargs = {}
        if method_name.startswith("rrd"):
            kwargs = dict(student_dim=student.feature_dim, teacher_dim=teacher.feature_dim,
                          queue_size=3000)  # fmt: skip
        method = build_method(method_name, **kwargs)
        loader = TensorLoader(data, batch_size, augment=False, seed=0)
        seconds.append(fit(student, method, loader, config, teacher=cache)[0]["seconds"])
    print(json.dumps({"file": relkd_tutorial.__file__, "seconds": seconds[1:]}))


def measure(checkout: Path, args: argparse.Namespace, method_name: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--child", method_name, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads)]  # fmt: skip
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=checkout)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["file"]).resolve().is_relative_to(checkout.resolve()):
        raise RuntimeError(f"{checkout} imported relkd_tutorial from {result['file']}")
    return statistics.median(result["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="the other checkout (e.g. main)")
    parser.add_argument("--after", type=Path, default=ROOT)
    parser.add_argument("--methods", default="kd,grkd,rrd")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.steps, args.batch_size, args.threads)
        return 0
    if args.before is None:
        parser.error("--before is required")
    import torch

    sides = {"before": args.before, "after": args.after}
    methods = args.methods.split(",")
    times: dict[tuple[str, str], list[float]] = {(m, s): [] for m in methods for s in sides}
    load_start = os.getloadavg()
    for r in range(args.rounds):
        for m in methods:
            for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                times[m, side].append(measure(sides[side], args, m))
    load_end = os.getloadavg()
    print(
        f"\nfit, student_cnn_s, {args.steps} steps of batch {args.batch_size}, {args.threads} torch "
        f"thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, torch "
        f"{torch.__version__}; median of {args.rounds} interleaved rounds (each the median of 3 "
        f"epochs); load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end\n"
    )
    print("| method | before: steps / s | after: steps / s | after / before |")
    print("|---|---:|---:|---:|")
    for m in methods:
        before, after = (statistics.median(times[m, s]) for s in sides)
        print(
            f"| {m} | {args.steps / before:.1f} | {args.steps / after:.1f} | {before / after:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
