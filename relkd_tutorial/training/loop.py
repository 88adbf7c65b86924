"""One training loop for teachers and students; it knows no method by name.

Each step::

    batch            = as_batch(next(loader))                     # Batch(x, y, index) on device
    features, logits = student_forward(student, batch.x)          # under autocast if amp is on
    t_feat, t_logits = teacher_outputs(teacher, batch)            # only if method.needs_teacher
    inputs           = make_step_inputs(...)                      # StepInputs, float32
    terms            = method.loss_terms(inputs)                  # {"loss": total, name: term}
    terms["loss"].backward(); optimizer.step()                    # (grad scaling, clipping)
    method.after_step(inputs)                                     # e.g. a queue write

Everything method-specific comes from the method object (see :mod:`relkd_tutorial.methods`):
``needs_teacher``, ``needs_setup`` / ``setup``, ``stages`` / ``set_stage``, its learnable
parameters (which join the optimizer) and its buffers (which join the checkpoint).

Choices, all documented where they are made:

- **Schedule per epoch.** The learning rate is ``lr * factor(epoch)`` with a pure function
  :func:`lr_factor` of the epoch within the stage (constant, step or cosine, optional linear
  warm-up), applied through ``LambdaLR`` stepped once per epoch; it does not need the loader's
  length. Each stage of a multi-stage method gets a fresh optimizer and schedule.
- **Stage split.** :func:`stage_plan` splits the epochs by the stages' fractions with
  largest-remainder rounding, then makes sure every stage has at least one epoch.
- **Mixed precision.** The forward passes run under autocast (``bf16`` on CPU/CUDA, or ``fp16`` with
  a ``GradScaler`` on CUDA); the *losses* are computed outside autocast on float32 copies of the
  outputs, so relational losses never see bf16 distances.
- **Checkpoints** (``checkpoint_dir/last.pt``) are written atomically after every epoch and hold
  everything needed to continue *exactly*: model, method state, optimizer, scheduler, grad
  scaler, the python/numpy/torch RNG states, epoch, stage, history and config. They load with
  ``torch.load(..., weights_only=True)``. A checkpoint is never replaced by a worse one: an
  epoch whose loss terms or weights are NaN/inf raises ``FloatingPointError`` before the write,
  and a truncated or corrupt file raises a clear ``ValueError`` on resume (never a silent
  restart from scratch). The checkpoint it replaces is kept as ``last.previous.pt`` (choice: one
  fallback generation, named in the error message if ``last.pt`` cannot be read; the loop never
  switches to it silently).
- **Exact resume.** Resuming from the checkpoint of epoch ``e`` (e.g. after a crash, even in the
  middle of epoch ``e + 1``) gives bit-identical weights and history to the uninterrupted run on
  the same device: the loop calls ``train_loader.set_epoch(epoch)`` before every epoch and
  restores every RNG, and a stage boundary is replayed in the same order as in a straight run.
- **Stopping on a signal** (:mod:`relkd_tutorial.interrupt`). On SIGINT/SIGTERM the loop finishes
  the current step, writes a *mid-epoch* checkpoint (``step`` = steps done in the epoch, the
  epoch's running sums, the RNG states at the start of the epoch and now) and raises
  :class:`~relkd_tutorial.interrupt.TrainingInterrupted`. Resuming restores the epoch-start RNG
  state, re-creates the epoch's batches, skips the steps already done, restores the later RNG
  state and continues: the final weights are bit-identical to an uninterrupted run whenever the
  loader's batches are a function of the epoch (``set_epoch``) and of the RNG state at the start
  of the epoch - :class:`~relkd_tutorial.data.TensorLoader` and ``DataLoader`` s qualify; a
  main-process transform drawing from the global RNG *between* batches while the model draws
  too (dropout) does not.
- **Several processes** (:mod:`relkd_tutorial.distributed`). Under ``torchrun`` the student is
  wrapped in DDP, every step's :class:`StepInputs` are all-gathered so that relational losses see
  the global batch, the method's parameters and buffers are broadcast from rank 0 and its
  gradients averaged, and only rank 0 writes checkpoints, CSV files and progress bars.
- **Unlabelled samples** (label ``-1``) are skipped by the training accuracy (and by
  :func:`~relkd_tutorial.methods.supervised_cross_entropy`).

The distributed seams: the student's forward is :func:`student_forward` (the student is wrapped
in DDP, not the teacher or the method), and :func:`make_step_inputs` is the one place a
``StepInputs`` is built (:func:`~relkd_tutorial.distributed.gather_step_inputs` follows it).
"""

from __future__ import annotations

