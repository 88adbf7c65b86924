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

The loop is :func:`fit` (the run: device, resume, stages, epochs, checkpoints) and
:func:`_train_one_epoch` (one pass over the loader). The choices it relies on are documented in the
module that makes them: :mod:`~relkd_tutorial.training.config` (``TrainConfig``, the device),
:mod:`~relkd_tutorial.training.schedule` (stages, optimizer, learning rate),
:mod:`~relkd_tutorial.training.steps` (the forward passes, mixed precision, evaluation),
:mod:`~relkd_tutorial.training.checkpoint` (checkpoints, exact resume),
:mod:`~relkd_tutorial.training.progress` and :mod:`~relkd_tutorial.training.signals` (stopping on
SIGINT/SIGTERM mid-epoch and continuing bit-exactly), :mod:`~relkd_tutorial.training.rng` (seeds,
RNG states) and :mod:`~relkd_tutorial.training.distributed` (several processes).

- **Several processes.** Under ``torchrun`` the student is wrapped in DDP, every step's
  :class:`StepInputs` are all-gathered so that relational losses see the global batch, the
  method's parameters and buffers are broadcast from rank 0 and its gradients averaged, and only
  rank 0 writes checkpoints, CSV files and progress bars.
- **Unlabelled samples** (label ``-1``) are skipped by the training accuracy (and by
  :func:`~relkd_tutorial.methods.supervised_cross_entropy`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..methods import Method
from ..teacher import TeacherCache, as_batch, teacher_outputs
from .checkpoint import (
    _checkpoint_path,
    _resume_state,
    _RunParts,
    _write_checkpoint,
    write_history_csv,
)
from .config import TrainConfig, _autocast_dtype, resolve_device
from .distributed import (
    any_rank,
    average_gradients,
    broadcast_module_state,
    check_sharded_loader,
    gather_step_inputs,
    get_rank,
    get_world_size,
    loader_world_size,
    wrap_student,
)
from .distributed import barrier as _barrier
from .progress import _EpochProgress, _progress_enabled, _summary
from .rng import _rank_state, get_rng_state, seed_everything, set_rng_state
from .schedule import (
    build_optimizer,
    build_scheduler,
    check_resume_plan,
    restore_schedule,
    stage_plan,
    trainable_parameters,
)
from .signals import StopSignals, _interrupted
from .steps import (
    _check_finite_state,
    _evaluate_all_ranks,
    _run_setup,
    check_first_batch,
    check_models_have_data,
    make_step_inputs,
    student_forward,
)

RESERVED_KEYS = ("epoch", "stage", "lr", "train_acc", "eval_loss", "eval_acc", "seconds")


def fit(
    student: nn.Module,
    method: Method,
    train_loader: Iterable[object],
    config: TrainConfig | None = None,
    *,
    teacher: nn.Module | TeacherCache | None = None,
    eval_loader: Iterable[object] | None = None,
    setup_loader: Iterable[object] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``student`` with ``method``; return the per-epoch history.

    Steps (the body follows them in this order):

    1. check the method and the teacher;
    2. choose the device (one per process under ``torchrun``) and read the checkpoint to resume
       from, if any;
    3. seed, and move the student, the method and the teacher to the device (DDP, compile);
    4. the setup pass, for a method with ``needs_setup``;
    5. for every stage of ``method.stages()``: restore the checkpoint's state and call
       ``set_stage`` in the order of a straight run, then build the stage's optimizer and schedule;
    6. for every epoch of the stage: :func:`_train_one_epoch`, step the schedule, evaluate, check
       that the weights are finite, record, write the checkpoint and the history CSV; stop on a
       signal after a step (a mid-epoch checkpoint) or after an epoch;
    7. a run resumed from a checkpoint of its last epoch only loads that state.

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
        on_epoch: called with each epoch's record once it is recorded and saved (on every rank
            under ``torchrun``); an exception it raises stops the training and propagates (e.g.
            a tuner pruning a weak trial, :mod:`relkd_tutorial.bench.tune`).

    Returns:
        One record per epoch: ``epoch`` (1-based), ``stage``, ``lr``, the epoch mean of every
        loss term the method returned (``loss`` first), ``train_acc`` (over labelled samples;
        NaN if none), ``eval_loss``/``eval_acc`` (if ``eval_loader``), ``seconds``. On resume
        the records of the earlier epochs come from the checkpoint.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM arrived (with ``config.handle_signals``); the current
            step was finished and, with a ``checkpoint_dir``, a mid-epoch checkpoint written.
    """
    # 1. the method and the teacher
    config = TrainConfig() if config is None else config
    if not isinstance(method, Method):
        raise TypeError(
            f"method must be a relkd_tutorial.methods.Method, got {type(method).__name__}"
        )
    if (method.needs_teacher or method.needs_setup) and teacher is None:
        raise ValueError(
            f"{type(method).__name__} needs a teacher: pass teacher=<module or TeacherCache>"
        )

    # 2. the device, the checkpoint to resume from
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

    # 3. seeds; the networks and the method on the device
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

    # 4. the setup pass
    if method.needs_setup:
        if world > 1 and (loader_world_size(setup_loader) or 1) > 1:
            raise ValueError(
                "setup_loader must not be sharded: every rank makes the whole setup pass over "
                "the un-augmented training set"
            )
        _run_setup(method, teacher, setup_loader, device, config.channels_last, dtype)

    # 5. stage by stage (resuming: skip what the checkpoint finished, replay the stage's entry)
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
                restore_schedule(scheduler, resume_state["scheduler"])
            resume_state = None
            parts = _RunParts(student, method, optimizer, scheduler, scaler, stage.name)
            # 6. epoch by epoch: train, schedule, evaluate, check, record, save
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
                if on_epoch is not None:
                    on_epoch(record)
                if config.handle_signals and any_rank(stop.requested, device):
                    _barrier()
                    raise _interrupted(stop.signum, ckpt_path, epoch + 1, 0)

    # 7. nothing was left to train
    if resume_state is not None:  # the checkpoint had already finished every epoch
        student.load_state_dict(resume_state["model"])
        method.load_state_dict(resume_state["method"])
        method.set_stage(plan[-1].name)
        history = list(resume_state["history"])
    return history


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
            if steps == skipped + 1:
                check_first_batch(batch.x, epoch)
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
    if not count and not method.needs_teacher:
        warnings.warn(
            f"epoch {epoch + 1}: no training sample was labelled (every label is -1), so "
            f"{type(method).__name__} had nothing to learn from",
            stacklevel=3,
        )
    return means, None
