"""Training: one loop for teachers and students (:func:`fit`, :mod:`.loop`) and what it stands on:
:mod:`.run` (resume, stages, signals, files around the step), :mod:`.config`, :mod:`.steps`
(forwards, step inputs, :func:`evaluate`), :mod:`.schedule`, :mod:`.checkpoint`, :mod:`.progress`,
:mod:`.rng`, :mod:`.signals`, :mod:`.distributed` and :mod:`.diagnostics` (gradient shares).
"""

# ruff: noqa: F401 - the imports below are the subpackage's public names

from .checkpoint import load_checkpoint, previous_checkpoint, save_checkpoint, write_history_csv
from .config import TrainConfig, resolve_device
from .diagnostics import gradient_shares, term_gradient_norms
from .loop import fit
from .rng import get_rng_state, seed_everything, seeded, set_rng_state
from .schedule import build_optimizer, build_scheduler, lr_factor, stage_plan
from .signals import StopSignals, TrainingInterrupted
from .steps import evaluate, make_step_inputs, student_forward
