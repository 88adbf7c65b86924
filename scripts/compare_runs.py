"""Compare benchmark runs with a reference ``runs.csv``: are the metrics exactly equal?

    python scripts/compare_runs.py /tmp/x/runs.csv                     # against results/runs.csv
    python scripts/compare_runs.py /tmp/x/runs.csv other/runs.csv

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


def main(argv: list[str]) -> int:
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
