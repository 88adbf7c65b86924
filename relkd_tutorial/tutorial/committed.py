"""The committed benchmark results, setting by setting, as notebook 06 reads them.

Notebook 06 does not train: it reads the committed ``results/`` folder
(:func:`relkd_tutorial.tutorial.runs.find_results_dir`) and shows whatever the current protocol
(the benchmark's default preset on a CPU, :func:`relkd_tutorial.tutorial.runs.protocol_setting`)
has there. A committed setting may be complete, partial (a run still in progress, or stopped) or
absent (its invocation is still to come); each :class:`CommittedSetting` says which, and gives the
command that adds what is missing. Rows of another configuration (another spec: the fingerprint
of the setting and the teacher) are counted, never used.

- :func:`committed_results`: the default settings' final runs, one :class:`CommittedSetting` each.
- :func:`committed_ablation`: the GRKD ablation's runs (``results/`` or ``results/grkd-ablation/``).
- :func:`comparison_table`: one family of :func:`relkd_tutorial.bench.verdict.comparisons`
  (against KD, CE, the one-thing-different control, or GRKD against its rivals) as a
  :class:`~relkd_tutorial.tutorial.runs.Table` that
  :func:`~relkd_tutorial.tutorial.plots_stats.plot_paired` draws, with the Holm-adjusted p-values.
- :func:`means_table`, :func:`family_table`, :func:`sweep_table`: one compact Markdown table
  each (every setting side by side; the sweep's chosen trials), so the notebook renders a table
  where a report would print pages.

Everything a sentence says is computed here or in the report; the sentences are :func:`say`'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    METRIC_LABELS,
    NEEDS_UNLABELLED,
    PERCENT,
    Setting,
    ablation_variants,
    describe_params,
    has_unlabelled,
)
from ..bench.store import read_runs
from ..bench.tuned import arm_rows
from ..bench.verdict import comparisons
from ..bench.workspace import build_workspace
from ..stats import format_p, mean_std
from .prose import Sentence, say
from .runs import Table, find_results_dir, protocol_setting, shown, summary_table

#: Where the GRKD ablation may be committed: its own folder (``docs/benchmark.md``) or the main one.
ABLATION_FOLDERS: tuple[str, ...] = ("grkd-ablation", ".")


@dataclass
class CommittedSetting:
    """The committed runs of one setting of the current protocol.

    Attributes:
        name: the setting (``"transfer"``, ...).
        setting: the protocol's :class:`~relkd_tutorial.bench.settings.Setting`.
        spec: its fingerprint now (setting, teacher, memory layout).
        rows: the committed rows of this spec and phase (every status), in file order.
        expected: the runs the complete setting has (methods x seeds, or variants x seeds).
        stale: committed rows of this setting and phase with another spec (ignored).
        command: the command that trains what is missing (it resumes, skipping what is there).
        source: the ``runs.csv`` the rows come from (``None``: none found).
        split: the split the current protocol scores these runs on (an ablation: ``"val"``).
    """

    name: str
    setting: Setting
    spec: str
    rows: list[dict[str, Any]]
    expected: int
    stale: int
    command: str
    source: Path | None = None
    phase: str = "final"
    methods: tuple[str, ...] = field(default=METHODS)
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
            old = (
                say(
                    " ({stale} rows there are of an earlier configuration and are not used)",
                    stale=self.stale,
                )  # fmt: skip
                if self.stale
                else ""
            )
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


def _spec(setting: Setting, cache: Path) -> str:
    ws = build_workspace(setting, cache, torch.device("cpu"), log=lambda _: None)
    return ws.spec


def _rows(folder: Path | None) -> tuple[list[dict[str, Any]], Path | None]:
    if folder is None or not (folder / "runs.csv").is_file():
        return [], None
    return read_runs(folder / "runs.csv"), folder / "runs.csv"


def folder_recipes(folder: str | Path) -> Recipes | None:
    """The recipes a results folder's runs used (its ``meta.json``; ``None``: every method at its
    paper defaults, as before recipes existed)."""
    meta = Path(folder) / "meta.json"
    return recipes_of_meta(json.loads(meta.read_text()) if meta.is_file() else None)


def _expected_runs(setting: Setting) -> int:
    """Runs of a complete setting: every method on every seed, one ``n/a`` row for a method that
    needs unlabelled images where there are none (``NEEDS_UNLABELLED``)."""
    return sum(
        1 if m in NEEDS_UNLABELLED and not has_unlabelled(setting) else len(setting.seeds)
        for m in METHODS
    )


def _shown_spec(rows: Sequence[dict[str, Any]], spec: str) -> str:
    """``spec`` if any row has it, else the newest spec the rows hold (an earlier protocol's
    runs, shown and labelled as such), else ``spec``."""
    specs = [r["spec"] for r in rows]
    return spec if spec in specs or not specs else specs[-1]


def committed_results(
    results_dir: str | Path | None = None,
    settings: Sequence[str] = DEFAULT_SETTINGS,
    preset: str | None = None,
    arm: str = "tuned",
) -> dict[str, CommittedSetting]:
    """The committed final runs of each of ``settings`` at the current protocol's spec.

    Args:
        results_dir: the results folder (default :func:`find_results_dir`).
        settings: Fashion-MNIST settings (not ``"cross-task"``, whose spec needs its teacher).
        preset: the benchmark preset (default: the benchmark's default on a CPU).
        arm: ``"tuned"`` (the headline: each method at its recipe, or at its defaults where it
            has none) or ``"defaults"`` (the paper defaults; :func:`~relkd_tutorial.bench.tuned.
            arm_rows`). A folder written before recipes has one arm, the same for both.
    """
    folder = Path(results_dir) if results_dir is not None else find_results_dir()
    rows, source = _rows(folder)
    rows = arm_rows(rows, folder_recipes(folder), arm)
    out = {}
    for name in settings:
        if name == "cross-task":
            raise ValueError("cross-task's spec needs its own teacher; read it with benchmark_runs")
        s = protocol_setting(name, fast=False, preset=preset)
        spec = _spec(s, folder / "cache")
        mine = [r for r in rows if r["setting"] == name and r["phase"] == "final"]
        command = "python -m relkd_tutorial.bench --settings " + name + " --out results"
        if preset:
            command += f" --preset {preset}"
        shown_spec = _shown_spec(mine, spec)
        out[name] = CommittedSetting(
            name=name, setting=s, spec=shown_spec, rows=[r for r in mine if r["spec"] == shown_spec],
            expected=_expected_runs(s), stale=sum(r["spec"] != shown_spec for r in mine),
            command=command, source=source, protocol_spec=spec,
        )  # fmt: skip
    return out


def committed_ablation(
    results_dir: str | Path | None = None, method: str = "grkd", preset: str | None = None
) -> CommittedSetting:
    """The committed ablation runs of ``method`` (``phase == "ablation"``) at the current spec.

    Looked for in ``<results>/grkd-ablation/`` (the documented command's folder), then in
    ``<results>/`` itself; the first folder that holds any such row of the current spec, scored on
    the validation split, wins. Test-split rows (the ablation's earlier protocol) are shown as an
    earlier protocol's, and said so.
    """
    folder = Path(results_dir) if results_dir is not None else find_results_dir()
    s = protocol_setting(ABLATION_SETTING, fast=False, preset=preset)
    spec = _spec(s, folder / "cache")
    variants = ablation_variants(method)
    command = f"python -m relkd_tutorial.bench --ablation {method} --out results/{method}-ablation"
    best: tuple[list[dict[str, Any]], Path | None, int] = ([], None, 0)
    earlier: tuple[list[dict[str, Any]], Path | None, int] = ([], None, 0)
    for sub in (f"{method}-ablation", "."):
        rows, source = _rows(folder / sub if sub != "." else folder)
        mine = [r for r in rows if r["phase"] == "ablation" and r["method"] == method]
        current = [r for r in mine if r["spec"] == spec and r["eval_split"] == "val"]
        if current:
            best = (current, source, len(mine) - len(current))
            break
        if mine and not best[2]:
            best = ([], None, len(mine))
            older = _shown_spec(mine, spec)  # an earlier protocol's ablation, shown as such
            earlier = ([r for r in mine if r["spec"] == older], source, 0)  # any split
    if not best[0] and earlier[0]:
        best = earlier
    shown_spec = best[0][0]["spec"] if best[0] else spec
    return CommittedSetting(
        name=f"{ABLATION_SETTING} ({method} ablation)", setting=s, spec=shown_spec, rows=best[0],
        expected=len(variants) * len(ablation_seeds(s.seeds)), stale=best[2], command=command, source=best[1],
        phase="ablation", methods=(method,), protocol_spec=spec, split="val",
    )  # fmt: skip


def _pair_label(e: dict[str, Any], family: str) -> str:
    a, b = METHOD_LABELS.get(e["method"], e["method"]), METHOD_LABELS.get(e["baseline"], "")
    if family in ("kd", "ce"):
        return a
    if family == "ablation":
        return str(e.get("variant", a))
    return f"{a} vs {b}"


def comparison_table(
    entries: Sequence[dict[str, Any]], setting: str, family: str, metric: str = "acc"
) -> Table:
    """One family of comparisons as a table for :func:`plot_paired` and for display.

    Args:
        entries: :func:`relkd_tutorial.bench.verdict.comparisons` (or
            :func:`~relkd_tutorial.bench.verdict.ablation_comparisons`) of the rows.
        setting, family, metric: which comparisons (``family``: ``"kd"``, ``"ce"``,
            ``"control"``, ``"mission"``, ``"ablation"``).

    Returns:
        Rows with ``label``, ``n``, ``mean``, ``low``, ``high``, ``within_noise`` (after Holm),
        ``p`` and ``p_holm`` (formatted), ``claim`` and ``sentence``; a ``baseline`` key only
        where the family has one baseline (the plot then names it).
    """
    if metric not in METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(METRIC_LABELS)}, got {metric!r}")
    chosen = [
        e for e in entries
        if e["setting"] == setting and e["family"] == family and e["metric"] == metric
    ]  # fmt: skip
    baselines = {e["baseline"] for e in chosen}
    out = []
    for e in chosen:
        r = {k: e[k] for k in ("method", "n", "mean", "low", "high", "within_noise", "claim",
                               "sentence")}  # fmt: skip
        r.update(label=_pair_label(e, family), p=format_p(e["p"]), p_holm=format_p(e["p_holm"]))
        if len(baselines) == 1 and family != "ablation":
            r["baseline"] = e["baseline"]
        out.append(r)
    unit = "points" if metric in PERCENT else ""
    return Table(out, ["label", "n", "mean", "low", "high", "p", "p_holm", "claim"], metric, unit)


_CLAIM_VERB = {"beats": "beats", "trails": "trails", "within noise": "is within noise of"}


def _names(entries: Sequence[dict[str, Any]]) -> str:
    names = [METHOD_LABELS.get(e["method"], e["method"]) for e in entries]
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _one(e: dict[str, Any]) -> Sentence:
    """``GRKD+KD is within noise of KD (+0.12 points, 95% CI -0.4 to +0.6, Holm p 0.51)``."""
    unit, digits = ("points", 2) if e["metric"] in PERCENT else ("in tau", 3)
    return say(
        "{a} {verb} {b} ({mean:+.{d}f} {unit}, 95% CI {low:+.{d}f} to {high:+.{d}f}, Holm p {p})",
        a=METHOD_LABELS.get(e["method"], e["method"]), verb=_CLAIM_VERB[e["claim"]],
        b=METHOD_LABELS.get(e["baseline"], e["baseline"]), mean=e["mean"], low=e["low"],
        high=e["high"], d=digits, unit=unit, p=format_p(e["p_holm"]),
    )  # fmt: skip


def verdict_summary(
    entries: Sequence[dict[str, Any]], setting: str, metric: str = "acc"
) -> Sentence:
    """The verdict of one setting in a few sentences, from :func:`comparisons`' entries.

    Against KD (who beats, trails, ties after Holm), the controlled comparisons of the two
    combinations and of GRKD alone, and GRKD against RKD, RRD and REFILLED. Every number and
    every word of the verdict ("beats", "within noise") is computed.
    """
    chosen = [e for e in entries if e["setting"] == setting and e["metric"] == metric]
    kd = [e for e in chosen if e["family"] == "kd"]
    if not kd:
        raise ValueError(f"no comparison against KD in {setting!r} for {metric!r}")
    by_claim = {c: [e for e in kd if e["claim"] == c] for c in _CLAIM_VERB}
    parts = [
        say(
            "In **{setting}** ({what}; {m} comparisons against KD, Holm-corrected): beat KD: "
            "{beats}; trail KD: {trails}; within noise of KD: {noise}.",
            setting=setting,
            what=METRIC_LABELS[metric].replace(" %", ""),
            m=len(kd),
            beats=_names(by_claim["beats"]),
            trails=_names(by_claim["trails"]),
            noise=_names(by_claim["within noise"]),
        )  # fmt: skip
    ]
    control = {e["method"]: e for e in chosen if e["family"] == "control"}
    picked = [control[m] for m in ("grkd_kd", "rrd_kd", "grkd") if m in control]
    if picked:
        parts.append(
            say(
                "Against their one-thing-different controls: {items}.",
                items="; ".join(_one(e) for e in picked),
            )  # fmt: skip
        )
    mission = family_sentence(entries, setting, "mission", metric)
    if mission:
        parts.append(say("The question of this project: {items}.", items=mission))
    return Sentence(" ".join(parts))


def family_sentence(
    entries: Sequence[dict[str, Any]], setting: str, family: str, metric: str = "acc"
) -> Sentence:
    """One family's comparisons as clauses (``GRKD trails RKD (-4.23 points, ...)``), joined by
    semicolons; empty where the setting has no such family."""
    chosen = [e for e in entries
              if (e["setting"], e["family"], e["metric"]) == (setting, family, metric)]  # fmt: skip
    return Sentence("; ".join(_one(e) for e in chosen))


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Sentence:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return Sentence("\n".join(lines))


def _interval(mean: float, low: float, high: float, digits: int, sign: str = "+") -> str:
    f = f"{{:{sign}.{digits}f}}"
    return f"{f.format(mean)} [{f.format(low)}, {f.format(high)}]"


def means_table(rows_by_setting: Mapping[str, Sequence[dict[str, Any]]],
                metric: str = "acc") -> Sentence:  # fmt: skip
    """Each method's mean of ``metric`` and its 95% ``t`` interval, every setting side by side.

    ``rows_by_setting``: a setting's finished rows (``CommittedSetting.finished``). One row per
    method, one column per setting (headed with its number of seeds); a cell is
    ``mean [low, high]`` (percent for accuracies), as :func:`~.runs.summary_table` computes it.
    """
    if not rows_by_setting:
        raise ValueError("no setting to tabulate")
    tables = {name: summary_table(rows, metric, setting=name)
              for name, rows in rows_by_setting.items()}  # fmt: skip
    digits = 2 if metric in PERCENT else 3
    labels = list(dict.fromkeys(r["label"] for t in tables.values() for r in t))
    header = ["method"] + [f"{name} ({max(r['n'] for r in t)} seeds)" for name, t in tables.items()]
    body = []
    for label in labels:
        cells = [label]
        for t in tables.values():
            r = next((r for r in t if r["label"] == label), None)
            ok = r is not None and not math.isnan(r["mean"])
            cells.append(_interval(r["mean"], r["low"], r["high"], digits, "") if ok else "n/a")
        body.append(cells)
    return _markdown(header, body)


def family_table(entries: Sequence[dict[str, Any]], family: str, metric: str = "acc",
                 settings: Sequence[str] | None = None) -> Sentence:  # fmt: skip
    """One family of comparisons in every setting: a row per comparison, a column per setting.

    A cell is the mean paired difference, its 95% interval and the claim after Holm's correction
    over the family in that setting (``beats``, ``trails``, ``within noise``); accuracies in
    points. ``settings``: which and in what order (default: those of ``entries``).
    """
    chosen = [e for e in entries if e["family"] == family and e["metric"] == metric]
    if not chosen:
        raise ValueError(f"no comparison of family {family!r} for metric {metric!r}")
    names = list(settings) if settings is not None else list(
        dict.fromkeys(e["setting"] for e in chosen))  # fmt: skip
    digits = 2 if metric in PERCENT else 3
    pairs = list(dict.fromkeys((e["method"], e["baseline"]) for e in chosen))
    body = []
    for method, baseline in pairs:
        cells = [_pair_label({"method": method, "baseline": baseline}, family)]
        for name in names:
            e = next((e for e in chosen if (e["setting"], e["method"], e["baseline"])
                      == (name, method, baseline)), None)  # fmt: skip
            cells.append(
                f"{_interval(e['mean'], e['low'], e['high'], digits)} {e['claim']}" if e else ""
            )
        body.append(cells)
    unit = " (points)" if metric in PERCENT else ""
    first = "comparison" if family not in ("kd", "ce") else f"method vs {family.upper()}"
    return _markdown([first + unit, *names], body)


def sweep_table(rows: Sequence[dict[str, Any]], setting: str = "transfer") -> Sentence:
    """The equal-budget sweep in one table: per method the trial the validation split chose, its
    seeds, its test top-1 (mean ± sample std, percent) and its paired difference from KD's
    chosen trial (95% interval; the claim after Holm over the family)."""
    finals = [r for r in rows if r["setting"] == setting and r["phase"] == "final"
              and r["status"] == "ok"]  # fmt: skip
    if not finals:
        raise ValueError(f"no finished final run of {setting!r} in the sweep's rows")
    vs_kd = {e["method"]: e for e in comparisons(finals, families=("kd",), metrics=("acc",))}
    body = []
    for method in [m for m in METHODS if any(r["method"] == m for r in finals)]:
        runs = [r for r in finals if r["method"] == method]
        mean, std, n = mean_std([100 * r["acc"] for r in runs])
        e = vs_kd.get(method)
        diff = f"{_interval(e['mean'], e['low'], e['high'], 2)} {e['claim']}" if e else "baseline"
        body.append([METHOD_LABELS[method], describe_params(runs[0]["params"]), str(n),
                     f"{mean:.1f} ± {std:.1f}", diff])  # fmt: skip
    return _markdown(["method", "chosen trial", "seeds", "test top-1 %", "vs KD (points)"], body)


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
    import json

    folder = Path(results_dir) if results_dir is not None else find_results_dir()
    path = folder / "meta.json"
    if not path.is_file():
        return []
    out = []
    for inv in json.loads(path.read_text()).get("invocations", []):
        out.append({**inv, "command": _scrub(str(inv.get("command", "")))})
    return out
