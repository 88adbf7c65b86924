"""One training loop for teachers and students; it knows no method by name.

:func:`fit` is the loop a learner reads: stages, epochs, and in each step::

    batch            = as_batch(next(loader))                     # Batch(x, y, index) on device
    features, logits = student_forward(student, batch.x)          # under autocast if amp is on
    t_feat, t_logits = teacher_outputs(teacher, batch)            # only if method.needs_teacher
    inputs           = make_step_inputs(...)                      # StepInputs, float32
    terms            = method.loss_terms(inputs)                  # {"loss": total, name: term}
    terms["loss"].backward(); optimizer.step()                    # (grad scaling, clipping)
    method.after_step(inputs)                                     # e.g. a queue write
    meter.add(terms, inputs)                                      # running sums, on the device

Everything method-specific comes from the method object. **The step never waits on the host**:
the sums live on the device, read at a bar refresh and once per epoch (:mod:`.progress`); the
losses' value checks run on the first step only, the pixels once per epoch. The plumbing (device,
exact resume, signals, processes, files) is in :mod:`.run`; under ``torchrun`` the step's inputs
are all-gathered so relational losses see the global batch (:mod:`.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .._checks import training_checks
from ..methods import Method
from ..teacher import TeacherCache, as_batch, teacher_outputs
from .config import TrainConfig
from .distributed import average_gradients, gather_step_inputs
from .run import _Run
from .schedule import build_optimizer, build_scheduler, trainable_parameters
from .signals import StopSignals
from .steps import _evaluate_all_ranks, check_first_batch, make_step_inputs, student_forward


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

    Stage by stage of ``method.stages()`` a fresh optimizer and schedule; epoch by epoch the steps,
    the evaluation, the record, the checkpoint and the history CSV.

    Args:
        student: returns ``(features (B, D), logits (B, C))``; trained in place on the device.
        method: any :class:`~relkd_tutorial.methods.Method` (``CrossEntropy`` trains a teacher).
        train_loader: yields :class:`~relkd_tutorial.data.Batch` or ``(x, y[, index])``, re-iterated
            every epoch after ``train_loader.set_epoch(epoch)`` (or its ``sampler``'s), which makes
            a resumed :class:`~relkd_tutorial.data.TensorLoader` replay the same batches. Under
            ``torchrun`` sharded (``TensorLoader(..., rank=get_rank(), world_size=get_world_size(),
            drop_last=True)`` or a ``DistributedSampler``); ``batch_size`` is the global batch.
        config: :class:`TrainConfig` (default ``TrainConfig()``).
        teacher: an ``nn.Module`` run live in eval mode, or a :class:`TeacherCache` looked up by
            ``Batch.index``; required if ``method.needs_teacher`` or ``needs_setup``.
        eval_loader: evaluated after every epoch (sharded or not under ``torchrun``).
        setup_loader: the un-augmented training set for ``method.needs_setup`` (optional if
            ``teacher`` is a cache); every rank makes the whole pass.
        on_epoch: called with each saved record (every rank); an exception it raises stops the
            training and propagates (e.g. a tuner pruning a trial).

    Returns:
        One record per epoch: ``epoch`` (1-based), ``stage``, ``lr``, the epoch mean of every loss
        term (``loss`` first), ``train_acc`` (labelled samples; NaN if none), ``eval_loss`` /
        ``eval_acc`` (with ``eval_loader``), ``seconds``; a resumed run's earlier records come from
        the checkpoint.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM (with ``config.handle_signals``), after the current step
            and, with a ``checkpoint_dir``, a mid-epoch checkpoint.
        FloatingPointError: a loss term or a weight is NaN/inf at the end of an epoch (the last
            checkpoint is kept).
    """
    config = TrainConfig() if config is None else config
    run = _Run.start_run(student, method, train_loader, config, teacher, setup_loader)
    signals = StopSignals(config.handle_signals, announce=run.rank == 0)
    with signals as stop, training_checks() as checked:
        for stage in run.plan:
            if run.finished_before(stage):
                continue
            progress = run.enter_stage(stage)  # set_stage; a checkpoint's state when resuming
            optimizer = build_optimizer(trainable_parameters(student, method), config)
            scheduler = build_scheduler(optimizer, config, stage.epochs)
            run.resume_optimizer(optimizer, scheduler)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            student_ids = {id(p) for p in student.parameters()}
            method_params = [p for p in params if id(p) not in student_ids]  # synced by hand
            for epoch in range(max(stage.first, run.start), stage.end):
                tic = time.perf_counter() - (progress.seconds if progress is not None else 0.0)
                lr = optimizer.param_groups[0]["lr"]
                meter, batches = run.epoch_batches(train_loader, epoch, progress)
                progress = None
                desc = f"epoch {epoch + 1}/{config.epochs} [{stage.name}]"
                with run.bar(train_loader, meter, desc) as bar:
                    for i, item in enumerate(batches):
                        batch = as_batch(item, run.device)
                        if i == 0:
                            check_first_batch(batch.x, epoch)  # finite pixels: one read an epoch
                        features, logits = student_forward(
                            run.model, batch.x, channels_last=config.channels_last,
                            autocast_dtype=run.dtype,
                        )  # fmt: skip
                        t_feat = t_logits = None
                        if method.needs_teacher:
                            t_feat, t_logits = teacher_outputs(
                                run.teacher,  # type: ignore[arg-type]
                                batch, channels_last=config.channels_last, autocast_dtype=run.dtype,
                            )  # fmt: skip
                        inputs = make_step_inputs(features, logits, batch, t_feat, t_logits)
                        if run.world > 1:
                            inputs = gather_step_inputs(inputs)  # the global batch, on every rank
                        terms = method.loss_terms(inputs)
                        optimizer.zero_grad(set_to_none=True)
                        run.scaler.scale(_loss(terms, method)).backward()  # DDP averages grads
                        if run.world > 1:
                            average_gradients(method_params)  # already global; keeps ranks equal
                        if config.grad_clip is not None:
                            run.scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                        run.scaler.step(optimizer)
                        run.scaler.update()
                        method.after_step(inputs)
                        meter.add(terms, inputs)  # on the device: no host read
                        checked()  # the first step checked the losses' input values
                        bar.update(1)
                        if run.show and meter.steps % config.log_every == 0:
                            bar.set_postfix(meter.running_means())  # one host read
                        if run.stop_requested(stop):
                            raise run.stop_mid_epoch(epoch, meter, tic, stop)
                record = {"epoch": epoch + 1, "stage": stage.name, "lr": lr}
                record.update(meter.means(epoch, student, method))  # one read; stops on NaN/inf
                scheduler.step()
                if eval_loader is not None:
                    result = _evaluate_all_ranks(student, eval_loader, run.device, config)
                    record["eval_loss"], record["eval_acc"] = result["loss"], result["acc"]
                record["seconds"] = time.perf_counter() - tic
                run.end_epoch(record, epoch, stop, on_epoch)  # checkpoint, CSV, signal
    return run.finish()


def _loss(terms: dict[str, Any], method: Method) -> Any:
    """``terms["loss"]``, or a clear error for a method that forgot it."""
    if "loss" not in terms:
        raise KeyError(f"{type(method).__name__}.loss_terms must return a dict with a 'loss' entry")
    return terms["loss"]
