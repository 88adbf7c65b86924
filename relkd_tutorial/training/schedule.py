"""Stages, optimizer and learning-rate schedule of a run.

- **Schedule per epoch.** The learning rate is ``lr * factor(epoch)`` with a pure function
  :func:`lr_factor` of the epoch within the stage (constant, step or cosine, optional linear
  warm-up), applied through ``LambdaLR`` stepped once per epoch; it does not need the loader's
  length. Each stage of a multi-stage method gets a fresh optimizer and schedule.
- **Stage split.** :func:`stage_plan` splits the epochs by the stages' fractions with
  largest-remainder rounding, then makes sure every stage has at least one epoch.
"""

from __future__ import annotations

import math
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
