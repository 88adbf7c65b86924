"""Tuned against tuned: the main job's two arms, what tuning changes, what the report says of it.

With recipes, a setting's final runs hold two **arms**, told apart by their ``params``: every
method at its recipe (the headline) and the tuned methods at their paper defaults on the first
``default_seeds`` seeds ("out of the box"). Every table and verdict reads one arm
(:func:`arm_rows`); :func:`tuning_comparisons` pairs each tuned method with itself at its defaults.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..stats import t_quantile
from . import verdict
from .recipes import Recipe, Recipes
from .settings import (
    CONTROL_WEIGHTS,
    CONTROLS,
    HEADLINE_BASELINE,
    MISSION_METHOD,
    _method_order,
    _ordered_settings,
    describe_params,
    label,
    params_tag,
    pm,
)
from .store import read_meta, read_runs, select_rows

ARMS: tuple[str, ...] = ("tuned", "defaults")

#: A second run set of a results folder's runs (the same command measured otherwise, e.g. under
#: ``ATEN_CPU_CAPABILITY=avx2``), in ``<folder>/replicate/``: a verdict that differs there is
#: reported as fragile (:func:`~relkd_tutorial.bench.verdict.mark_fragile`).
SECOND_RUN_SET = "replicate"


def arm_rows(
    rows: Sequence[dict[str, Any]], recipes: Recipes | None, arm: str = "tuned"
) -> list[dict[str, Any]]:
    """The rows of one arm: ``"tuned"`` (each method at its canonical recipe, ``{}`` without
    one) or ``"defaults"`` (at ``{}``). Only the final runs of the settings that ran under
    ``recipes`` are filtered; n/a and ablation rows are kept in both."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    if recipes is None:
        return list(rows)
    out = []
    for r in rows:
        if r["phase"] != "final" or r["status"] == "n/a" or r["setting"] not in recipes.settings:
            out.append(r)
            continue
        wanted = recipes.run_params(r["setting"], r["method"]) if arm == "tuned" else {}
        if r["params"] == params_tag(wanted):
            out.append(r)
    return out


def _recipes_in(recipes: Recipes | None, setting: str) -> list[tuple[str, Recipe]]:
    """``(method, recipe)`` of ``setting``'s recipes, in the report's method order."""
    mine = recipes.settings.get(setting, {}) if recipes is not None else {}
    return sorted(mine.items(), key=lambda kv: _method_order(kv[0]))


def tuned_methods(recipes: Recipes | None, setting: str) -> list[str]:
    """The methods whose recipe in ``setting`` differs from their defaults (two arms there)."""
    return [m for m, r in _recipes_in(recipes, setting) if r.run_params]


def tuning_comparisons(
    rows: Sequence[dict[str, Any]], recipes: Recipes | None
) -> list[dict[str, Any]]:
    """Each tuned method at its recipe minus itself at its defaults in top-1, paired by seed
    (family ``"tuning"``, Holm over a setting's tuned methods); entries like
    :func:`~.verdict.comparisons`', ``baseline`` the method itself, ``params`` the recipe's tag."""
    out: list[dict[str, Any]] = []
    finals = verdict.finished(rows)
    for setting in _ordered_settings(finals):
        for method in tuned_methods(recipes, setting):
            tag = params_tag(recipes.run_params(setting, method))  # type: ignore[union-attr]
            arms = verdict.by_seed(verdict.finished(finals, setting, method=method), "params")
            labels = (f"{label(method)} tuned", f"{label(method)} at its defaults")
            verdict.add_paired(out, arms.get(tag, {}), arms.get("{}", {}), labels, ("acc",),
                               setting=setting, family="tuning", method=method, baseline=method,
                               params=tag)  # fmt: skip
    return verdict.holm_correct(out)


def _mission_claims(entries: Sequence[dict[str, Any]], setting: str) -> dict[str, str]:
    """``{rival: verdict}`` of the question's top-1 family (``"fragile"`` where marked)."""
    mission = verdict.select(entries, setting=setting, family="mission", metric="acc")
    return {e["baseline"]: verdict.stated(e) for e in mission}


