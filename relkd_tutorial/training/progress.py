"""Where a run stands: a mid-epoch state for a checkpoint, the progress bar's switch and line.

**Stopping on a signal** (:mod:`relkd_tutorial.training.signals`). On SIGINT/SIGTERM the loop
finishes the current step, writes a *mid-epoch* checkpoint (``step`` = steps done in the epoch,
the epoch's running sums, the RNG states at the start of the epoch and now: an
:class:`_EpochProgress`) and raises :class:`~relkd_tutorial.training.signals.TrainingInterrupted`.
Resuming restores the epoch-start RNG state, re-creates the epoch's batches, skips the steps already
done, restores the later RNG state and continues: the final weights are bit-identical to an
uninterrupted run whenever the loader's batches are a function of the epoch (``set_epoch``) and of
the RNG state at the start of the epoch - :class:`~relkd_tutorial.data.TensorLoader` and
``DataLoader`` s qualify; a main-process transform drawing from the global RNG *between* batches
while the model draws too (dropout) does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .distributed import all_gather_objects
from .rng import _rank_state


def _progress_enabled(progress: bool) -> bool:
    return bool(progress) and os.environ.get("CI", "").strip().lower() in ("", "0", "false")


@dataclass
class _EpochProgress:
    """Where an epoch stands after ``steps`` steps: what a mid-epoch checkpoint must hold.

    ``sums``/``counts``/``correct``/``labelled`` are the running sums behind the epoch's record;
    ``epoch_rng`` is this rank's RNG state at the start of the epoch (it re-creates the epoch's
    batches); ``rng`` the state after the last step done (set when resuming).
    """

    steps: int
    sums: dict[str, Tensor]
    counts: dict[str, int]
    correct: Tensor
    labelled: Tensor
    epoch_rng: dict[str, Any]
    seconds: float = 0.0
    rng: dict[str, Any] | None = None

    def checkpoint_entries(self) -> dict[str, Any]:
        epoch_rngs = all_gather_objects(self.epoch_rng)  # collective: every rank calls it
        entries: dict[str, Any] = {
            "epoch_rng": epoch_rngs[0],
            "partial": {
                "sums": {k: v.detach().cpu() for k, v in self.sums.items()},
                "counts": dict(self.counts),
                "correct": int(self.correct),
                "labelled": int(self.labelled),
                "seconds": float(self.seconds),
            },
        }
        if len(epoch_rngs) > 1:
            entries["epoch_rng_ranks"] = epoch_rngs
        return entries

    @classmethod
    def from_checkpoint(
        cls, state: dict[str, Any], rank: int, world: int, device: torch.device
    ) -> _EpochProgress:
        partial = state["partial"]
        return cls(
            steps=int(state["step"]),
            sums={k: v.to(device) for k, v in partial["sums"].items()},
            counts={k: int(v) for k, v in partial["counts"].items()},
            correct=torch.tensor(int(partial["correct"]), dtype=torch.long, device=device),
            labelled=torch.tensor(int(partial["labelled"]), dtype=torch.long, device=device),
            epoch_rng=_rank_state(state, "epoch_rng", rank, world),
            seconds=float(partial["seconds"]),
            rng=_rank_state(state, "rng", rank, world),
        )


def _summary(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']} [{record['stage']}]"]
    for k, v in record.items():
        if k not in ("epoch", "stage") and isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)
