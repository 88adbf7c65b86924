"""Shared benchmark runs for the chapters: one protocol, so a method has one number everywhere.

:func:`benchmark_runs` reads the runs of ``python -m relkd_tutorial.bench`` (``docs/benchmark.md``):
the committed ``results/runs.csv`` rows of the default preset's spec now, then an on-disk cache
(:func:`default_cache_dir`) where the benchmark's runner trains what neither holds, once per
machine (fast mode: the fast settings, the cache only). The tables wrap the benchmark's report
and :mod:`relkd_tutorial.stats` (accuracies in percent, differences in points); the sentences
(:func:`protocol_sentence`, :func:`difference_phrase`, :func:`against`) say what the method
chapters (01-05) found, every number computed.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from ..bench.cli import default_preset, default_threads
from ..bench.report import summarize_runs
from ..bench.runner import Progress, run_settings
from ..bench.settings import (
    FASHION_SETTINGS,
    METHODS,
    METRIC_LABELS,
    PERCENT,
    Setting,
    default_settings,
    label,
    params_tag,
)
from ..bench.store import ResultStore, read_runs
from ..bench.verdict import comparisons, finished, markdown_table, select
from ..bench.workspace import CACHE_ENV, build_workspace
from ..fastmode import fast_mode
from ..stats import format_p, paired_difference
from ..training import resolve_device
from .prose import Sentence, say


class ResultsNotFoundError(FileNotFoundError):
    """No committed ``results/runs.csv`` was found (the message says what to set)."""


class MissingRunsError(RuntimeError):
    """Runs the chapter needs are neither committed nor cached, and training was not allowed."""


# --- Where the runs live


RESULTS_ENV = "RELKD_RESULTS_DIR"
_NO_RESULTS = "; or call benchmark_runs(..., results_dir=False) to train every run into the cache"


def find_results_dir(start: str | Path | None = None) -> Path:
    """The committed results folder holding ``runs.csv``: ``$RELKD_RESULTS_DIR``, else ``results``
    in ``start`` (default: the current directory) or above it, else the source checkout's
    ``results/``; :class:`ResultsNotFoundError` names every place searched and what to set."""
    override = os.environ.get(RESULTS_ENV, "").strip()
    if override:
        folder = Path(override).expanduser()
        if not (folder / "runs.csv").is_file():
            raise ResultsNotFoundError(
                f"{RESULTS_ENV}={override!r} does not hold runs.csv; point it at the benchmark's "
                "results folder (the repository's results/, written by "
                f"`python -m relkd_tutorial.bench --out results`){_NO_RESULTS}"
            )
        return folder
    here = Path.cwd() if start is None else Path(start)
    searched = [parent / "results" for parent in (here.resolve(), *here.resolve().parents)]
    checkout = Path(__file__).resolve().parents[2] / "results"
    searched += [checkout] if checkout not in searched else []
    if found := next((c for c in searched if (c / "runs.csv").is_file()), None):
        return found
    raise ResultsNotFoundError(
        f"no benchmark results folder (results/ holding runs.csv) in {here} or any folder above it, "
        f"nor in this package's source checkout; searched {', '.join(str(p) for p in searched)}. "
        f"Set {RESULTS_ENV} to the folder holding runs.csv (the repository's results/), or open "
        f"the notebook from inside a clone of the repository{_NO_RESULTS}"
    )


def shown(path: str | Path) -> str:
    """``path`` as a committed output may show it (never a machine's layout): relative to the
    current folder when close by (``../results/runs.csv``), else under ``~``, else absolute."""
    path = Path(path).resolve()
    try:
        rel = os.path.relpath(path, Path.cwd())
    except ValueError:  # another drive (Windows)
        rel = str(path)
    if not rel.startswith(os.pardir + os.sep + os.pardir) and rel != os.pardir:
        return rel
    home = Path.home().resolve()
    if path == home or home in path.parents:
        return str(Path("~") / path.relative_to(home))
    return str(path)


def default_cache_dir(fast: bool) -> Path:
    """``$RELKD_CACHE_DIR/bench-<fast|default>``, or under ``$XDG_CACHE_HOME`` or ``~/.cache``
    in ``relkd_tutorial/``."""
    root = os.environ.get(CACHE_ENV, "").strip()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    base = Path(root).expanduser() if root else Path(xdg) / "relkd_tutorial"
    return base / ("bench-fast" if fast else "bench-default")


def protocol_setting(
    setting: str, *, fast: bool | None = None, preset: str | None = None
) -> Setting:
    """The benchmark's :class:`~relkd_tutorial.bench.settings.Setting` that the chapters share:
    the fast one in fast mode, else ``preset``'s (default: the CPU default, the committed one)."""
    fast = fast_mode() if fast is None else bool(fast)
    if setting not in FASHION_SETTINGS:
        raise ValueError(
            f"setting must be one of {list(FASHION_SETTINGS)}, got {setting!r} (the CIFAR-100 "
            "'full' setting needs a GPU and runs only from the benchmark command)"
        )
    return default_settings(fast, preset or default_preset("cpu"))[setting]


# --- The runs


class Runs(list):
    """``runs.csv`` rows (a ``list`` of dicts) with their ``setting``, its ``spec`` (fingerprint),
    ``sources`` (``{runs.csv path: rows taken from it}``) and how many were ``trained`` now."""

    def __init__(
        self, rows: Sequence[dict[str, Any]], setting: Setting, spec: str,
        sources: dict[str, int], trained: int,
    ) -> None:  # fmt: skip
        super().__init__(rows)
        self.setting, self.spec, self.sources, self.trained = setting, spec, sources, trained

    def describe(self) -> str:
        """One line: how many runs, of which setting and spec, from where."""
        parts = [f"{n} from {shown(src)}" for src, n in self.sources.items() if n]
        return (
            f"{len(self)} runs of {self.setting.name} (spec {self.spec}, seeds "
            f"{list(self.setting.seeds)}): {', '.join(parts) or 'none'}"
        )


def _wanted(rows: Sequence[dict[str, Any]], setting: str, spec: str, methods: Sequence[str],
            seeds: Sequence[int]) -> dict[tuple[str, int | None], dict[str, Any]]:  # fmt: skip
    """``{(method, seed): row}`` of the final runs (and n/a rows, seed ``None``) wanted: each
    method at its paper defaults (params ``{}``), the arm whose controls differ in one term; the
    tuned arm of the same folder is notebook 06's headline."""
    out: dict[tuple[str, int | None], dict[str, Any]] = {}
    for r in select(rows, setting=setting, spec=spec, phase="final"):
        if r["method"] not in methods:
            continue
        if r["status"] == "n/a":
            out.setdefault((r["method"], None), r)
        elif r["params"] == params_tag({}) and r["seed"] in seeds:
            out.setdefault((r["method"], r["seed"]), r)
    return out


@contextlib.contextmanager
def _threads(device: torch.device) -> Iterator[None]:
    """The benchmark's torch threads while training (one on a CPU), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(default_threads(device, None) or before)  # None (a GPU): torch's own
    try:
        yield
    finally:
        torch.set_num_threads(before)


def benchmark_runs(
    setting: str = "transfer",
    methods: Sequence[str] = ("ce", "kd"),
    *,
    fast: bool | None = None,
    results_dir: str | Path | bool | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    train: bool = True,
) -> Runs:
    """The benchmark's final runs of ``methods`` in a Fashion-MNIST ``setting``: committed,
    cached or trained now on ``device`` (``train=False``: :class:`MissingRunsError` instead).
    ``results_dir``: ``None`` finds it, ``False`` reads none (nor does fast mode). One row per
    (method, seed) as in ``runs.csv``, in ``methods`` order then by seed; a method that cannot run
    in the setting gives one ``n/a`` row; progress goes to stdout."""
    fast = fast_mode() if fast is None else bool(fast)
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown or methods}; choose from {list(METHODS)}")
    s = protocol_setting(setting, fast=fast)
    # the paper-default arm: where tuned recipes ran beside it, on its first default_seeds seeds
    s = replace(s, seeds=s.seeds[: s.default_seeds] or s.seeds)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(fast)
    results: Path | None = None
    if not fast and results_dir is not False:
        results = find_results_dir() if results_dir in (None, True) else Path(results_dir)
        if not (results / "runs.csv").is_file():
            raise ResultsNotFoundError(f"{results} has no runs.csv (results_dir={results_dir!r})")
        cache.mkdir(parents=True, exist_ok=True)
        for src in results.glob("cross_task_teacher_*"):  # a committed one, not trained again
            if src.suffix in (".pt", ".json") and not (cache / src.name).exists():
                shutil.copy2(src, cache / src.name)
    dev = resolve_device(device)
    ws = build_workspace(s, cache, dev, log=lambda text: print(text, flush=True))
    spec = ws.spec
    committed_rows = read_runs(results / "runs.csv") if results is not None else []
    committed = _wanted(committed_rows, s.name, spec, methods, s.seeds)
    if results is not None and not committed:
        other = sorted({r["spec"] for r in committed_rows if r["setting"] == s.name})
        if other:
            print(f"{shown(results / 'runs.csv')} holds {s.name} runs of another configuration "
                  f"(spec {', '.join(other)}, now {spec}); they are not used")  # fmt: skip
    store = ResultStore(cache)

    def found_missing() -> tuple[dict[tuple[str, int | None], Any], dict[str, list[int]]]:
        # a committed row wins over the cache's; a method with an n/a row has nothing to train
        found = {**_wanted(store.rows(), s.name, spec, methods, s.seeds), **committed}
        gaps = {m: [x for x in s.seeds if (m, x) not in found]
                for m in methods if (m, None) not in found}  # fmt: skip
        return found, {m: gap for m, gap in gaps.items() if gap}

    found, missing = found_missing()
    trained = 0
    if missing:
        if not train:
            raise MissingRunsError(
                f"{sum(map(len, missing.values()))} runs of {s.name} (spec {spec}) are neither "
                f"committed nor cached: {missing}; call with train=True or run python -m "
                f"relkd_tutorial.bench --settings {s.name} --methods {','.join(missing)} --out {cache}"
            )
        cache.mkdir(parents=True, exist_ok=True)  # one kernel at a time trains into the cache
        with FileLock(cache / ".lock"), _threads(dev):
            found, missing = found_missing()  # another kernel may have trained them meanwhile
            if missing:
                count = sum(map(len, missing.values()))
                print(f"training {count} benchmark runs of {s.name} ({s.epochs} epochs) into "
                      f"{shown(cache)} (once per machine)", flush=True)  # fmt: skip
                progress = Progress(total=count)
                for method, seeds in missing.items():
                    # the fingerprint ignores seeds: a workspace over the missing seeds keeps the spec
                    part = replace(ws, setting=replace(s, seeds=tuple(seeds)))
                    run_settings([part], [method], store, progress)
                trained = progress.trained
        found, left = found_missing()
        if left:
            raise MissingRunsError(f"runs still missing after training: {left}")
    keys = sorted(found, key=lambda k: (methods.index(k[0]), -1 if k[1] is None else k[1]))
    rows = [found[k] for k in keys]
    sources: dict[str, int] = {}
    if results is not None:
        sources[str(results / "runs.csv")] = sum(k in committed for k in keys)
    sources[str(cache / "runs.csv")] = sum(k not in committed for k in keys)
    runs = Runs(rows, s, spec, sources, trained)
    print(runs.describe(), flush=True)
    return runs


# --- Tables: thin wrappers over the report and stats


class Table(list):
    """Rows (dicts) that a notebook displays as a Markdown table; ``columns`` pick and order."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str], metric: str,
                 unit: str) -> None:  # fmt: skip
        super().__init__(rows)
        self.columns, self.metric = list(columns), metric
        self.unit = unit if metric in PERCENT else ""  # "%" or "points" for accuracies only

    def _repr_markdown_(self) -> str:
        digits = 3 if self.metric not in PERCENT else 2

        def cell(v: Any) -> str:
            if isinstance(v, float):
                return "" if math.isnan(v) else f"{v:.{digits}f}"
            return str(v)

        rows = ([cell(r.get(c, "")) for c in self.columns] for r in self)
        return markdown_table(" | ".join(self.columns), rows)