import csv
import math
import os
import random
import shutil
import signal
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data import Batch
from .distributed import (
    all_gather_objects,
    any_rank,
    average_gradients,
    broadcast_module_state,
    check_sharded_loader,
    gather_step_inputs,
    get_rank,
    get_world_size,
    loader_world_size,
    sum_over_ranks,
    wrap_student,
)
from .distributed import barrier as _barrier
from .interrupt import StopSignals, TrainingInterrupted
from .methods import Method, StepInputs
from .teacher import TeacherCache, as_batch, split_outputs, teacher_outputs

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "relkd_tutorial.checkpoint/1"
CHECKPOINT_KEYS = (
    "format", "epoch", "stage", "model", "method", "optimizer", "scheduler", "scaler", "rng",
    "history", "config",
)  # fmt: skip
RESERVED_KEYS = ("epoch", "stage", "lr", "train_acc", "eval_loss", "eval_acc", "seconds")

# Config fields that may differ between a run and its resumption without changing the result.
_HARMLESS_ON_RESUME = {
    "resume", "progress", "checkpoint_dir", "history_csv", "log_every", "device", "handle_signals",
}  # fmt: skip


@dataclass
class TrainConfig:
    """Everything the loop needs besides the models, the method and the data.

    Attributes:
        epochs: total number of epochs (split among a method's stages).
        optimizer: ``"sgd"`` (momentum, optional Nesterov) or ``"adamw"``.
        lr: base learning rate of every stage.
        momentum: SGD momentum.
        nesterov: SGD with Nesterov momentum.
        weight_decay: L2 weight decay (SGD) / decoupled weight decay (AdamW), applied to every
            trainable parameter, BN included (as in the CIFAR benchmark recipe).
        schedule: ``"constant"``, ``"step"`` (times ``gamma`` at each milestone) or ``"cosine"``;
            see :func:`lr_factor`.
        milestones: for ``"step"``: *fractions* of each stage's epochs after which the rate is
            multiplied by ``gamma`` (default: the CIFAR recipe's 150/180/210 of 240 epochs).
        gamma: step-schedule decay factor.
        warmup_epochs: linear warm-up over the first epochs of each stage (0 = none).
        grad_clip: clip the global gradient norm of the trainable parameters (``None`` = off).
        device: ``"auto"`` (cuda, then mps, then cpu), or any ``torch.device`` string.
        amp: ``"off"``, ``"bf16"`` (CPU, CUDA) or ``"fp16"`` (CUDA only, with a GradScaler).
        channels_last: use the ``channels_last`` memory format for the networks and images
            (about 25% faster CNN training on a modern CPU; also good on GPUs with AMP).
        compile: run the student's forward through ``torch.compile``.
        seed: seeds python, numpy and torch at the start (``None`` = leave the RNGs alone).
            Model *initialisation* is seeded by the caller (``build_model(..., seed=...)``).
        checkpoint_dir: where ``last.pt`` is written after every epoch (``None`` = no checkpoint).
        resume: ``True`` continues from ``checkpoint_dir/last.pt`` if it exists (else starts
            fresh); a path continues from that file (which must exist); ``False`` starts fresh.
        history_csv: write the per-epoch history to this CSV file after every epoch.
        progress: show ``tqdm`` progress bars (always quiet when the ``CI`` env var is set).
        log_every: refresh the progress bar's running loss terms every this many steps (each
            refresh synchronises with the device).
        extra: free-form notes saved with the checkpoint (e.g. the data set and method name);
            plain values only (str, int, float, bool, None and lists/tuples/dicts of them), so
            the checkpoint stays loadable with ``weights_only=True``.
        handle_signals: on SIGINT/SIGTERM finish the step, write a mid-epoch checkpoint and raise
            :class:`~relkd_tutorial.interrupt.TrainingInterrupted` (main thread only; see
            :mod:`relkd_tutorial.interrupt`). ``False`` leaves the signals alone.
        sync_batchnorm: under ``torchrun``, convert the student's BatchNorm layers to
            ``SyncBatchNorm`` (statistics of the global batch; CUDA only). Ignored in one process.

    Paths (``checkpoint_dir``, ``history_csv``, ``resume``) may be ``str`` or ``os.PathLike``;
    they are stored as ``str``.
    """

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.625, 0.75, 0.875)
    gamma: float = 0.1
    warmup_epochs: int = 0
    grad_clip: float | None = None
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    seed: int | None = 0
    checkpoint_dir: str | None = None
    resume: bool | str = False
    history_csv: str | None = None
    progress: bool = True
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with checkpoints
    handle_signals: bool = True
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        def choose(name: str, allowed: Sequence[str]) -> None:
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}"
                )

        # Paths as str: a PosixPath in the saved config would break weights_only loading.
        for name in ("checkpoint_dir", "history_csv"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.resume, os.PathLike):
            self.resume = os.fspath(self.resume)
        if not isinstance(self.resume, (bool, str)):
            raise TypeError(f"resume must be a bool or a checkpoint path, got {self.resume!r}")
        _check_plain("extra", self.extra)
        choose("optimizer", ("sgd", "adamw"))
        choose("schedule", ("constant", "step", "cosine"))
        choose("amp", ("off", "bf16", "fp16"))
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("nesterov=True needs optimizer='sgd' with momentum > 0")
        self.milestones = tuple(float(m) for m in self.milestones)
        if any(not (0 < m < 1) for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise ValueError(
                f"milestones are increasing fractions of a stage's epochs in (0, 1), got "
                f"{self.milestones}"
            )
        if not (0 < self.gamma <= 1):
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise ValueError(f"grad_clip must be None or positive, got {self.grad_clip}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


def _check_plain(name: str, value: Any) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(f"{name}[{i}]", item)
        return
    if isinstance(value, dict):
        for k, item in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{name} keys must be str or int, got {k!r}")
            _check_plain(f"{name}[{k!r}]", item)
        return
    raise TypeError(
        f"{name} must hold plain values (str, int, float, bool, None, lists, tuples, dicts) so "
        f"checkpoints load with weights_only=True; got {type(value).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Device, seeds, RNG state
# --------------------------------------------------------------------------------------------


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, else mps if available, else cpu; otherwise as given."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return device


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building a model or a method with a learnable head) under ``seed``.

    The global torch RNG is forked: the block sees ``torch.manual_seed(seed)``, and the state
    outside the block is left as it was. Use it so initialisation does not depend on what ran
    before::

        with seeded(0):
            method = build_method("rrd", ...)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain Python values (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (
            str(kind),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            f"amp='fp16' needs a CUDA device (fp16 training needs a GradScaler and fp16 kernels), "
            f"got {device}; use amp='bf16' on {device.type}"
        )
    return torch.float16 if amp == "fp16" else torch.bfloat16


def _progress_enabled(progress: bool) -> bool:
    return bool(progress) and os.environ.get("CI", "").strip().lower() in ("", "0", "false")


# --------------------------------------------------------------------------------------------
# Stages, optimizer, schedule
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePlan:
    """A stage and its epochs ``[first, first + epochs)`` (0-based, counted over the whole run)."""

    name: str
    first: int
    epochs: int

    @property
    def end(self) -> int:
        return self.first + self.epochs


def stage_plan(stages: Sequence[Any], epochs: int) -> list[StagePlan]:
    """Split ``epochs`` among ``stages`` (objects with ``name`` and ``fraction``).

    Rounding (choice): each stage's ideal share ``epochs * fraction / sum(fractions)`` is rounded
    down, the epochs left over go one by one to the largest remainders (ties: the earlier stage),
    and a stage left with 0 epochs takes one from the stage that has most. So the counts add up to
    ``epochs`` and every stage gets at least one; e.g. ``(0.3, 0.7)`` gives 3/7 of 10 and 1/2 of 3.

    Raises:
        ValueError: fewer epochs than stages, or a non-positive fraction.
    """
    if not stages:
        raise ValueError("a method must have at least one stage")
    fractions = [float(s.fraction) for s in stages]
    if any(not (f > 0) for f in fractions):
        raise ValueError(f"stage fractions must be positive, got {fractions}")
    if epochs < len(stages):
        raise ValueError(
            f"{epochs} epochs cannot be split among {len(stages)} stages "
            f"{[s.name for s in stages]}: every stage needs at least one epoch"
        )
    ideal = [epochs * f / sum(fractions) for f in fractions]
    counts = [math.floor(x) for x in ideal]
    by_remainder = sorted(range(len(stages)), key=lambda i: (-(ideal[i] - counts[i]), i))
    for i in by_remainder[: epochs - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        if counts[i] == 0:
            counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
            counts[i] = 1
    plan, first = [], 0
    for stage, n in zip(stages, counts, strict=True):
        plan.append(StagePlan(stage.name, first, n))
        first += n
    return plan


def lr_factor(config: TrainConfig, epoch: int, stage_epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch`` of a stage of ``stage_epochs`` epochs.

    - constant: ``1``;
    - step: ``gamma ** #{m in milestones : epoch / stage_epochs >= m}`` (with the default
      milestones and 240 epochs: x0.1 from epoch 150, 180 and 210, as in the CIFAR recipe);
    - cosine: ``(1 + cos(pi * epoch / stage_epochs)) / 2``, from 1 down to just above 0;
    - times ``min(1, (epoch + 1) / (warmup_epochs + 1))``, a linear warm-up (choice).
    """
    if config.schedule == "constant":
        factor = 1.0
    elif config.schedule == "step":
        factor = config.gamma ** sum(epoch >= m * stage_epochs for m in config.milestones)
    else:
        factor = 0.5 * (1.0 + math.cos(math.pi * epoch / stage_epochs))
    return factor * min(1.0, (epoch + 1) / (config.warmup_epochs + 1))


def trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    """The parameters that require grad, each once (a method may hold a reference to the student)."""
    seen: set[int] = set()
    params = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov, weight decay) or AdamW over ``params``."""
    if not params:
        raise ValueError(
            "nothing to train: no parameter of the student or the method requires grad"
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, stage_epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` over :func:`lr_factor`, stepped once per epoch."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(config, epoch, stage_epochs)
    )


# --------------------------------------------------------------------------------------------
# One step: the student's forward and the method's inputs
# --------------------------------------------------------------------------------------------


def student_forward(
    model: nn.Module,
    x: Tensor,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """The student's ``(features (B, D), logits (B, C))``: the one place the student runs."""
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(
        device_type=x.device.type,
        dtype=autocast_dtype or torch.bfloat16,
        enabled=autocast_dtype is not None,
    ):
        return split_outputs(model(x), "student")


def make_step_inputs(
    features: Tensor,
    logits: Tensor,
    batch: Batch,
    teacher_features: Tensor | None = None,
    teacher_logits: Tensor | None = None,
) -> StepInputs:
    """Everything a method sees at one step.

    The network outputs are cast to float32 if they are narrower (bf16/fp16 under autocast);
    float64 outputs stay float64.
    """
    return StepInputs(
        student_features=_at_least_float32(features),  # (B, D_S)
        student_logits=_at_least_float32(logits),  # (B, C_S)
        labels=batch.y,  # (B,)
        teacher_features=teacher_features,  # (B, D_T) or None
        teacher_logits=teacher_logits,  # (B, C_T) or None
        index=batch.index,  # (B,) or None
    )


def _at_least_float32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[object],
    device: str | torch.device | None = None,
    *,
    amp: str = "off",
    channels_last: bool = False,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over the labelled samples of ``loader``.

    Runs in eval mode (the model's previous mode is restored). Returns ``{"acc", "loss", "n",
    "labelled"}``; ``acc`` and ``loss`` are NaN if no sample is labelled.
    """
    device = _first_device(model) if device is None else resolve_device(device)
    dtype = _autocast_dtype(amp, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    labelled = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    try:
        for item in loader:
            batch = as_batch(item, device)
            _, logits = student_forward(
                model, batch.x, channels_last=channels_last, autocast_dtype=dtype
            )
            keep = batch.y >= 0  # (B,) labelled samples
            logits, y = logits.float()[keep], batch.y[keep]  # (L, C), (L,)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(dim=1) == y).sum()
            labelled += keep.sum()
            n += batch.y.shape[0]
    finally:
        model.train(was_training)
    count = int(labelled)
    nan = float("nan")
    return {
        "acc": int(correct) / count if count else nan,
        "loss": float(loss_sum) / count if count else nan,
        "n": n,
        "labelled": count,
    }


def _first_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Checkpoints and history files
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then ``os.replace`` it onto ``path`` (same directory, so atomic).

    If writing fails half-way, the temporary file is removed and ``path`` is untouched.
    """
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


def _keep_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link where the file system allows)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically; the file it replaces becomes the fallback.

    The new file is written and synced under a temporary name first; then the current ``path``
    (if any) is kept as :func:`previous_checkpoint` and the new file renamed onto ``path``. At
    every moment ``path`` holds a complete checkpoint: a crash mid-write leaves the old one.
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        if path.is_file():
            _keep_copy(path, previous_checkpoint(path))

    _atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (with ``weights_only=True``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated, corrupt or not a relkd_tutorial checkpoint;
            the message names the file. (``fit`` also refuses a checkpoint that lacks an entry
            it needs to continue.)
    """
    path = Path(path)
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
        raise ValueError(
            f"checkpoint {path} is {kind} and cannot be loaded ({type(err).__name__}: "
            f"{_first_words(err)})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a relkd_tutorial training checkpoint ({CHECKPOINT_FORMAT})"
        )
    return state


def _first_words(err: Exception) -> str:
    """The informative part of a ``torch.load`` error (its unpickler message, if any)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else ""


def _check_training_state(state: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint that lacks an entry :func:`fit` needs to continue."""
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if int(state.get("step", 0)) > 0:
        missing += [k for k in ("partial", "epoch_rng") if k not in state]
    if missing:
        raise ValueError(f"checkpoint {path} is damaged: it lacks the entries {missing}")


def write_history_csv(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write the per-epoch records as CSV (columns: the union of keys, in first-seen order)."""
    columns: list[str] = []
    for record in history:
        columns += [k for k in record if k not in columns]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(history)

    _atomic_write(Path(path), write)


def read_history_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a history CSV back: numbers as int/float, empty cells dropped."""
    records = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            record: dict[str, Any] = {}
            for k, v in row.items():
                if v == "":
                    continue
                try:
                    record[k] = int(v)
                except ValueError:
                    try:
                        record[k] = float(v)
                    except ValueError:
                        record[k] = v
            records.append(record)
    return records


# --------------------------------------------------------------------------------------------
# Setup pass (methods with needs_setup)
# --------------------------------------------------------------------------------------------


def _run_setup(
    method: Method,
    teacher: nn.Module | TeacherCache | None,
    setup_loader: Iterable[object] | None,
    device: torch.device,
    channels_last: bool,
    autocast_dtype: torch.dtype | None,
) -> None:
    """Give ``method.setup`` the teacher's outputs over the whole un-augmented training set."""
    name = type(method).__name__
    if teacher is None:
        raise ValueError(f"{name} needs a setup pass of the teacher, but no teacher was given")
    if setup_loader is not None:
        cache = TeacherCache.build(
            teacher,
            setup_loader,
            device,
            channels_last=channels_last,
            autocast_dtype=autocast_dtype,
            storage_device=device,
        )
    elif isinstance(teacher, TeacherCache):
        cache = teacher  # built by one pass over the un-augmented training set
    else:
        raise ValueError(
            f"{name} needs the teacher's outputs over the whole un-augmented training set before "
            "training: pass setup_loader=<the training set without augmentation, yielding "
            "Batch or (x, y, index)>, or teacher=TeacherCache.build(teacher, that_loader)"
        )
    method.setup(cache.setup_data())


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def fit(
    student: nn.Module,
    method: Method,
    train_loader: Iterable[object],
    config: TrainConfig | None = None,
    *,
    teacher: nn.Module | TeacherCache | None = None,
    eval_loader: Iterable[object] | None = None,
    setup_loader: Iterable[object] | None = None,
) -> list[dict[str, Any]]:
    """Train ``student`` with ``method``; return the per-epoch history.

    Args:
        student: returns ``(features (B, D), logits (B, C))``; trained in place, moved to the
            device.
        method: any :class:`~relkd_tutorial.methods.Method` (``CrossEntropy`` trains a teacher).
        train_loader: an iterable of :class:`~relkd_tutorial.data.Batch` or ``(x, y[, index])``
            tuples, re-iterated every epoch. Before each epoch the loop calls
            ``train_loader.set_epoch(epoch)`` (0-based), or ``train_loader.sampler.set_epoch``
            (a ``DistributedSampler``), if there is one: that is what makes a resumed
            :class:`~relkd_tutorial.data.TensorLoader` replay exactly the batches of the
            uninterrupted run, even if the same loader object was half-way through an epoch.
            Under ``torchrun`` it must be sharded over the processes (``TensorLoader(...,
            rank=get_rank(), world_size=get_world_size(), drop_last=True)`` or a
            ``DistributedSampler``); ``batch_size`` is then the global batch.
        config: :class:`TrainConfig` (default: ``TrainConfig()``).
        teacher: an ``nn.Module`` run live in eval mode, or a :class:`TeacherCache` looked up by
            ``Batch.index``; required if ``method.needs_teacher`` or ``method.needs_setup``. A
            cache holds the outputs for un-augmented images: a warning is raised if
            ``train_loader.augments`` is true (as for an augmenting ``TensorLoader``).
        eval_loader: evaluated after every epoch (accuracy and cross-entropy of the student);
            under ``torchrun`` either unsharded (every rank evaluates everything) or sharded (the
            ranks' counts are summed).
        setup_loader: the un-augmented training set, for ``method.needs_setup`` (optional if
            ``teacher`` is a cache, which already holds that pass). Under ``torchrun`` every
            rank makes the whole pass: do not shard it.

    Returns:
        One record per epoch: ``epoch`` (1-based), ``stage``, ``lr``, the epoch mean of every
        loss term the method returned (``loss`` first), ``train_acc`` (over labelled samples;
        NaN if none), ``eval_loss``/``eval_acc`` (if ``eval_loader``), ``seconds``. On resume
        the records of the earlier epochs come from the checkpoint.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM arrived (with ``config.handle_signals``); the current
            step was finished and, with a ``checkpoint_dir``, a mid-epoch checkpoint written.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(method, Method):
        raise TypeError(
            f"method must be a relkd_tutorial.methods.Method, got {type(method).__name__}"
        )
    if (method.needs_teacher or method.needs_setup) and teacher is None:
        raise ValueError(
            f"{type(method).__name__} needs a teacher: pass teacher=<module or TeacherCache>"
        )

    device = resolve_device(config.device)
    world, rank = get_world_size(), get_rank()
    if world > 1:
        check_sharded_loader(train_loader)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    dtype = _autocast_dtype(config.amp, device)
    ckpt_path = _checkpoint_path(config)
    resume_state = _resume_state(config, ckpt_path)

    if config.seed is not None:
        # Each rank its own stream (dropout masks of different samples stay independent); data
        # order and augmentation come from the loader's (seed, epoch), the same on every rank.
        seed_everything(config.seed + rank)
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    student.to(device=device, memory_format=memory_format)
    method.to(device)
    if isinstance(teacher, nn.Module):
        teacher.to(device=device, memory_format=memory_format).eval()
        broadcast_module_state(teacher)  # one frozen teacher on every rank
    elif isinstance(teacher, TeacherCache):
        teacher = teacher.to(device)
        if method.needs_teacher and getattr(train_loader, "augments", False):
            warnings.warn(
                "the teacher's outputs come from a TeacherCache (one pass over the un-augmented "
                "images) but train_loader augments its batches, so the student and the teacher "
                "see different images; pass the teacher module to run it live on each batch, or "
                "a loader with augment=False",
                stacklevel=2,
            )
    forward_model: nn.Module = student
    if world > 1:  # the checkpoint keeps saving `student`, the unwrapped module
        forward_model = wrap_student(student, device, sync_batchnorm=config.sync_batchnorm)
    if config.compile:
        forward_model = torch.compile(forward_model)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")

    if method.needs_setup:
        if world > 1 and (loader_world_size(setup_loader) or 1) > 1:
            raise ValueError(
                "setup_loader must not be sharded: every rank makes the whole setup pass over "
                "the un-augmented training set"
            )
        _run_setup(method, teacher, setup_loader, device, config.channels_last, dtype)

    history: list[dict[str, Any]] = []
    start = 0
    progress: _EpochProgress | None = None  # a mid-epoch checkpoint's running sums
    plan = stage_plan(method.stages(), config.epochs)
    show = rank == 0 and _progress_enabled(config.progress)
    with StopSignals(config.handle_signals, announce=rank == 0) as stop:
        for stage in plan:
            if resume_state is not None and stage.end <= resume_state["epoch"]:
                continue  # finished before the checkpoint
            # The straight run calls set_stage at the stage's first epoch, with the RNGs as the
            # previous epoch left them, then builds the stage's optimizer. A resumed run replays
            # that order exactly: if it resumes mid-stage (or mid-epoch), set_stage comes first
            # (the checkpoint already holds its effect on tensors; this restores any plain
            # attributes), then the saved state; at a stage boundary, the saved state (RNGs
            # included) comes first, so a set_stage that draws random numbers (a re-initialised
            # head) draws the same ones.
            resumed_step = 0 if resume_state is None else int(resume_state.get("step", 0))
            mid_stage = resume_state is not None and (
                resume_state["epoch"] > stage.first or resumed_step > 0
            )
            if mid_stage:
                method.set_stage(stage.name)
            if resume_state is not None:
                start = resume_state["epoch"]
                student.load_state_dict(resume_state["model"])
                method.load_state_dict(resume_state["method"])
                scaler.load_state_dict(resume_state["scaler"])
                set_rng_state(_rank_state(resume_state, "rng", rank, world))
                history = list(resume_state["history"])
                if resumed_step:
                    progress = _EpochProgress.from_checkpoint(resume_state, rank, world, device)
            if not mid_stage:
                method.set_stage(stage.name)
            broadcast_module_state(method)  # e.g. a random frozen head, a queue's random start
            optimizer = build_optimizer(trainable_parameters(student, method), config)
            scheduler = build_scheduler(optimizer, config, stage.epochs)
            if mid_stage:  # same stage: continue its optimizer and schedule
                assert resume_state is not None
                optimizer.load_state_dict(resume_state["optimizer"])
                scheduler.load_state_dict(resume_state["scheduler"])
            resume_state = None
            parts = _RunParts(student, method, optimizer, scheduler, scaler, stage.name)
            for epoch in range(max(stage.first, start), stage.end):
                tic = time.perf_counter() - (progress.seconds if progress is not None else 0.0)
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "stage": stage.name,
                    "lr": optimizer.param_groups[0]["lr"],
                }
                means, stopped = _train_one_epoch(
                    forward_model, student, method, teacher, train_loader, optimizer, scaler,
                    config, device, dtype, epoch,
                    desc=f"epoch {epoch + 1}/{config.epochs} [{stage.name}]", show=show,
                    resume=progress, stop=stop if config.handle_signals else None,
                )  # fmt: skip
                progress = None
                if means is None:  # a stop signal: save the epoch so far, then stop
                    assert stopped is not None
                    stopped.seconds = time.perf_counter() - tic
                    _check_finite_state(epoch, student, method)
                    if ckpt_path is not None:
                        _write_checkpoint(ckpt_path, parts, history, config, epoch, stopped)
                        _barrier()  # rank 0's file is complete before any rank exits
                    raise _interrupted(stop.signum, ckpt_path, epoch, stopped.steps)
                record.update(means)
                scheduler.step()
                if eval_loader is not None:
                    result = _evaluate_all_ranks(student, eval_loader, device, config)
                    record["eval_loss"], record["eval_acc"] = result["loss"], result["acc"]
                record["seconds"] = time.perf_counter() - tic
                _check_finite_state(epoch, student, method)  # before anything replaces a file
                history.append(record)
                if show:
                    tqdm.write(_summary(record))
                if ckpt_path is not None:
                    _write_checkpoint(ckpt_path, parts, history, config, epoch + 1)
                if config.history_csv is not None and rank == 0:
                    write_history_csv(history, config.history_csv)
                if config.handle_signals and any_rank(stop.requested, device):
                    _barrier()
                    raise _interrupted(stop.signum, ckpt_path, epoch + 1, 0)

    if resume_state is not None:  # the checkpoint had already finished every epoch
        student.load_state_dict(resume_state["model"])
        method.load_state_dict(resume_state["method"])
        method.set_stage(plan[-1].name)
        history = list(resume_state["history"])
    return history


@dataclass
class _RunParts:
    """Everything with state that a checkpoint saves, besides the history and the config."""

    student: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    stage: str


def _write_checkpoint(
    path: Path,
    parts: _RunParts,
    history: list[dict[str, Any]],
    config: TrainConfig,
    epoch: int,
    progress: _EpochProgress | None = None,
) -> None:
    """Rank 0 writes the state after ``epoch`` epochs (and ``progress.steps`` more steps).

    Every rank must call it: the RNG states of all ranks are gathered (a collective).
    """
    rngs = all_gather_objects(get_rng_state())
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "step": 0 if progress is None else progress.steps,
        "stage": parts.stage,
        "model": parts.student.state_dict(),  # the unwrapped student, never the DDP wrapper
        "method": parts.method.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": rngs[0],
        "history": history,
        "config": asdict(config),
    }
    if len(rngs) > 1:
        state["rng_ranks"] = rngs
    if progress is not None:
        state.update(progress.checkpoint_entries())
    if get_rank() == 0:
        save_checkpoint(path, state)


def _interrupted(
    signum: int | None, ckpt_path: Path | None, epoch: int, step: int
) -> TrainingInterrupted:
    """The exception that ends a run stopped by a signal, with a message that says what next."""
    signum = int(signum) if signum is not None else int(signal.SIGTERM)  # another rank's signal
    name = signal.Signals(signum).name
    where = f"after step {step} of epoch {epoch + 1}" if step else f"after epoch {epoch}"
    if ckpt_path is None:
        saved = "no checkpoint_dir was set, so nothing was saved"
    else:
        saved = (
            f"checkpoint written to {ckpt_path}; run the same command with resume=True "
            "(--resume) to continue exactly where it stopped"
        )
    return TrainingInterrupted(
        f"training stopped by {name} {where}: {saved}",
        signum,
        None if ckpt_path is None else str(ckpt_path),
        epoch,
        step,
    )


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


def _rank_state(state: dict[str, Any], key: str, rank: int, world: int) -> Any:
    """This rank's entry of a per-rank RNG list if the checkpoint has one for this many ranks,
    else the rank-0 entry (a run resumed with a different number of processes)."""
    per_rank = state.get(f"{key}_ranks")
    if world > 1 and per_rank is not None and len(per_rank) == world:
        return per_rank[rank]
    return state[key]


def _evaluate_all_ranks(
    student: nn.Module, loader: Iterable[object], device: torch.device, config: TrainConfig
) -> dict[str, float]:
    """:func:`evaluate`; with a loader sharded over the ranks, the ranks' counts are summed."""
    result = evaluate(student, loader, device, amp=config.amp, channels_last=config.channels_last)
    if get_world_size() == 1 or (loader_world_size(loader) or 1) == 1:
        return result
    count = result["labelled"]
    correct = round(result["acc"] * count) if count else 0
    loss_sum = result["loss"] * count if count else 0.0
    correct, loss_sum, n, count = sum_over_ranks([correct, loss_sum, result["n"], count], device)
    nan = float("nan")
    return {
        "acc": correct / count if count else nan,
        "loss": loss_sum / count if count else nan,
        "n": int(n),
        "labelled": int(count),
    }


def _train_one_epoch(
    forward_model: nn.Module,
    student: nn.Module,
    method: Method,
    teacher: nn.Module | TeacherCache | None,
    loader: Iterable[object],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    epoch: int,
    *,
    desc: str,
    show: bool,
    resume: _EpochProgress | None = None,
    stop: StopSignals | None = None,
) -> tuple[dict[str, float] | None, _EpochProgress | None]:
    """One pass over ``loader``.

    Returns ``(means, None)`` with the epoch means of the loss terms and ``train_acc``, or
    ``(None, progress)`` if ``stop`` was requested (on any rank) after a step. ``resume``
    continues an epoch from a mid-epoch checkpoint: its first ``resume.steps`` batches are
    re-created and skipped.
    """
    world = get_world_size()
    student.train()
    method.train()
    if resume is not None:
        set_rng_state(resume.epoch_rng)  # the loader re-creates this epoch's batches from here
    epoch_rng = get_rng_state() if stop is not None else {}
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    student_ids = {id(p) for p in student.parameters()}
    method_params = [p for p in params if id(p) not in student_ids]  # synced by hand (world > 1)
    sums: dict[str, Tensor] = {}  # running sums of the detached terms, on the device
    counts: dict[str, int] = {}
    correct = torch.zeros((), dtype=torch.long, device=device)
    labelled = torch.zeros((), dtype=torch.long, device=device)
    steps = 0
    batches = iter(loader)
    if resume is not None:
        sums, counts = dict(resume.sums), dict(resume.counts)
        correct, labelled = resume.correct.clone(), resume.labelled.clone()
        for steps in range(1, resume.steps + 1):
            if next(batches, None) is None:
                raise ValueError(
                    f"the checkpoint stopped after step {resume.steps} of epoch {epoch + 1}, but "
                    f"the training loader now yields only {steps - 1} batches in that epoch; "
                    "resume with the same data, batch size and world size"
                )
        assert resume.rng is not None
        set_rng_state(resume.rng)  # as the uninterrupted run was after step `resume.steps`
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    # The bar is advanced by hand and never given the loader: tqdm.auto's class calls iter() on
    # an iterable it wraps, which would start a second pass (a DataLoader's workers, a
    # TensorLoader's epoch counter, a draw from the global RNG) for every epoch.
    skipped = steps
    with tqdm(
        total=total, initial=skipped, desc=desc, disable=not show, leave=False, dynamic_ncols=True
    ) as bar:
        for steps, item in enumerate(batches, start=skipped + 1):
            batch = as_batch(item, device)
            features, logits = student_forward(
                forward_model, batch.x, channels_last=config.channels_last, autocast_dtype=dtype
            )
            t_feat = t_logits = None
            if method.needs_teacher:
                assert teacher is not None
                t_feat, t_logits = teacher_outputs(
                    teacher, batch, channels_last=config.channels_last, autocast_dtype=dtype
                )
            inputs = make_step_inputs(features, logits, batch, t_feat, t_logits)
            if world > 1:
                inputs = gather_step_inputs(inputs)  # the global batch, on every rank
            terms = method.loss_terms(inputs)
            if "loss" not in terms:
                raise KeyError(
                    f"{type(method).__name__}.loss_terms must return a dict with a 'loss' entry"
                )

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["loss"]).backward()  # DDP averages the student's gradients
            if world > 1:
                average_gradients(method_params)  # already global; keeps the ranks identical
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            method.after_step(inputs)

            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
                counts[name] = counts.get(name, 0) + 1
            keep = inputs.labels >= 0  # (B,) labelled samples of the (global) batch
            correct += (inputs.student_logits.detach().argmax(dim=1) == inputs.labels)[keep].sum()
            labelled += keep.sum()
            bar.update(1)
            if show and steps % config.log_every == 0:
                bar.set_postfix({k: f"{float(v) / counts[k]:.4g}" for k, v in sums.items()})
            if stop is not None and any_rank(stop.requested, device):
                return None, _EpochProgress(steps, sums, counts, correct, labelled, epoch_rng)
    if steps == 0:
        raise ValueError("the training loader yielded no batch")

    means = {name: float(total_) / counts[name] for name, total_ in sums.items()}
    clash = set(means) & set(RESERVED_KEYS)
    if clash:
        raise ValueError(f"loss term names {sorted(clash)} clash with history columns; rename them")
    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(
            f"epoch {epoch + 1}: non-finite loss terms {bad}; try a lower lr, grad_clip or amp='off' "
            "(the last good checkpoint was not replaced)"
        )
    count = int(labelled)
    means["train_acc"] = int(correct) / count if count else float("nan")
    return means, None


def _check_finite_state(epoch: int, *modules: nn.Module) -> None:
    """Raise if a parameter or float buffer holds NaN/inf (e.g. a last step with a NaN gradient).

    The epoch's mean loss can be finite while the weights are not (the loss of the last step is
    computed before its update), so the loop checks the weights before writing a checkpoint.
    """
    for module in modules:
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise FloatingPointError(
                    f"epoch {epoch + 1}: {type(module).__name__}.{name} holds NaN or inf after "
                    "the epoch; try a lower lr, grad_clip or amp='off' (the last good checkpoint "
                    "was not replaced)"
                )


def _summary(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']} [{record['stage']}]"]
    for k, v in record.items():
        if k not in ("epoch", "stage") and isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)


def _checkpoint_path(config: TrainConfig) -> Path | None:
    return None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / CHECKPOINT_NAME


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
        if k not in _HARMLESS_ON_RESUME and k in saved and _normal(saved[k]) != _normal(v)
    )  # fmt: skip
    if differ:
        warnings.warn(
            f"resuming from {path} with a different config ({', '.join(differ)}); the run will "
            "not match an uninterrupted one",
            stacklevel=3,
        )
    return state


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value
