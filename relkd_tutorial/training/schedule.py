"""Stages, optimizer and learning-rate schedule of a run: ``lr * lr_factor(epoch)``, a pure function
of the epoch within the stage through ``LambdaLR`` stepped once per epoch; each stage of a
multi-stage method gets a fresh optimizer and schedule.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import TrainConfig


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

    Choice: each ideal share ``epochs * fraction / sum(fractions)`` is rounded down, the epochs left
    go one by one to the largest remainders (ties: the earlier stage), and a stage left with 0 takes
    one from the largest; e.g. ``(0.3, 0.7)`` gives 3/7 of 10 and 1/2 of 3. Raises ``ValueError``
    for fewer epochs than stages or a non-positive fraction.
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
    firsts = [0, *itertools.accumulate(counts)]
    return [StagePlan(s.name, f, n) for s, f, n in zip(stages, firsts, counts, strict=False)]


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
    # a tensor hashes by identity: dict.fromkeys keeps each parameter once, in first-seen order
    return list(dict.fromkeys(p for m in modules for p in m.parameters() if p.requires_grad))


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


def restore_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any]) -> None:
    """Load a saved schedule and set every group's rate from *this* run's :func:`lr_factor`,
    ``base_lr * factor(last_epoch)`` (a run resumed with more epochs has another schedule; with an
    unchanged config this is the saved rate bit for bit).
    """
    scheduler.load_state_dict(state)
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports


def check_resume_plan(
    stages: Sequence[Any], config: TrainConfig, state: dict[str, Any] | None
) -> None:
    """Refuse, or announce, a resume whose ``epochs`` differ from the checkpoint's run.

    Choice: it may continue with another number of epochs if the stages trained so far keep their
    place; the remaining epochs get the rates of a straight run of the new length
    (:func:`restore_schedule`), with a warning when the epochs already trained had other rates.
    Raises ``ValueError`` if more epochs were trained than ``config.epochs`` or a passed stage
    boundary would move.
    """
    saved = state.get("config", {}).get("epochs") if state is not None else None
    if state is None or not isinstance(saved, int) or saved == config.epochs:
        return
    done, step = int(state["epoch"]), int(state.get("step", 0))
    where = f"epoch {done}" + (f" and step {step} of epoch {done + 1}" if step else "")
    if done + (step > 0) > config.epochs:
        raise ValueError(
            f"the checkpoint was written after {where} of a {saved}-epoch run, past "
            f"epochs={config.epochs}: resume with epochs >= {done + (step > 0)}, or start afresh "
            "(resume=False)"
        )
    old, new = stage_plan(stages, saved), stage_plan(stages, config.epochs)

    def started(plan: list[StagePlan]) -> list[StagePlan]:
        return [s for s in plan if s.first < done or (s.first == done and step > 0)]

    a, b = started(old), started(new)
    # the same stages started at the same epochs (so each but the last has the same length)
    if [(s.name, s.first) for s in a] != [(s.name, s.first) for s in b]:
        shown = ", ".join
        raise ValueError(
            f"cannot continue the checkpoint ({where} of a {saved}-epoch run) as a "
            f"{config.epochs}-epoch run: the method's stages split {saved} epochs as "
            f"[{shown(f'{s.name}: {s.epochs}' for s in old)}] and {config.epochs} as "
            f"[{shown(f'{s.name}: {s.epochs}' for s in new)}], which moves a stage boundary the "
            f"checkpoint has passed; resume with epochs={saved}, or start afresh (resume=False)"
        )
    rest = (
        f"epochs {done + 1}..{config.epochs} get the learning rates of a straight "
        f"{config.epochs}-epoch run ({config.schedule} schedule over each stage's new length)"
        if done < config.epochs or step
        else "nothing is left to train"
    )
    same_rates = all(
        lr_factor(config, e - x.first, x.epochs) == lr_factor(config, e - y.first, y.epochs)
        for x, y in zip(a, b, strict=True)
        for e in range(x.first, min(done + (step > 0), x.end))
    )
    past = (
        f"the epochs already trained had the same rates, so the run is a straight "
        f"{config.epochs}-epoch run"
        if same_rates
        else f"the epochs already trained followed the {saved}-epoch schedule, so the weights "
        f"will not equal those of a straight {config.epochs}-epoch run"
    )
    warnings.warn(
        f"resuming a {saved}-epoch run as a {config.epochs}-epoch run from {where}: {rest}; {past}",
        stacklevel=4,  # check_resume_plan < _Run.start_run < fit < the caller
    )
