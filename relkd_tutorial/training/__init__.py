"""Training: one loop for teachers and students (:func:`fit`, :mod:`.loop`) and what it stands on:
:mod:`.run` (resume, stages, signals, files around the step), :mod:`.config`, :mod:`.steps`
(forwards, step inputs, :func:`evaluate`), :mod:`.schedule`, :mod:`.checkpoint`, :mod:`.progress`,
:mod:`.rng`, :mod:`.signals`, :mod:`.distributed` and :mod:`.diagnostics` (gradient shares).
"""

# ruff: noqa: F401 - the imports below are the subpackage's public names

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, resolve_device
from .diagnostics import gradient_shares, term_gradient_norms
from .loop import fit
from .rng import seed_everything, seeded
from .schedule import lr_factor, stage_plan
from .signals import TrainingInterrupted
from .steps import evaluate
