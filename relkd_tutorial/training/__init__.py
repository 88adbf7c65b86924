"""Training: one loop for teachers and students (:func:`fit`, :mod:`.loop`) and what it stands on:
:mod:`.run` (resume, stages, signals, files around the step), :mod:`.config`, :mod:`.steps`
(forwards, step inputs, :func:`evaluate`), :mod:`.schedule`, :mod:`.checkpoint`, :mod:`.progress`,
:mod:`.rng`, :mod:`.signals`, :mod:`.distributed` and :mod:`.diagnostics` (gradient shares).
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
