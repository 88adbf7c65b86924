"""The tuned recipes the main job runs: read, checked and put in the one form a run key uses.

``--tune`` writes each method's chosen hyperparameters per setting into :data:`RECIPES_FILE`
(``{"format": 1, "invocation": {...}, "settings": {setting: {method: {"params": {...}, "space",
"selection_score", "trials", "extended", "at_edge"}}}}``). :func:`load_recipes` refuses, naming
the entry, what the benchmark cannot run; :func:`canonical_params` drops every value equal to the
method's default as it runs (:func:`effective_defaults`), so a recipe that chose the defaults has
the default run's key.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..methods.registry import _registry  # the classes and builders, for their arguments
from .settings import ALL_SETTINGS, CONTROL_WEIGHTS, METHODS, PAPER_DEFAULTS

#: The shipped recipes (package data); ``"settings": {}`` until a tuning is committed.
RECIPES_FILE = Path(__file__).with_name("recipes.json")
#: The one format version this reader understands.
FORMAT = 1
#: Constructor arguments the benchmark sets per setting (``runner.method_kwargs``): a recipe
#: cannot choose them.
BENCH_MANAGED: frozenset[str] = frozenset(
    {"student_dim", "teacher_dim", "queue_size", "num_classes"}
)

Value = float | int | str | bool


@dataclass(frozen=True)
class Recipe:
    """One method's tuned hyperparameters in one setting: ``params`` as written (a run gets
    :attr:`run_params`), each one's search ``space``, the ranges ``extended`` in order, those
    ``at_edge`` of their last range (the best may lie beyond), the validation
    ``selection_score`` and the ``trials`` spent."""

    setting: str
    method: str
    params: dict[str, Value]
    space: dict[str, tuple[float, float]] = field(default_factory=dict)
    extended: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    at_edge: tuple[str, ...] = ()
    selection_score: float | None = None
    trials: int | None = None

    @property
    def run_params(self) -> dict[str, Value]:
        """The overrides a run gets: :func:`canonical_params` of :attr:`params`."""
        return canonical_params(self.method, self.params)

    def to_json(self) -> dict[str, Any]:
        """The file's form (ranges as tuples, which ``json`` writes as lists)."""
        out = asdict(self)
        return {k: v for k, v in out.items() if k not in ("setting", "method") and v is not None}


@dataclass(frozen=True)
class Recipes:
    """The recipes of a file: ``settings[setting][method]`` is a :class:`Recipe`; a setting
    present as ``{}`` ran under them with every method at its defaults, an absent one did not."""

    settings: dict[str, dict[str, Recipe]]
    invocation: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def get(self, setting: str, method: str) -> Recipe | None:
        """The recipe of ``method`` in ``setting``, or ``None`` (not tuned there)."""
        return self.settings.get(setting, {}).get(method)

    def run_params(self, setting: str, method: str) -> dict[str, Value]:
        """What a run of ``method`` in ``setting`` gets: the canonical recipe, else ``{}``."""
        recipe = self.get(setting, method)
        return recipe.run_params if recipe is not None else {}

    def to_json(self, settings: list[str] | None = None) -> dict[str, Any]:
        """The file's form; ``settings`` keeps those (an absent one as ``{}``: run, no recipe)."""
        names = list(self.settings) if settings is None else settings
        return {
            "format": FORMAT,
            "invocation": dict(self.invocation),
            "settings": {
                s: {m: r.to_json() for m, r in self.settings.get(s, {}).items()} for s in names
            },
        }


def effective_defaults(method: str) -> dict[str, Value]:
    """The values ``method`` runs at without overrides: the constructor's (not ``None``)
    defaults, then :data:`~.settings.CONTROL_WEIGHTS`, then :data:`~.settings.PAPER_DEFAULTS`."""
    out: dict[str, Value] = {
        name: p.default
        for name, p in inspect.signature(_registry()[method]).parameters.items()
        if p.default is not inspect.Parameter.empty and p.default is not None
    }
    out.update(CONTROL_WEIGHTS.get(method, {}))
    out.update(PAPER_DEFAULTS.get(method, ({}, ""))[0])
    return out


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    return float(a) == float(b)


def _normal(value: Value, default: Value | None) -> Value:
    """Numbers as ``float`` unless the default is an ``int`` (``top_k=5``), so tags agree."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(default, int) and not isinstance(default, bool) and float(value).is_integer():
        return int(value)
    return float(value)


def canonical_params(method: str, params: Mapping[str, Value]) -> dict[str, Value]:
    """``params`` without the values equal to :func:`effective_defaults` (numbers normalised).

    ``canonical_params("grkd", {"grkd_weight": 1.0, "temperature": 2})`` is
    ``{"temperature": 2.0}``: the run of a recipe that chose the defaults is the default run.
    """
    defaults = effective_defaults(method)
    out: dict[str, Value] = {}
    for name in sorted(params):
        value = _normal(params[name], defaults.get(name))
        if name in defaults and _same(value, defaults[name]):
            continue
        out[name] = value
    return out


# --- Reading and checking a recipes file ---


def _number(x: Any) -> bool:
    """Whether ``x`` is a finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _range(where: str, name: str, pair: Any) -> tuple[float, float]:
    ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(map(_number, pair))
    if not ok or not pair[0] < pair[1]:
        raise ValueError(f"{where}: the range of {name} must be [low, high] with low < high, "
                         f"finite; got {pair!r}")  # fmt: skip
    return float(pair[0]), float(pair[1])


