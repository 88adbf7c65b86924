"""What the tuning searches: every method's knobs and their ranges, in one table.

:data:`SEARCH_SPACE`: per method, the constructor arguments :mod:`.tune` samples, each range
*relative to the method's default* (a loss weight ``x0.1 ... x100``, log; a temperature
``x1/4 ... x4``, log; REFILLED's stage-1 share ``0.1 ... 0.9``, linear, never extended). A value
chosen near a bound extends it a decade at a time (:meth:`Knob.extend`). The combinations tune
their added term only, so ``X + KD`` minus KD is still that term's effect. Selection (and the
ablations) run on the validation split with seeds no preset evaluates on (tested).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..methods.registry import _registry
from .recipes import effective_defaults
from .settings import PAPER_DEFAULTS

#: Seeds of the selection runs: each trial is the mean validation top-1 over these. Never an
#: evaluation seed of any preset (the presets use 0, 1, 2, ...; tested).
SELECTION_SEEDS: tuple[int, ...] = (1000, 1001, 1002)

#: Seeds of an ablation (:func:`ablation_seeds`): it chooses defaults, so it is selection too,
#: never on an evaluation seed (tested); the same for every variant, so variants pair by seed.
ABLATION_SEEDS: tuple[int, ...] = tuple(range(SELECTION_SEEDS[0], SELECTION_SEEDS[0] + 8))


def ablation_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """An ablation's seeds in a setting whose evaluation seeds are ``seeds``: as many of
    :data:`ABLATION_SEEDS` as it has evaluation seeds (fast mode: two), never those seeds."""
    return ABLATION_SEEDS[: len(seeds)]


#: How many times each bound of a range may grow by a decade (then a value there is flagged).
MAX_EXTENSIONS = 2


@dataclass(frozen=True)
class Scale:
    """A range relative to the default (``low``/``high`` are factors) or absolute (``relative=False``)."""

    low: float
    high: float
    log: bool = True
    relative: bool = True
    extendable: bool = True


WEIGHT = Scale(0.1, 100.0)
TEMPERATURE = Scale(0.25, 4.0)
FRACTION = Scale(0.1, 0.9, log=False, relative=False, extendable=False)

#: Every method's knobs and their ranges (relative to its default, see the module docstring).
SEARCH_SPACE: dict[str, dict[str, Scale]] = {
    "ce": {},
    "kd": {"kd_weight": WEIGHT, "temperature": TEMPERATURE},
    "rkd": {"distance_weight": WEIGHT, "angle_weight": WEIGHT},
    "rrd": {"rrd_weight": WEIGHT, "tau_s": TEMPERATURE, "tau_t": TEMPERATURE},
    "rrd_kd": {"rrd_weight": WEIGHT, "tau_s": TEMPERATURE, "tau_t": TEMPERATURE},
    "refilled": {
        "lambda1": WEIGHT,
        "lambda2": WEIGHT,
        "tau2": TEMPERATURE,
        "stage1_fraction": FRACTION,
    },
    "grkd": {"grkd_weight": WEIGHT, "temperature": TEMPERATURE},
    "grkd_kd": {"grkd_weight": WEIGHT, "temperature": TEMPERATURE},
    "rank_soft": {"rank_weight": WEIGHT, "temperature": TEMPERATURE},
    "rank_listwise": {"rank_weight": WEIGHT, "temperature": TEMPERATURE},
    "dist": {"beta": WEIGHT, "gamma": WEIGHT, "temperature": TEMPERATURE},
    "pseudo_label": {"pseudo_weight": WEIGHT},
}


@dataclass(frozen=True)
class Knob:
    """One knob's current range: ``low ... high`` (log or linear), and how far it may grow."""

    name: str
    default: float
    low: float
    high: float
    log: bool = True
    extendable: bool = True

    def at_edge(self, value: float) -> str | None:
        """``"low"``/``"high"`` if ``value`` is within a factor 1.5 of that bound (log scale) or
        within a tenth of the range (linear), else ``None``."""
        if self.log:
            near_low, near_high = value < self.low * 1.5, value > self.high / 1.5
        else:
            step = (self.high - self.low) / 10
            near_low, near_high = value < self.low + step, value > self.high - step
        return "low" if near_low else "high" if near_high else None

    def extend(self, side: str) -> Knob:
        """This range grown by a decade on ``side`` (``"low"`` or ``"high"``)."""
        if not self.extendable:
            raise ValueError(f"{self.name}'s range is fixed; it cannot be extended")
        if side == "low":
            return Knob(self.name, self.default, self.low / 10, self.high, self.log)
        if side == "high":
            return Knob(self.name, self.default, self.low, self.high * 10, self.log)
        raise ValueError(f"side must be 'low' or 'high', got {side!r}")


def round4(x: float) -> float:
    """``x`` rounded to 4 significant digits (a range's bounds, a sampled value)."""
    return float(f"{x:.4g}")


def _knob(name: str, default: float, scale: Scale) -> Knob:
    if scale.relative:
        if not default > 0:
            raise ValueError(f"{name}: a relative range needs a positive default, got {default}")
        low, high = default * scale.low, default * scale.high
    else:
        low, high = scale.low, scale.high
    return Knob(name, default, round4(low), round4(high), scale.log, scale.extendable)


def method_defaults(method: str) -> dict[str, float] | None:
    """The numeric defaults a method runs at (:func:`~.recipes.effective_defaults`), as floats;
    ``None`` if it is not benchmarked (not in ``PAPER_DEFAULTS`` or not buildable)."""
    if method not in PAPER_DEFAULTS or method not in _registry():
        return None
    return {
        k: float(v)
        for k, v in effective_defaults(method).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)  # not a choice like "teacher"
    }


def method_space(method: str) -> dict[str, Knob] | None:
    """The knobs the tuning samples for ``method`` with their starting ranges (those its
    constructor accepts); ``None`` if it is not benchmarked, ``{}`` if it has none (CE)."""
    defaults = method_defaults(method)
    if defaults is None or method not in SEARCH_SPACE:
        return None
    accepted = inspect.signature(_registry()[method]).parameters
    return {
        name: _knob(name, defaults.get(name, math.nan), scale)
        for name, scale in SEARCH_SPACE[method].items()
        if name in accepted
    }
