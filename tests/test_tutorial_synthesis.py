"""Notebooks 05 and 06 tell the project's question from a tuned results folder.

A synthetic folder holds both arms (every method at its recipe on 16 seeds; the tuned methods at
their paper defaults on the first 8), a ``meta.json`` recording the recipes, and optionally a
second run set (``replicate/``), the second student's folder and the ablation. Checked:
:func:`~relkd_tutorial.tutorial.committed.committed_benchmark` reads each arm as the report does
(a verdict that differs in the second run set is fragile; tuning's gains are paired by seed), the
question's sentence and the synthesis table carry the benchmark's own numbers and words, the
chapters' :func:`~relkd_tutorial.tutorial.synthesis.benchmark_claim` names its family, and the
pruning sentence counts the choices that moved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relkd_tutorial.bench.settings import (
    CONTROLS,
    METHODS,
    MISSION_RIVALS,
    ablation_variants,
    params_tag,
)
from relkd_tutorial.bench.store import RUN_COLUMNS, ResultStore
from relkd_tutorial.bench.verdict import stated
from relkd_tutorial.tutorial import committed
from relkd_tutorial.tutorial.prose import find_typed_results
from relkd_tutorial.tutorial.synthesis import (
    benchmark_claim,
    pruning_sentence,
    question_sentence,
    synthesis_sentence,
    synthesis_table,
)

TUNED = {"grkd": {"grkd_weight": 30.0}, "kd": {"kd_weight": 2.0}}
RECIPES = {"format": 1, "invocation": {"trials": 12},
           "settings": {"transfer": {m: {"params": p} for m, p in TUNED.items()}}}  # fmt: skip
META = {"invocations": [{"command": "python -m relkd_tutorial.bench", "recipes": RECIPES}]}
#: top-1 lift over CE at the recipe (tuned arm) and at the paper defaults
LIFT = {"kd": (0.10, 0.08), "grkd": (0.09, 0.02), "rkd": (0.05, 0.05), "rrd": (0.05, 0.05),
        "refilled": (0.06, 0.06), "dist": (0.12, 0.12), "pseudo_label": (0.08, 0.08)}  # fmt: skip


def row(method, seed, acc, params="{}", spec="S", phase="final", split="test"):
    r = {c: "" for c in RUN_COLUMNS}
    r.update(
        key=f"{spec}|transfer|{phase}|{method}|{params}|{seed}", setting="transfer", spec=spec,
        phase=phase, method=method, params=params, seed=seed, status="ok", eval_split=split,
        acc=acc, acc_tops=acc, acc_footwear=acc, kendall_tau=0.5, dist_corr=0.7, train_acc=0.8,
        seconds=1.0, peak_mem_mb=1.0, load1=1.0, epochs=5, n_train=9000, n_labelled=500,
    )  # fmt: skip
    return r


def acc(method, seed, arm, shift=None):
    lift = (shift or {}).get(method, LIFT.get(method, (0.03, 0.03)))
    noise = ((seed * 7 + METHODS.index(method) * 3) % 5 - 2) / 1000
    return 0.70 + seed / 200 + lift[0 if arm == "tuned" else 1] + noise


def folder(path: Path, shift=None, spec="S") -> Path:
    store = ResultStore(path)
    for m in METHODS:
        tag = params_tag(TUNED.get(m, {}))
        for s in range(16):
            store.append(row(m, s, acc(m, s, "tuned", shift), tag, spec))
            if m in TUNED and s < 8:
                store.append(row(m, s, acc(m, s, "defaults", shift), "{}", spec))
    (path / "meta.json").write_text(json.dumps(META))
    return path


def untuned(path: Path, spec: str, student: str) -> Path:
    """A folder of the protocol before recipes: every method at its defaults, 8 seeds."""
    store = ResultStore(path)
    for m in METHODS:
        for s in range(8):
            store.append(row(m, s, acc(m, s, "defaults"), "{}", spec))
    meta = {"invocations": [{"settings": {"transfer": {"student": student}}}]}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(autouse=True)
def one_spec(monkeypatch):
    monkeypatch.setattr(committed, "_spec", lambda setting, cache: "S")


def test_both_arms_are_read_as_the_report_reads_them(tmp_path):
    b = committed.committed_benchmark(folder(tmp_path / "r"), settings=("transfer",))
    t, d = b.tuned["transfer"], b.defaults["transfer"]
    assert len(t.rows) == len(METHODS) * 16 and t.complete and not b.earlier
    assert {r["params"] for r in t.rows if r["method"] == "grkd"} == {params_tag(TUNED["grkd"])}
    assert len(d.rows) == (len(METHODS) - 2) * 16 + 2 * 8 == d.expected and d.complete
    assert b.arms("transfer") and b.present == ["transfer"]
    gains = {e["method"]: e for e in b.tuning if e["metric"] == "acc"}
    assert set(gains) == set(TUNED) and gains["grkd"]["n"] == 8
    assert gains["grkd"]["mean"] == pytest.approx(100 * (0.09 - 0.02))
    mission = [e for e in b.entries if e["family"] == "mission" and e["metric"] == "acc"]
    assert [e["baseline"] for e in mission] == list(MISSION_RIVALS)
    assert all("fragile" in e for e in mission)  # marked, as the report marks them
    at_defaults = {e["baseline"]: e for e in b.default_entries
                   if e["family"] == "mission" and e["metric"] == "acc"}  # fmt: skip
    assert at_defaults["rkd"]["claim"] == "trails" and at_defaults["rkd"]["n"] == 8


def test_a_verdict_that_differs_in_the_second_run_set_is_fragile(tmp_path):
    main = folder(tmp_path / "r")
    b = committed.committed_benchmark(main, settings=("transfer",))
    vs_rkd = stated(committed_pick(b.entries, "rkd"))
    assert vs_rkd == "beats"  # +4 points on every seed
    second = folder(main / "replicate", shift={"grkd": (0.05, 0.02)})
    (second / "meta.json").write_text(json.dumps({**META, "environment": {"cpu_capability":
                                                                          "AVX2"}}))  # fmt: skip
    b = committed.committed_benchmark(main, settings=("transfer",))
    e = committed_pick(b.entries, "rkd")
    assert stated(e) == "fragile" and "AVX2" in b.second and "within noise in" in e[
        "fragile"]  # fmt: skip
    text = question_sentence(b, "transfer")
    assert "GRKD is fragile against RKD" in text and "alone: beats" in text


def committed_pick(entries, rival):
    return next(e for e in entries if (e["family"], e["baseline"], e["metric"]) == (
        "mission", rival, "acc"))  # fmt: skip


def test_the_question_sentence_is_the_benchmarks_family(tmp_path):
    b = committed.committed_benchmark(folder(tmp_path / "r"), settings=("transfer",))
    text = question_sentence(b, "transfer")
    assert text.startswith(
        "**The question in transfer**, tuned against tuned, GRKD at grkd_weight=30"
    )
    assert "16 paired seeds, test split; Holm over the 4 comparisons" in text
    for rival in MISSION_RIVALS:
        e = committed_pick(b.entries, rival)
        assert f"{e['mean']:+.2f} points" in text  # the same numbers as 06's table
    e = committed_pick(b.entries, "rkd")  # GRKD - RKD: about the tuned lifts' difference
    assert e["mean"] == pytest.approx(100 * (0.09 - 0.05), abs=0.1)
    assert f"{e['mean']:+.2f} [" in committed.family_table(b.entries, "mission")
    assert find_typed_results(text.split("(")[0]) == []
    assert question_sentence(b, "low-data") == "No low-data runs are committed."


def test_the_synthesis_table_puts_every_line_in_one_table(tmp_path):
    main = folder(tmp_path / "r")
    folder(main / "replicate")
    untuned(main / committed.STUDENT_FOLDER, "0ld", "student_cnn_m")  # an earlier protocol's
    variants = ablation_variants("grkd")
    store = ResultStore(main / "grkd-ablation")
    for i, v in enumerate(variants):
        for s in range(8):
            store.append(row("grkd", s, 0.7 + s / 200 - (0.05 if i == len(variants) - 1 else 0),
                             params_tag(v.params), phase="ablation", split="val"))  # fmt: skip
    b = committed.committed_benchmark(main, settings=("transfer",))
    stud = committed.committed_student(main)
    assert stud.earlier and stud.present and "student_cnn_m" in stud.name
    abl = committed.committed_ablation(main)
    table = synthesis_table(b, abl, stud)
    lines = table.splitlines()
    assert lines[0] == "| evidence | seeds | vs RKD | vs RRD | vs REFILLED | vs DIST | other |"
    labels = [x.split("|")[1].strip() for x in lines[2:]]
    assert labels[0] == "tuned, transfer" and labels[1] == "paper defaults, transfer"
    assert labels[2].startswith("tuned, transfer, the second run set")
    assert "earlier protocol" in labels[3] and labels[4] == "GRKD ablation (val split)"
    assert "vs Pseudo-label: " in lines[2] and "mean over pairs" in lines[-1]
    text = synthesis_sentence(b, abl, stud)
    assert "The benchmark's answer is its first line (tuned, transfer): against RKD, beats" in text
    assert "RKD 1 of 3 (otherwise paper defaults, transfer: trails; second student" in text
    assert "DIST 3 of 3" in text and "GRKD beats the pseudo-label control" in text
    assert "'mean over pairs' is the same loss at another weight (trails" in text
    with pytest.raises(ValueError, match="no line of evidence"):
        synthesis_table(committed.Benchmark(main, None, {}, {}, []))


def test_a_chapter_quotes_the_benchmarks_own_family(tmp_path):
    main = folder(tmp_path / "r")
    text = benchmark_claim("kd", "ce", "control", results_dir=main)
    n = sum(1 for m in METHODS if CONTROLS.get(m) in METHODS)
    assert text.startswith("In the benchmark's own family (notebook 06: each method against its "
                           "one-thing-different control, Holm over ")  # fmt: skip
    assert "16 paired seeds, each method at its tuned recipe): KD beats CE (+" in text
    assert f"Holm over {n}," in text
    assert "no comparison" in benchmark_claim("kd", "rkd", "kd", results_dir=main)
    with pytest.raises(ValueError, match="family must be one of"):
        benchmark_claim("kd", "ce", "nope", results_dir=main)


def test_the_pruning_sentence_counts_the_choices_that_moved():
    a = {"settings": {"transfer": {"kd": {"params": {"kd_weight": 4.0, "temperature": 2.0}},
                                   "rkd": {"params": {"angle_weight": 30.0}}}}}  # fmt: skip
    b = {"settings": {"transfer": {
        "kd": {"params": {"kd_weight": 13.0, "temperature": 2.5}, "pruned": 3, "trials": 12},
        "rkd": {"params": {"angle_weight": 29.0}, "pruned": 5, "trials": 12}}}}  # fmt: skip
    text = pruning_sentence(a, b)
    assert "8 of the 24 trials were stopped early, and 1 of the 3 chosen values" in text
    assert text.endswith("from the unpruned choice: KD kd_weight (transfer).")
    with pytest.raises(ValueError, match="share no tuned value"):
        pruning_sentence(a, {"settings": {}})
