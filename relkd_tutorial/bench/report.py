"""The benchmark's report: tables, paired differences, plain sentences and plots from ``runs.csv``.

Pure functions of the rows, so the notebooks draw the committed results with the code that wrote
them; :func:`write_report` writes them all next to ``runs.csv``. Accuracies are in percent, their
differences in points; Kendall tau and the distance correlation in their own units.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import figures, tuned, verdict
from .figures import curve_value, plot_curves, plot_seconds  # noqa: F401 (06)
from .recipes import recipes_of_meta
from .settings import (
    ABLATIONS,
    ALPHA,
    BASELINES,
    CONTROL_WEIGHTS,
    HEADLINE_BASELINE,
    METHOD_LABELS,
    METHODS,
    METRIC_LABELS,
    METRICS,
    PERCENT,
    SETTING_TITLES,
    _method_order,
    _ordered_settings,
    _scale,
    describe_params,
    label,
    pm,
)
from .store import read_histories, read_meta, read_runs, select_rows  # noqa: F401 (06)


def summarize_runs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (setting, method) over the final runs: ``<metric>_mean``/``_std`` over the
    seeds that finished, ``n``, ``diverged`` (the others); n/a methods: ``status``, ``note``."""
    out = []
    finals = [r for r in rows if r["phase"] == "final"]
    for setting in _ordered_settings(finals):
        in_setting = [r for r in finals if r["setting"] == setting]
        for method in sorted({r["method"] for r in in_setting}, key=_method_order):
            runs = [r for r in in_setting if r["method"] == method]
            na = [r for r in runs if r["status"] == "n/a"]
            ok = verdict.finished(runs)
            entry: dict[str, Any] = {"setting": setting, "method": method, "label": label(method)}
            if na and not ok:
                out.append({**entry, "status": "n/a", "note": na[0]["note"], "n": 0})
                continue
            entry.update(status="ok" if ok else "diverged", params=runs[0]["params"])
            if "recipe" in runs[0]:
                entry["recipe"] = runs[0]["recipe"]
            entry.update(n=len(ok), diverged=sum(r["status"] == "diverged" for r in runs))
            entry["seeds"] = sorted(r["seed"] for r in ok)
            for metric in (*METRICS, "seconds", "peak_mem_mb", "train_acc"):
                mean, std, _ = verdict.column_stats(ok, metric)
                entry.update({f"{metric}_mean": mean, f"{metric}_std": std})
            out.append(entry)
    return out


# --- Text ---


def _pm(entry: dict[str, Any], metric: str) -> str:
    mean, std = entry.get(f"{metric}_mean", math.nan), entry.get(f"{metric}_std", math.nan)
    k = _scale(metric)
    return "n/a" if math.isnan(mean) else pm(k * mean, k * std, 1 if metric in PERCENT else 3)


def _diff_cell(diffs: Sequence[dict[str, Any]], setting: str, method: str, baseline: str) -> str:
    e = verdict.find_entry(diffs, setting=setting, method=method, baseline=baseline, metric="acc")
    return verdict.interval_cell(e, one_seed="")


def summary_table_markdown(
    summary: Sequence[dict[str, Any]], diffs: Sequence[dict[str, Any]], setting: str
) -> str:
    """The Markdown table of one setting."""
    lines = []
    for e in verdict.select(summary, setting=setting):
        if e["status"] == "n/a":  # the other cells empty, written narrow
            lines.append([e["label"], f"n/a: {e['note']}" + " |" * 10])
            continue
        recipe = f" ({e['recipe']})" if e.get("recipe", "tuned") != "tuned" else ""
        seeds = str(e["n"]) + (f" (+{e['diverged']} diverged)" if e["diverged"] else "")
        peak = e["peak_mem_mb_mean"]
        lines.append(
            [e["label"], describe_params(e["params"]) + recipe, seeds, _pm(e, "acc")]
            + [_diff_cell(diffs, setting, e["method"], b) for b in BASELINES]
            + [_pm(e, m) for m in ("acc_tops", "acc_footwear", "kendall_tau", "dist_corr")]
            + [f"{e['seconds_mean']:.1f}", "n/a" if math.isnan(peak) else f"{peak:.0f}"]
        )
    header = (
        "method | trial | seeds | top-1 % | Δ vs CE (95% CI) | Δ vs KD (95% CI) | tops % | "
        "footwear % | Kendall tau | dist. corr. | s / run | peak MiB"
    )
    return verdict.markdown_table(header, lines)


