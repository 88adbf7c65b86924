"""Every method by its short name: what the benchmark and ``build_method("kd")`` use."""

from __future__ import annotations

import inspect

from .base import CrossEntropy, Method
from .embedding import RRD, RRDKD, Refilled
from .logit_relation import _LOGIT_AND_RELATION_METHODS


def _registry() -> dict[str, type[Method]]:
    return {
        "ce": CrossEntropy,
        **_LOGIT_AND_RELATION_METHODS,
        "rrd": RRD,
        "rrd_kd": RRDKD,
        "refilled": Refilled,
    }


def build_method(name: str, **kwargs: object) -> Method:
    """Build a method by its short name (``"ce"``, ``"kd"``, ``"rkd"``, ``"grkd"``, ...)."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(registry)}")
    cls = registry[name]
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise TypeError(
                f"method {name!r} has no option {', '.join(map(repr, unknown))}; its options "
                f"are {options}"
            )
        missing = [
            n for n, p in params.items()
            if p.default is inspect.Parameter.empty and n not in kwargs
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]  # fmt: skip
        if missing:
            raise TypeError(
                f"method {name!r} needs the option(s) {missing}; its options are {options}"
            )
    return cls(**kwargs)  # type: ignore[arg-type]


def available_methods() -> list[str]:
    """Short names accepted by :func:`build_method`."""
    return sorted(_registry())
