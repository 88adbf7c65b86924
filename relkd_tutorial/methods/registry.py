"""Every method by its short name: what the benchmark and ``build_method("kd")`` use."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .base import CrossEntropy, Method
from .compose import RRDKD, GRKDWithKD, WithKD
from .embedding import RRD, Refilled
from .logit_relation import _LOGIT_AND_RELATION_METHODS


def _registry() -> dict[str, Callable[..., Method]]:
    return {
        "ce": CrossEntropy,
        **_LOGIT_AND_RELATION_METHODS,
        "grkd_kd": GRKDWithKD,  # = "grkd+kd"
        "rrd": RRD,
        "rrd_kd": RRDKD,  # = "rrd+kd"
        "refilled": Refilled,
    }


def build_method(name: str, **kwargs: object) -> Method:
    """Build a method by its short name (``"ce"``, ``"kd"``, ``"rkd"``, ``"grkd"``, ...).

    ``"<name>+kd"`` is any method plus Hinton KD (:class:`~.compose.WithKD`): ``kd_weight`` (1)
    and ``kd_temperature`` (4) go to the KD term, every other argument to the method. An option
    the method does not have, or a required one left out, is a ``TypeError`` that lists its
    options.
    """
    registry = _registry()
    base, plus, kd = name.partition("+")
    if plus and kd == "kd" and base in registry:
        kd_kwargs = {k: kwargs.pop(k) for k in ("kd_weight", "kd_temperature") if k in kwargs}
        return WithKD(_build(base, registry[base], kwargs), **kd_kwargs)  # type: ignore[arg-type]
    if name not in registry:
        raise ValueError(
            f"unknown method {name!r}; choose one of {sorted(registry)}, or '<name>+kd'"
        )
    return _build(name, registry[name], kwargs)


def _build(name: str, builder: Callable[..., Method], kwargs: dict[str, object]) -> Method:
    """``builder(**kwargs)``, after checking ``kwargs`` against its signature (a class or a
    builder function, every option named): an unknown or a missing option names the method's
    options."""
    params = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(
            f"method {name!r} has no option {', '.join(map(repr, unknown))}; its options "
            f"are {list(params)}"
        )
    missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs]
    if missing:
        raise TypeError(
            f"method {name!r} needs the option(s) {missing}; its options are {list(params)}"
        )
    return builder(**kwargs)


def available_methods() -> list[str]:
    """Short names accepted by :func:`build_method` (and each of them with ``"+kd"``)."""
    return sorted(_registry())