def _setting_description(rows: Sequence[dict[str, Any]], setting: str, phase: str = "final") -> str:
    r = next(iter(verdict.finished(rows, setting, phase)), None)
    if r is None:
        return ""
    return (
        f"{r['n_train']} training images ({r['n_labelled']} labelled), {r['epochs']} epochs, "
        f"evaluated on the {r['eval_split']} split; spec `{r['spec']}`."
    )


def _protocol_note() -> list[str]:
    """How to read the tables (the protocol's constants, from :mod:`.settings`, no results)."""
    combos = ", ".join(
        f"{METHOD_LABELS[m]}: {describe_params(w)} plus its own term"
        for m, w in CONTROL_WEIGHTS.items()
    )
    return verdict.paragraphs(
        "Mean ± sample standard deviation over seeds. Δ columns: top-1 difference in percentage "
        "points against CE / KD, paired by seed (same labelled subset, initialisation and batch "
        "order), with the 95% paired t interval; `*` marks a difference that survives Holm's "
        f"correction over its family at level {ALPHA:g} (the interval excludes 0 and the "
        "Holm-adjusted p-value is at most the level). "
        "Kendall tau: mean over test images of the rank agreement between the teacher's and the "
        "student's class scores (did the ranking transfer). dist. corr.: Pearson correlation of "
        "teacher and student pairwise feature distances on a fixed stratified test batch. "
        "s / run: training wall time. peak MiB: resident memory the run added at its peak (CPU).",
        "Controls: every method is also compared with the run that differs from it in one thing. "
        f"The combinations train with KD's CE and KD weights ({combos}), so their control is KD; "
        "each relational term alone has CE weight 1, like CE, so its control is CE. "
        "Multiple comparisons: each family (every method against KD; against CE; against its "
        "control; GRKD against the other relational methods) is corrected with Holm's step-down "
        "method, so the chance of any false claim in a family stays at the level.",
    )


def plateau_sentence(
    rows: Sequence[dict[str, Any]], histories: dict[str, list[dict[str, float]]], setting: str
) -> str:
    """How much the test top-1 still rose over the last fifth of each run's epochs: per method,
    ``acc[E] - acc[E - k]`` with ``k = round(E / 5)`` (at least 1; a multi-stage method's last
    stage), mean over seeds. ``""`` if the setting recorded no curves."""
    finals = verdict.finished(rows, setting)
    gains: dict[str, float] = {}
    windows: set[tuple[int, int]] = set()
    for method in sorted({r["method"] for r in finals}, key=_method_order):
        per_seed = []
        for r in verdict.finished(finals, method=method):
            h = histories.get(r["key"], [])
            h = [e for e in h if not math.isnan(e.get("eval_acc", math.nan))]
            if not h:
                continue
            h = [e for e in h if e.get("stage") == h[-1].get("stage")]  # the last stage's epochs
            n = len(h)
            k = max(1, round(0.2 * n))
            if n <= k:
                continue
            per_seed.append(h[-1]["eval_acc"] - h[n - 1 - k]["eval_acc"])
            windows.add((k, n))
        if per_seed:
            gains[method] = 100.0 * sum(per_seed) / len(per_seed)
    if not gains:
        return ""
    lo = min(gains, key=gains.__getitem__)
    hi = max(gains, key=gains.__getitem__)
    window = (
        "the last {} of its {} epochs".format(*next(iter(windows)))
        if len(windows) == 1
        else "the last 20% of its epochs"
    )
    text = (
        f"Learning curves (`curves.png`): over {window}, a run's test top-1 (mean over seeds) "
        f"changed by {gains[lo]:+.2f} points ({label(lo)})"
    )
    if hi != lo:
        text += f" to {gains[hi]:+.2f} points ({label(hi)})"
    if "ce" in gains and "ce" not in (lo, hi):
        text += f"; CE {gains['ce']:+.2f}"
    return text + "."


