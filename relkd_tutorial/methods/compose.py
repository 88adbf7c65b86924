"""Any method + Hinton KD: ``with_kd(method)`` and ``build_method("grkd+kd")``.

``L = L_method + kd_weight * L_KD(T)`` (:mod:`relkd_tutorial.losses.kd`, on every sample), with
``"kd"`` placed right after the method's ``"ce"``, so the total sums ``ce + kd + the method's own
terms``. Everything else (stages, setup, the queue, heads, the checkpointed state) is the wrapped
method's. ``"rrd_kd"`` and ``"grkd_kd"`` are this composition at the published 1 / 1 / 1 weights
with ``T = 4``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .._checks import check_nonnegative, check_positive
from ..losses.kd import kd_loss
from .base import Method, StepInputs, _teacher, _total, _weighted
from .embedding import RRD
from .logit_relation import GRKD


def _of_base(name: str) -> Callable[..., Any]:
    """A method of :class:`WithKD` that calls the wrapped method's ``name``."""
    return lambda self, *args, **kwargs: getattr(self.base, name)(*args, **kwargs)


class WithKD(Method):
    """``method`` + ``kd_weight * L_KD(kd_temperature)``. Attributes not set here (``ce_weight``,
    ``rrd``, ...) are the wrapped method's (``base``); so is the ``state_dict``, key for key.
    """

    needs_teacher = True

    def __init__(self, method: Method, kd_weight: float = 1.0, kd_temperature: float = 4.0) -> None:
        if not isinstance(method, Method) or isinstance(method, WithKD) or method.name == "kd":
            raise TypeError(f"with_kd wraps a method without a KD term, got {method!r}")
        nn.Module.__init__(self)  # not Method's: ``stage`` is the wrapped method's
        self.base = method
        self.name = f"{method.name}_kd"
        self.needs_setup = method.needs_setup
        self.kd_weight = check_nonnegative("kd_weight", kd_weight)
        self.kd_temperature = check_positive("kd_temperature", kd_temperature)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or "base" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["base"], name)

    @property
    def stage(self) -> str:  # type: ignore[override]
        return self.base.stage

    # the schedule, the hooks and the checkpointed state are the wrapped method's
    stages, set_stage, setup = _of_base("stages"), _of_base("set_stage"), _of_base("setup")
    after_step = _of_base("after_step")
    state_dict, load_state_dict = _of_base("state_dict"), _of_base("load_state_dict")

    def loss_terms(self, inputs: StepInputs) -> dict[str, Tensor]:
        z, t = inputs.student_logits, _teacher(inputs, "teacher_logits", self.name)
        kd = ("kd", self.kd_weight, lambda: kd_loss(z, t, self.kd_temperature))
        # computed right after CE (Method._ce_terms), as the former classes did: the gradients
        # reach the logits in the same order, so training is bitwise the same
        self.base._after_ce = kd
        try:
            terms = {k: v for k, v in self.base.loss_terms(inputs).items() if k != "loss"}
        finally:
            added, self.base._after_ce = self.base._after_ce is None, None
        if not added:  # a method without a CE term of its own (REFILLED, CE): KD after its terms
            extra: dict[str, Tensor] = {}
            _weighted(extra, *kd)
            head = {k: terms.pop(k) for k in ("ce",) if k in terms}
            terms = {**head, **extra, **terms}
        return _total(terms, z)


def with_kd(
    method: Method, kd_weight: float = 1.0, temperature: float = 4.0, ce_weight: float | None = None
) -> WithKD:
    """``method`` + ``kd_weight * L_KD(temperature)``; ``ce_weight`` (if given) replaces the
    method's CE weight (e.g. ``with_kd(GRKD(), 0.9, ce_weight=0.1)``: KD's 0.1 / 0.9 + GRKD)."""
    if ce_weight is not None:
        if not hasattr(method, "ce_weight"):
            raise ValueError(f"{type(method).__name__} has no ce_weight to set")
        method.ce_weight = check_nonnegative("ce_weight", ce_weight)
    return WithKD(method, kd_weight, temperature)


def plus_kd(build: Callable[..., Method], name: str, positional: int = 0) -> Callable[..., WithKD]:
    """``build(*args, **kwargs)`` + KD: a builder that also takes ``kd_weight``, ``kd_temperature``;
    at most ``positional`` arguments by position (so a long positional call cannot bind the wrong
    one).
    """

    def build_with_kd(
        *args: Any, kd_weight: float = 1.0, kd_temperature: float = 4.0, **kwargs: Any
    ) -> WithKD:
        if len(args) > positional:
            raise TypeError(f"{name} takes {positional} positional arguments, name the others")
        return WithKD(build(*args, **kwargs), kd_weight, kd_temperature)

    build_with_kd.__name__ = build_with_kd.__qualname__ = name
    own = inspect.signature(build).parameters.values()
    kd = [
        p for p in inspect.signature(build_with_kd).parameters.values() if p.kind == p.KEYWORD_ONLY
    ]
    build_with_kd.__signature__ = inspect.Signature([*own, *kd])  # type: ignore[attr-defined]
    build_with_kd.__doc__ = (
        f"``with_kd({getattr(build, '__name__', build)}(*args, **kwargs))`` with ``kd_weight`` "
        "(1) and ``kd_temperature`` (4) keyword-only: a :class:`WithKD`."
    )
    return build_with_kd


#: RRD+KD (``"rrd_kd"``): ``ce_weight CE + kd_weight L_KD(T) + rrd_weight L_RRD``, 1 / 1 (T = 4) / 1
#: as in the RRD authors' CIFAR runs. Formerly a class; the two widths by position, the rest by name.
RRDKD = plus_kd(RRD, "RRDKD", positional=2)
#: GRKD+KD (``"grkd_kd"``): ``ce_weight CE + kd_weight L_KD(T=4) + grkd_weight L_GR``, 1 / 1 / 1
#: (the RRD+KD / CRD+KD convention). Formerly a class; every argument by name.
GRKDWithKD = plus_kd(GRKD, "GRKDWithKD")
