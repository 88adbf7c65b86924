"""Checkpoints and history files: atomic writes, loading with clear errors, the resume state.

``checkpoint_dir/last.pt`` is written atomically after every epoch with everything a bit-identical
continuation needs (model, method, optimizer, scheduler, grad scaler, every rank's RNG state,
epoch, stage, history, config; ``weights_only``-loadable), never over a good one with NaN/inf. A
damaged or other-version file raises a clear ``ValueError`` on resume, never a silent restart; the
replaced file is kept as ``last.previous.pt`` (choice: one fallback, named in the error).
"""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "relkd_tutorial.checkpoint/1"

# Config fields that may differ between a run and its resumption without changing the result.
_HARMLESS_ON_RESUME = {
    "resume", "progress", "checkpoint_dir", "history_csv", "log_every", "device", "handle_signals",
}  # fmt: skip
# Config fields a resume may change with a warning of its own (schedule.check_resume_plan).
_CHECKED_ON_RESUME = {"epochs"}


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)``, sync, then ``os.replace`` it onto ``path``; on failure ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def previous_checkpoint(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the file it replaced: ``last.pt`` -> ``last.previous.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`_atomic_write`); the file it replaces is kept
    as :func:`previous_checkpoint` (also atomically). At every moment ``path`` holds a complete
    checkpoint.
    """
    path = Path(path)

    def keep(kept: Path) -> None:  # a hard link where the file system allows, else a copy
        try:
            os.link(path, kept)
        except OSError:
            shutil.copy2(path, kept)

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        if path.is_file():
            _atomic_write(previous_checkpoint(path), keep)

    _atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``).

    Raises ``FileNotFoundError`` (no file) or ``ValueError`` naming the file (empty, truncated,
    corrupt, not a relkd_tutorial checkpoint, or another format version).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # empty file, truncated zip, unpickling error, ...
        if "Unsupported global" in str(err):
            raise ValueError(
                f"checkpoint {path} holds Python objects that torch.load(weights_only=True) "
                "refuses to load: it was not written by relkd_tutorial (or was altered); it is "
                "not loaded, because unpickling it could run arbitrary code"
            ) from err
        kind = "empty" if path.stat().st_size == 0 else "truncated or corrupt"
        # the informative part of the message: its unpickler error, if any; its first line
        words = str(err).split("WeightsUnpickler error:")[-1].strip().split("\n")[0].strip()
        raise ValueError(
            f"checkpoint {path} is {kind} and cannot be loaded ({type(err).__name__}: "
            f"{words[:200]})"
        ) from err
    found = state.get("format") if isinstance(state, dict) else None
    if found == CHECKPOINT_FORMAT:
        return state
    if isinstance(found, str) and found.startswith("relkd_tutorial.checkpoint/"):
        raise ValueError(
            f"checkpoint {path} has format {found!r}, which this version of relkd_tutorial "
            f"does not read (it reads {CHECKPOINT_FORMAT!r}): load it with the version that "
            "wrote it"
        )
    raise ValueError(f"{path} is not a relkd_tutorial training checkpoint ({CHECKPOINT_FORMAT})")


def _check_training_state(state: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint that lacks an entry :func:`fit` needs to continue."""
    missing = [k for k in ("format", *_ENTRY_TYPES) if k != "step" and k not in state]
    if int(state.get("step", 0)) > 0:
        missing += [k for k in ("partial", "epoch_rng") if k not in state]
    if missing:
        raise ValueError(f"checkpoint {path} is damaged: it lacks the entries {missing}")
    wrong = [
        f"{key} is {type(state[key]).__name__}"
        for key, kind in _ENTRY_TYPES.items()
        if key in state and (not isinstance(state[key], kind) or isinstance(state[key], bool))
    ]
    if not wrong:
        epoch, step, history = state["epoch"], int(state.get("step", 0)), state["history"]
        if epoch < 0 or step < 0:
            wrong.append(f"epoch {epoch} and step {step} must be >= 0")
        elif len(history) != epoch or not all(isinstance(r, dict) for r in history):
            wrong.append(f"history holds {len(history)} records for {epoch} epochs")
    if wrong:
        raise ValueError(f"checkpoint {path} is damaged: {'; '.join(wrong)}")
    bad = [
        f"{part}.{name}"
        for part in ("model", "method")
        for name, t in state[part].items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())
    ]
    if bad:  # once per resume: a run continued from NaN weights would fail an epoch later
        raise ValueError(
            f"checkpoint {path} holds NaN or inf weights ({', '.join(bad[:5])}); it cannot be "
            "continued"
        )


# The type every entry of a training checkpoint must have (a damaged or hand-edited file is
# refused by name instead of failing somewhere in the loop).
_ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "step": int, "stage": str, "model": dict, "method": dict, "optimizer": dict,
    "scheduler": dict, "scaler": dict, "rng": dict, "history": list, "config": dict,
}  # fmt: skip


def write_history_csv(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write the per-epoch records as CSV (columns: the union of keys, in first-seen order)."""
    columns = list(dict.fromkeys(k for record in history for k in record))  # first-seen order

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(history)

    _atomic_write(Path(path), write)


def _checkpoint_path(config: TrainConfig) -> Path | None:
    """Where the run's checkpoint goes; a path that cannot be written is refused before training."""
    folder, csv_file = config.checkpoint_dir, config.history_csv
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(f"checkpoint_dir {folder!r} is a file, not a directory")
    if csv_file is not None and Path(csv_file).is_dir():
        raise ValueError(f"history_csv {csv_file!r} is a directory; name a .csv file in it")
    return None if folder is None else Path(folder) / CHECKPOINT_NAME


def _resume_state(config: TrainConfig, ckpt_path: Path | None) -> dict[str, Any] | None:
    """The checkpoint to continue from, or ``None`` for a fresh start."""
    if config.resume is False or config.resume is None:
        return None
    if config.resume is True:
        if ckpt_path is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass resume=<checkpoint path>)")
        if not ckpt_path.exists():
            return None  # nothing to resume yet: the same command starts and restarts a run
        path = ckpt_path
    else:
        path = Path(config.resume)
    try:
        state = load_checkpoint(path)
        _check_training_state(state, path)
    except ValueError as err:
        fallback = previous_checkpoint(path)
        if fallback.is_file():
            raise ValueError(
                f"{err}. The checkpoint it replaced is {fallback}: continue from it with "
                f"resume={str(fallback)!r} (the epochs since then are trained again)"
            ) from err
        raise
    saved = state.get("config", {})
    differ = sorted(
        k for k, v in asdict(config).items()
        if k not in _HARMLESS_ON_RESUME | _CHECKED_ON_RESUME and k in saved and _normal(saved[k]) != _normal(v)
    )  # fmt: skip
    if differ:
        warnings.warn(
            f"resuming from {path} with a different config ({', '.join(differ)}); the run will "
            "not match an uninterrupted one",
            stacklevel=4,  # _resume_state < _Run.start_run < fit < the caller
        )
    return state


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value