def tuning_paragraph(
    tuning: Sequence[dict[str, Any]],
    defaults: Sequence[dict[str, Any]],
    tuned: Sequence[dict[str, Any]],
    setting: str,
    recipes: Recipes | None,
    methods: Sequence[str],
) -> str:
    """What tuning does to the comparison: which tuned methods gained or lost against their own
    defaults, which were not tuned, and which of the question's verdicts differ between the
    arms."""
    mine = verdict.select(tuning, setting=setting, metric="acc")
    out = [f"**What tuning does to the comparison ({setting}).**"]

    def name(e: dict[str, Any]) -> str:
        return f"{label(e['method'])} at {describe_params(e['params'])}"

    out.append(
        "Each tuned method minus itself at its paper defaults: "
        + verdict.family_clauses(mine, name, ("tuning raised", "tuning lowered"))
        if mine
        else "No method has a recipe that differs from its paper defaults here."
    )
    untuned = ", ".join(label(m) for m in methods if m not in tuned_methods(recipes, setting))
    if untuned:
        out.append(f"At their paper defaults in both tables (no recipe, or the recipe is the "
                   f"defaults): {untuned}.")  # fmt: skip
    before, after = _mission_claims(defaults, setting), _mission_claims(tuned, setting)
    both = [rival for rival in after if rival in before]
    moved = [f"against {label(r)}, {before[r]} at the defaults, {after[r]} tuned" for r in both
             if before[r] != after[r]]  # fmt: skip
    kept = [f"against {label(r)}, {after[r]}" for r in both if before[r] == after[r]]
    if both:
        between = "between the paper defaults and the tuned recipes"
        verb = "differs" if len(moved) == 1 else "differ"
        text = (
            f"{len(moved)} {verb} {between}: " + "; ".join(moved)
            if moved
            else f"none differs {between}"
        )
        same = f"; the same in both: {'; '.join(kept)}" if kept else ""
        who = label(MISSION_METHOD)
        out.append(
            f"Of the question's {len(both)} verdicts ({who} against each rival), {text}{same}."
        )
    return " ".join(out)


def precision_cost_sentence(
    entries: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], setting: str
) -> str:
    """What top-1 intervals against KD of :data:`~.verdict.TARGET_HALF_WIDTH` points would cost:
    the seeds ``k`` that bring the family's widest paired standard deviation ``s`` to
    ``t(k - 1) s / sqrt(k) <= target``, and the runs and time they add at this folder's seconds
    per run. ``""`` when every interval meets it."""
    family, target = HEADLINE_BASELINE, verdict.TARGET_HALF_WIDTH
    chosen = verdict.select(entries, setting=setting, family=family, metric="acc")
    chosen = [e for e in chosen if e["n"] >= 2]
    if not chosen or all((e["high"] - e["low"]) / 2 <= target for e in chosen):
        return ""
    widest = max(chosen, key=lambda e: e["std"])
    sd, have = widest["std"], max(e["n"] for e in chosen)
    q = 0.5 + verdict.CONFIDENCE / 2
    need = next(k for k in itertools.count(2) if t_quantile(q, k - 1) * sd / math.sqrt(k) <= target)
    ok = verdict.finished(rows, setting)
    methods = {r["method"] for r in ok}
    per_run = verdict.column_stats(ok, "seconds")[0]  # NaN without a timed run
    more = max(0, need - have) * len(methods)
    total = more * per_run
    cost = f"{total / 3600:.1f} CPU-hours" if total >= 3600 else f"{total / 60:.0f} CPU-minutes"
    return (
        f"What ±{target:g} points against {label(family)} would cost in {setting}: the widest "
        f"paired standard deviation here is {sd:.2f} points ({label(widest['method'])}), so about "
        f"{need} paired seeds instead of {have}, i.e. {more} more runs of the {len(methods)} "
        f"methods at about {per_run:.0f} s each on this machine: about {cost}."
    )


def recipe_table(recipes: Recipes | None, setting: str) -> str:
    """The recipes of ``setting`` and their flags (a Markdown table; ``""`` without recipes)."""
    mine = _recipes_in(recipes, setting)
    if not mine:
        return ""

    def span(pair: tuple[float, float]) -> str:
        return f"{pair[0]:g} to {pair[1]:g}"

    rows = []
    for method, r in mine:
        extended = (f"{k}: " + " then ".join(map(span, v)) for k, v in sorted(r.extended.items()))
        rows.append(
            [
                label(method),
                describe_params(dict(r.params)) + ("" if r.run_params else " (its defaults)"),
                ", ".join(f"{k} {span(v)}" for k, v in sorted(r.space.items())),
                "; ".join(extended),
                ", ".join(r.at_edge) or "none",
                "" if r.selection_score is None else f"{r.selection_score:.4g}",
                "" if r.trials is None else str(r.trials),
            ]
        )
    header = "method | recipe | searched | extended | at the edge | selection score | trials"
    return verdict.markdown_table(header, rows)