def markdown_report(
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any] | None = None,
    histories: dict[str, list[dict[str, float]]] | None = None,
    second: tuple[Sequence[dict[str, Any]], str] | None = None,
) -> str:
    """The whole ``results.md``: per setting the verdict, the tables and the sentences, every
    number one of the computed values. ``histories`` adds the learning-curve sentence
    (:func:`plateau_sentence`); where ``meta`` records recipes, the tables and verdicts are the
    tuned arm's, marked fragile or firm (``second``: :func:`~.tuned.second_run_set`), followed by the
    defaults, what tuning changed and the recipes (:func:`~.tuned.out_of_the_box`)."""
    recipes = recipes_of_meta(meta)
    everything = select_rows(rows)
    rows = tuned.headline_rows(rows, recipes)
    summary = summarize_runs(rows)
    entries = tuned.headline_entries(rows, recipes, second)
    diffs = [e for e in entries if e["family"] in BASELINES]
    kd = METHOD_LABELS[HEADLINE_BASELINE]
    parts = ["# Benchmark results", "", *_meta_markdown(meta or {}), *_protocol_note()]
    for setting in _ordered_settings([r for r in rows if r["phase"] == "final"]):
        tuned_here = recipes is not None and setting in recipes.settings
        methods = [e["method"] for e in summary if e["setting"] == setting]
        parts += [f"## {SETTING_TITLES.get(setting, setting)}", ""]
        parts += verdict.paragraphs(
            _setting_description(rows, setting),
            tuned.headline_note(recipes, setting, methods) if tuned_here else "",
        )
        if verdict.select(entries, setting=setting, metric="acc"):
            parts += verdict.paragraphs(
                verdict.verdict_paragraph(entries, setting),
                verdict.precision_sentence(entries, setting),
                tuned.precision_cost_sentence(entries, rows, setting) if tuned_here else "",
                second_run_sentence(entries, setting, second) if tuned_here else "",
            )
        parts += verdict.paragraphs(
            summary_table_markdown(summary, diffs, setting),
            plateau_sentence(rows, histories or {}, setting),
        )
        for family, title in (
            ("control", "Each method against its one-thing-different control"),
            (HEADLINE_BASELINE, f"Every method against {kd}"),
            ("mission", "GRKD against the other relational methods"),
            ("pseudo", "Every logit method against the pseudo-label control"),
        ):
            table = verdict.family_table(entries, setting, family)
            parts += verdict.paragraphs(table and f"{title} (Holm over the family):\n\n{table}")
        for family, metric, title in (
            ("control", "acc", "Top-1 against the control"),
            (HEADLINE_BASELINE, "acc", f"Top-1 against {kd}"),
            ("ce", "acc", "Top-1 against CE"),
            ("ce", "kendall_tau", "Kendall tau against CE (did the ranking transfer)"),
        ):
            these = verdict.select(entries, setting=setting, family=family, metric=metric)
            bullets = "\n".join(f"- {e['sentence']}" for e in these)
            parts += verdict.paragraphs(bullets and f"{title}:\n\n{bullets}")
        if tuned_here:
            parts += tuned.out_of_the_box(everything, recipes, setting, entries, second)
    parts += _ablation_markdown(rows)
    if summary:
        parts += ["## Where the time goes", "", _time_table(summary), ""]
    return "\n".join(parts)


def second_run_sentence(
    entries: Sequence[dict[str, Any]], setting: str, second: tuple | None
) -> str:
    """How many of ``setting``'s verdicts the second run set (:func:`~.tuned.second_run_set`)
    changes: those :func:`~.verdict.mark_fragile` marked for it (``""``: no such runs)."""
    if second is None or not any(r["setting"] == setting for r in second[0]):
        return ""
    here = [e for e in entries if e["setting"] == setting]
    moved = [e for e in here if second[1] in e.get("fragile", "")]
    names = [f"{label(e['method'])} vs {label(e['baseline'])} "
             f"({METRIC_LABELS[e['metric']].replace(' %', '')})" for e in moved]  # fmt: skip
    top1 = sum(e["metric"] == "acc" for e in moved)
    listed = f": {verdict.join_items(names)}" if names else ""
    return (
        f"**Across machines.** {second[1][0].upper()}{second[1][1:]} trains the same runs again: of "
        f"the {len(here)} comparisons in every family and metric, {len(moved)} change verdict "
        f"there and are reported fragile{listed}; in top-1, {top1}."
    )


