"""No typed result numbers: results are rendered from computed values (the rule and its files).

The rule is :func:`relkd_tutorial.tutorial.prose.find_typed_results` (its module docstring says
what it flags), with the two escapes ``<!-- not-a-result -->`` and ``<!-- asserted -->`` of
``scripts/check_prose.py``'s ``markdown_findings``. This file

1. tests the rule itself: what it flags, what it lets through, the escapes, the code-cell check
   of ``say(...)`` / ``Markdown(...)`` templates, and :func:`say`;
2. enforces it over the files in :data:`ENFORCED` (notebooks, ``README.md`` outside its generated
   blocks, ``results/README.md``, every ``docs/`` page), printing each offending cell and line with
   the reason. A file is added to :data:`ENFORCED` when it passes, and :func:`test_ratchet` fails
   when a file passes but is not listed, so a fixed notebook cannot slip back;
3. checks that what is generated is what its generator renders now: the README's
   ``<!-- generated:NAME -->`` blocks (``scripts/render_readme_results.py``) and every
   ``results/**/results.md`` (the benchmark report, :func:`relkd_tutorial.bench.report.markdown_report`).

``python scripts/check_prose.py notebooks/*.ipynb README.md results/README.md docs/*.md`` prints
every current offender (the report mode).
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from relkd_tutorial.bench.report import markdown_report
from relkd_tutorial.bench.settings import METHOD_LABELS
from relkd_tutorial.bench.store import read_histories, read_runs
from relkd_tutorial.bench.tuned import second_run_set
from relkd_tutorial.stats import paired_difference
from relkd_tutorial.tutorial.prose import Sentence, find_typed_results, say

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import check_prose  # noqa: E402
from check_prose import (  # noqa: E402
    code_cell_findings,
    file_offenders,
    markdown_findings,
    notebook_offenders,
)
from render_readme_results import block_names, render_readme  # noqa: E402

#: Files the rule is enforced on (relative to the repository). Add a notebook or page here as
#: soon as it passes (``test_ratchet`` insists); the goal is every file of :func:`_checked_files`.
ENFORCED: tuple[str, ...] = (
    "notebooks/00_setup_and_data.ipynb",
    "notebooks/01_kd_basics.ipynb",
    "notebooks/02_rkd.ipynb",
    "notebooks/03_rrd.ipynb",
    "notebooks/04_refilled.ipynb",
    "notebooks/05_grkd.ipynb",
    "notebooks/06_benchmark.ipynb",
    "notebooks/07_distil_your_own_model.ipynb",
    "README.md",
    "results/README.md",
    "results/tuning/README.md",
    "docs/README.md",
    "docs/architecture.md",
    "docs/benchmark.md",
    "docs/data.md",
    "docs/dist.md",
    "docs/grkd.md",
    "docs/kd.md",
    "docs/models.md",
    "docs/notation.md",
    "docs/pitfalls.md",
    "docs/ranking.md",
    "docs/refilled.md",
    "docs/rkd.md",
    "docs/rrd.md",
)


def _generated_results_md() -> set[Path]:
    """``results.md`` files written by the benchmark report (checked by regeneration instead)."""
    return {p.parent / "results.md" for p in (REPO / "results").rglob("runs.csv")}


def _checked_files() -> list[str]:
    files = sorted(REPO.glob("notebooks/*.ipynb")) + [REPO / "README.md"]
    files += sorted(p for p in (REPO / "results").rglob("*.md") if p not in _generated_results_md())
    files += sorted((REPO / "docs").glob("*.md"))
    return [str(p.relative_to(REPO)) for p in files]


def _report(offenders: list[check_prose.Offender]) -> str:
    return "\n".join(str(o) for o in offenders)


# ---------------------------------------------------------------------------------------------
# 1. The rule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("KD reaches 0.756 on the test set.", "decimal number"),
        ("The ratio falls from 10.1 to 2.7.", "decimal number"),
        ("at T = 4, 40% of the mass", "percentage"),
        ("12 percent of the images", "percentage"),
        ("The student is 48 times smaller.", "ratio"),
        ("the student is 45.9× smaller", "ratio"),
        ("a 3-fold gain", "ratio"),
        ("rank-soft gains +4 points", "difference in points"),
        ("a gain of 4 percentage points", "difference in points"),
        ("a spread of ± 2 over seeds", "spread (±)"),
        ("the run took 24 minutes", "duration"),
        ("each step costs 145 ms", "duration"),
    ],
)
def test_the_rule_flags_typed_results(text, reason):
    found = find_typed_results(text)
    assert found, f"not flagged: {text!r}"
    assert found[0].reason == reason, found


@pytest.mark.parametrize(
    "text",
    [
        "We use 4 seeds, 8 epochs and 50 labels per class (classes 0, 2, 4, 6).",
        "Hinton et al. 2015, Sec. 2; Park et al., CVPR 2019, Sec. 3.2.1; Eq. 4 times the gap.",
        "Python 3.10 or newer; torch 2.14.1; arXiv 2504.20482; see Table 3.2.",
        "The temperature is $T = 4.0$ and the margin $m = 0.2$.",
        "Call `KD(kd_weight=0.9)` with `lr=0.05`.",
        "$$\\tau = 0.04$$",
        "Report the 95% interval, the 95% CI and the 95% paired t interval.",
        "| method | top-1 % |",
        "images of 1x28x28 pixels, a 5×5 kernel, a 3 x 3 grid",
        "See [the docs](docs/kd.md#0.9-weights) and https://example.org/v1.5/page.",
        "<!-- a comment with 0.5 in it -->",
        "```python\nacc = 0.756\n```",
        "resnet8x4 and wrn_16_2 are CIFAR models",
    ],
)
def test_the_rule_lets_parameters_code_math_and_references_through(text):
    assert find_typed_results(text) == [], find_typed_results(text)


def test_findings_give_line_match_and_reason():
    text = "Intro with 4 seeds.\n\nKD reaches 75.6% and CE 0.701."
    found = find_typed_results(text)
    assert [(f.line, f.match, f.reason) for f in found] == [
        (3, "75.6%", "percentage"),
        (3, "0.701", "decimal number"),
    ]
    assert "line 3" in str(found[0]) and "KD reaches" in str(found[0])


def test_not_a_result_marker_exempts_only_its_block():
    text = (
        "| parameter | value |\n|---|---|\n| lr | 0.05 |\n<!-- not-a-result: parameters -->\n"
        "\nKD reaches 0.756."
    )
    found = markdown_findings(text)
    assert [f.match for f in found] == ["0.756"]
    assert markdown_findings("<!-- not-a-result -->\nlr 0.05, momentum 0.9") == []
    shown = "Write `<!-- not-a-result -->` or `<!-- generated:x begin -->`; KD reaches 0.756."
    assert [f.match for f in markdown_findings(shown, generated_blocks=True)] == ["0.756"]


def test_asserted_block_needs_the_number_in_the_next_cells_asserts():
    text = "<!-- asserted -->\nThe student has 45.9× fewer parameters and 40% of the mass."
    ok = markdown_findings(text, asserted_literals=[45.9, 0.40])
    assert ok == []
    missing = markdown_findings(text, asserted_literals=[45.9])
    assert [f.match for f in missing] == ["40%"]
    assert "not in the next cell's asserts" in missing[0].reason
    assert markdown_findings(text)  # no following code cell: the marker does not count


def test_generated_blocks_are_skipped_only_when_asked_and_must_close():
    text = "<!-- generated:results begin -->\nKD 75.6%\n<!-- generated:results end -->\nCE 0.7"
    assert [f.match for f in markdown_findings(text, generated_blocks=True)] == ["0.7"]
    assert len(markdown_findings(text)) == 2  # docs/ may not hide numbers in a block
    unclosed = markdown_findings("<!-- generated:x begin -->\nKD 75.6%", generated_blocks=True)
    assert [f.reason for f in unclosed] == ["unclosed generated block", "percentage"]


def test_code_cells_may_not_type_results_into_prose_calls():
    assert code_cell_findings('say("KD reaches {acc:.1f}% on {n} seeds", acc=a, n=4)') == []
    assert code_cell_findings('display(Markdown(f"KD reaches {acc:.1%}"))') == []
    bad = code_cell_findings('say("KD reaches 75.6% ({n} seeds)", n=4)')
    assert [(f.match, f.line) for f in bad] == [("75.6%", 1)]
    assert "say()" in bad[0].reason
    bad = code_cell_findings('%matplotlib inline\ndisplay(Markdown(f"CE is {x} and KD 0.756"))')
    assert [(f.match, f.line) for f in bad] == [("0.756", 2)]
    assert code_cell_findings('print("lr 0.05")') == []  # printed output is computed output


def test_notebook_offenders_name_the_cell(tmp_path):
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": ["# Title\n", "We train 4 seeds."]},
            {"cell_type": "code", "source": "x = 1", "outputs": []},
            {"cell_type": "markdown", "source": "<!-- asserted -->\nThe ratio is 45.9×."},
            {"cell_type": "code", "source": "assert round(r, 1) == 45.9", "outputs": []},
            {"cell_type": "markdown", "source": "KD gains +3.97 points."},
            {"cell_type": "code", "source": 'say("KD gains 4 percentage points")', "outputs": []},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    found = notebook_offenders(path)
    assert [(o.cell, o.finding.match) for o in found] == [
        (4, "+3.97 points"),
        (5, "4 percentage points"),
    ]
    assert str(found[0]).startswith(f"{path} cell 4, line 1:")
    assert check_prose.main([str(path)]) == 1


def test_say_renders_values_and_refuses_typed_numbers():
    s = say("KD reaches {acc:.1f}% against CE's {ce:.1f}% ({n} seeds).", acc=75.58, ce=70.1, n=4)
    assert isinstance(s, Sentence) and s == "KD reaches 75.6% against CE's 70.1% (4 seeds)."
    assert s._repr_markdown_() == str(s)
    with pytest.raises(ValueError, match="types a result number.*75.6%"):
        say("KD reaches 75.6% ({n} seeds)", n=4)
    with pytest.raises(ValueError, match="not a finite number"):
        say("KD reaches {acc:.1f}%", acc=float("nan"))
    with pytest.raises(ValueError, match="names 'acc'"):
        say("KD reaches {acc:.1f}%")
    with pytest.raises(TypeError):
        say(0.5)


# ---------------------------------------------------------------------------------------------
# 2. The files
# ---------------------------------------------------------------------------------------------


def test_enforced_files_exist_and_are_checked():
    checked = set(_checked_files())
    assert set(ENFORCED) <= checked, set(ENFORCED) - checked


@pytest.mark.parametrize("name", ENFORCED)
def test_no_typed_results(name):
    offenders = file_offenders(REPO / name)
    assert not offenders, (
        f"{name} types result numbers; render each sentence from the computed values "
        "(relkd_tutorial.tutorial.say, display(Markdown(...)), a generated block) or, for a "
        "constant that is not a result, mark its block <!-- not-a-result: why -->:\n"
        + _report(offenders)
    )


def test_ratchet():
    """A checked file that passes must be in ENFORCED, so that it stays passing."""
    passing = [f for f in _checked_files() if f not in ENFORCED and not file_offenders(REPO / f)]
    assert not passing, f"these files pass the prose rule: add them to ENFORCED: {passing}"


def test_report_current_offenders(capsys):
    """Report mode (always passes): every offender of a file not yet enforced, with ``-s``."""
    pending = [f for f in _checked_files() if f not in ENFORCED]
    lines = [str(o) for f in pending for o in file_offenders(REPO / f)]
    with capsys.disabled():
        print(f"\n{len(lines)} typed results in {len(pending)} files not yet enforced")
    assert isinstance(lines, list)


# ---------------------------------------------------------------------------------------------
# 3. What is generated equals what its generator renders now
# ---------------------------------------------------------------------------------------------


def test_readme_result_blocks_are_rendered_from_results():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    names = block_names(text)
    assert "results" in names, names
    assert render_readme(text, REPO) == text, (
        "README.md's generated blocks differ from results/: run python "
        "scripts/render_readme_results.py (after regenerating results/) and commit README.md"
    )


def test_readme_blocks_hold_the_results_and_change_with_them(tmp_path):
    """The block is a function of the CSV files: a changed summary changes the README."""
    shutil.copytree(REPO / "results", tmp_path / "results")
    text = "x\n<!-- generated:results begin -->\nstale text\n<!-- generated:results end -->\ny\n"
    before = render_readme(text, tmp_path)
    assert (
        "stale text" not in before and before.startswith("x\n") and before.endswith("end -->\ny\n")
    )
    path = tmp_path / "results" / "summary.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if (row["setting"], row["method"]) == ("transfer", "kd"):
            row["acc_mean"] = "0.5"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    after = render_readme(text, tmp_path)

    def kd_row(body: str) -> str:  # the KD row of the table (its recipe column, then top-1)
        return next(line for line in body.split("\n") if line.startswith("| KD |"))

    assert "| 50.0 ±" in kd_row(after) and "| 50.0 ±" not in kd_row(before)


def test_a_block_whose_folder_is_missing_renders_nothing(tmp_path):
    """A pending run (its folder not committed yet) shows nothing: one HTML comment, no numbers;
    once the folder is there, the block holds its results."""
    text = "<!-- generated:results/sweep-x begin -->\nold numbers 0.5\n<!-- generated:results/sweep-x end -->\n"
    body = render_readme(text, tmp_path).split("\n")[1:-2]
    assert len(body) == 1 and body[0].startswith("<!--") and body[0].endswith("-->"), body
    assert "results/sweep-x/ is not in the repository yet" in body[0]
    assert find_typed_results(render_readme(text, tmp_path)) == []
    shutil.copytree(REPO / "results", tmp_path / "results" / "sweep-x")
    shown = render_readme(text, tmp_path)
    assert "| KD |" in shown and "not in the repository" not in shown


def test_readme_block_counts_each_family_once(tmp_path):
    """``differences.csv`` holds GRKD+KD - KD twice (as a control and against KD, Holm-corrected
    over different families); the README's lists name each method once, from the KD family."""
    shutil.copytree(REPO / "results", tmp_path / "results")
    text = "<!-- generated:results begin -->\n<!-- generated:results end -->\n"
    body = render_readme(text, tmp_path)
    headline = body.split("**Out of the box**")[0]  # the tuned table, before the defaults' one
    rows = [line for line in headline.split("\n") if line.startswith("| GRKD+KD |")]
    assert len(rows) == 1
    diffs = list(csv.DictReader(open(tmp_path / "results" / "differences.csv", newline="")))
    kd = next(
        d for d in diffs if (d["family"], d["method"], d["metric"]) == ("kd", "grkd_kd", "acc")
    )
    assert (
        f"{float(kd['mean']):+.1f} [{float(kd['low']):+.1f}, {float(kd['high']):+.1f}]" in rows[0]
    )
    assert "**Verdict (top-1" in body