def _one_setting(rows: Sequence[dict[str, Any]], setting: str | None) -> list[dict[str, Any]]:
    names = sorted({r["setting"] for r in rows})
    if setting is None and len(names) != 1:
        raise ValueError(f"the rows hold settings {names}; pass setting= to pick one")
    mine = [r for r in rows if setting is None or r["setting"] == setting]
    if not mine:
        raise ValueError(f"no rows of setting {setting!r}; the rows hold {names}")
    return mine


def _check_metric(metric: str) -> float:
    if metric not in METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(METRIC_LABELS)}, got {metric!r}")
    return 100.0 if metric in PERCENT else 1.0


def seed_stats(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean``, sample ``std`` (``n - 1``) and the one-sample ``t`` interval ``low``,
    ``high`` (``mean -+ t s / sqrt(n)``; NaN with one seed) of per-seed values."""
    d = paired_difference(values, [0.0] * len(values))  # values - 0: exactly the values
    return {"n": d.n, "mean": d.mean, "std": d.std, "low": d.low, "high": d.high}


def summary_table(
    rows: Sequence[dict[str, Any]], metric: str = "acc", *, setting: str | None = None
) -> Table:
    """Per method (the report's order): :func:`seed_stats` over seeds, accuracies in percent; a
    method n/a in the setting keeps its reason in ``note``."""
    rows = _one_setting(rows, setting)
    k, out = _check_metric(metric), []
    no_run = dict.fromkeys(("mean", "std", "low", "high"), math.nan)  # no finished seed
    for entry in summarize_runs(rows):
        ok = finished(rows, method=entry["method"])
        values = [k * r[metric] for r in ok if not math.isnan(r[metric])]
        stats = seed_stats(values) if values else no_run
        out.append({"method": entry["method"], "label": entry["label"], "status": entry["status"],
                    "note": entry.get("note", ""), "n": entry.get("n", 0), **stats})  # fmt: skip
    return Table(out, ["label", "n", "mean", "std", "low", "high"], metric, "%")


def paired_table(
    rows: Sequence[dict[str, Any]], baseline: str = "ce", metric: str = "acc", *,
    setting: str | None = None,
) -> Table:  # fmt: skip
    """Every method minus ``baseline``, paired by seed: the report's
    :func:`~relkd_tutorial.bench.verdict.comparisons` of that family (points for accuracies),
    labelled."""
    rows = _one_setting(rows, setting)
    _check_metric(metric)
    diffs = comparisons(rows, families=(baseline,), metrics=(metric,))
    for d in diffs:
        d["label"] = label(d["method"])
    return Table(diffs, ["label", "n", "mean", "low", "high", "within_noise"], metric, "points")


def paired_vs(
    rows: Sequence[dict[str, Any]], method: str, baseline: str = "ce", metric: str = "acc", *,
    setting: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``method`` minus ``baseline`` paired by seed (one entry of :func:`paired_table`)."""
    for d in paired_table(rows, baseline, metric, setting=setting):
        if d["method"] == method:
            return d
    raise ValueError(
        f"no paired difference {method!r} - {baseline!r} for {metric!r}: both need finished runs "
        f"on common seeds (methods in the rows: {sorted({r['method'] for r in rows})})"
    )


# --- What the chapters say about runs


def protocol_sentence(runs: Runs) -> Sentence:
    """One sentence: the setting, pool, labels, student, epochs, batch, learning rate and seeds."""
    s = runs.setting
    rows = [r for r in runs if r.get("status") == "ok"]
    if not rows:
        raise ValueError("no finished run to describe")
    seeds = list(s.seeds)
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
    seed_text = f"{seeds[0]}–{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    src = ", ".join("the local cache" if "cache" in p else "the committed results"
                    for p in runs.sources if runs.sources[p])  # fmt: skip
    return say(
        "The benchmark's `{name}` setting ({src}): a pool of {n_train:,} training images of which "
        "{n_labelled:,} keep their label ({per} per class), `{student}` students trained for "
        "{epochs} epochs with batches of {batch} (SGD with Nesterov momentum, learning rate "
        "{lr:g} with cosine decay), {n_seeds} paired seeds ({seed_text}), evaluated on the "
        "test split.",
        name=s.name, src=src or "none", n_train=int(rows[0]["n_train"]),
        n_labelled=int(rows[0]["n_labelled"]), per=s.labelled_per_class, student=s.student,
        epochs=s.epochs, batch=s.batch_size, lr=s.lr, n_seeds=len(seeds), seed_text=seed_text,
    )  # fmt: skip


def _claim(diff: Mapping[str, Any]) -> str:
    """The row's ``claim`` if it has one, else "within noise" unless the interval excludes 0."""
    if diff.get("claim"):
        return diff["claim"]
    if diff.get("within_noise", True):
        return "within noise"
    return "beats" if diff["mean"] > 0 else "trails"


def verdict(diff: Mapping[str, Any]) -> str:
    """``"beats"`` / ``"trails"`` (the claim, or the interval excludes 0), else ``"is within
    noise of"``."""
    claim = _claim(diff)
    return "is within noise of" if claim == "within noise" else claim


def _numbers(diff: Mapping[str, Any], digits: int) -> tuple[str, str, str]:
    """Mean (with its unit: points for accuracies), low and high, signed, ``digits`` decimals."""
    unit = " points" if diff.get("metric", "acc") in PERCENT else ""
    mean, low, high = (format(float(diff[k]), f"+.{digits}f") for k in ("mean", "low", "high"))
    return mean + unit, low, high


def difference_phrase(diff: Mapping[str, Any]) -> str:
    """``"+5.32 points (95% paired interval −1.20 to +11.84, 8 seeds): beats"`` from a row of
    :func:`paired_table` (accuracies in points, two decimals; other metrics three)."""
    if not math.isfinite(float(diff["mean"])):
        raise ValueError("the difference has no finite mean")
    mean, low, high = _numbers(diff, 2 if diff.get("metric", "acc") in PERCENT else 3)
    if not (math.isfinite(float(diff["low"])) and math.isfinite(float(diff["high"]))):
        return f"{mean} (one seed: no interval)"
    return f"{mean} (95% paired interval {low} to {high}, {diff['n']} seeds): {_claim(diff)}"


def against(diff: Mapping[str, Any], digits: int = 1) -> str:
    """``"beats CE (+2.3 points, 95% CI +0.4 to +4.2, Holm p 0.03)"`` from a comparison entry."""
    mean, low, high = _numbers(diff, digits)
    text = f"{verdict(diff)} {label(diff['baseline'])} ({mean}"
    if not math.isnan(diff["low"]):
        text += f", 95% CI {low} to {high}"
    if "p_holm" in diff and not math.isnan(diff["p_holm"]):
        text += f", Holm p {format_p(diff['p_holm'])}"
    return text + ")"


def control_table(rows: Sequence[dict[str, Any]], metric: str = "acc") -> Table:
    """Every method of ``rows`` (the benchmark's) minus its control, paired by seed (label
    ``"RRD − CE"``; accuracies in points); a method whose control is absent is left out."""
    entries = comparisons(rows, families=("control",), metrics=(metric,))
    for e in entries:
        e["label"] = f"{label(e['method'])} − {label(e['baseline'])}"
    return Table(entries, ["label", "n", "mean", "low", "high", "claim"], metric, "points")


def seed_table(
    values: Mapping[str, Sequence[float]], *, scale: float = 1.0
) -> list[dict[str, Any]]:
    """Per name, its ``label`` and :func:`seed_stats`; ``values[name][r]`` is the metric
    of seed ``r``, times ``scale`` (100: percent)."""
    return [
        {"label": name, **seed_stats([scale * float(x) for x in xs])} for name, xs in values.items()
    ]


def paired_rows(
    values: Mapping[str, Sequence[float]], baseline: str, *, scale: float = 1.0
) -> list[dict[str, Any]]:
    """Every name but ``baseline`` minus ``baseline``, paired by seed (same seeds, same order):
    ``label`` (``"A − B"``), ``method``, ``baseline``, ``n``, ``mean``, ``std``, ``low``,
    ``high``, ``within_noise`` (no interval, or it covers 0) and ``claim`` (uncorrected)."""
    if baseline not in values:
        raise ValueError(f"baseline {baseline!r} is not among {list(values)}")
    base = [scale * float(x) for x in values[baseline]]
    out = []
    for name, xs in values.items():
        if name == baseline:
            continue
        d = paired_difference([scale * float(x) for x in xs], base)
        row = {
            "label": f"{name} − {baseline}", "method": name, "baseline": baseline, "n": d.n,
            "mean": d.mean, "std": d.std, "low": d.low, "high": d.high,
            "within_noise": d.within_noise or math.isnan(d.low),
        }  # fmt: skip
        out.append({**row, "claim": _claim(row)})
    return out
