"""Compare benchmark runs with a reference ``runs.csv``: are the metrics exactly equal?

    python scripts/compare_runs.py /tmp/x/runs.csv                     # against results/runs.csv
    python scripts/compare_runs.py /tmp/x/runs.csv other/runs.csv
    python scripts/compare_runs.py --summary results/replicate/runs.csv results/runs.csv

``--summary`` prints, per setting and method, how many matched runs are identical and by how much
their top-1 moves (mean and largest absolute difference, in points), instead of every row: how
far a second run set of the same runs (e.g. another instruction set) is from the first.

Every row of the first file is matched with the reference row of the same setting, spec (the
configuration fingerprint), phase, method, params and seed, and its accuracies, Kendall tau,
distance correlation and training accuracy are compared as written (exact text of the floats).
Exit status 0 if every row has a match and all are equal, else 1.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

MATCH = ("setting", "spec", "phase", "method", "params", "seed")
METRICS = ("acc", "acc_tops", "acc_footwear", "kendall_tau", "dist_corr", "train_acc")


def summary(rows: list[dict], ref: dict) -> int:
    """Per (setting, method): matched runs, identical ones, mean and largest |top-1 difference|."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        match = ref.get(tuple(row[k] for k in MATCH))
        if match is not None and row["status"] == match["status"] == "ok":
            diff = 100 * abs(float(row["acc"]) - float(match["acc"]))
            groups.setdefault((row["setting"], row["method"]), []).append(diff)
    print(
        f"{'setting':10}{'method':15}{'runs':>5}{'identical':>10}{'mean |d| pts':>14}{'max |d| pts':>13}"
    )
    every = [d for diffs in groups.values() for d in diffs]
    for (setting, method), diffs in [*groups.items(), (("all", ""), every)]:
        same = sum(d == 0 for d in diffs)
        mean = sum(diffs) / max(len(diffs), 1)
        print(
            f"{setting:10}{method:15}{len(diffs):>5}{same:>10}{mean:>14.2f}{max(diffs, default=0):>13.2f}"
        )
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--summary":
        argv = argv[1:]
        ref_path = (
            Path(argv[1]) if len(argv) > 1 else Path(__file__).parents[1] / "results/runs.csv"
        )
        ref = {tuple(r[k] for k in MATCH): r for r in csv.DictReader(open(ref_path, newline=""))}
        return summary(list(csv.DictReader(open(argv[0], newline=""))), ref)
    new_path = Path(argv[0])
    ref_path = Path(argv[1]) if len(argv) > 1 else Path(__file__).parents[1] / "results/runs.csv"
    ref = {tuple(r[k] for k in MATCH): r for r in csv.DictReader(open(ref_path, newline=""))}
    rows = list(csv.DictReader(open(new_path, newline="")))
    all_equal = bool(rows)
    print(f"{'setting':10}{'method':10}{'seed':>5}  " + "  ".join(f"{m:>19}" for m in METRICS))
    for row in rows:
        match = ref.get(tuple(row[k] for k in MATCH))
        equal = match is not None and all(match[m] == row[m] for m in METRICS)
        all_equal &= equal
        values = "  ".join(f"{row[m]:>19}" for m in METRICS)
        print(
            f"{row['setting']:10}{row['method']:10}{row['seed']:>5}  {values}  {'equal' if equal else 'DIFFERENT'}"
        )
        if match is None:
            print("  (no reference row with this setting, spec, phase, method, params and seed)")
        elif not equal:
            print(f"{'  reference':25}  " + "  ".join(f"{match[m]:>19}" for m in METRICS))
    print(
        f"{len(rows)} runs of {new_path} against {ref_path}: {'all equal' if all_equal else 'NOT all equal'}"
    )
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
