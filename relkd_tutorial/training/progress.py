"""Where an epoch stands: its running sums (on the device), a mid-epoch state for a checkpoint,
the progress bar's switch and line.

**No host read per step.** The sums of the loss terms and the training accuracy stay on the device;
they are read back once when the bar is refreshed (every ``log_every`` steps, :meth:`_EpochProgress.
running_means`) and once at the end of the epoch (:meth:`_EpochProgress.means`), which also checks
that the epoch's loss terms and the weights are finite before anything replaces a checkpoint. Every
read goes through :func:`to_host`, so a test can count them.

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

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..methods import Method, StepInputs
from .distributed import all_gather_objects
from .rng import _rank_state
from .steps import _check_finite_state, _finite, to_host

RESERVED_KEYS = ("epoch", "stage", "lr", "train_acc", "eval_loss", "eval_acc", "seconds")


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

    @classmethod
    def start(cls, device: torch.device, epoch_rng: dict[str, Any]) -> _EpochProgress:
        zero = torch.zeros((), dtype=torch.long, device=device)
        return cls(0, {}, {}, zero, zero.clone(), epoch_rng)

    def add(self, terms: dict[str, Tensor], inputs: StepInputs) -> None:
        """Add one step's loss terms and training accuracy (labelled samples only), on the device."""
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().float()
            self.counts[name] = self.counts.get(name, 0) + 1
        keep = inputs.labels >= 0  # (B,) labelled samples of the (global) batch
        hits = (inputs.student_logits.detach().argmax(dim=1) == inputs.labels) & keep  # (B,)
        self.correct += hits.sum()
        self.labelled += keep.sum()
        self.steps += 1

    def running_means(self) -> dict[str, str]:
        """The bar's text: the running mean of every term (one host read)."""
        values = to_host(torch.stack(list(self.sums.values())))
        return {k: f"{v / self.counts[k]:.4g}" for k, v in zip(self.sums, values, strict=True)}

    def means(self, epoch: int, student: nn.Module, method: Method) -> dict[str, float]:
        """The epoch's record: the mean of every term and ``train_acc`` (NaN if nothing was
        labelled, with a warning if ``method`` learns from labels only), in one host read that
        also checks that the terms and the weights of ``student`` and ``method`` are finite: a
        ``FloatingPointError`` before anything replaces a checkpoint."""
        if self.steps == 0:
            raise ValueError("the training loader yielded no batch")
        clash = set(self.sums) & set(RESERVED_KEYS)
        if clash:
            raise ValueError(
                f"loss term names {sorted(clash)} clash with history columns; rename them"
            )
        finite = _finite(student, method).to(self.correct.device)
        tail = torch.stack([self.correct, self.labelled, finite]).double()
        sums = torch.stack(list(self.sums.values())).double()  # float32 sums: exact in float64
        *sums, correct, labelled, finite = to_host(torch.cat([sums, tail]))
        means = {k: v / self.counts[k] for k, v in zip(self.sums, sums, strict=True)}
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f"epoch {epoch + 1}: non-finite loss terms {bad}; try a lower lr, grad_clip or "
                "amp='off' (the last good checkpoint was not replaced)"
            )
        if not finite:
            _check_finite_state(epoch, student, method)  # names the tensor and raises
        means["train_acc"] = int(correct) / int(labelled) if labelled else float("nan")
        if not labelled and not method.needs_teacher:
            warnings.warn(
                f"epoch {epoch + 1}: no training sample was labelled (every label is -1), so "
                f"{type(method).__name__} had nothing to learn from",
                stacklevel=3,  # means < fit < the caller
            )
        return means

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
