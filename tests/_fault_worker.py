"""A small deterministic training run, shared by the fault tests and run by them as a subprocess.

    python tests/_fault_worker.py CHECKPOINT_DIR THREADS [DELAY]

trains RRD (a learnable head and a queue: state that must survive a resume) on 96 tiny images,
3 epochs of 12 steps, printing ``step`` after every step (``DELAY`` seconds later, so a test can
signal it mid-run). A :class:`~relkd_tutorial.training.signals.TrainingInterrupted` ends the process
with its message on stderr and the exit code ``128 + signal``; a finished run exits with 0.
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

from relkd_tutorial.data import ImageSet, TensorLoader
from relkd_tutorial.methods import RRD, StepInputs
from relkd_tutorial.models import build_model
from relkd_tutorial.teacher import TeacherCache
from relkd_tutorial.training import TrainConfig, TrainingInterrupted, fit, seeded

N, C, HW = 96, 4, 12


class ReportingRRD(RRD):
    """RRD that prints ``step`` after each step (and may wait), so a test sees progress."""

    delay = 0.0

    def after_step(self, inputs: StepInputs) -> None:
        super().after_step(inputs)
        print("step", flush=True)
        time.sleep(self.delay)


def parts() -> tuple[torch.nn.Module, RRD, TensorLoader, TeacherCache]:
    """Student, method, loader (shuffled and augmented) and a fixed random teacher cache."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, HW, HW), dtype=torch.uint8, generator=g)
    data = ImageSet(images, torch.arange(N) % C, [f"c{k}" for k in range(C)], "t", (0.5,), (0.25,))
    student = build_model("student_cnn_s", C, 1, seed=1)
    with seeded(2):
        method = ReportingRRD(student_dim=32, teacher_dim=5, embed_dim=8, queue_size=40)
    cache = TeacherCache(
        torch.randn(N, 5, generator=g), torch.randn(N, C, generator=g), data.labels
    )
    return student, method, TensorLoader(data, 8, seed=3), cache


def config(checkpoint_dir: str | None, resume: bool = False) -> TrainConfig:
    return TrainConfig(
        epochs=3, lr=0.05, device="cpu", progress=False, seed=0,
        checkpoint_dir=checkpoint_dir, resume=resume,
    )  # fmt: skip


def run(checkpoint_dir: str | None, resume: bool = False, delay: float = 0.0):
    """Train (or continue); return the student, the method and the history."""
    student, method, loader, cache = parts()
    method.delay = delay
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cache beside an augmenting loader: on purpose
        history = fit(student, method, loader, config(checkpoint_dir, resume), teacher=cache)
    return student, method, history


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[2]))
    try:
        run(sys.argv[1], delay=float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
    except TrainingInterrupted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