def test_results_markdown_is_the_reports_rendering():
    """Every ``results/**/results.md`` is exactly what the benchmark report writes now."""
    for md in sorted(_generated_results_md()):
        folder = md.parent
        meta = (
            json.loads((folder / "meta.json").read_text())
            if (folder / "meta.json").exists()
            else None
        )
        histories = read_histories(folder / "histories.csv")
        second = second_run_set(folder)  # a verdict that differs there is fragile
        expected = markdown_report(read_runs(folder / "runs.csv"), meta, histories, second)
        assert md.read_text(encoding="utf-8") == expected, (
            f"{md.relative_to(REPO)} differs from the report: python -m relkd_tutorial.bench "
            f"--report-only --out {folder.relative_to(REPO)}"
        )


def test_the_sweep_block_names_the_committed_folder_and_pairs_the_gain(tmp_path):
    """The sweep's block: its command writes into the committed folder (the recorded one was a
    scratch folder), a tuned method's gain is its paired difference to the same seeds of the main
    job, and a method whose defaults won says so instead of a number."""
    sweep = REPO / "results" / "sweep-transfer"
    if not (sweep / "summary.csv").is_file():
        pytest.skip("results/sweep-transfer/ is not committed")
    shutil.copytree(REPO / "results", tmp_path / "results")
    text = "<!-- generated:results/sweep-transfer begin -->\n<!-- generated:results/sweep-transfer end -->\n"
    body = render_readme(text, tmp_path)
    assert "--out results/sweep-transfer`" in body and "/work/" not in body
    summary = list(csv.DictReader(open(sweep / "summary.csv", newline="")))
    tuned = next(e for e in summary if e["params"] not in ("", "{}") and e["status"] == "ok")
    untuned = [e for e in summary if e["params"] in ("", "{}") and e["method"] != "ce"]
    main = read_runs(tmp_path / "results" / "runs.csv")
    sw = read_runs(sweep / "runs.csv")

    def accs(rows, method):
        return {r["seed"]: 100 * r["acc"] for r in rows if r["phase"] == "final"
                and r["method"] == method and r["setting"] == "transfer" and r["status"] == "ok"}  # fmt: skip

    a, b = accs(sw, tuned["method"]), accs(main, tuned["method"])
    seeds = sorted(set(a) & set(b))
    gain = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    line = next(
        x for x in body.split("\n") if x.startswith(f"| {METHOD_LABELS[tuned['method']]} |")
    )
    assert f"{gain.mean:+.1f} [{gain.low:+.1f}, {gain.high:+.1f}]" in line
    for e in untuned:
        line = next(
            x for x in body.split("\n") if x.startswith(f"| {METHOD_LABELS[e['method']]} |")
        )
        assert "none (defaults chosen)" in line


def test_the_readme_block_says_what_the_run_took_from_meta_json(tmp_path):
    """The main block's time line is meta.json's: the invocations' training wall time and runs."""
    shutil.copytree(REPO / "results", tmp_path / "results")
    meta_path = tmp_path / "results" / "meta.json"
    meta = json.loads(meta_path.read_text())
    text = "<!-- generated:results begin -->\n<!-- generated:results end -->\n"
    runs = sum(i["runs_trained"] for i in meta["invocations"])
    minutes = sum(i["wall_seconds"] for i in meta["invocations"]) / 60
    assert f"{runs} runs trained in {minutes:.1f} minutes" in render_readme(text, tmp_path)
    meta["invocations"] = meta["invocations"] + [dict(meta["invocations"][-1], wall_seconds=600.0,
                                                      runs_trained=7)]  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    after = render_readme(text, tmp_path)
    assert f"{runs + 7} runs trained in {minutes + 10:.1f} minutes" in after
    assert "invocations, `meta.json`" in after
