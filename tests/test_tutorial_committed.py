"""Notebook 06's view of the committed results (:mod:`relkd_tutorial.tutorial.committed`).

Synthetic ``runs.csv`` files stand for ``results/``: a setting is complete, partial or absent;
rows of another spec are counted and never used; the ablation is found in its own folder or in the
main one; a family becomes a table that ``plot_paired`` draws; a family's sentence follows the numbers (a
change of the data flips its words). The tuned folder (two arms, a second run set, the
second student) and the sentences of :mod:`relkd_tutorial.tutorial.synthesis` are tested in
``test_tutorial_synthesis.py``.
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from relkd_tutorial.bench.settings import METHODS, MISSION_RIVALS, ablation_variants, params_tag
from relkd_tutorial.bench.store import RUN_COLUMNS, ResultStore
from relkd_tutorial.bench.verdict import ablation_comparisons, comparisons
from relkd_tutorial.bench.workspace import build_workspace
from relkd_tutorial.tutorial.committed import (
    committed_ablation,
    committed_results,
    comparison_table,
    family_sentence,
    family_table,
    means_table,
)
from relkd_tutorial.tutorial.plots_stats import INTERVALS_GID, plot_paired
from relkd_tutorial.tutorial.prose import find_typed_results
from relkd_tutorial.tutorial.runs import protocol_setting, summary_table

matplotlib.use("Agg")

SEEDS = range(16)  # the main job's transfer seeds
ABLATION_SEEDS = range(1000, 1008)  # an ablation's: the selection seeds' (validation split)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("ws")
    setting = protocol_setting("transfer", fast=False)
    return build_workspace(setting, out, torch.device("cpu"), log=lambda _: None).spec


def row(spec, method, seed, acc, phase="final", params="{}", setting="transfer", split=None):
    split = split or ("val" if phase == "ablation" else "test")
    r = {c: "" for c in RUN_COLUMNS}
    r.update(
        key=f"{spec}|{setting}|{phase}|{method}|{params}|{seed}", setting=setting, spec=spec,
        phase=phase, method=method, params=params, seed=seed, status="ok", eval_split=split,
        acc=acc, acc_tops=acc - 0.1, acc_footwear=acc + 0.1, kendall_tau=0.5 + acc / 4,
        dist_corr=0.7, train_acc=0.8, seconds=1.0, peak_mem_mb=1.0, load1=1.0, epochs=5,
        n_train=9000, n_labelled=500,
    )  # fmt: skip
    return r


def accuracy(method: str, seed: int, lift: dict[str, float]) -> float:
    """A seed effect shared by every method, a per-method lift, and a little per-run noise."""
    noise = ((seed * 7 + METHODS.index(method) * 3) % 5 - 2) / 1000
    return 0.70 + seed / 200 + lift.get(method, 0.0) + noise


def write(folder, rows):
    store = ResultStore(folder)
    for r in rows:
        store.append(r)
    return folder


def full_transfer(spec, lift):
    return [row(spec, m, s, accuracy(m, s, lift)) for m in METHODS for s in SEEDS]


LIFT = {"kd": 0.10, "grkd_kd": 0.10, "rrd_kd": 0.13, "grkd": 0.02, "rkd": 0.05, "rrd": 0.05,
        "refilled": 0.06, "rank_soft": 0.02, "rank_listwise": 0.08, "dist": 0.04}  # fmt: skip


def test_complete_partial_absent_and_stale_settings(tmp_path, spec):
    stale = [row("deadbeef", "ce", s, 0.1) for s in range(4)]
    results = write(tmp_path / "results", stale + full_transfer(spec, LIFT))
    got = committed_results(results)
    t = got["transfer"]
    assert t.present and t.complete and t.spec == spec and t.stale == 4
    assert len(t.finished) == len(METHODS) * len(SEEDS) == t.expected
    assert all(r["spec"] == spec for r in t.rows)
    n = len(METHODS) * len(SEEDS)
    assert f"{n} of its {n} runs" in t.describe() and "Incomplete" not in t.describe()
    for name in ("low-data", "standard"):
        assert not got[name].present and not got[name].complete
        text = got[name].describe()
        assert "not in the committed results yet" in text
        assert f"--settings {name} --out results" in text
        assert find_typed_results(text) == []

    partial = write(tmp_path / "partial", full_transfer(spec, LIFT)[:30])
    t = committed_results(partial, settings=("transfer",))["transfer"]
    n = len(METHODS) * len(SEEDS)
    assert t.present and not t.complete and f"30 of its {n} runs" in t.describe()
    assert "Incomplete: `python -m relkd_tutorial.bench --settings transfer" in t.describe()
    with pytest.raises(ValueError, match="cross-task"):
        committed_results(results, settings=("cross-task",))
    # without unlabelled images the pseudo-label control is one n/a row, not a run per seed
    low = got["low-data"]
    assert low.expected == (len(METHODS) - 1) * len(low.setting.seeds) + 1


def test_ablation_is_found_in_its_folder_or_the_main_one(tmp_path, spec):
    variants = ablation_variants("grkd")
    rows = [row(spec, "grkd", s, 0.7 + i / 100, phase="ablation", params=params_tag(v.params))
            for i, v in enumerate(variants) for s in ABLATION_SEEDS]  # fmt: skip
    main = write(tmp_path / "a" / "results", rows)
    got = committed_ablation(main)
    assert got.present and got.complete and got.source == main / "runs.csv"
    own = write(tmp_path / "b" / "results" / "grkd-ablation", rows[:16])
    got = committed_ablation(own.parent)
    assert got.source == own / "runs.csv" and not got.complete and len(got.rows) == 16
    assert not got.earlier and "earlier protocol" not in got.describe()
    none = committed_ablation(write(tmp_path / "c" / "results", full_transfer(spec, LIFT)))
    assert not none.present and "--ablation grkd" in none.describe()
    # the earlier protocol scored the ablation on the test split with evaluation seeds: shown as such
    old = [row(spec, "grkd", s, 0.7, phase="ablation", params=params_tag(v.params), split="test")
           for v in variants for s in range(8)]  # fmt: skip
    got = committed_ablation(write(tmp_path / "d" / "results" / "grkd-ablation", old).parent)
    assert got.present and got.earlier and got.spec == got.protocol_spec
    assert "earlier protocol" in got.describe() and "evaluation split" in got.describe()
    both = write(tmp_path / "e" / "results" / "grkd-ablation", old + rows)
    got = committed_ablation(both.parent)
    assert not got.earlier and {r["eval_split"] for r in got.rows} == {"val"} and got.stale == 64
    entries = ablation_comparisons(rows, "grkd")
    table = comparison_table(entries, "transfer", "ablation")
    assert [r["label"] for r in table] == [v.name for v in variants[1:]]
    assert all("baseline" not in r for r in table)


def test_comparison_table_is_the_family_and_plot_paired_draws_it(tmp_path, spec):
    rows = full_transfer(spec, LIFT)
    entries = comparisons(rows)
    kd = comparison_table(entries, "transfer", "kd")
    assert [r["method"] for r in kd] == [m for m in METHODS if m != "kd"]
    assert kd.metric == "acc" and kd.unit == "points" and all(r["baseline"] == "kd" for r in kd)
    ref = {e["method"]: e for e in entries if e["family"] == "kd" and e["metric"] == "acc"}
    for r in kd:
        assert r["mean"] == ref[r["method"]]["mean"] and r["claim"] == ref[r["method"]]["claim"]
    control = comparison_table(entries, "transfer", "control", "kendall_tau")
    assert "GRKD+KD vs KD" in [r["label"] for r in control] and "GRKD vs CE" in [
        r["label"] for r in control
    ]
    assert all("baseline" not in r for r in control)  # mixed baselines: CE and KD
    mission = comparison_table(entries, "transfer", "mission")
    assert [r["label"] for r in mission] == [
        "GRKD vs RKD", "GRKD vs RRD", "GRKD vs REFILLED", "GRKD vs DIST"
    ]  # fmt: skip
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    plot_paired(ax, kd)
    (lines,) = [c for c in ax.collections if c.get_gid() == INTERVALS_GID]
    assert sorted(seg[0][0] for seg in lines.get_segments()) == pytest.approx(
        sorted(r["low"] for r in kd)
    )
    with pytest.raises(ValueError, match="metric must be one of"):
        comparison_table(entries, "transfer", "kd", "nope")


def test_family_sentences_follow_the_numbers(tmp_path, spec):
    same = family_sentence(comparisons(full_transfer(spec, LIFT)), "transfer", "control")
    assert "GRKD+KD is within noise of KD" in same
    assert "RRD+KD beats KD" in same  # +3 points on every seed
    mission = family_sentence(comparisons(full_transfer(spec, LIFT)), "transfer", "mission")
    assert mission.startswith("GRKD trails RKD")
    assert find_typed_results(same.split("(")[0]) == []
    better = family_sentence(comparisons(full_transfer(spec, {**LIFT, "grkd_kd": 0.12})),
                             "transfer", "control")  # fmt: skip
    assert "GRKD+KD beats KD (+" in better
    e = next(x for x in comparisons(full_transfer(spec, LIFT))
             if x["family"] == "control" and x["method"] == "grkd_kd" and x["metric"] == "acc")  # fmt: skip
    assert f"{e['mean']:+.2f} points" in same and not math.isnan(e["p_holm"])
    assert family_sentence([], "transfer", "control") == ""


def _cells(table: str, first: str) -> list[str]:
    """The cells of the Markdown row whose first cell is ``first``."""
    (line,) = [x for x in table.splitlines() if x.startswith(f"| {first} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_means_table_puts_the_settings_side_by_side(spec):
    rows = full_transfer(spec, LIFT)
    low = [{**r, "setting": "low-data"} for r in rows if r["seed"] < 5]
    table = means_table({"transfer": rows, "low-data": low})
    assert table.splitlines()[0] == "| method | transfer (16 seeds) | low-data (5 seeds) |"
    assert len(table.splitlines()) == 2 + len(METHODS)
    ref = summary_table(low, setting="low-data")
    kd = next(r for r in ref if r["label"] == "KD")
    assert _cells(table, "KD")[2] == f"{kd['mean']:.2f} [{kd['low']:.2f}, {kd['high']:.2f}]"
    tau = means_table({"transfer": rows}, "kendall_tau")
    assert _cells(tau, "CE")[1].count(".") == 3 and len(_cells(tau, "CE")[1].split()[0]) == 5
    with pytest.raises(ValueError, match="no setting"):
        means_table({})


def test_family_table_and_sentence_follow_the_entries(spec):
    rows = full_transfer(spec, LIFT)
    low = [{**r, "setting": "low-data", "acc": r["acc"] + (0.05 if r["method"] == "grkd" else 0)}
           for r in rows if r["seed"] < 5]  # fmt: skip
    entries = comparisons(rows + low)
    table = family_table(entries, "mission")
    assert table.splitlines()[0] == "| comparison (points) | transfer | low-data |"
    e = next(x for x in entries if (x["setting"], x["family"], x["method"], x["baseline"],
                                    x["metric"]) == ("low-data", "mission", "grkd", "rkd", "acc"))  # fmt: skip
    assert _cells(table, "GRKD vs RKD")[2] == (
        f"{e['mean']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}] {e['claim']}"
    )
    assert _cells(table, "GRKD vs RKD")[1].endswith("trails")  # the lift: -3 points
    assert _cells(table, "GRKD vs RKD")[2].endswith("beats")  # +2 points in low-data
    assert (
        family_table(entries, "mission", settings=["low-data"])
        .splitlines()[0]
        .endswith("| low-data |")
    )
    assert _cells(family_table(entries, "kd"), "CE")[0] == "CE"
    with pytest.raises(ValueError, match="no comparison of family"):
        family_table(entries, "nope")
    sentence = family_sentence(entries, "transfer", "mission")
    assert sentence.count(";") == len(MISSION_RIVALS) - 1 and sentence.startswith(
        "GRKD trails RKD ("
    )
    assert family_sentence(entries, "standard", "mission") == ""


def test_an_earlier_protocols_runs_are_shown_and_labelled_when_none_of_the_current_exist(
    tmp_path, spec
):
    """After a protocol change (a new teacher, new defaults) and before the rerun, the newest
    committed spec is shown, never silently as the current one; a current row always wins."""
    old = write(tmp_path / "old", full_transfer("0ld5pec0", LIFT))
    t = committed_results(old, settings=("transfer",))["transfer"]
    assert t.earlier and t.spec == "0ld5pec0" and t.protocol_spec == spec
    assert len(t.rows) == len(METHODS) * len(SEEDS) and t.present
    assert "earlier protocol" in t.describe() and f"`{spec}`" in t.describe()
    assert find_typed_results(t.describe()) == []
    both = write(
        tmp_path / "both", [*full_transfer("0ld5pec0", LIFT), *full_transfer(spec, {})[:3]]
    )
    t = committed_results(both, settings=("transfer",))["transfer"]
    assert not t.earlier and t.spec == spec and len(t.rows) == 3
    assert "earlier protocol" not in t.describe()
