"""The plumbing :func:`~relkd_tutorial.training.fit` calls around its step, kept out of its way.

:class:`_Run` is set up once (:meth:`_Run.start_run`: checks, device, the checkpoint to resume
from, seeds, DDP, ``torch.compile``, the grad scaler, a method's setup pass) and consulted at each
stage (:meth:`~_Run.enter_stage`, :meth:`~_Run.resume_optimizer`: replayed exactly when resuming),
epoch (:meth:`~_Run.epoch_batches`, :meth:`~_Run.end_epoch`) and step (a signal:
:meth:`~_Run.stop_mid_epoch`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..methods import Method
from ..teacher import TeacherCache
from .checkpoint import (
    CHECKPOINT_FORMAT,
    _checkpoint_path,
    _resume_state,
    save_checkpoint,
    write_history_csv,
)
from .config import TrainConfig, _autocast_dtype, resolve_device
from .distributed import (
    all_gather_objects,
    any_rank,
    broadcast_module_state,
    check_sharded_loader,
    get_rank,
    get_world_size,
    loader_world_size,
    wrap_student,
)
from .distributed import barrier as _barrier
from .progress import _EpochProgress, _progress_enabled
from .rng import _rank_state, get_rng_state, seed_everything, set_rng_state
from .schedule import StagePlan, check_resume_plan, restore_schedule, stage_plan
from .signals import StopSignals, TrainingInterrupted, _interrupted
from .steps import _check_finite_state, _run_setup, check_models_have_data


@dataclass
class _Run:
    """One call of ``fit``: its device, processes, precision, checkpoint and stage plan."""

    student: nn.Module
    method: Method
    config: TrainConfig
    teacher: nn.Module | TeacherCache | None
    model: nn.Module  # what runs the student's forward: the student, in DDP, compiled
    device: torch.device
    dtype: torch.dtype | None  # autocast
    scaler: torch.amp.GradScaler
    plan: list[StagePlan]
    ckpt_path: Path | None
    resume_state: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0  # the first epoch this call trains
    world: int = 1
    rank: int = 0
    _mid_stage: bool = False  # the stage being entered continues a checkpoint's
    stage: str = ""  # the stage being trained, its optimizer and schedule (resume_optimizer)
    optimizer: Any = None
    scheduler: Any = None

    @property
    def show(self) -> bool:
        return self.rank == 0 and _progress_enabled(self.config.progress)

    @classmethod
    def start_run(
        cls,
        student: nn.Module,
        method: Method,
        train_loader: Iterable[object],
        config: TrainConfig,
        teacher: nn.Module | TeacherCache | None,
        setup_loader: Iterable[object] | None,
    ) -> _Run:
        """Everything before the first stage (steps 1-4 of ``fit``'s docstring)."""
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
        check_resume_plan(method.stages(), config, resume_state)  # a resume with other epochs
        check_models_have_data(student=student, teacher=teacher, method=method)
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
                    "the teacher's outputs come from a TeacherCache (one pass over the "
                    "un-augmented images) but train_loader augments its batches, so the student "
                    "and the teacher see different images; pass the teacher module to run it live "
                    "on each batch, or a loader with augment=False",
                    stacklevel=3,
                )
        model: nn.Module = student
        if world > 1:  # the checkpoint keeps saving `student`, the unwrapped module
            model = wrap_student(student, device, sync_batchnorm=config.sync_batchnorm)
        if config.compile:
            model = torch.compile(model)
        scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        if method.needs_setup:
            if world > 1 and (loader_world_size(setup_loader) or 1) > 1:
                raise ValueError(
                    "setup_loader must not be sharded: every rank makes the whole setup pass over "
                    "the un-augmented training set"
                )
            _run_setup(method, teacher, setup_loader, device, config.channels_last, dtype)
        plan = stage_plan(method.stages(), config.epochs)
        return cls(student, method, config, teacher, model, device, dtype, scaler, plan,
                   ckpt_path, resume_state, world=world, rank=rank)  # fmt: skip

    def finished_before(self, stage: StagePlan) -> bool:
        """Whether the checkpoint being resumed already finished ``stage``."""
        return self.resume_state is not None and stage.end <= self.resume_state["epoch"]

    def enter_stage(self, stage: StagePlan) -> _EpochProgress | None:
        """``set_stage`` and the checkpoint's state, in the order of a straight run.

        The straight run calls set_stage at the stage's first epoch, with the RNGs as the previous
        epoch left them, then builds the stage's optimizer. A resumed run replays that order
        exactly: if it resumes mid-stage (or mid-epoch), set_stage comes first (the checkpoint
        already holds its effect on tensors; this restores any plain attributes), then the saved
        state; at a stage boundary, the saved state (RNGs included) comes first, so a set_stage
        that draws random numbers (a re-initialised head) draws the same ones. Returns a
        mid-epoch checkpoint's running sums, if any.
        """
        state, progress, self.stage = self.resume_state, None, stage.name
        step = 0 if state is None else int(state.get("step", 0))
        self._mid_stage = state is not None and (state["epoch"] > stage.first or step > 0)
        if self._mid_stage:
            self.method.set_stage(stage.name)
        if state is not None:
            self.start = state["epoch"]
            self.student.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            self.scaler.load_state_dict(state["scaler"])
            set_rng_state(_rank_state(state, "rng", self.rank, self.world))
            self.history = list(state["history"])
            if step:
                progress = _EpochProgress.from_checkpoint(state, self.rank, self.world, self.device)
        if not self._mid_stage:
            self.method.set_stage(stage.name)
        broadcast_module_state(self.method)  # e.g. a random frozen head, a queue's random start
        return progress

    def resume_optimizer(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """The stage's optimizer and schedule, continued when resuming inside the stage."""
        self.optimizer, self.scheduler = optimizer, scheduler
        if self._mid_stage:
            assert self.resume_state is not None
            optimizer.load_state_dict(self.resume_state["optimizer"])
            restore_schedule(scheduler, self.resume_state["scheduler"])
        self.resume_state = None

    def epoch_batches(
        self, loader: Iterable[object], epoch: int, resume: _EpochProgress | None
    ) -> tuple[_EpochProgress, Iterator[object]]:
        """The epoch's running sums and its batches, continuing a mid-epoch checkpoint.

        Before the epoch: ``loader.set_epoch(epoch)`` (or its sampler's). With ``resume``, the RNG
        state of the epoch's start is restored, its first ``resume.steps`` batches re-created and
        skipped, then the RNG state after them restored.
        """
        self.student.train()
        self.method.train()
        if resume is not None:
            set_rng_state(resume.epoch_rng)  # the loader re-creates this epoch's batches from here
        epoch_rng = get_rng_state() if self.config.handle_signals else {}
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        batches = iter(loader)
        if resume is None:
            return _EpochProgress.start(self.device, epoch_rng), batches
        resume.epoch_rng = epoch_rng  # the state just restored (or {} without signal handling)
        for done in range(resume.steps):
            if next(batches, None) is None:
                raise ValueError(
                    f"the checkpoint stopped after step {resume.steps} of epoch {epoch + 1}, but "
                    f"the training loader now yields only {done} batches in that epoch; resume "
                    "with the same data, batch size and world size"
                )
        assert resume.rng is not None
        set_rng_state(resume.rng)  # as the uninterrupted run was after step `resume.steps`
        return resume, batches

    def bar(self, loader: Iterable[object], meter: _EpochProgress, desc: str) -> tqdm:
        """The epoch's progress bar, advanced by hand: tqdm.auto's class calls iter() on an
        iterable it wraps, which would start a second pass (a DataLoader's workers, a
        TensorLoader's epoch counter, a draw from the global RNG)."""
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        return tqdm(total=total, initial=meter.steps, desc=desc, disable=not self.show,
                    leave=False, dynamic_ncols=True)  # fmt: skip

    def stop_requested(self, stop: StopSignals) -> bool:
        """A stop signal on any rank (under ``torchrun``: one collective per step)."""
        return self.config.handle_signals and any_rank(stop.requested, self.device)

    def write_checkpoint(self, epoch: int, progress: _EpochProgress | None = None) -> None:
        """Rank 0 writes the state after ``epoch`` epochs (and ``progress.steps`` more steps) to
        ``ckpt_path``; every rank must call it (the RNG states of all ranks are gathered).
        """
        rngs = all_gather_objects(get_rng_state())
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "step": 0 if progress is None else progress.steps,
            "stage": self.stage,
            "model": self.student.state_dict(),  # the unwrapped student, never the DDP wrapper
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs[0],
            "history": self.history,
            "config": asdict(self.config),
        }
        if len(rngs) > 1:
            state["rng_ranks"] = rngs
        if progress is not None:
            state.update(progress.checkpoint_entries())
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, state)  # type: ignore[arg-type]

    def stop_mid_epoch(
        self, epoch: int, meter: _EpochProgress, tic: float, stop: StopSignals
    ) -> TrainingInterrupted:
        """Save the epoch so far (a mid-epoch checkpoint); the exception that ends the run."""
        meter.seconds = time.perf_counter() - tic
        _check_finite_state(epoch, self.student, self.method)
        if self.ckpt_path is not None:
            self.write_checkpoint(epoch, meter)
            _barrier()  # rank 0's file is complete before any rank exits
        return _interrupted(stop.signum, self.ckpt_path, epoch, meter.steps)

    def end_epoch(
        self,
        record: dict[str, Any],
        epoch: int,
        stop: StopSignals,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Record the epoch, write the checkpoint and the history CSV, call ``on_epoch`` (an
        exception it raises stops the run); stop if a signal came."""
        self.history.append(record)
        if self.show:
            values = [f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float)]
            tqdm.write("  ".join([f"epoch {record['epoch']} [{record['stage']}]", *values]))
        if self.ckpt_path is not None:
            self.write_checkpoint(epoch + 1)
        if self.config.history_csv is not None and self.rank == 0:
            write_history_csv(self.history, self.config.history_csv)
        if on_epoch is not None:
            on_epoch(record)
        if self.stop_requested(stop):
            _barrier()
            raise _interrupted(stop.signum, self.ckpt_path, epoch + 1, 0)

    def finish(self) -> list[dict[str, Any]]:
        """The history; a checkpoint that had finished every epoch is only loaded."""
        if self.resume_state is not None:
            self.student.load_state_dict(self.resume_state["model"])
            self.method.load_state_dict(self.resume_state["method"])
            self.method.set_stage(self.plan[-1].name)
            self.history = list(self.resume_state["history"])
        return self.history
