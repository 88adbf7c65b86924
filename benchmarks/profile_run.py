"""Where one benchmark run's time goes: cProfile of :func:`relkd_tutorial.bench.runner.run_job`.

    python benchmarks/profile_run.py [--setting transfer] [--method kd] [--seed 0]
                                     [--contiguous] [--threads 1]

Builds the setting's workspace of the default ``cpu`` preset (its teacher outputs from the disk
cache under ``runs/profile/cache``, computed once), runs one job under ``cProfile`` and prints the
cumulative time of the pieces of a run: batches from the ``TensorLoader``, the student's forward,
the teacher-cache lookup, the method's loss terms (the input checks within them listed apart),
the backward pass, the optimizer step, the progress bar, the final evaluation, and the rest (the
loop's bookkeeping, building the model and method). The one-off cost of a fresh process (torch's
first optimizer imports ``torch._dynamo``; a worker of ``--jobs`` pays it once, before its first
run) is timed apart, before the profile. cProfile's own overhead inflates the Python-heavy
pieces a little; the shares are the point.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from relkd_tutorial.bench import runner, workspace  # noqa: E402
from relkd_tutorial.bench.settings import default_settings  # noqa: E402

# (label, path suffix, function name): the cumulative time of these functions
PIECES = (
    ("batches (TensorLoader)", "relkd_tutorial/data/loader.py", "_batches"),
    ("student forward", "relkd_tutorial/training/steps.py", "student_forward"),
    ("teacher-cache lookup", "relkd_tutorial/teacher.py", "teacher_outputs"),
    ("loss terms", "relkd_tutorial/methods/", "loss_terms"),
    ("  of which input checks", "relkd_tutorial/_checks.py", "check_float_tensor"),
    ("backward", "torch/_tensor.py", "backward"),
    ("optimizer step", "torch/optim/optimizer.py", "wrapper"),
    ("progress bar (disabled)", "tqdm/std.py", "update"),
    ("final evaluation", "relkd_tutorial/bench/runner.py", "evaluate_student"),
)


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of the functions named ``name`` in files containing ``suffix``.

    Only the outermost calls count (a function called from another of the same name is not
    counted twice): cProfile's cumulative time already includes recursive calls.
    """
    total = 0.0
    for (path, _, func), (_, _, _, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if func == name and suffix in path.replace(os.sep, "/"):
            nested = any(c[2] == name and suffix in c[0] for c in callers)
            if not nested:
                total += ct
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="transfer")
    parser.add_argument("--method", default="kd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contiguous", action="store_true", help="the layout before")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/profile")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = default_settings(False, "cpu")[args.setting]
    ws = workspace.build_workspace(
        setting, Path(args.out), torch.device("cpu"), channels_last=not args.contiguous
    )
    workspace.prepare_workspace(ws, workspace.cache_dir(args.out))
    job = runner.Job(setting.name, "final", args.method, {}, args.seed)
    tic = time.perf_counter()
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo
    one_off = time.perf_counter() - tic
    profile = cProfile.Profile()
    load = os.getloadavg()[0]
    tic = time.perf_counter()
    profile.enable()
    row, _ = runner.run_job(job, ws)
    profile.disable()
    total = time.perf_counter() - tic
    stats = pstats.Stats(profile)
    layout = "contiguous" if args.contiguous else "channels_last"
    print(
        f"\nOne run: {setting.name} {args.method} seed {args.seed}, {setting.epochs} epochs of "
        f"{row['n_train']} images, batch {setting.batch_size}, {layout}, {args.threads} "
        f"thread(s); {total:.1f} s under cProfile (load average {load:.1f})\n"
    )
    print("| piece | seconds | share |")
    print("|---|---:|---:|")
    accounted = 0.0
    for label, suffix, name in PIECES:
        t = cumulative(stats, suffix, name)
        if not label.startswith("  "):
            accounted += t
        print(f"| {label} | {t:.2f} | {100 * t / total:.0f}% |")
    rest = total - accounted
    print(f"| rest (loop bookkeeping, setup) | {rest:.2f} | {100 * rest / total:.0f}% |")
    print(f"\nOnce per process, before the first run (the first optimizer): {one_off:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
