"""The committed benchmark results, setting by setting, as notebooks 05 and 06 read them.

The notebooks do not train: they read the committed ``results/`` folder at the current protocol
(:func:`.runs.protocol_setting`). Each :class:`CommittedSetting` says whether a setting is
complete, partial or absent, with the command that adds what is missing; rows of another spec
are counted, never used, and when none of the current spec is committed the newest spec is shown
and labelled ``earlier``. :func:`committed_benchmark` reads both arms
(:func:`~relkd_tutorial.bench.tuned.arm_rows`) with the benchmark's own comparisons, marked
fragile as the report marks them; :func:`comparison_table`, :func:`means_table` and
:func:`family_table` are compact tables, and :mod:`.synthesis` tells the project's question.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..bench.recipes import Recipes, recipes_of_meta
from ..bench.search_space import ablation_seeds
from ..bench.settings import (
    ABLATION_SETTING,
    DEFAULT_SETTINGS,
    METHOD_LABELS,
    METHODS,
    NEEDS_UNLABELLED,
    PERCENT,
    Setting,
    ablation_variants,
    has_unlabelled,
    label,
)
from ..bench.store import read_meta, read_runs
from ..bench.tuned import (
    arm_rows,
    headline_entries,
    marked,
    second_run_set,
    tuned_methods,
    tuning_comparisons,
)
from ..bench.verdict import comparisons, find_entry, markdown_table, select, stated
from ..bench.workspace import build_workspace
from ..stats import format_p
from .prose import Sentence, say
from .runs import Table, _check_metric, find_results_dir, protocol_setting, shown, summary_table


@dataclass
class CommittedSetting:
    """The committed runs of one setting of the current protocol: ``rows`` (this ``spec`` and
    ``phase``, every status, file order) of the ``expected`` runs, ``stale`` rows of another spec
    (ignored), the ``command`` that trains what is missing, the ``source`` ``runs.csv``
    (``None``: none), ``protocol_spec`` (the spec now) and the ``split`` it scores on."""

    name: str
    setting: Setting
    spec: str
    rows: list[dict[str, Any]]
    expected: int
    stale: int
    command: str
    source: Path | None = None
    protocol_spec: str = ""
    split: str = "test"

    @property
    def earlier(self) -> bool:
        """Whether the rows are of an earlier protocol (no row of the current spec and split is
        committed: the newest committed ones are shown instead, and said so)."""
        return bool(self.protocol_spec) and (
            self.spec != self.protocol_spec
            or any(r.get("eval_split", self.split) != self.split for r in self.rows)
        )

    @property
    def finished(self) -> list[dict[str, Any]]:
        """The rows with ``status == "ok"``."""
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def present(self) -> bool:
        """Whether any run of this setting finished."""
        return bool(self.finished)

    @property
    def complete(self) -> bool:
        """Whether every expected run is there (finished, diverged or n/a)."""
        return len(self.rows) >= self.expected

    def describe(self) -> Sentence:
        """One sentence: what is committed of this setting, and the command for the rest."""
        where = f"`{shown(self.source)}`" if self.source is not None else "the committed results"
        if not self.present:
            old = say(" ({stale} rows there are of an earlier configuration and are not used)",
                      stale=self.stale) if self.stale else ""  # fmt: skip
            return say(
                "**{name}**: not in the committed results yet{old}. Its runs come from "
                "`{command}`.",
                name=self.name, old=old, command=self.command,
            )  # fmt: skip
        seeds = sorted({r["seed"] for r in self.finished})
        text = say(
            "**{name}**: {n} of its {expected} runs in {where} (spec `{spec}`, seeds {seeds}).",
            name=self.name, n=len(self.rows), expected=self.expected, where=where,
            spec=self.spec, seeds=seeds,
        )  # fmt: skip
        if self.earlier:
            return say(
                "{text} These runs were made under an earlier protocol (the current one, spec "
                "`{now}`, has a different teacher, defaults or evaluation split; `docs/benchmark.md`): they are "
                "shown as committed, and `{command}` trains the current protocol's runs.",
                text=text, now=self.protocol_spec, command=self.command,
            )  # fmt: skip
        if not self.complete:
            text = say("{text} Incomplete: `{command}` trains the rest.", text=text,
                       command=self.command)  # fmt: skip
        return text


@functools.lru_cache(maxsize=32)
def _spec(setting: Setting, cache: Path) -> str:
    """A setting's spec (a workspace build reads the teacher: done once per kernel)."""
    return build_workspace(setting, cache, torch.device("cpu"), log=lambda _: None).spec


