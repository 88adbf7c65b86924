"""Where an epoch stands: its running sums (on the device, read through :func:`~.steps.to_host` at a
bar refresh and at the epoch's end), a mid-epoch state for a checkpoint, the progress bar.

A mid-epoch checkpoint holds the steps done, the sums and the RNG states at the epoch's start and
now; resuming re-creates the epoch's batches from the first, skips the steps done and continues
bit-identically when the batches are a function of the epoch (``set_epoch``) and that RNG state
(:class:`~relkd_tutorial.data.TensorLoader` and ``DataLoader`` s qualify).
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
    """Where an epoch stands after ``steps`` steps, as a mid-epoch checkpoint holds it: the running
    sums behind the record, this rank's RNG state at the start of the epoch (``epoch_rng``, which
    re-creates its batches) and after the last step (``rng``, set when resuming).
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
        """The epoch's record, the mean of every term and ``train_acc`` (NaN if nothing was
        labelled), in one host read that also checks the terms and the weights of ``student`` and
        ``method`` are finite (``FloatingPointError`` before anything replaces a checkpoint).
        """
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