def recipe_flags(recipes: Recipes | None, setting: str) -> str:
    """One sentence: which recipes sit at the edge of their range, which ranges were extended."""
    mine = _recipes_in(recipes, setting)
    if not mine:
        return ""
    edge = [f"{label(m)} ({', '.join(r.at_edge)})" for m, r in mine if r.at_edge]
    ext = [f"{label(m)} ({', '.join(sorted(r.extended))})" for m, r in mine if r.extended]
    text = (
        "At the edge of its range (the best value may lie beyond it, so that recipe is a bound, "
        f"not an optimum): {', '.join(edge)}." if edge else "No recipe sits at the edge of its "
        "range."
    )  # fmt: skip
    if ext:
        text += f" Ranges extended by the tuning until the choice was interior: {', '.join(ext)}."
    return text


def defaults_table(
    rows: Sequence[dict[str, Any]],
    defaults_entries: Sequence[dict[str, Any]],
    tuning: Sequence[dict[str, Any]],
    setting: str,
) -> str:
    """The out-of-the-box table: each method at its defaults, against KD, and tuning's gain."""
    finals = verdict.finished(rows, setting)
    header = (
        "method | seeds | top-1 % at the defaults | Δ vs KD at the defaults (95% CI) "
        "| tuned − defaults (95% CI)"
    )
    lines = []
    for method in sorted({r["method"] for r in finals}, key=_method_order):
        mean, std, n = verdict.column_stats(verdict.finished(finals, method=method), "acc", 100)
        kd = verdict.find_entry(defaults_entries, setting=setting, family=HEADLINE_BASELINE,
                                method=method, metric="acc")  # fmt: skip
        gain = verdict.find_entry(tuning, setting=setting, method=method, metric="acc")
        gain_cell = verdict.interval_cell(gain, fragile=True) if gain else "not tuned"
        kd_cell = verdict.interval_cell(kd, fragile=True)
        lines.append([label(method), str(n), pm(mean, std, 1), kd_cell, gain_cell])
    return verdict.markdown_table(header, lines)


def out_of_the_box(
    rows: Sequence[dict[str, Any]],
    recipes: Recipes | None,
    setting: str,
    tuned_entries: Sequence[dict[str, Any]],
    second: tuple[Sequence[dict[str, Any]], str] | None = None,
    brief: bool = False,
) -> list[str]:
    """The report's sections after a setting's tuned verdict: the defaults, tuning, the recipes.

    ``rows``: both arms; ``tuned_entries``: the headline's comparisons (marked fragile);
    ``second``: a second run set's rows and name (:func:`second_run_set`). ``brief`` (the
    README): no headings, no defaults verdict, the recipes' flags without their table.
    """
    parts: list[str] = []
    tuned_here = tuned_methods(recipes, setting)
    ran = any((r["setting"], r["phase"], r["params"]) == (setting, "final", "{}")
              and r["method"] in tuned_here for r in rows)  # fmt: skip
    if tuned_here and not ran:
        parts += verdict.paragraphs(
            "The tuned methods' paper-default runs are not in this folder (`--no-defaults`, or no "
            "`default_seeds` in this setting): no out-of-the-box table."
        )
    if ran:
        base = arm_rows(rows, recipes, "defaults")
        entries = marked(verdict.comparisons(base), second, recipes, "defaults")
        tuning = marked(tuning_comparisons(rows, recipes), second, recipes, None)
        methods = sorted({r["method"] for r in base if r["setting"] == setting
                          and r["phase"] == "final"}, key=_method_order)  # fmt: skip
        top1 = verdict.select(entries, setting=setting, metric="acc")
        parts += verdict.paragraphs(
            "**Out of the box**: every method at its paper defaults (the tuned methods on the "
            "first seeds only); `*` marks a difference that survives Holm's correction and is "
            "not fragile."
            if brief
            else "### Out of the box: every method at its paper defaults",
            verdict.verdict_paragraph(entries, setting) if top1 and not brief else "",
            defaults_table(base, entries, tuning, setting),
            "" if brief else "### What tuning does to the comparison",
            tuning_paragraph(tuning, entries, tuned_entries, setting, recipes, methods),
        )
    table, flags = recipe_table(recipes, setting), recipe_flags(recipes, setting)
    if table and brief:
        parts += verdict.paragraphs(flags)
    elif table:
        parts += verdict.paragraphs("### The recipes (`meta.json`)", flags, table)
    return parts


