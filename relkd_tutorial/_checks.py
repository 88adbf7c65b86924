"""Input checks shared by every loss and method: a wrong shape, an integer tensor, a NaN or a batch
too small for a relation fails with a message naming the argument, never a silent NaN.

Type and shape checks are free; *value* checks (NaN/Inf, label and index ranges) read a result
back from the device, a host sync. They are on by default; :func:`set_input_checks` /
:func:`input_checks` switch them off. The training loop runs them on a run's first step only
(:func:`training_checks`; ``set_input_checks(True, every_step=True)``: every step). The losses'
dtype (:func:`loss_dtype`) and their module form (:class:`LossModule`) are here too.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

_FINITE_CHECKS = True
_EVERY_STEP = False


def set_input_checks(enabled: bool, *, every_step: bool = False) -> None:
    """Turn the value checks of loss inputs (NaN/Inf, label and index ranges) on (default) or off.

    ``every_step=True`` (a debugging mode) makes the training loop keep them on for every step;
    by default it checks its first step's inputs only.
    """
    global _FINITE_CHECKS, _EVERY_STEP
    _FINITE_CHECKS, _EVERY_STEP = bool(enabled), bool(every_step)


def input_checks_enabled() -> bool:
    """Whether the value checks of loss inputs (NaN/Inf, label and index ranges) are on."""
    return _FINITE_CHECKS


@contextmanager
def input_checks(enabled: bool, *, every_step: bool = False) -> Iterator[None]:
    """Context manager form of :func:`set_input_checks`."""
    previous = _FINITE_CHECKS, _EVERY_STEP
    set_input_checks(enabled, every_step=every_step)
    try:
        yield
    finally:
        set_input_checks(previous[0], every_step=previous[1])


@contextmanager
def training_checks() -> Iterator[Callable[[], None]]:
    """What the training loop enters: the checks as they are for its first step; the function it
    gives, called after a step, turns them off unless ``every_step``. Restored at the end."""
    enabled, every_step = _FINITE_CHECKS, _EVERY_STEP
    with input_checks(enabled, every_step=every_step):
        yield lambda: set_input_checks(enabled and every_step, every_step=every_step)


def check_float_tensor(name: str, x: object, ndim: int, shape_doc: str) -> Tensor:
    """``x`` as a floating tensor of rank ``ndim`` (``shape_doc`` in words, e.g. ``"(B, D)"``, for
    the message) with finite entries: ``TypeError`` (not a tensor, not floating) or ``ValueError``
    (rank, an empty dimension, a NaN/Inf: a value check).
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}; "
            f"convert with {name}.float()"
        )
    if x.dim() != ndim:
        raise ValueError(
            f"{name} must have shape {shape_doc}, got a tensor of shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(
            f"{name} must not be empty: expected shape {shape_doc}, got {tuple(x.shape)}"
        )
    if _FINITE_CHECKS and not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


#: What :func:`check_same` compares, per tensor.
_ASPECTS: dict[str, Callable[[Tensor], object]] = {
    "batch size": lambda t: t.shape[0], "shape": lambda t: tuple(t.shape),
    "embedding width": lambda t: t.shape[-1], "device": lambda t: t.device,
    "number of classes C": lambda t: t.shape[1],
}  # fmt: skip


