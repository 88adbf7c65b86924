"""A run stopped mid-epoch resumes bit-exactly even when the steps *after* the skipped ones draw
from the global RNGs.

Resuming from a mid-epoch checkpoint re-creates the epoch's batches from the RNG state at the
start of the epoch, skips the steps already done, then restores the RNG state the stopped run had
after its last step. Here the student has dropout (torch's global RNG at every step) and the
method draws from python's ``random`` and numpy's global RNG at every step, so a resume that does
not restore every one of those states after the skipped steps trains other weights. Two loaders:
the package's ``TensorLoader`` (its own per-epoch generator) and a shuffling ``DataLoader`` (it
draws its order from torch's global RNG when the epoch starts, so the epoch-start state matters
too).
"""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from relkd_tutorial import (
    CrossEntropy,
    ImageSet,
    StepInputs,
    TensorLoader,
    TrainConfig,
    fit,
    load_checkpoint,
    seeded,
)

C, STEPS_PER_EPOCH, EPOCHS = 3, 4, 3


class DropoutNet(nn.Module):
    """``(B, 1, 8, 8)`` -> ``(features, logits)``; dropout on the features (train mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, C)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)  # (B, 6)
        return features, self.fc(self.drop(features))


class NoisyCE(CrossEntropy):
    """CE plus a term weighted by python's and numpy's global RNGs; SIGINT after step ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.stop_at, self.steps = stop_at, 0

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        terms = dict(super().loss_terms(inputs))
        w = 0.1 * random.random() + 0.1 * float(np.random.rand())
        terms["noise"] = w * inputs.student_features.pow(2).mean()
        terms["loss"] = terms["ce"] + terms["noise"]
        return terms

    def after_step(self, inputs: StepInputs) -> None:
        self.steps += 1
        if self.steps == self.stop_at:
            os.kill(os.getpid(), signal.SIGINT)


def images() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 8 * STEPS_PER_EPOCH
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % C


def tensor_loader() -> TensorLoader:
    x, y = images()
    data = ImageSet(x, y, [f"c{k}" for k in range(C)], "tiny", (0.5,), (0.25,))
    return TensorLoader(data, 8, seed=3)


def data_loader() -> DataLoader:
    x, y = images()
    return DataLoader(TensorDataset(x.float() / 255, y), batch_size=8, shuffle=True)


LOADERS = {"TensorLoader": tensor_loader, "DataLoader": data_loader}


def run(make_loader, checkpoint_dir=None, stop_at=None, resume=False):
    with seeded(1):
        student = DropoutNet()
    config = TrainConfig(
        epochs=EPOCHS, lr=0.1, device="cpu", progress=False, seed=0, schedule="constant",
        checkpoint_dir=checkpoint_dir, resume=resume,
    )  # fmt: skip
    history = fit(student, NoisyCE(stop_at), make_loader(), config)
    return student.state_dict(), [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("stop_at", [STEPS_PER_EPOCH + 2, 1])  # epoch 2 step 2; epoch 1 step 1
def test_mid_epoch_resume_with_global_rng_consumers_is_bit_exact(tmp_path, loader, stop_at):
    reference, reference_history = run(LOADERS[loader])
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt) as stop:
            run(LOADERS[loader], str(tmp_path), stop_at=stop_at)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert type(stop.value).__name__ == "TrainingInterrupted"
    state = load_checkpoint(tmp_path / "last.pt")
    done_epochs, done_steps = divmod(stop_at, STEPS_PER_EPOCH)
    assert (state["epoch"], state["step"]) == (done_epochs, done_steps)  # a mid-epoch checkpoint

    weights, history = run(LOADERS[loader], str(tmp_path), resume=True)
    assert weights.keys() == reference.keys()
    for k, v in reference.items():
        assert torch.equal(weights[k], v), k
    assert history == reference_history
