"""What a training run is configured with: :class:`TrainConfig` and the device it runs on."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch


@dataclass
class TrainConfig:
    """Everything the loop needs besides the models, the method and the data.

    Attributes:
        epochs: total number of epochs (split among a method's stages).
        optimizer: ``"sgd"`` (momentum, optional ``nesterov``) or ``"adamw"``.
        lr, momentum: the base learning rate of every stage; SGD momentum.
        weight_decay: L2 (SGD) / decoupled (AdamW) weight decay on every trainable parameter, BN
            included (as in the CIFAR benchmark recipe).
        schedule: ``"constant"``, ``"step"`` (times ``gamma`` after each of the ``milestones``,
            *fractions* of a stage; default the CIFAR recipe's 150/180/210 of 240) or ``"cosine"``
            (:func:`~relkd_tutorial.training.schedule.lr_factor`); ``warmup_epochs`` linear warm-up.
        grad_clip: clip the global gradient norm (``None``: off).
        device: ``"auto"`` (cuda, then mps, then cpu) or any ``torch.device`` string.
        amp: ``"off"``, ``"bf16"`` (CPU, CUDA) or ``"fp16"`` (CUDA only, with a GradScaler).
        channels_last: networks and images in ``channels_last`` (faster CNNs on a modern CPU, and on
            GPUs with AMP). compile: the student's forward through ``torch.compile``.
        seed: seeds python, numpy and torch at the start (``None``: leave the RNGs alone); model
            initialisation is seeded by the caller (``build_model(..., seed=...)``).
        checkpoint_dir: where ``last.pt`` is written after every epoch (``None``: nowhere).
        resume: ``True`` continues from ``checkpoint_dir/last.pt`` if it exists; a path from that
            file; ``False`` starts fresh. More ``epochs`` than the checkpoint's run follow the
            schedule of a straight run of the new length (with a warning); fewer, or a moved stage
            boundary, are refused.
        history_csv: the per-epoch history, written after every epoch.
        progress: ``tqdm`` bars (quiet when ``CI`` is set); ``log_every``: steps between the bar's
            loss refreshes (each a device sync).
        extra: free-form notes saved with the checkpoint; plain values only (``weights_only``).
        handle_signals: on SIGINT/SIGTERM finish the step, write a mid-epoch checkpoint and raise
            ``TrainingInterrupted`` (:mod:`relkd_tutorial.training.signals`).
        sync_batchnorm: under ``torchrun``, the student's BatchNorm as ``SyncBatchNorm`` (CUDA only).

    Paths may be ``str`` or ``os.PathLike`` (stored as ``str``); numbers must be finite and of the
    right kind (numpy scalars are stored as Python numbers), switches ``bool`` (the string
    ``"False"`` would be true): anything else is refused with a message naming the field.
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
        # Paths as str: a PosixPath in the saved config would break weights_only loading.
        for name in ("checkpoint_dir", "history_csv", "resume"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if not isinstance(self.resume, (bool, str)):
            raise TypeError(f"resume must be a bool or a checkpoint path, got {self.resume!r}")
        _check_plain("extra", self.extra)
        for name in (f.name for f in fields(self) if f.type == "bool"):  # the switches
            # a string such as "False" (from a command line) would silently mean True
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        # plain Python numbers: a numpy scalar in the saved config would make the checkpoint
        # unloadable with weights_only=True
        for name, (kind, ok, rule) in _NUMBERS.items():
            value = getattr(self, name)
            if value is None and "None" in rule:
                continue
            value = _number(name, value, kind)
            if not ok(value):
                raise ValueError(f"{name} must be {rule}, got {value!r}")
            setattr(self, name, value)
        if self.nesterov and not (self.optimizer == "sgd" and self.momentum > 0):
            raise ValueError("nesterov=True needs optimizer='sgd' with momentum > 0")
        if isinstance(self.milestones, (str, bytes)) or not hasattr(self.milestones, "__iter__"):
            raise TypeError(
                f"milestones must be a sequence of fractions of a stage, e.g. (0.5, 0.75), got "
                f"{self.milestones!r}"
            )
        self.milestones = tuple(_number("milestones", m) for m in self.milestones)
        if any(not (0 < m < 1) for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise ValueError(
                f"milestones are increasing fractions of a stage's epochs in (0, 1), got "
                f"{self.milestones}"
            )
        if not isinstance(self.device, (str, torch.device)):
            raise TypeError(f"device must be a str or torch.device, got {self.device!r}")
        self.device = str(self.device)  # a plain value in the saved config
        for name in ("checkpoint_dir", "history_csv"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be None or a path, got {getattr(self, name)!r}")


_CHOICES = {
    "optimizer": ["sgd", "adamw"], "schedule": ["constant", "step", "cosine"],
    "amp": ["off", "bf16", "fp16"],
}  # fmt: skip
# The number fields: (int or float, the range they must lie in, the range in words); a rule
# naming None lets the field be None.
_NUMBERS: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "epochs": (int, lambda v: v >= 1, "a positive int"),
    "lr": (float, lambda v: v > 0, "positive"),
    "momentum": (float, lambda v: v >= 0, ">= 0"),
    "weight_decay": (float, lambda v: v >= 0, ">= 0"),
    "gamma": (float, lambda v: 0 < v <= 1, "in (0, 1]"),
    "warmup_epochs": (int, lambda v: v >= 0, ">= 0"),
    "grad_clip": (float, lambda v: v > 0, "None or positive"),
    "log_every": (int, lambda v: v >= 1, ">= 1"),
    "seed": (int, lambda v: v >= 0, "None or an int >= 0"),
}


def _number(name: str, value: Any, kind: type = float) -> Any:
    """A finite real number as a Python ``float``, or an int (numpy integers accepted) as a Python
    ``int`` (``kind=int``); NaN, inf, strings, tensors, bools (and floats for an int) refused.
    """
    what, abc = ("an int", numbers.Integral) if kind is int else ("a real number", numbers.Real)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, abc):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return kind(value)


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


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, else mps if available, else cpu; otherwise as given."""
    has_mps = torch.backends.mps.is_available()
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    try:
        device = name if isinstance(name, torch.device) else torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {name!r} is not a torch device ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    if device.type == "mps" and not has_mps:
        raise ValueError(f"device {name!r} requested but MPS is not available; use 'auto' or 'cpu'")
    if device.type == "meta":
        raise ValueError(
            "device 'meta' holds no data, so nothing can be trained or evaluated on it; use "
            "'auto', 'cpu' or 'cuda'"
        )
    return device


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(
            f"amp='fp16' needs a CUDA device (fp16 training needs a GradScaler and fp16 kernels), "
            f"got {device}; use amp='bf16' on {device.type}"
        )
    return torch.float16 if amp == "fp16" else torch.bfloat16