def marked(
    entries: list[dict[str, Any]], second: tuple | None, recipes: Recipes | None, arm: str | None
) -> list[dict[str, Any]]:
    """``entries`` of one arm (``None``: the tuning comparisons) marked fragile
    (:func:`~.verdict.mark_fragile`), against the second run set's of the same arm if any."""
    if second is None:
        return verdict.mark_fragile(entries)
    rows, name = second
    if arm is None:
        theirs = tuning_comparisons(rows, recipes)
    else:
        theirs = verdict.comparisons(arm_rows(rows, recipes, arm))
    return verdict.mark_fragile(entries, theirs, name)


def recipe_status(recipes: Recipes | None, setting: str, method: str) -> str:
    """``"tuned"``, ``"tuned: its defaults"`` (the recipe is the defaults) or ``"not tuned"``."""
    recipe = recipes.get(setting, method) if recipes is not None else None
    if recipe is None:
        return "not tuned"
    return "tuned" if recipe.run_params else "tuned: its defaults"


def headline_note(recipes: Recipes | None, setting: str, methods: Sequence[str]) -> str:
    """The sentence before a setting's tuned verdict: which methods run at a recipe."""
    status = {m: recipe_status(recipes, setting, m) for m in methods}
    tuned, defaults, untuned = (", ".join(label(m) for m in methods if status[m] == s)
                                for s in ("tuned", "tuned: its defaults", "not tuned"))  # fmt: skip
    if not tuned and not defaults:
        return (
            "**Not tuned**: no method has a recipe in this setting, so every method runs at its "
            "paper defaults."
        )
    text = "**Tuned against tuned**: every method at its tuned recipe (the table *The recipes* "
    text += "below)" + (f"; the tuning chose the paper defaults for {defaults}" if defaults else "")
    text += (f"; not tuned, at their paper defaults: {untuned}" if untuned else "") + "."
    combos = [m for m in methods if CONTROLS.get(m) == HEADLINE_BASELINE and m in CONTROL_WEIGHTS]
    if combos and status.get(HEADLINE_BASELINE) == "tuned":
        text += (
            f" {', '.join(map(label, combos))} keep KD's default weights and temperature beside "
            f"their tuned term (`CONTROL_WEIGHTS`), while {label(HEADLINE_BASELINE)} runs at its "
            "tuned recipe: there, their comparison with it differs in more than their term."
        )
    return text


def headline_rows(rows: Sequence[dict[str, Any]], recipes: Recipes | None) -> list[dict[str, Any]]:
    """The latest spec's rows of the headline arm (:func:`~.tuned.arm_rows`), each final row of a
    setting run under ``recipes`` with its ``recipe`` status (tuned, or not tuned)."""
    out = []
    for r in arm_rows(select_rows(rows), recipes, "tuned"):
        if recipes is not None and r["setting"] in recipes.settings and r["phase"] == "final":
            r = dict(r, recipe=recipe_status(recipes, r["setting"], r["method"]))
        out.append(r)
    return out


def headline_entries(
    rows: Sequence[dict[str, Any]], recipes: Recipes | None, second: tuple | None
) -> list[dict[str, Any]]:
    """:func:`~.verdict.comparisons` of the headline ``rows``; with recipes, marked fragile
    (:func:`~.verdict.mark_fragile`) against ``second`` (:func:`second_run_set`)."""
    entries = verdict.comparisons(rows)
    return entries if recipes is None else marked(entries, second, recipes, "tuned")


def second_run_set(folder: str | Path) -> tuple[list[dict[str, Any]], str] | None:
    """``(rows, name)`` of the folder's :data:`SECOND_RUN_SET`, if it holds a ``runs.csv``."""
    second = Path(folder) / SECOND_RUN_SET
    if not (second / "runs.csv").is_file():
        return None
    env = (read_meta(second) or {}).get("environment", {})
    how = env.get("cpu_capability") or env.get("ATEN_CPU_CAPABILITY")
    name = f"the second run set `{SECOND_RUN_SET}/`" + (f" (CPU capability {how})" if how else "")
    return select_rows(read_runs(second / "runs.csv")), name
