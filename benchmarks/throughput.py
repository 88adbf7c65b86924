"""Benchmark throughput, before and after: runs per minute of the same plan, side by side.

    python benchmarks/throughput.py [--before /tmp/before] [--before-commit 999ec56]
                                    [--rounds 1] [--out runs/throughput] [-- BENCH ARGS]

Runs ``python -m relkd_tutorial.bench`` on one plan (default: the ``transfer`` setting of the
default ``cpu`` preset with its sizes given explicitly, ``--pool-per-class 900 --epochs 5``, so
that the code before, whose ``cpu`` preset was a 3,000-image pool, trains the same runs; CE, KD,
GRKD, RRD and REFILLED, seeds 0-3: 20 runs) with

- **before**: the code of ``--before-commit`` (default 999ec56, the benchmark before the
  throughput work; a ``git worktree`` at ``--before``, made if missing), imported through
  ``PYTHONPATH``: sequential runs, one thread, its workspace rebuilt by every invocation;
- **after, cold cache**: this checkout with its defaults (``--jobs`` = the usable cores,
  ``channels_last``), a fresh workspace cache (``$RELKD_CACHE_DIR``), so it runs the teacher;
- **after, warm cache**: the same again with the cache the previous invocation left.

Each invocation writes to a fresh results folder (nothing resumed), so every run is trained.
One round is ``before, after cold, after warm``; with ``--rounds 2`` a second round in the
reverse order follows (interleaved, so a change in the machine's load hits both sides). Runs per
minute = runs trained / the invocation's wall time (process start to exit: imports, workspace,
training, report). CPU seconds per run = the user + system CPU time of the invocation and its
worker processes (``getrusage(RUSAGE_CHILDREN)``) / runs trained: the work a run costs, which
other processes on a shared machine change far less than the wall time. Also printed: the load average at each start and end, the median training
time of one run (``seconds`` in ``runs.csv``), and the workspace time (``meta.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The sizes are spelled out (the default cpu preset's transfer: the 9,000-image pool, 5 epochs), so
# that both sides train the same runs: the cpu preset of the code before was a 3,000-image pool.
PLAN = ["--no-fast", "--preset", "cpu", "--settings", "transfer",
        "--pool-per-class", "900", "--epochs", "5",
        "--methods", "ce,kd,grkd,rrd,refilled", "--seeds", "0,1,2,3",
        "--device", "cpu", "--no-plots"]  # fmt: skip


def ensure_before(path: Path, commit: str) -> Path:
    if not (path / "relkd_tutorial").exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True
        )
    return path


def invoke(label: str, code: Path, out: Path, extra: list[str], env: dict[str, str]) -> dict:
    if out.exists():
        shutil.rmtree(out)
    env = {**os.environ, "PYTHONPATH": str(code), **env}
    env.pop("CI", None)
    env.pop("RELKD_FAST", None)
    cmd = [sys.executable, "-m", "relkd_tutorial.bench", *PLAN, *extra, "--out", str(out)]
    load0 = os.getloadavg()[0]
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the invocation and its workers
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    load1 = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    import csv

    with open(out / "runs.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] not in ("n/a", "")]
    meta = json.loads((out / "meta.json").read_text())["invocations"][-1]
    result = {
        "label": label,
        "runs": len(rows),
        "wall": wall,
        "per_minute": 60.0 * len(rows) / wall,
        "cpu_per_run": cpu / len(rows),
        "run_seconds": statistics.median(float(r["seconds"]) for r in rows),
        "workspace": meta.get("teacher_cache_seconds"),
        "jobs": meta.get("jobs", 1),
        "load": (load0, load1),
    }
    print(
        f"{label}: {result['runs']} runs in {wall:.0f} s = {result['per_minute']:.2f} runs/min, "
        f"{result['cpu_per_run']:.1f} CPU s per run (load {load0:.1f} -> {load1:.1f})",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="/tmp/before")
    parser.add_argument("--before-commit", default="999ec56")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default="runs/throughput")
    parser.add_argument("extra", nargs="*", help="more benchmark arguments (after --)")
    args = parser.parse_args(argv)
    before = ensure_before(Path(args.before).resolve(), args.before_commit)
    out = Path(args.out).resolve()
    cache = out / "cache"
    if cache.exists():
        shutil.rmtree(cache)
    results: list[dict] = []
    steps = [
        ("before", before, {}),
        ("after, cold cache", ROOT, {"RELKD_CACHE_DIR": str(cache)}),
        ("after, warm cache", ROOT, {"RELKD_CACHE_DIR": str(cache)}),
    ]
    for r in range(args.rounds):
        if cache.exists():  # every round's first "after" starts with a cold cache
            shutil.rmtree(cache)
        order = steps if r % 2 == 0 else [steps[1], steps[2], steps[0]]
        for label, code, env in order:
            results.append(
                invoke(
                    label,
                    code,
                    out / f"{label.replace(', ', '-').replace(' ', '-')}-{r}",
                    args.extra,
                    env,
                )
            )

    def summary(label: str) -> dict:
        mine = [x for x in results if x["label"] == label]
        return {
            "per_minute": statistics.median(x["per_minute"] for x in mine),
            "wall": statistics.median(x["wall"] for x in mine),
            "run_seconds": statistics.median(x["run_seconds"] for x in mine),
            "cpu_per_run": statistics.median(x["cpu_per_run"] for x in mine),
            "workspace": statistics.median(float(x["workspace"] or 0.0) for x in mine),
            "jobs": mine[0]["jobs"],
            "runs": mine[0]["runs"],
            "n": len(mine),
        }

    base = summary("before")
    loads = [x for r in results for x in r["load"]]
    print(
        f"\nPlan: python -m relkd_tutorial.bench {' '.join(PLAN + args.extra)}; "
        f"{args.rounds} round(s); load average {min(loads):.1f} to {max(loads):.1f} over the "
        f"session; {os.cpu_count()} CPUs, usable {len(os.sched_getaffinity(0))}\n"
    )
    print(
        "| code | jobs | runs | wall s | runs / min | x before | CPU s / run | x before (CPU) "
        "| s / run (median) | teacher outputs s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label in ("before", "after, cold cache", "after, warm cache"):
        s = summary(label)
        print(
            f"| {label} | {s['jobs']} | {s['runs']} | {s['wall']:.0f} | {s['per_minute']:.2f} | "
            f"{s['per_minute'] / base['per_minute']:.2f} | {s['cpu_per_run']:.1f} | "
            f"{base['cpu_per_run'] / s['cpu_per_run']:.2f} | {s['run_seconds']:.1f} | "
            f"{s['workspace']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
