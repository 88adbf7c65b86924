"""The benchmark's results folder: ``runs.csv``, ``histories.csv`` and ``meta.json``.

A run's row (:data:`RUN_COLUMNS`) and its per-epoch history are appended and flushed as soon as
the run ends; a half-written last line (a crash during the append) is dropped when the file is
next read. Rows are keyed, so a rerun skips what is done (:meth:`ResultStore.done`).
``meta.json`` records every invocation (command, timing, load) and the environment.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

#: What a run measures of its student (NaN where it diverged); with its cost, the numeric
#: columns of ``runs.csv``, read back as floats (NaN where empty).
MEASURES = ("acc", "acc_tops", "acc_footwear", "kendall_tau", "dist_corr", "train_acc")
NUMERIC_COLUMNS = (*MEASURES, "seconds", "peak_mem_mb", "load1")
RUN_COLUMNS: tuple[str, ...] = (
    *("key", "setting", "spec", "phase", "method", "params", "seed", "status", "eval_split"),
    *NUMERIC_COLUMNS[:-1],
    *("epochs", "n_train", "n_labelled", "load1", "note"),
)
HISTORY_COLUMNS = ("key", "epoch", "stage", "lr", "loss", "train_acc", "eval_acc", "eval_loss",
                   "seconds")  # fmt: skip


def _repair_tail(path: Path) -> None:
    """Drop a half-written last line (an interrupted append) so the next append starts clean."""
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])  # no newline at all: empty


def _append_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    _repair_tail(path)
    new = not path.exists() or path.stat().st_size == 0
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", restval="")
    if new:
        writer.writeheader()
    writer.writerows({k: _fmt(v) for k, v in row.items()} for row in rows)
    with open(path, "a", newline="") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _float(text: str | None) -> float:
    return float(text) if text else math.nan


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``runs.csv``: numeric columns as floats (NaN for empty), seed as int or None."""
    path = Path(path)
    _repair_tail(path)
    rows = [row for row in _read_csv(path) if row.get("key")]
    for row in rows:
        row.update({c: _float(row.get(c)) for c in NUMERIC_COLUMNS})
        row["seed"] = int(row["seed"]) if row.get("seed") else None
    return rows


def read_histories(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """``histories.csv`` as ``{run key: [epoch records]}`` (``key`` and ``stage`` as text)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for raw in _read_csv(Path(path)):
        record = {k: v if k in ("key", "stage") else _float(v) for k, v in raw.items()}
        out.setdefault(raw["key"], []).append(record)
    return out


def select_rows(
    rows: Sequence[dict[str, Any]], specs: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Rows of the given specs (default: each setting's latest, the spec of its last row)."""
    latest = {r["setting"]: r["spec"] for r in rows}.values()
    keep = set(latest if specs is None else specs)
    return [r for r in rows if r["spec"] in keep]


class ResultStore:
    """``runs.csv`` and ``histories.csv`` in ``out_dir``, appended one run at a time."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.runs_path = self.out_dir / "runs.csv"
        self.histories_path = self.out_dir / "histories.csv"

    def rows(self) -> list[dict[str, Any]]:
        return read_runs(self.runs_path)

    def done(self) -> set[str]:
        """Keys of the finished runs (``ok``, ``diverged`` or ``n/a``): these are skipped."""
        return {r["key"] for r in self.rows()}

    def append(self, row: dict[str, Any], history: Sequence[dict[str, Any]] = ()) -> None:
        """Record a finished run: its history first, so a kept row always has its history."""
        if history:
            _append_csv(
                self.histories_path, HISTORY_COLUMNS, ({"key": row["key"], **h} for h in history)
            )
        _append_csv(self.runs_path, RUN_COLUMNS, [row])


# --- Run metadata ---


_CPUINFO = Path("/proc/cpuinfo")


def cpu_info() -> dict[str, Any]:
    """``cpu_model``, ``cpu_capability`` (the instruction set torch's CPU kernels use) and
    ``aten_cpu_capability`` (the variable capping it): runs are bit-exact only on the same."""
    try:
        lines = _CPUINFO.read_text().splitlines()
    except OSError:
        lines = []
    names = (x.split(":", 1)[1].strip() for x in lines if x.startswith("model name") and ":" in x)
    model = next(names, None)
    return {
        "cpu_model": model or platform.processor() or None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
    }


def environment() -> dict[str, Any]:
    """Versions, device, threads, the CPU and its instruction set (:func:`cpu_info`), for
    ``meta.json``."""
    import matplotlib
    import numpy

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **cpu_info(),
        "matplotlib": matplotlib.__version__,
    }


def git_commit() -> str | None:
    """The commit this package's checkout is at (``None`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    """A results folder's ``meta.json``, ``None`` where it has none."""
    path = Path(folder) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else None


def record_invocation(out_dir: Path, entry: dict[str, Any]) -> None:
    """Append this invocation, with the CPU it ran on (:func:`cpu_info`), to ``meta.json``; the
    top-level ``environment`` is the last invocation's."""
    path = out_dir / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # none yet, or unreadable: a fresh record
        meta = {"invocations": []}
    meta.setdefault("invocations", []).append({**cpu_info(), **entry})
    meta["environment"] = environment()
    meta["git_commit"] = git_commit()
    path.write_text(json.dumps(meta, indent=1) + "\n")