def _rows(folder: Path) -> tuple[list[dict[str, Any]], Path | None]:
    if not (folder / "runs.csv").is_file():
        return [], None
    return read_runs(folder / "runs.csv"), folder / "runs.csv"


def _expected_runs(setting: Setting, tuned: Sequence[str] = (), arm: str = "tuned") -> int:
    """Runs of a complete setting: every method on every seed, one ``n/a`` row for a method that
    needs unlabelled images where there are none (``NEEDS_UNLABELLED``); in the ``"defaults"``
    arm the ``tuned`` methods on the first ``default_seeds`` seeds only."""
    first = min(getattr(setting, "default_seeds", 0) or 0, len(setting.seeds))
    return sum(
        1 if m in NEEDS_UNLABELLED and not has_unlabelled(setting)
        else first if arm == "defaults" and m in tuned else len(setting.seeds)
        for m in METHODS
    )  # fmt: skip


def _shown_spec(rows: Sequence[dict[str, Any]], spec: str) -> str:
    """``spec`` if any row has it, else the newest spec the rows hold (an earlier protocol's
    runs, shown and labelled as such), else ``spec``."""
    specs = [r["spec"] for r in rows]
    return spec if spec in specs or not specs else specs[-1]


def _committed(mine: Sequence[dict[str, Any]], spec: str, **fields: Any) -> CommittedSetting:
    """The rows ``mine`` of :func:`_shown_spec`, the others counted as stale."""
    shown_spec = _shown_spec(mine, spec)
    return CommittedSetting(
        spec=shown_spec, rows=[r for r in mine if r["spec"] == shown_spec], protocol_spec=spec,
        stale=sum(r["spec"] != shown_spec for r in mine), **fields,
    )  # fmt: skip


def committed_results(
    results_dir: str | Path | None = None,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    arm: str = "tuned",
) -> dict[str, CommittedSetting]:
    """The committed final runs of each of ``settings`` (Fashion-MNIST, not ``"cross-task"``)
    at the current protocol's spec, of one ``arm``: ``"tuned"`` (each method at its recipe) or
    ``"defaults"`` (:func:`~relkd_tutorial.bench.tuned.arm_rows`; a folder written before recipes
    has one arm). ``results_dir``: default :func:`find_results_dir`."""
    folder = Path(results_dir) if results_dir is not None else find_results_dir()
    rows, source = _rows(folder)
    recipes = recipes_of_meta(read_meta(folder))  # None: one arm, the paper defaults
    rows = arm_rows(rows, recipes, arm)
    out = {}
    for name in settings:
        if name == "cross-task":
            raise ValueError("cross-task's spec needs its own teacher; read it with benchmark_runs")
        s = protocol_setting(name, fast=False)
        mine = [r for r in rows if r["setting"] == name and r["phase"] == "final"]
        out[name] = _committed(
            mine, _spec(s, folder / "cache"), name=name, setting=s, source=source,
            command=f"python -m relkd_tutorial.bench --settings {name} --out results",
            expected=_expected_runs(s, tuned_methods(recipes, name), arm),
        )  # fmt: skip
    return out


