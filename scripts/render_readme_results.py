"""Rewrite the README's generated result blocks from the committed ``results/`` folders.

    python scripts/render_readme_results.py          # rewrite README.md in place
    python scripts/render_readme_results.py --check  # exit 1 if README.md differs from a render

A block sits between ``<!-- generated:NAME begin -->`` and ``<!-- generated:NAME end -->``;
``NAME`` is a results folder relative to the repository root (``results``,
``results/sweep-transfer``), rendered from its ``summary.csv``, ``differences.csv``,
``sweep.csv``, ``runs.csv`` and ``meta.json``, so the README's numbers are the committed results'
numbers. ``tests/test_generated_prose.py`` fails when the committed README differs from a render.
A folder not in the repository (a run still pending) renders as one HTML comment that shows
nothing. Wording follows ``docs/benchmark.md``: "beats" / "trails" only when the 95% paired ``t``
interval excludes zero *and* the comparison survives Holm's correction over its family
(:mod:`relkd_tutorial.bench.verdict`), otherwise "within noise"; with one seed, no claim.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from relkd_tutorial.bench.recipes import recipes_of_meta  # noqa: E402
from relkd_tutorial.bench.report import _pm  # noqa: E402
from relkd_tutorial.bench.settings import describe_params, label  # noqa: E402
from relkd_tutorial.bench.store import read_runs, select_rows  # noqa: E402
from relkd_tutorial.bench.tuned import (  # noqa: E402
    arm_rows,
    headline_rows,
    out_of_the_box,
    precision_cost_sentence,
    second_run_set,
)
from relkd_tutorial.bench.verdict import (  # noqa: E402
    comparisons,
    mark_fragile,
    precision_sentence,
    verdict_paragraph,
)

BLOCK = re.compile(
    r"(<!-- generated:(?P<name>[\w./-]+) begin -->\n)(?P<body>.*?)(<!-- generated:(?P=name) end -->)",
    re.DOTALL,
)
SCRIPT = "scripts/render_readme_results.py"


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild it with python -m relkd_tutorial.bench "
                                f"--report-only --out {path.parent}")  # fmt: skip
    out = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k in ("within_noise", "chosen"):
                    row[k] = v == "True"
                elif k == "n":
                    row[k] = int(v) if v else 0
                elif k.endswith(("_mean", "_std")) or k in (
                    "mean",
                    "std",
                    "low",
                    "high",
                    "val_acc",
                ):
                    row[k] = float(v) if v not in ("", None) else math.nan
                else:
                    row[k] = v
            out.append(row)
    return out


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _interval(d: dict[str, Any] | None, digits: int = 1) -> str:
    if d is None:
        return ""
    if d["n"] < 2:
        return f"{d['mean']:+.{digits}f} (one seed)"
    text = f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"
    if d.get("fragile"):  # bench.verdict.mark_fragile: never bold
        return f"{text} (fragile)"
    return text if d["within_noise"] else f"**{text}**"


def _ci(d: dict[str, Any], digits: int = 1) -> str:
    return f"{d['mean']:+.{digits}f}, CI {d['low']:+.{digits}f} to {d['high']:+.{digits}f}"


def _in_family(d: dict[str, Any], baseline: str) -> bool:
    """``d`` is of the "every method against ``baseline``" family (``differences.csv`` holds every
    family, so ``GRKD+KD - KD`` is there twice: as a control and against KD, Holm-corrected over
    different families; older files have no ``family`` column)."""
    return d["baseline"] == baseline and d.get("family", baseline) == baseline


def _diff(diffs, setting: str, method: str, baseline: str, metric: str = "acc"):
    for d in diffs:
        if (d["setting"], d["method"], d["metric"]) == (setting, method, metric) and _in_family(
            d, baseline
        ):
            return d
    return None


def _verdicts(diffs, setting: str, baseline: str, digits: int = 2) -> str:
    """One sentence: who beats, trails, or is within noise of ``baseline`` in top-1."""
    mine = [d for d in diffs if d["setting"] == setting and _in_family(d, baseline)
            and d["metric"] == "acc"]  # fmt: skip
    if not mine:
        return f"no paired difference against {label(baseline)}"
    if all(d["n"] < 2 for d in mine):
        return "one seed, so no interval and no claim either way"
    fragile = [label(d["method"]) for d in mine if d.get("fragile")]
    mine = [d for d in mine if not d.get("fragile")]
    beats = [f"{label(d['method'])} ({_ci(d, digits)})" for d in mine
             if not d["within_noise"] and d["mean"] > 0]  # fmt: skip
    trails = [label(d["method"]) for d in mine if not d["within_noise"] and d["mean"] < 0]
    noise = [label(d["method"]) for d in mine if d["within_noise"]]
    parts = [
        f"beats it: {_join(beats) if beats else 'none'}",
        f"trails it: {_join(trails) if trails else 'none'}",
        f"within noise: {_join(noise) if noise else 'none'}",
    ]
    if fragile:
        parts.append(f"fragile, claimed neither way: {_join(fragile)}")
    return "; ".join(parts)


def _seeds(summary, setting: str) -> int:
    return max((e["n"] for e in summary if e["setting"] == setting and e["status"] == "ok"),
               default=0)  # fmt: skip


def render_main(folder: Path, link: str) -> str:
    """The main job's paragraph: the headline setting's table and verdict, the other settings'.

    The table: top-1 and Kendall tau (mean +- sample std), the paired differences to CE and to
    KD (their families' Holm correction decides the bold). The verdict paragraph is the report's
    own (:func:`relkd_tutorial.bench.verdict.verdict_paragraph`, as in ``results.md``), computed
    from ``runs.csv``; every other setting present gets one line against KD.
    """
    summary = _read_csv(folder / "summary.csv")
    diffs = _read_csv(folder / "differences.csv")
    if not summary:
        raise ValueError(f"{folder / 'summary.csv'} has no rows")
    meta_path = folder / "meta.json"
    recipes = recipes_of_meta(json.loads(meta_path.read_text()) if meta_path.is_file() else None)
    if recipes is not None:
        return render_tuned(folder, link, summary, diffs, recipes)
    settings = list(dict.fromkeys(e["setting"] for e in summary))
    head = settings[0]
    rows = [e for e in summary if e["setting"] == head and e["status"] == "ok"]
    entries = comparisons(select_rows(read_runs(folder / "runs.csv")))
    lines = [
        f"**What the committed run says** ({head}, {_seeds(summary, head)} paired seeds; settings "
        f"in the committed run: {', '.join(settings)}; every number is in "
        f"[`{link}/results.md`]({link}/results.md)). Top-1 and Kendall tau: mean ± sample "
        "standard deviation over seeds. Δ: the paired difference in top-1 points with its 95% "
        "paired t interval, **bold** where the difference survives Holm's correction over its "
        "family (every method against CE; every method against KD).",
        "",
        "| method | top-1 % | Δ vs CE | Δ vs KD | Kendall tau |",
        "|---|---|---|---|---|",
    ]
    for e in rows:
        m = e["method"]
        lines.append(
            f"| {label(m)} | {_pm(e, 'acc')} | {_interval(_diff(diffs, head, m, 'ce'))} "
            f"| {_interval(_diff(diffs, head, m, 'kd'))} | {_pm(e, 'kendall_tau')} |"
        )
    if any(e["setting"] == head and e["metric"] == "acc" for e in entries):
        lines += ["", verdict_paragraph(entries, head)]
        precision = precision_sentence(entries, head)
        if precision:
            lines += ["", precision]
    lines.append("")
    taus = [e for e in rows if not math.isnan(e["kendall_tau_mean"])]
    if taus:
        best = max(taus, key=lambda e: e["kendall_tau_mean"])
        base = {e["method"]: e["kendall_tau_mean"] for e in taus}
        ref = ", ".join(f"{label(m)} {base[m]:.3f}" for m in ("ce", "kd") if m in base)
        lines.append(
            f"- The teacher's class ranking transfers best with {label(best['method'])} "
            f"(mean Kendall tau {best['kendall_tau_mean']:.3f}; {ref})."
        )
    return _close(lines, folder, summary, diffs, settings)


def render_tuned(
    folder: Path, link: str, summary: list[dict[str, Any]], diffs: list[dict[str, Any]], recipes
) -> str:
    """The main block of a folder run under recipes: tuned against tuned first, then the defaults.

    The headline setting's table (each method at its recipe, or "not tuned"), its verdict with
    fragile verdicts marked (:func:`~relkd_tutorial.bench.verdict.mark_fragile`, with the
    folder's second run set where there is one), the out-of-the-box table and what tuning does
    to the comparison (:func:`~relkd_tutorial.bench.tuned.out_of_the_box`), the recipes' flags,
    then one line per other setting.
    """
    rows = read_runs(folder / "runs.csv")
    second = second_run_set(folder)
    entries = comparisons(headline_rows(rows, recipes))
    theirs = comparisons(arm_rows(second[0], recipes, "tuned")) if second else None
    mark_fragile(entries, theirs, second[1] if second else "")
    settings = list(dict.fromkeys(e["setting"] for e in summary))
    head = settings[0]
    mine = [e for e in summary if e["setting"] == head and e["status"] == "ok"]
    lines = [
        f"**What the committed run says: tuned against tuned** ({head}, {_seeds(summary, head)} "
        f"paired seeds; settings in the committed run: {', '.join(settings)}; every number is in "
        f"[`{link}/results.md`]({link}/results.md)). Each method at the recipe its tuning chose on "
        'the validation split (*recipe*; "not tuned": at its paper defaults). Top-1 and Kendall '
        "tau: mean ± sample standard deviation over seeds. Δ: the paired difference in top-1 "
        "points with its 95% paired t interval, **bold** where the difference survives Holm's "
        "correction over its family (every method against CE; every method against KD) and is "
        "not fragile.",
        "",
        "| method | recipe | top-1 % | Δ vs CE | Δ vs KD | Kendall tau |",
        "|---|---|---|---|---|---|",
    ]
    for e in mine:
        m = e["method"]
        recipe = describe_params(e["params"]) + (
            f" ({e['recipe']})" if e.get("recipe", "tuned") != "tuned" else ""
        )
        lines.append(
            f"| {label(m)} | {recipe} | {_pm(e, 'acc')} | "
            f"{_interval(_diff(diffs, head, m, 'ce'))} | {_interval(_diff(diffs, head, m, 'kd'))} "
            f"| {_pm(e, 'kendall_tau')} |"
        )
    if any(e["setting"] == head and e["metric"] == "acc" for e in entries):
        lines += ["", verdict_paragraph(entries, head)]
        for extra in (
            precision_sentence(entries, head),
            precision_cost_sentence(entries, rows, head),
        ):
            if extra:
                lines += ["", extra]
    box = out_of_the_box(select_rows(rows), recipes, head, entries, second, brief=True)
    lines += ["", *box] if box else [""]
    return _close(lines, folder, summary, diffs, settings)


def _close(
    lines: list[str],
    folder: Path,
    summary: list[dict[str, Any]],
    diffs: list[dict[str, Any]],
    settings: list[str],
) -> str:
    """A block's last lines: one verdict line per setting after the headline, then the time."""
    for s in settings[1:]:
        lines.append(
            f"- {s} ({_seeds(summary, s)} seed{'s' if _seeds(summary, s) != 1 else ''}), top-1 "
            f"against KD (Holm over the family): {_verdicts(diffs, s, 'kd')}."
        )
    timing = _time_line(folder)
    if timing:
        lines.append(timing)
    return "\n".join(lines).rstrip()


def _time_line(folder: Path) -> str:
    """What the folder's invocations took, from ``meta.json`` (training wall time, runs, jobs)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return ""
    invocations = json.loads(meta_path.read_text()).get("invocations", [])
    if not invocations:
        return ""
    seconds = sum(float(i.get("wall_seconds") or 0.0) for i in invocations)
    runs = sum(int(i.get("runs_trained") or 0) for i in invocations)
    jobs = sorted({int(i.get("jobs", 1)) for i in invocations})
    how = "one invocation" if len(invocations) == 1 else f"{len(invocations)} invocations"
    return (
        f"- Its time ({how}, `meta.json`): {runs} runs trained in {seconds / 60:.1f} minutes of "
        f"wall time with {' or '.join(str(j) for j in jobs)} worker process"
        f"{'es' if jobs != [1] else ''} (the whole process, the machine and its load: "
        "[`results/README.md`](results/README.md))."
    )


def render_block(name: str, repo: str | Path) -> str:
    """The body of the block ``name`` (a results folder relative to ``repo``); one HTML comment,
    which shows nothing, when the folder (its ``summary.csv``) is not there."""
    repo = Path(repo)
    folder = repo / name
    if not (folder / "summary.csv").is_file():
        return (
            f"<!-- {name}/ is not in the repository yet (its run is pending): nothing to show. "
            f"Rendered by `python {SCRIPT}`. -->\n"
        )
    note = f"<!-- Rendered by `python {SCRIPT}` from {name}/: edit the script, not this text. -->"
    return f"{note}\n{render_main(folder, name)}\n"


def render_readme(text: str, repo: str | Path) -> str:
    """``text`` with the body of every generated block rendered anew."""

    def sub(m: re.Match[str]) -> str:
        return m.group(1) + render_block(m.group("name"), repo) + m.group(4)

    return BLOCK.sub(sub, text)


def block_names(text: str) -> list[str]:
    """The names of the generated blocks in ``text``, in order."""
    return [m.group("name") for m in BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readme", default=str(REPO / "README.md"))
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    names = block_names(text)
    if not names:
        print(f"{path}: no <!-- generated:NAME begin --> blocks", file=sys.stderr)
        return 1
    new = render_readme(text, REPO)
    if args.check:
        if new != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True), new.splitlines(True), str(path), "rendered"
                )  # fmt: skip
            )
            return 1
        print(f"{path}: blocks {names} are up to date")
        return 0
    if new != text:
        path.write_text(new, encoding="utf-8")
    print(f"{path}: rendered blocks {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