def check_same(what: str, name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Check that two tensors have the same ``what``: ``"batch size"`` (first dimension),
    ``"shape"``, ``"embedding width"`` (last dimension), ``"device"`` or ``"number of classes
    C"`` (second dimension)."""
    get = _ASPECTS[what]
    if get(a) != get(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same {what}, got {get(a)} and {get(b)} "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)})"
        )


def check_min_batch(name: str, x: Tensor, minimum: int, relation: str) -> None:
    """Check that a batch holds at least ``minimum`` samples for a relation to exist."""
    if x.shape[0] < minimum:
        raise ValueError(
            f"{name} has batch size {x.shape[0]}, but {relation} needs at least {minimum} samples"
            " (if it is the last, smaller batch of an epoch, build the loader with "
            "drop_last=True)"
        )


def check_labels(name: str, y: object, batch: int, num_classes: int | None = None) -> Tensor:
    """Check a label vector: integer dtype, shape ``(B,)``, values in ``[-1, num_classes)``.

    ``-1`` marks an unlabelled sample (the transfer setting), and is always allowed. The range is a
    value check (two host reads; see :func:`set_input_checks`).
    """
    if not isinstance(y, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape ({batch},), got {type(y).__name__}"
        )
    if not is_integer(y):
        raise TypeError(f"{name} must have an integer dtype (int64), got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(y.shape)}")
    if not _FINITE_CHECKS or not y.numel():  # the range is a value check
        return y
    if int(y.min()) < -1:
        raise ValueError(f"{name} has a label below -1 (-1 marks an unlabelled sample)")
    if num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(
            f"{name} has label {int(y.max())} but there are only {num_classes} classes"
        )
    return y


def is_integer(t: Tensor) -> bool:
    """Whether ``t`` has an integer dtype (not floating, bool or complex)."""
    return not (t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex())


def _check_real(name: str, value: float, what: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a float if it is a finite real number (not a bool) for which ``ok`` holds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {what}, got {type(value).__name__}")
    if not ok(value) or value == float("inf"):  # ok(NaN) is False
        raise ValueError(f"{name} must be a finite {what}, got {value}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Check that a hyperparameter (temperature, margin, weight scale) is a finite positive number."""
    return _check_real(name, value, "positive number", lambda v: v > 0)


def check_logit_pair(student: object, teacher: object) -> tuple[Tensor, Tensor]:
    """Check a student/teacher logit pair: both floating ``(B, C)``, same shape, same device.

    The dtypes may differ (an fp32 teacher cache beside a bf16 student); the losses compute in a
    common precision (see :func:`loss_dtype`).
    """
    s = check_float_tensor("student_logits", student, 2, "(B, C)")
    t = check_float_tensor("teacher_logits", teacher, 2, "(B, C)")
    for what in ("device", "batch size", "number of classes C"):
        check_same(what, "student_logits", s, "teacher_logits", t)
    return s, t


def check_feature_pair(
    student: object, teacher: object, minimum: int = 1, relation: str = ""
) -> tuple[Tensor, Tensor]:
    """Check a student/teacher embedding pair: ``(B, D_S)`` and ``(B, D_T)``, same B and device.

    The widths may differ (relations compare samples, not coordinates). ``minimum`` is the batch
    size the ``relation`` needs (2 for distances, 3 for angles).
    """
    s = check_float_tensor("student_features", student, 2, "(B, D_S)")
    t = check_float_tensor("teacher_features", teacher, 2, "(B, D_T)")
    for what in ("device", "batch size"):
        check_same(what, "student_features", s, "teacher_features", t)
    check_min_batch("student_features", s, minimum, relation)
    return s, t


def check_optional_count(name: str, value: object) -> int | None:
    """Check an optional positive integer such as ``top_k`` (``None`` means "all")."""
    return None if value is None else check_count(name, value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Check that a string option is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return str(value)


def check_nonnegative(name: str, value: float) -> float:
    """Check that a loss weight is a finite number >= 0."""
    return _check_real(name, value, "number >= 0", lambda v: v >= 0)


def loss_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a loss computes in: the widest input dtype, never below float32 (temperatures such
    as ``1/0.04`` amplify bf16's ~3 significant digits into visible errors).
    """
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


@contextmanager
def full_precision(*tensors: Tensor) -> Iterator[torch.dtype]:
    """Autocast off on the tensors' device; yields their :func:`loss_dtype`, the dtype the loss
    math runs in (not bf16)."""
    with torch.autocast(device_type=tensors[0].device.type, enabled=False):
        yield loss_dtype(*tensors)


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """Check that a count is an int ``>= minimum``: 1 (a batch size, samples per class, a world
    size: a positive int) or 0 (a seed, an epoch, a padding: a non-negative int)."""
    kind = "a positive int" if minimum else "a non-negative int"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {kind}, got {value}")
    return int(value)


class LossModule(nn.Module):
    """Module form of a loss ``fn(student_logits, teacher_logits, **options)``: a subclass sets
    ``fn`` and ``checks``, one checker per option. The constructor takes ``fn``'s options (by
    position or name, with ``fn``'s defaults) and checks each when the module is built."""

    fn: Callable[..., Tensor]
    checks: dict[str, Callable[[str, Any], Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The subclass's signature is ``fn``'s options (``help()``, IDEs and ``bind`` read it)."""
        super().__init_subclass__(**kwargs)
        params = list(inspect.signature(cls.fn).parameters.values())[2:]  # after the two tensors
        plain = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params]
        cls.__signature__ = inspect.Signature(plain, return_annotation=None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        bound = self.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        self.options = tuple(bound.arguments)
        for name, value in bound.arguments.items():
            setattr(self, name, self.checks[name](name, value))

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        kwargs = {name: getattr(self, name) for name in self.options}
        return self.fn(student_logits, teacher_logits, **kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={getattr(self, name)!r}" for name in self.options)
