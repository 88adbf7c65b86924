"""Every method by its short name: what the benchmark and ``build_method("kd")`` use."""

from __future__ import annotations

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
    return registry[name](**kwargs)  # type: ignore[arg-type]


def available_methods() -> list[str]:
    """Short names accepted by :func:`build_method`."""
    return sorted(_registry())