def committed_ablation(
    results_dir: str | Path | None = None, method: str = "grkd"
) -> CommittedSetting:
    """The committed ablation runs of ``method`` at the current spec, from the first of
    ``<results>/<method>-ablation/`` and ``<results>/`` that holds them scored on the validation
    split; else an earlier protocol's (test split, another spec), labelled so."""
    folder = Path(results_dir) if results_dir is not None else find_results_dir()
    s = protocol_setting(ABLATION_SETTING, fast=False)
    spec = _spec(s, folder / "cache")
    variants = ablation_variants(method)
    command = f"python -m relkd_tutorial.bench --ablation {method} --out results/{method}-ablation"
    rows: list[dict[str, Any]] = []
    source, stale = None, 0
    for where in (folder / f"{method}-ablation", folder):
        found, path = _rows(where)
        mine = [r for r in found if r["phase"] == "ablation" and r["method"] == method]
        current = [r for r in mine if r["spec"] == spec and r["eval_split"] == "val"]
        if current:
            rows, source, stale = current, path, len(mine) - len(current)
            break
        if mine and not rows:  # an earlier protocol's ablation (any split), shown as such
            older = _shown_spec(mine, spec)
            rows, source = [r for r in mine if r["spec"] == older], path
    return CommittedSetting(
        name=f"{ABLATION_SETTING} ({method} ablation)", setting=s, spec=rows[0]["spec"] if rows else spec,
        rows=rows, expected=len(variants) * len(ablation_seeds(s.seeds)), stale=stale, command=command,
        source=source, protocol_spec=spec, split="val",
    )  # fmt: skip


#: Where the second student's runs are committed (``docs/benchmark.md``): transfer, 8 seeds.
STUDENT_FOLDER = "student-m-transfer"


@dataclass
class Benchmark:
    """The committed main job: its ``recipes`` (``None``: one arm, the paper defaults), each
    arm's :func:`committed_results`, the comparisons of the tuned arm (``entries``) and of the
    paper-default arm where tuned methods ran (``default_entries``), marked fragile as the report
    marks them, the ``tuning`` comparisons, and the ``second`` run set's name and entries."""

    folder: Path
    recipes: Recipes | None
    tuned: dict[str, CommittedSetting]
    defaults: dict[str, CommittedSetting]
    entries: list[dict[str, Any]]
    default_entries: list[dict[str, Any]] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    second: str = ""
    second_entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def present(self) -> list[str]:
        """The settings with finished runs, in the protocol's order."""
        return [name for name, c in self.tuned.items() if c.present]

    @property
    def earlier(self) -> bool:
        """Whether the runs shown are of an earlier protocol (:attr:`CommittedSetting.earlier`)."""
        return any(self.tuned[name].earlier for name in self.present)

    def rows(self, arm: str = "tuned") -> list[dict[str, Any]]:
        """The finished rows of one arm, every present setting."""
        settings = self.tuned if arm == "tuned" else self.defaults
        return [r for c in settings.values() for r in c.finished]

    def arms(self, setting: str) -> bool:
        """Whether ``setting`` has a paper-default arm beside the tuned one (a tuned method's
        run at its defaults is committed)."""
        c = self.defaults.get(setting)
        tuned = tuned_methods(self.recipes, setting)
        return c is not None and any(r["method"] in tuned for r in c.finished)


def committed_benchmark(
    results_dir: str | Path | None = None, settings: Sequence[str] = DEFAULT_SETTINGS
) -> Benchmark:
    """Both arms of the committed main job and their comparisons, as the report reads them
    (fragile: :func:`~relkd_tutorial.bench.verdict.mark_fragile`, with the second run set)."""
    folder = Path(results_dir) if results_dir is not None else find_results_dir()
    recipes = recipes_of_meta(read_meta(folder))
    tuned = committed_results(folder, settings, "tuned")
    second = second_run_set(folder) if recipes is not None else None
    rows = [r for c in tuned.values() for r in c.finished]
    out = Benchmark(folder, recipes, tuned, {}, headline_entries(rows, recipes, second))
    if recipes is None:
        return out
    out.defaults = committed_results(folder, settings, "defaults")
    if second is not None:
        out.second = second[1]
        out.second_entries = comparisons(arm_rows(second[0], recipes, "tuned"))
    with_arms = [name for name in out.present if out.arms(name)]
    base = [r for name in with_arms for r in out.defaults[name].finished]
    out.default_entries = marked(comparisons(base), second, recipes, "defaults")
    both = {r["key"]: r for name in with_arms
            for r in (*out.tuned[name].finished, *out.defaults[name].finished)}  # fmt: skip
    out.tuning = marked(tuning_comparisons(list(both.values()), recipes), second, recipes, None)
    return out