def _recipe(setting: str, method: str, raw: Any) -> Recipe:
    where = f"recipe {setting}/{method}"
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict):
        raise ValueError(f"{where}: needs an object with a 'params' object, got {raw!r}")
    signature = inspect.signature(_registry()[method])  # a class or a builder function
    allowed = [p for p in signature.parameters if p not in BENCH_MANAGED]  # all a recipe may set
    params: dict[str, Value] = {}
    for name, value in raw["params"].items():
        if name in BENCH_MANAGED:
            raise ValueError(f"{where}: {name!r} is set by the benchmark per setting, not a recipe")
        if name not in allowed:
            raise ValueError(f"{where}: unknown parameter {name!r}; {method} takes {list(allowed)}")
        if not isinstance(value, (bool, str)) and not _number(value):
            raise ValueError(
                f"{where}: {name} = {value!r} is not a finite number, a string or a bool"
            )
        params[name] = value
    space = {n: _range(where, n, r) for n, r in (raw.get("space") or {}).items()}
    extended: dict[str, tuple[tuple[float, float], ...]] = {}
    for name, ranges in (raw.get("extended") or {}).items():
        if not isinstance(ranges, (list, tuple)) or not ranges:
            raise ValueError(f"{where}: extended[{name!r}] must be a list of ranges")
        extended[name] = tuple(_range(where, name, r) for r in ranges)
    for name in (*space, *extended):
        if name not in params:
            raise ValueError(f"{where}: {name!r} has a range but no chosen value in 'params'")
    for name, value in params.items():
        last = extended[name][-1] if name in extended else space.get(name)
        if last is None or isinstance(value, (bool, str)):
            continue
        slack = 1e-9 * max(abs(last[0]), abs(last[1]))
        if not last[0] - slack <= value <= last[1] + slack:
            raise ValueError(f"{where}: {name} = {value!r} lies outside its range {list(last)}")
    at_edge = raw.get("at_edge") or []
    if not isinstance(at_edge, (list, tuple)) or any(n not in params for n in at_edge):
        raise ValueError(f"{where}: at_edge must list chosen parameters, got {at_edge!r}")
    score = raw.get("selection_score")
    if score is not None and not _number(score):
        raise ValueError(f"{where}: selection_score = {score!r} is not a finite number")
    trials = raw.get("trials")
    if trials is not None and not (type(trials) is int and trials >= 0):  # a bool is no count
        raise ValueError(f"{where}: trials = {trials!r} is not a count")
    return Recipe(
        setting, method, params, space, extended, tuple(at_edge),
        None if score is None else float(score), trials,
    )  # fmt: skip


def parse_recipes(data: Any, source: str = "recipes") -> Recipes:
    """:class:`Recipes` from a decoded recipes file; :class:`ValueError` naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipes file is a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"{source}: format {data.get('format')!r} is not supported; this "
                         f"version reads format {FORMAT}")  # fmt: skip
    raw_settings = data.get("settings")
    if not isinstance(raw_settings, dict):
        raise ValueError(f"{source}: 'settings' must be an object (setting -> method -> recipe)")
    settings: dict[str, dict[str, Recipe]] = {}
    for setting, methods in raw_settings.items():
        if setting not in ALL_SETTINGS:
            raise ValueError(f"{source}: unknown setting {setting!r}; choose from "
                             f"{list(ALL_SETTINGS)}")  # fmt: skip
        if not isinstance(methods, dict):
            raise ValueError(
                f"{source}: settings[{setting!r}] must be an object (method -> recipe)"
            )
        for method in methods:
            if method not in METHODS:
                raise ValueError(f"{source}: unknown method {method!r} in {setting}; choose from "
                                 f"{list(METHODS)}")  # fmt: skip
        settings[setting] = {m: _recipe(setting, m, r) for m, r in methods.items()}
    invocation = data.get("invocation") or {}
    if not isinstance(invocation, dict):
        raise ValueError(f"{source}: 'invocation' must be an object")
    return Recipes(settings, invocation, source)


def load_recipes(path: str | Path | None = None) -> Recipes:
    """Read and check a recipes file (default :data:`RECIPES_FILE`); see the module docstring."""
    path = Path(path) if path is not None else RECIPES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no recipes file at {path}; the shipped one is {RECIPES_FILE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    return parse_recipes(data, str(path))


def recipes_of_meta(meta: Mapping[str, Any] | None) -> Recipes | None:
    """The recipes a results folder's runs used, from its ``meta.json`` (``None``: none did);
    a later invocation's entry for a setting replaces an earlier one."""
    settings: dict[str, dict[str, Recipe]] = {}
    invocation: dict[str, Any] = {}
    for inv in (meta or {}).get("invocations", []):
        data = inv.get("recipes")
        if not data:
            continue
        recipes = parse_recipes(data, "meta.json")
        settings.update(recipes.settings)
        invocation = recipes.invocation
    return Recipes(settings, invocation, "meta.json") if settings else None