def ablation_entries(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`~relkd_tutorial.bench.verdict.ablation_comparisons` of every ablated method present."""
    return [e for method in sorted(ABLATIONS) for e in verdict.ablation_comparisons(rows, method)]


def _ablation_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    parts: list[str] = []
    runs = [r for r in rows if r["phase"] == "ablation"]
    for method in sorted({r["method"] for r in runs if r["method"] in ABLATIONS}):
        entries = verdict.ablation_comparisons(rows, method)
        for setting in _ordered_settings([r for r in runs if r["method"] == method]):
            desc = _setting_description(rows, setting, phase="ablation")
            parts += verdict.paragraphs(
                f"## {label(method)} ablation ({setting})",
                f"{desc} {verdict.ablation_protocol(rows, method, setting)}".strip(),
                verdict.ablation_paragraph(entries, setting),
                verdict.ablation_table(rows, entries, method, setting),
            )
    return parts


def _time_table(summary: Sequence[dict[str, Any]]) -> str:
    settings = _ordered_settings(summary)
    lines = []
    for method in METHODS:
        seconds = [figures.seconds_of(summary, s, method) for s in settings]
        if any(t is not None for t in seconds):
            cells = ("" if t is None else f"{t:.1f}" for t in seconds)
            lines.append([METHOD_LABELS[method], *cells])
    return verdict.markdown_table("method | " + " | ".join(f"{s} s/run" for s in settings), lines)


def _meta_markdown(meta: dict[str, Any]) -> list[str]:
    lines = []
    for inv in meta.get("invocations", []):
        load = inv.get("load_average_start")
        load_text = f", load average at start {load[0]:.1f}" if load else ""
        preset = f", {inv['preset']} preset" if inv.get("preset") else ""
        lines.append(
            f"- `{inv['command']}` ({inv['mode']} mode{preset}, {inv['device']}, "
            f"{inv['threads']} threads): {inv['runs_trained']} runs in "
            f"{inv['wall_seconds']:.0f} s{load_text}"
        )
    env = meta.get("environment", {})
    if env:
        lines.append(
            f"- torch {env.get('torch')}, Python {env.get('python')}, {env.get('machine')}, "
            f"{env.get('cpu_count')} CPUs"
        )
    return verdict.paragraphs("\n".join(lines))


def stdout_summary(
    rows: Sequence[dict[str, Any]], specs: Iterable[str] | None = None, meta: dict | None = None
) -> str:
    """A compact text table per setting for the terminal (the headline arm, ``meta``'s recipes)."""
    rows = tuned.arm_rows(select_rows(rows, specs), recipes_of_meta(meta), "tuned")
    summary = summarize_runs(rows)
    diffs = verdict.comparisons(rows, BASELINES)
    out = []
    for setting in _ordered_settings(rows):
        out.append(f"\n== {setting} ==")
        out.append(
            f"{'method':<14}{'top-1 %':>14}{'vs CE (95% CI)':>24}{'tops %':>13}{'footw. %':>13}"
            f"{'tau':>14}{'s/run':>8}"
        )
        for e in verdict.select(summary, setting=setting):
            if e["status"] == "n/a":
                out.append(f"{e['label']:<14}  n/a: {e['note']}")
                continue
            out.append(
                f"{e['label']:<14}{_pm(e, 'acc'):>14}{_diff_cell(diffs, setting, e['method'], 'ce'):>24}"
                f"{_pm(e, 'acc_tops'):>13}{_pm(e, 'acc_footwear'):>13}"
                f"{_pm(e, 'kendall_tau'):>14}{e['seconds_mean']:>8.1f}"
            )
    return "\n".join(out)


def write_report(out_dir: str | Path, plots: bool = True) -> None:
    """Rebuild ``summary.csv``, ``differences.csv`` (every family), ``ablation.csv``
    (if there are ablation runs), ``results.md`` and the PNGs; with recipes (``meta.json``), the
    headline arm's, plus ``summary-defaults.csv``, ``differences-defaults.csv`` and ``tuning.csv``
    (:mod:`.tuned`); a :data:`~.tuned.SECOND_RUN_SET` beside them marks verdicts that differ
    there."""
    out_dir = Path(out_dir)
    rows = read_runs(out_dir / "runs.csv")
    if not rows:
        return
    meta = read_meta(out_dir)
    recipes = recipes_of_meta(meta)
    second = tuned.second_run_set(out_dir)
    chosen = tuned.headline_rows(rows, recipes)
    summary = summarize_runs(chosen)
    entries = tuned.headline_entries(chosen, recipes, second)
    tables = {"summary": summary, "differences": entries, "ablation": ablation_entries(chosen)}
    if recipes is not None:
        everything = select_rows(rows)
        defaults = tuned.arm_rows(everything, recipes, "defaults")
        tables["summary-defaults"] = summarize_runs(defaults)
        tables["differences-defaults"] = verdict.comparisons(defaults)
        tables["tuning"] = tuned.tuning_comparisons(everything, recipes)
    for stem, table in tables.items():
        if stem == "ablation" and not table:
            continue  # no ablation runs
        with open(out_dir / f"{stem}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in table for k in r)))
            writer.writeheader()
            writer.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()}
                             for r in table)  # fmt: skip
    histories = read_histories(out_dir / "histories.csv")
    (out_dir / "results.md").write_text(markdown_report(rows, meta, histories, second))
    if plots:
        diffs = [e for e in entries if e["family"] in BASELINES]
        for stem, fig in figures.report_figures(chosen, summary, diffs, histories).items():
            fig.savefig(out_dir / f"{stem}.png", dpi=110)