def committed_student(
    results_dir: str | Path | None = None, folder: str = STUDENT_FOLDER
) -> CommittedSetting:
    """The second student's committed transfer runs (``<results>/<folder>/``, the student its
    ``meta.json`` records), tuned arm; an earlier protocol's are labelled ``earlier``."""
    where = (Path(results_dir) if results_dir is not None else find_results_dir()) / folder
    rows, source = _rows(where)
    meta = read_meta(where) or {}
    runs = [inv.get("settings", {}).get("transfer", {}) for inv in meta.get("invocations", [])]
    student = next((s["student"] for s in reversed(runs) if s.get("student")), "student_cnn_m")
    s = protocol_setting("transfer", fast=False)
    seeds = tuple(sorted({r["seed"] for r in rows if r["status"] == "ok"})) or s.seeds
    s = replace(s, student=student, seeds=seeds)
    spec = _spec(s, where / "cache") if rows else ""
    mine = select(arm_rows(rows, recipes_of_meta(meta), "tuned"), setting="transfer", phase="final")
    return _committed(
        mine, spec, name=f"transfer, `{student}`", setting=s, expected=_expected_runs(s),
        source=source, command=f"python -m relkd_tutorial.bench --settings transfer --student {student} "
        f"--seeds {','.join(map(str, seeds))} --out results/{folder}",
    )  # fmt: skip


def _pair_label(e: dict[str, Any], family: str) -> str:
    a, b = label(e["method"]), METHOD_LABELS.get(e["baseline"], "")
    if family in ("kd", "ce"):
        return a
    if family == "ablation":
        return str(e.get("variant", a))
    return f"{a} vs {b}"


def comparison_table(
    entries: Sequence[dict[str, Any]], setting: str, family: str, metric: str = "acc"
) -> Table:
    """One family of :func:`~relkd_tutorial.bench.verdict.comparisons` (or
    ``ablation_comparisons``) as a table for :func:`plot_paired` and for display: ``label``,
    ``n``, ``mean``, ``low``, ``high``, ``within_noise`` (after Holm, or fragile: a plot greys
    it), ``p``, ``p_holm`` (formatted), ``claim`` (or ``"fragile"``), ``sentence``, and
    ``baseline`` where the family has one (the plot names it)."""
    _check_metric(metric)
    chosen = select(entries, setting=setting, family=family, metric=metric)
    baselines = {e["baseline"] for e in chosen}
    out = []
    for e in chosen:
        r = {k: e[k] for k in ("method", "n", "mean", "low", "high", "within_noise", "claim",
                               "sentence")}  # fmt: skip
        r.update(label=_pair_label(e, family), p=format_p(e["p"]), p_holm=format_p(e["p_holm"]),
                 claim=stated(e), within_noise=e["within_noise"] or bool(e.get("fragile")))  # fmt: skip
        if len(baselines) == 1 and family != "ablation":
            r["baseline"] = e["baseline"]
        out.append(r)
    return Table(
        out, ["label", "n", "mean", "low", "high", "p", "p_holm", "claim"], metric, "points"
    )


_CLAIM_VERB = {"beats": "beats", "trails": "trails", "within noise": "is within noise of",
               "fragile": "is fragile against"}  # fmt: skip


def _one(e: dict[str, Any]) -> Sentence:
    """``GRKD+KD is within noise of KD (+0.12 points, 95% CI ..., Holm p 0.51)``; fragile:
    ``... is fragile against KD (..., Holm p 0.03; alone: beats)``."""
    unit, digits = ("points", 2) if e["metric"] in PERCENT else ("in tau", 3)
    return say(
        "{a} {verb} {b} ({mean:+.{d}f} {unit}, 95% CI {low:+.{d}f} to {high:+.{d}f}, Holm p "
        "{p}{alone})",
        a=label(e["method"]),
        verb=_CLAIM_VERB[stated(e)],
        b=label(e["baseline"]), mean=e["mean"], low=e["low"],
        high=e["high"], d=digits, unit=unit, p=format_p(e["p_holm"]),
        alone=f"; alone: {e['claim']}" if e.get("fragile") else "",
    )  # fmt: skip


