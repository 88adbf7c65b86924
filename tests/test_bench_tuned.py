"""Tuned against tuned: the main job's two arms, the report's new sentences, fragile verdicts.

The plan: every method at its recipe on every seed, the tuned methods at their defaults on the
first ``default_seeds`` seeds, no run twice, resumable (also from a folder of the protocol before
recipes). The report: one arm at a time; tuned minus defaults paired by seed; a verdict near the
level or different in a second run set is "fragile", never "beats"/"trails"; every sentence
follows the numbers (a changed number or a dropped method changes it). Synthetic rows only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import sys
from pathlib import Path

import pytest

from relkd_tutorial.bench import cli, runner, tuned
from relkd_tutorial.bench import settings as bs
from relkd_tutorial.bench.recipes import parse_recipes
from relkd_tutorial.bench.report import markdown_report, write_report
from relkd_tutorial.bench.store import NUMERIC_COLUMNS, RUN_COLUMNS, ResultStore
from relkd_tutorial.bench.verdict import comparisons, mark_fragile, verdict_paragraph
from relkd_tutorial.stats import paired_difference, t_quantile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from render_readme_results import render_block  # noqa: E402

RECIPES = {
    "format": 1,
    "invocation": {"command": "tune"},
    "settings": {
        "transfer": {
            "grkd": {"params": {"grkd_weight": 30.0, "temperature": 1.0},
                     "space": {"grkd_weight": [0.1, 100.0]},
                     "extended": {"grkd_weight": [[0.1, 10.0], [0.1, 100.0]]}, "trials": 24},
            "kd": {"params": {"kd_weight": 9.0}, "space": {"kd_weight": [0.09, 90.0]},
                   "at_edge": ["kd_weight"]},
            "rkd": {"params": {"distance_weight": 25.0, "angle_weight": 50.0}},  # its defaults
            "rrd": {"params": {"rrd_weight": 3.0}},
        },
        "low-data": {},
    },
}  # fmt: skip
REC = parse_recipes(RECIPES)
#: mean top-1 at the defaults and at the recipe (None: no recipe, or the recipe is the defaults)
MEANS = {"ce": (0.70, None), "kd": (0.80, 0.83), "rkd": (0.757, None), "rrd": (0.737, 0.745),
         "refilled": (0.684, None), "grkd": (0.715, 0.775)}  # fmt: skip


def _row(setting, method, params, seed, acc, spec="S", seconds=10.0):
    r = {c: "" for c in RUN_COLUMNS}
    r.update({c: 0.5 for c in NUMERIC_COLUMNS})
    tag = bs.params_tag(params)
    r.update(key="|".join([setting, spec, "final", method, tag, str(seed)]), setting=setting,
             spec=spec, phase="final", method=method, params=tag, seed=seed, status="ok",
             eval_split="test", acc=acc, seconds=seconds, epochs=5, n_train=9000, n_labelled=500)  # fmt: skip
    return r


def synthetic(rng_seed=0, seeds=16, default_seeds=8, noise=0.01):
    """Both arms of transfer (the recipes above) and low-data (no recipe) with a seed effect."""
    rng = random.Random(rng_seed)
    out = []
    for seed in range(seeds):
        base = rng.gauss(0, 0.015)
        for m, (d, t) in MEANS.items():
            params = REC.run_params("transfer", m)
            if params:
                out.append(_row("transfer", m, params, seed, t + base + rng.gauss(0, noise)))
            if not params or seed < default_seeds:
                out.append(_row("transfer", m, {}, seed, d + base + rng.gauss(0, noise)))
    for seed in range(8):
        base = rng.gauss(0, 0.015)
        for m, (d, _) in MEANS.items():
            out.append(
                _row("low-data", m, {}, seed, d - 0.05 + base + rng.gauss(0, noise), seconds=3.0)
            )
    return out


META = {"invocations": [{"command": "python -m relkd_tutorial.bench", "mode": "default",
                         "preset": "cpu", "device": "cpu", "threads": 1, "jobs": 2,
                         "runs_trained": 1, "wall_seconds": 60.0, "recipes": RECIPES}]}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The plan: arms, no run twice, resume
# ---------------------------------------------------------------------------------------------


def _setting(**changes):
    s = bs.default_settings(fast=True)["transfer"]
    return dataclasses.replace(s, seeds=(0, 1, 2, 3), default_seeds=2, **changes)


def test_the_arms_of_a_method() -> None:
    s = _setting()
    assert runner.arm_params(s, "grkd", None) == [({}, (0, 1, 2, 3))]  # before recipes
    assert runner.arm_params(s, "grkd", REC) == [
        ({"grkd_weight": 30.0}, (0, 1, 2, 3)), ({}, (0, 1)),
    ]  # fmt: skip
    assert runner.arm_params(s, "grkd", REC, defaults=False) == [
        ({"grkd_weight": 30.0}, (0, 1, 2, 3))
    ]
    assert runner.arm_params(s, "rkd", REC) == [({}, (0, 1, 2, 3))]  # the recipe is the defaults
    assert runner.arm_params(s, "ce", REC) == [({}, (0, 1, 2, 3))]  # not tuned
    assert runner.arm_params(dataclasses.replace(s, default_seeds=0), "kd", REC) == [
        ({"kd_weight": 9.0}, (0, 1, 2, 3))
    ]
    methods = list(MEANS)
    # 6 methods x 4 seeds, and KD, RRD, GRKD at their defaults on 2 seeds
    assert len(runner.final_jobs(s, methods, None, REC)) == 6 * 4 + 3 * 2
    assert len(runner.final_jobs(s, methods, None, REC, defaults=False)) == 6 * 4
    assert len(runner.final_jobs(s, methods)) == 6 * 4


def test_default_seeds_is_not_part_of_the_fingerprint() -> None:
    s = _setting()
    assert s.fingerprint("T") == dataclasses.replace(s, default_seeds=7).fingerprint("T")


class _Workspace:
    def __init__(self, setting, spec="S") -> None:
        self.setting, self.spec, self.shared_classes = setting, spec, True


def _train(monkeypatch, store, ws, recipes, defaults=True) -> list[str]:
    calls: list[str] = []

    def fake_run_job(job, ws):
        calls.append(job.key(ws.spec))
        return _row(job.setting, job.method, job.params, job.seed, 0.5, spec=ws.spec), []

    monkeypatch.setattr(runner, "run_job", fake_run_job)
    progress = runner.Progress(total=100)  # its lines go to pytest's captured stdout
    runner.run_settings([ws], list(MEANS), store, progress, recipes=recipes, defaults=defaults)
    return calls


def test_the_main_job_trains_each_run_once_and_resumes(tmp_path: Path, monkeypatch) -> None:
    ws = _Workspace(_setting())
    store = ResultStore(tmp_path / "a")
    calls = _train(monkeypatch, store, ws, REC)
    assert len(calls) == len(set(calls)) == 6 * 4 + 3 * 2
    tags = {(k.split("|")[3], k.split("|")[4]) for k in calls}
    assert ("grkd", '{"grkd_weight":30.0}') in tags and ("grkd", "{}") in tags
    assert ("rkd", "{}") in tags and not any(m == "rkd" and t != "{}" for m, t in tags)
    # the headline runs of every method come before any paper-default run of a tuned method
    first_default = next(i for i, k in enumerate(calls) if k.split("|")[3] in ("kd", "rrd", "grkd")
                         and k.split("|")[4] == "{}")  # fmt: skip
    assert first_default == 6 * 4
    assert _train(monkeypatch, store, ws, REC) == []  # the same command again: nothing to train
    # --no-defaults: the tuned runs alone
    assert len(_train(monkeypatch, ResultStore(tmp_path / "b"), ws, REC, defaults=False)) == 24
    # a folder of the protocol before recipes already holds every default run: only the tuned
    old = ResultStore(tmp_path / "c")
    assert len(_train(monkeypatch, old, ws, None)) == 24
    again = _train(monkeypatch, old, ws, REC)
    assert sorted(k.split("|")[3] for k in again) == sorted(["kd", "rrd", "grkd"] * 4)


def test_cli_reads_the_recipes_and_plans_both_arms(tmp_path: Path, capsys) -> None:
    path = tmp_path / "recipes.json"
    path.write_text(json.dumps(RECIPES))
    args = ["--plan", "--no-fast", "--device", "cpu", "--jobs", "2", "--out", str(tmp_path / "o")]
    assert (
        cli.main([*args, "--recipes", str(path), "--methods", "ce,kd,rkd,rrd,refilled,grkd"]) == 0
    )
    out = capsys.readouterr().out
    counts = [int(x) for x in re.findall(r"up to (\d+) training runs", out)]
    assert counts == [6 * 16 + 3 * 8, 6 * 8, 6 * 3]
    assert "(4 tuned, 2 not tuned" in out and "24 at the paper defaults (first 8 seeds)" in out
    assert cli.main([*args, "--recipes", "none", "--methods", "ce,kd"]) == 0
    assert [int(x) for x in re.findall(r"up to (\d+) training", capsys.readouterr().out)] == [
        32, 16, 6,
    ]  # fmt: skip
    path.write_text(json.dumps({**RECIPES, "format": 9}))
    with pytest.raises(SystemExit, match="--recipes: .*format 9 is not supported"):
        cli.main([*args, "--recipes", str(path)])
    parsed = cli.build_parser().parse_args(["--no-defaults", "--recipes", "x.json"])
    assert parsed.no_defaults and parsed.recipes == "x.json"


def test_the_plan_estimates_its_time_from_the_folders_runs(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for r in synthetic():
        store.append(r)
    s = bs.default_settings(False, "cpu")
    settings = {"transfer": dataclasses.replace(s["transfer"], seeds=tuple(range(16)))}
    lines = cli.plan_lines(settings, list(MEANS), REC, True, tmp_path, 2)
    # 6 x 16 + 3 x 8 runs at 10 s each, every one already there
    assert lines[-1].startswith("time, from the seconds per run")
    assert (
        "about 20 CPU-minutes for the whole plan (10 minutes with 2 job(s)), about 0 of"
        in lines[-1]
    )


# ---------------------------------------------------------------------------------------------
# One arm at a time; tuned minus defaults
# ---------------------------------------------------------------------------------------------


def test_arm_rows_select_one_arm_and_leave_old_folders_alone() -> None:
    rows = synthetic()
    t = tuned.arm_rows(rows, REC, "tuned")
    d = tuned.arm_rows(rows, REC, "defaults")
    pick = lambda rs, m: {r["params"] for r in rs if (r["setting"], r["method"]) == ("transfer", m)}  # noqa: E731
    assert pick(t, "grkd") == {'{"grkd_weight":30.0}'} and pick(d, "grkd") == {"{}"}
    assert pick(t, "rkd") == pick(d, "rkd") == {"{}"}
    assert len([r for r in t if r["setting"] == "transfer"]) == 6 * 16
    assert len([r for r in d if r["setting"] == "transfer"]) == 3 * 16 + 3 * 8
    assert tuned.arm_rows(rows, None, "tuned") == rows  # a folder written before recipes
    with pytest.raises(ValueError, match="arm must be one of"):
        tuned.arm_rows(rows, REC, "best")


def test_tuning_comparisons_are_the_paired_differences_of_the_arms() -> None:
    rows = synthetic()
    entries = tuned.tuning_comparisons(rows, REC)
    assert [e["method"] for e in entries] == ["kd", "rrd", "grkd"]  # RKD's recipe is its defaults
    for e in entries:
        tag = bs.params_tag(REC.run_params("transfer", e["method"]))
        a = {
            r["seed"]: 100 * r["acc"]
            for r in rows
            if r["method"] == e["method"] and r["params"] == tag
        }
        b = {r["seed"]: 100 * r["acc"] for r in rows if r["method"] == e["method"]
             and r["params"] == "{}" and r["setting"] == "transfer"}  # fmt: skip
        seeds = sorted(set(a) & set(b))
        d = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
        assert (e["n"], e["family"], e["family_size"]) == (8, "tuning", 3)
        assert e["mean"] == pytest.approx(d.mean) and e["low"] == pytest.approx(d.low)


# ---------------------------------------------------------------------------------------------
# Fragile verdicts
# ---------------------------------------------------------------------------------------------


def _entry(method, mean, p_holm, claim, baseline="kd", family="kd", n=16):
    return {"setting": "transfer", "family": family, "method": method, "baseline": baseline,
            "metric": "acc", "mean": mean, "std": 1.0, "n": n, "low": mean - 0.5,
            "high": mean + 0.5, "p": p_holm, "p_holm": p_holm, "family_size": 3, "claim": claim,
            "within_noise": claim == "within noise", "sentence": f"{method} {claim}"}  # fmt: skip


def test_fragile_near_the_level_or_where_a_second_run_set_differs() -> None:
    entries = [
        _entry("rkd", -4.0, 0.0099, "trails"),  # firm
        _entry("rrd", -2.0, 0.011, "trails"),  # inside the band
        _entry("grkd", 1.0, 0.24, "within noise"),  # inside the band
        _entry("refilled", 3.0, 0.26, "within noise"),  # outside it
        _entry("rank_soft", 3.0, 0.002, "beats"),  # firm here, another verdict in the second set
    ]
    second = [_entry("rank_soft", 1.0, 0.087, "within noise"), _entry("rkd", -4.1, 0.001, "trails")]
    mark_fragile(entries, second, "the second run set `replicate/`")
    fragile = {e["method"]: e["fragile"] for e in entries}
    assert fragile["rkd"] == "" and fragile["refilled"] == ""
    assert fragile["rrd"] == fragile["grkd"] == "Holm p within a factor of 5 of 0.05"
    assert fragile["rank_soft"] == "within noise in the second run set `replicate/` (Holm p 0.087)"
    for e in entries:
        if e["fragile"]:
            assert "fragile" in e["sentence"] and " beats " not in e["sentence"]
            assert f"{e['mean']:+.2f} points" in e["sentence"]
    text = verdict_paragraph(entries, "transfer")
    assert "Fragile, claimed neither way: RRD (-2.00 points" in text
    assert "Rank-soft (+3.00 points" in text and "(Holm p 0.087); alone: beats)" in text
    assert (
        "Trail KD: RKD (-4.00 points" in text and "not fragile: its Holm p is not between" in text
    )
    # without the marks the paragraph is what it always was: no fragile group, no band
    plain = verdict_paragraph([_entry("rrd", -2.0, 0.011, "trails")], "transfer")
    assert "fragile" not in plain and "Trail KD: RRD" in plain


# ---------------------------------------------------------------------------------------------
# The new sentences follow the numbers
# ---------------------------------------------------------------------------------------------


def test_the_tuning_paragraph_follows_the_numbers() -> None:
    tuning = [_entry("kd", 3.01, 0.002, "beats", "kd", "tuning", 8),
              _entry("grkd", 6.95, 0.0001, "beats", "grkd", "tuning", 8),
              _entry("rrd", -0.64, 0.6, "within noise", "rrd", "tuning", 8)]  # fmt: skip
    for e in tuning:
        e["params"] = bs.params_tag(REC.run_params("transfer", e["method"]))
    defaults = [_entry("grkd", -3.9, 0.001, "trails", "rkd", "mission"),
                _entry("grkd", 2.9, 0.001, "beats", "refilled", "mission")]  # fmt: skip
    tuned_e = [_entry("grkd", 2.3, 0.001, "beats", "rkd", "mission"),
               _entry("grkd", 9.7, 0.001, "beats", "refilled", "mission")]  # fmt: skip
    methods = list(MEANS)
    text = tuned.tuning_paragraph(tuning, defaults, tuned_e, "transfer", REC, methods)
    assert "Tuning raised: KD at kd_weight=9 (+3.01 points" in text
    assert "GRKD at grkd_weight=30 (+6.95 points" in text
    assert "Within noise: RRD at rrd_weight=3 (-0.64 points" in text
    assert (
        "At their paper defaults in both tables (no recipe, or the recipe is the defaults): CE, RKD, REFILLED."
        in text
    )
    assert "Of the question's 2 verdicts (GRKD against each rival), 1 differ" in text
    assert "against RKD, trails at the defaults, beats tuned" in text
    assert "the same in both: against REFILLED, beats" in text
    # a dropped method, a changed number, a changed verdict: the paragraph changes with them
    assert "RRD at" not in tuned.tuning_paragraph(
        tuning[:2], defaults, tuned_e, "transfer", REC, methods
    )
    tuning[0]["mean"] = 1.5
    assert "KD at kd_weight=9 (+1.50 points" in tuned.tuning_paragraph(
        tuning, defaults, tuned_e, "transfer", REC, methods
    )
    tuned_e[0]["claim"] = "trails"
    assert "none differs" in tuned.tuning_paragraph(
        tuning, defaults, tuned_e, "transfer", REC, methods
    )
    tuned_e[0]["fragile"] = "Holm p within a factor of 5 of 0.05"
    assert "trails at the defaults, fragile tuned" in tuned.tuning_paragraph(
        tuning, defaults, tuned_e, "transfer", REC, methods
    )


def test_the_precision_cost_sentence_follows_the_numbers() -> None:
    entries = [
        _entry("ce", -4.0, 0.001, "trails", n=3),
        _entry("rkd", -1.0, 0.2, "within noise", n=3),
    ]
    entries[0]["std"], entries[1]["std"] = 1.46, 0.5
    for e in entries:
        e["setting"], e["low"], e["high"] = "standard", e["mean"] - 3, e["mean"] + 3
    rows = [
        _row("standard", m, {}, s, 0.9, seconds=40.0) for m in ("ce", "kd", "rkd") for s in range(3)
    ]
    need = next(k for k in range(2, 99) if t_quantile(0.975, k - 1) * 1.46 / math.sqrt(k) <= 1.0)
    text = tuned.precision_cost_sentence(entries, rows, "standard")
    assert need == 11
    assert "the widest paired standard deviation here is 1.46 points (CE)" in text
    assert (
        f"about {need} paired seeds instead of 3, i.e. {(need - 3) * 3} more runs of the 3 methods"
        in text
    )
    assert (
        f"about 40 s each on this machine: about {(need - 3) * 3 * 40 / 60:.0f} CPU-minutes" in text
    )
    slow = [dict(r, seconds=400.0) for r in rows]  # an hour or more: in hours
    assert f"about {(need - 3) * 3 * 400 / 3600:.1f} CPU-hours." in tuned.precision_cost_sentence(
        entries, slow, "standard"
    )
    for e in entries:  # every interval within the target: nothing to say
        e["low"], e["high"] = e["mean"] - 0.9, e["mean"] + 0.9
    assert tuned.precision_cost_sentence(entries, rows, "standard") == ""


def test_the_recipes_flags_and_the_headline_note() -> None:
    flags = tuned.recipe_flags(REC, "transfer")
    assert "At the edge of its range" in flags and ": KD (kd_weight)." in flags
    assert "interior: GRKD (grkd_weight)." in flags
    table = tuned.recipe_table(REC, "transfer")
    assert (
        "| GRKD | grkd_weight=30, temperature=1 | grkd_weight 0.1 to 100 | grkd_weight: 0.1 to 10 then 0.1 to 100 | none |  | 24 |"
        in table
    )
    assert "| RKD | angle_weight=50, distance_weight=25 (its defaults) |" in table
    assert tuned.recipe_table(REC, "low-data") == "" and tuned.recipe_flags(None, "transfer") == ""
    note = tuned.headline_note(REC, "transfer", list(MEANS))
    assert "the tuning chose the paper defaults for RKD" in note
    assert "not tuned, at their paper defaults: CE, REFILLED." in note
    assert tuned.headline_note(REC, "low-data", list(MEANS)).startswith("**Not tuned**")
    # KD is tuned: a combination beside it keeps KD's default part, and the note says so
    assert "keep KD's default weights" not in note  # no combination among these methods
    with_combo = tuned.headline_note(REC, "transfer", [*MEANS, "grkd_kd"])
    assert "GRKD+KD keep KD's default weights and temperature beside their tuned term" in with_combo
    assert "differs in more than their term" in with_combo
    assert "keep KD's default" not in tuned.headline_note(REC, "transfer", ["ce", "grkd_kd"])


def test_the_report_puts_the_tuned_verdict_first(tmp_path: Path) -> None:
    rows = synthetic()
    second = (synthetic(rng_seed=1), "the second run set `replicate/`")
    text = markdown_report(rows, META, None, second)
    transfer = text[text.index("## transfer") : text.index("## low-data")]
    marks = ["**Tuned against tuned**", "**Verdict (top-1, transfer", "### Out of the box",
             "### What tuning does to the comparison", "### The recipes"]  # fmt: skip
    at = [transfer.index(m) for m in marks]
    assert at == sorted(at), marks
    # the headline table is the tuned arm's: GRKD at its recipe, CE marked not tuned
    assert (
        "| GRKD | grkd_weight=30 | 16 |" in transfer
        and "| CE | defaults (not tuned) | 16 |" in transfer
    )
    entries = mark_fragile(comparisons(tuned.headline_rows(rows, REC)),
                           comparisons(tuned.arm_rows(second[0], REC, "tuned")), second[1])  # fmt: skip
    assert verdict_paragraph(entries, "transfer") in transfer
    low = text[text.index("## low-data") :]
    assert "**Not tuned**" in low and "### Out of the box" not in low
    # without recipes in meta.json the report is the one before recipes
    legacy = markdown_report(tuned.arm_rows(rows, REC, "defaults"), None, None)
    assert "Tuned against tuned" not in legacy and "fragile" not in legacy


def test_a_folder_without_the_default_runs_says_so() -> None:
    rows = tuned.arm_rows(synthetic(), REC, "tuned")  # as with --no-defaults
    parts = tuned.out_of_the_box(rows, REC, "transfer", [])
    assert parts[0].startswith("The tuned methods' paper-default runs are not in this folder")
    assert not any("What tuning does" in p for p in parts) and any(
        "The recipes" in p for p in parts
    )


def test_write_report_and_the_readme_block_of_a_tuned_folder(tmp_path: Path) -> None:
    out = tmp_path / "results"
    store, replicate = ResultStore(out), ResultStore(out / "replicate")
    for r in synthetic():
        store.append(r)
    for r in synthetic(rng_seed=1):
        replicate.append(r)
    (out / "meta.json").write_text(json.dumps(META))
    write_report(out, plots=False)
    for name in ("summary-defaults.csv", "differences-defaults.csv", "tuning.csv"):
        assert (out / name).is_file(), name
    body = render_block("results", tmp_path)
    assert "**What the committed run says: tuned against tuned** (transfer, 16 paired seeds" in body
    assert "| GRKD | grkd_weight=30 |" in body and "| REFILLED | defaults (not tuned) |" in body
    assert (
        "**Out of the box**" in body
        and "**What tuning does to the comparison (transfer).**" in body
    )
    assert (
        body.index("**Verdict") < body.index("**Out of the box**") < body.index("What tuning does")
    )
    assert "At the edge of its range" in body and "- low-data (8 seeds)" in body
    for line in body.splitlines():  # a fragile difference is never bold
        assert not re.search(r"\*\*[^*]*\*\* \(fragile\)", line)


def test_the_notebooks_read_the_headline_arm_of_a_tuned_folder(tmp_path: Path, monkeypatch) -> None:
    from relkd_tutorial.bench.recipes import recipes_of_meta
    from relkd_tutorial.bench.store import read_meta
    from relkd_tutorial.tutorial import committed

    monkeypatch.setattr(committed, "_spec", lambda setting, cache: "S")
    store = ResultStore(tmp_path)
    for r in synthetic():
        store.append(r)
    plain = committed.committed_results(tmp_path, settings=("transfer",))["transfer"]
    assert len(plain.rows) == 6 * 16 + 3 * 8  # no meta.json: one arm, every row
    (tmp_path / "meta.json").write_text(json.dumps(META))
    assert recipes_of_meta(read_meta(tmp_path)).settings == REC.settings
    top = committed.committed_results(tmp_path, settings=("transfer",))["transfer"]
    assert len(top.rows) == 6 * 16
    assert {r["params"] for r in top.rows if r["method"] == "grkd"} == {'{"grkd_weight":30.0}'}
    out = committed.committed_results(tmp_path, settings=("transfer",), arm="defaults")["transfer"]
    assert {r["params"] for r in out.rows} == {"{}"} and len(out.rows) == 3 * 16 + 3 * 8
