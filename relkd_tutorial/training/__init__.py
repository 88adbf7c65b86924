"""Training: one loop for teachers and students (:func:`fit`) and what it stands on.

- :mod:`~relkd_tutorial.training.loop`: :func:`fit`, the step a learner reads;
- :mod:`~relkd_tutorial.training.run`: what ``fit`` calls around it (resume, stages, signals, files);
- :mod:`~relkd_tutorial.training.config`: :class:`TrainConfig`, :func:`resolve_device`;
- :mod:`~relkd_tutorial.training.steps`: the student's forward, a step's inputs, :func:`evaluate`;
- :mod:`~relkd_tutorial.training.schedule`: stages, optimizer, learning-rate schedule;
- :mod:`~relkd_tutorial.training.checkpoint`: atomic checkpoints, history CSV, the resume state;
- :mod:`~relkd_tutorial.training.progress`: an epoch's running sums, a mid-epoch state, the bar;
- :mod:`~relkd_tutorial.training.rng`: seeds and RNG states;
- :mod:`~relkd_tutorial.training.signals`: stopping cleanly on SIGINT/SIGTERM;
- :mod:`~relkd_tutorial.training.distributed`: several processes under ``torchrun``;
- :mod:`~relkd_tutorial.training.diagnostics`: each loss term's gradient norm and share.
"""

from .checkpoint import (
    load_checkpoint,
    previous_checkpoint,
    save_checkpoint,
    write_history_csv,
)
from .config import TrainConfig, resolve_device
from .diagnostics import gradient_shares, term_gradient_norms
from .loop import fit
from .rng import get_rng_state, seed_everything, seeded, set_rng_state
from .schedule import build_optimizer, build_scheduler, lr_factor, stage_plan
from .signals import StopSignals, TrainingInterrupted
from .steps import evaluate, make_step_inputs, student_forward

__all__ = [
    "StopSignals",
    "TrainConfig",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "get_rng_state",
    "gradient_shares",
    "load_checkpoint",
    "lr_factor",
    "make_step_inputs",
    "previous_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "seeded",
    "set_rng_state",
    "stage_plan",
    "student_forward",
    "term_gradient_norms",
    "write_history_csv",
]