def family_sentence(
    entries: Sequence[dict[str, Any]], setting: str, family: str, metric: str = "acc"
) -> Sentence:
    """One family's comparisons as clauses (``GRKD trails RKD (-4.23 points, ...)``), joined by
    semicolons; empty where the setting has no such family."""
    return Sentence(
        "; ".join(map(_one, select(entries, setting=setting, family=family, metric=metric)))
    )


def _interval(e: Mapping[str, Any], digits: int, sign: str = "+") -> str:
    f = f"{{:{sign}.{digits}f}}"
    return f"{f.format(e['mean'])} [{f.format(e['low'])}, {f.format(e['high'])}]"


def means_table(rows_by_setting: Mapping[str, Sequence[dict[str, Any]]],
                metric: str = "acc") -> Sentence:  # fmt: skip
    """Each method's mean of ``metric`` and its 95% ``t`` interval (:func:`~.runs.summary_table`),
    a column per setting of ``rows_by_setting`` (its finished rows), headed with its seeds."""
    if not rows_by_setting:
        raise ValueError("no setting to tabulate")
    tables = {name: summary_table(rows, metric, setting=name)
              for name, rows in rows_by_setting.items()}  # fmt: skip
    digits = 2 if metric in PERCENT else 3
    labels = list(dict.fromkeys(r["label"] for t in tables.values() for r in t))
    header = ["method"] + [f"{name} ({max(r['n'] for r in t)} seeds)" for name, t in tables.items()]
    cells = {(n, r["label"]): _interval(r, digits, "") for n, t in tables.items() for r in t
             if not math.isnan(r["mean"])}  # fmt: skip
    body = [[m, *(cells.get((n, m), "n/a") for n in tables)] for m in labels]
    return Sentence(markdown_table(" | ".join(header), body))


def family_table(entries: Sequence[dict[str, Any]], family: str, metric: str = "acc",
                 settings: Sequence[str] | None = None) -> Sentence:  # fmt: skip
    """One family of comparisons, a row per comparison and a column per setting (default:
    those of ``entries``): the mean paired difference, its 95% interval and the claim after Holm
    (or ``fragile``); accuracies in points."""
    chosen = [e for e in entries if e["family"] == family and e["metric"] == metric]
    if not chosen:
        raise ValueError(f"no comparison of family {family!r} for metric {metric!r}")
    names = list(settings) if settings is not None else list(
        dict.fromkeys(e["setting"] for e in chosen))  # fmt: skip
    digits = 2 if metric in PERCENT else 3
    pairs = list(dict.fromkeys((e["method"], e["baseline"]) for e in chosen))
    body = []
    for method, baseline in pairs:
        found = [find_entry(chosen, setting=n, method=method, baseline=baseline) for n in names]
        body.append([_pair_label({"method": method, "baseline": baseline}, family),
                     *(f"{_interval(e, digits)} {stated(e)}" if e else "" for e in found)])  # fmt: skip
    unit = " (points)" if metric in PERCENT else ""
    first = "comparison" if family not in ("kd", "ce") else f"method vs {family.upper()}"
    return Sentence(markdown_table(" | ".join([first + unit, *names]), body))


def _scrub(command: str) -> str:
    """``command`` with every absolute path shortened to ``…/<its last part>`` (a notebook output
    may not show a machine's layout, ``tests/test_notebooks.py``)."""
    return " ".join(
        f"…/{Path(tok).name}" if tok.startswith("/") and len(tok) > 1 else tok
        for tok in command.split(" ")
    )


def invocations(results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The invocations ``meta.json`` recorded (command, jobs, threads, wall time, load), oldest
    first, each ``command`` with absolute paths shortened; ``[]`` without a ``meta.json``."""
    meta = read_meta(results_dir if results_dir is not None else find_results_dir()) or {}
    return [{**inv, "command": _scrub(str(inv.get("command", "")))}
            for inv in meta.get("invocations", [])]  # fmt: skip
