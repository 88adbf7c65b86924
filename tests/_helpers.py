"""What several tests need and the package does not: a history CSV reader, a printed t table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

#: Upper 2.5% critical values ``t_{0.975, nu}`` as printed (3 decimals) in the NIST/SEMATECH
#: e-Handbook of Statistical Methods, Sec. 1.3.6.7.2.
T_975_TABLE: dict[int, float] = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    100: 1.984,
}


def read_history_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a history CSV (``TrainConfig.history_csv``) back: numbers as int/float, empty cells
    dropped."""
    records = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            record: dict[str, Any] = {}
            for k, v in row.items():
                if v == "":
                    continue
                try:
                    record[k] = int(v)
                except ValueError:
                    try:
                        record[k] = float(v)
                    except ValueError:
                        record[k] = v
            records.append(record)
    return records
