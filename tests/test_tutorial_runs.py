"""Shared benchmark runs for the chapters (:mod:`relkd_tutorial.tutorial.runs`) and their tables.

Synthetic ``runs.csv`` files in ``tmp_path`` stand for the committed results and the cache; the
runner is replaced by a fake that appends rows, except in one tiny real run that checks the
chapters' path trains exactly what the benchmark command trains.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _helpers import T_975_TABLE

from relkd_tutorial.bench import cli
from relkd_tutorial.bench.runner import Job
from relkd_tutorial.bench.settings import default_settings
from relkd_tutorial.bench.store import RUN_COLUMNS, ResultStore, read_runs
from relkd_tutorial.bench.verdict import comparisons
from relkd_tutorial.bench.workspace import build_workspace
from relkd_tutorial.stats import mean_std
from relkd_tutorial.tutorial import runs
from relkd_tutorial.tutorial.runs import (
    MissingRunsError,
    ResultsNotFoundError,
    benchmark_runs,
    default_cache_dir,
    find_results_dir,
    paired_table,
    paired_vs,
    protocol_setting,
    summary_table,
    verdict,
)

#: The synthetic runs below have 4 seeds: the tests pin the chapters' default preset to one whose
#: transfer setting has seeds 0-3 (``quick``), so they test the mechanism (committed, cached,
#: trained) independently of the default preset's sizes (the ``cpu`` preset has 8 seeds).
PRESET = "quick"
assert default_settings(False, PRESET)["transfer"].seeds == (0, 1, 2, 3)


@pytest.fixture(autouse=True)
def _four_seed_preset(monkeypatch):
    monkeypatch.setattr(runs, "default_preset", lambda device: PRESET)


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[bool, str]:
    """The transfer setting's spec in default and in fast mode (built as the benchmark does)."""
    out = tmp_path_factory.mktemp("ws")
    return {
        fast: build_workspace(
            protocol_setting("transfer", fast=fast, preset=PRESET),
            out,
            torch.device("cpu"),
            log=lambda _: None,
        ).spec  # fmt: skip
        for fast in (False, True)
    }


def row(spec: str, method: str, seed: int | None, acc: float, **extra) -> dict:
    r = {c: "" for c in RUN_COLUMNS}
    r.update(
        key=Job("transfer", "final", method, {}, seed).key(spec),
        setting="transfer", spec=spec, phase="final", method=method, params="{}", seed=seed,
        status="ok", eval_split="test", acc=acc, acc_tops=acc - 0.1, acc_footwear=acc + 0.1,
        kendall_tau=0.5 + acc / 10, dist_corr=0.7, train_acc=0.8, seconds=1.0, peak_mem_mb=1.0,
        load1=1.0, epochs=8, n_train=3000, n_labelled=500,
    )  # fmt: skip
    r.update(extra)
    return r


def write(folder: Path, rows: list[dict]) -> Path:
    store = ResultStore(folder)
    for r in rows:
        store.append(r)
    return folder


def fake_runner(calls: list, stop_after: int | None = None):
    """A stand-in for ``run_settings``: appends one row per seed (acc 0.5 + seed / 100)."""

    def run_settings(workspaces, methods, store, progress):
        for ws in workspaces:
            for method in methods:
                for seed in ws.setting.seeds:
                    if stop_after is not None and len(calls) >= stop_after:
                        raise KeyboardInterrupt
                    calls.append((method, seed))
                    store.append(row(ws.spec, method, seed, 0.5 + seed / 100))
                    progress.done += 1
                    progress.trained += 1

    return run_settings


ACC = {("ce", s): 0.70 + s / 100 for s in range(4)} | {("kd", s): 0.75 + s / 90 for s in range(4)}


def committed(specs) -> list[dict]:
    return [row(specs[False], m, s, a) for (m, s), a in ACC.items()]


# ---------------------------------------------------------------------------------------------
# Where the runs come from
# ---------------------------------------------------------------------------------------------


def test_protocol_setting_is_the_benchmarks_setting(monkeypatch):
    monkeypatch.setattr(runs, "default_preset", cli.default_preset)  # the real default
    assert protocol_setting("transfer", fast=True) == default_settings(True)["transfer"]
    assert protocol_setting("low-data", fast=False) == default_settings(False, "cpu")["low-data"]
    assert (
        protocol_setting("transfer", fast=False, preset="large")
        == default_settings(False, "large")["transfer"]
    )
    with pytest.raises(ValueError, match="full"):
        protocol_setting("full", fast=False)
    with pytest.raises(ValueError, match="setting must be one of"):
        protocol_setting("nope", fast=False)


def test_committed_rows_of_the_current_spec_are_used_and_stale_ones_never(tmp_path, specs):
    stale = [row("deadbeef", "ce", s, 0.1) for s in range(4)]  # another configuration
    sweep = [row(specs[False], "kd", 0, 0.2, phase="sweep", key="sweep-key")]
    results = write(tmp_path / "results", stale + committed(specs) + sweep)
    got = benchmark_runs("transfer", ("kd", "ce"), fast=False, results_dir=results,
                         cache_dir=tmp_path / "cache", train=False)  # fmt: skip
    assert [(r["method"], r["seed"]) for r in got] == [("kd", s) for s in range(4)] + [
        ("ce", s) for s in range(4)
    ]
    assert [r["acc"] for r in got] == pytest.approx([ACC[r["method"], r["seed"]] for r in got])
    assert got.spec == specs[False] and got.trained == 0
    assert got.sources == {str(results / "runs.csv"): 8, str(tmp_path / "cache" / "runs.csv"): 0}
    assert "8 runs of transfer" in got.describe()


def test_missing_runs_raise_a_clear_error_when_training_is_off(tmp_path, specs):
    results = write(tmp_path / "results", [r for r in committed(specs) if r["method"] == "ce"])
    with pytest.raises(MissingRunsError, match=r"'kd': \[0, 1, 2, 3\].*--methods kd"):
        benchmark_runs("transfer", ("ce", "kd"), fast=False, results_dir=results,
                       cache_dir=tmp_path / "cache", train=False)  # fmt: skip


def test_missing_runs_are_trained_once_into_the_cache(tmp_path, specs, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(runs, "run_settings", fake_runner(calls))
    results = write(tmp_path / "results", [r for r in committed(specs) if r["method"] == "ce"])
    kwargs = dict(fast=False, results_dir=results, cache_dir=tmp_path / "cache")
    first = benchmark_runs("transfer", ("ce", "kd"), **kwargs)
    assert calls == [("kd", s) for s in range(4)]  # CE was committed: only KD trains
    assert first.trained == 4
    assert "training 4 benchmark runs" in capsys.readouterr().out
    second = benchmark_runs("transfer", ("ce", "kd"), **kwargs)
    assert len(calls) == 4 and second.trained == 0  # nothing trained twice
    assert [r["acc"] for r in second] == [r["acc"] for r in first]
    assert [r["acc"] for r in second if r["method"] == "kd"] == [0.5 + s / 100 for s in range(4)]
    assert len(read_runs(tmp_path / "cache" / "runs.csv")) == 4


def test_an_interrupted_call_resumes_where_it_stopped(tmp_path, specs, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runs, "run_settings", fake_runner(calls, stop_after=3))
    kwargs = dict(fast=False, results_dir=False, cache_dir=tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        benchmark_runs("transfer", ("ce", "kd"), **kwargs)
    assert calls == [("ce", 0), ("ce", 1), ("ce", 2)]
    monkeypatch.setattr(runs, "run_settings", fake_runner(calls))
    got = benchmark_runs("transfer", ("ce", "kd"), **kwargs)
    assert calls[3:] == [("ce", 3)] + [("kd", s) for s in range(4)]
    assert len(got) == 8 and got.trained == 5


def test_fast_mode_reads_only_the_cache(tmp_path, specs, monkeypatch):
    fast_rows = [row(specs[True], m, s, 0.4) for m in ("ce", "kd") for s in (0, 1)]
    results = write(tmp_path / "results", fast_rows)
    monkeypatch.setenv("RELKD_RESULTS_DIR", str(results))
    with pytest.raises(MissingRunsError):
        benchmark_runs("transfer", ("ce",), fast=True, cache_dir=tmp_path / "cache", train=False)
    write(tmp_path / "cache", fast_rows)
    got = benchmark_runs("transfer", ("ce", "kd"), fast=True, cache_dir=tmp_path / "cache",
                         train=False)  # fmt: skip
    assert len(got) == 4 and list(got.sources.values()) == [4]


def test_an_na_method_gives_its_row_and_is_not_trained(tmp_path, specs, monkeypatch):
    calls: list = []
    monkeypatch.setattr(runs, "run_settings", fake_runner(calls))
    na = row(specs[False], "kd", None, math.nan, status="n/a", note="no shared classes",
             key="transfer|na")  # fmt: skip
    results = write(tmp_path / "results", [*committed(specs)[:4], na])
    got = benchmark_runs("transfer", ("ce", "kd"), fast=False, results_dir=results,
                         cache_dir=tmp_path / "cache")  # fmt: skip
    assert calls == [] and got[-1]["status"] == "n/a" and len(got) == 5
    table = summary_table(got)
    assert table[-1]["status"] == "n/a" and table[-1]["note"] == "no shared classes"


def test_bad_methods_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        benchmark_runs("transfer", ("ce", "kdd"), fast=True, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown methods"):
        benchmark_runs("transfer", (), fast=True, cache_dir=tmp_path)


def test_results_dir_is_found_from_the_env_or_by_walking_up(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    write(repo / "results", [row("x", "ce", 0, 0.5)])
    (repo / "notebooks" / "sub").mkdir(parents=True)
    monkeypatch.delenv("RELKD_RESULTS_DIR", raising=False)
    assert find_results_dir(repo / "notebooks" / "sub") == repo / "results"
    monkeypatch.chdir(repo / "notebooks")
    assert find_results_dir() == repo / "results"
    monkeypatch.setenv("RELKD_RESULTS_DIR", str(repo / "results"))
    assert find_results_dir(tmp_path) == repo / "results"
    monkeypatch.setenv("RELKD_RESULTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(ResultsNotFoundError, match="does not hold runs.csv"):
        find_results_dir()


def test_no_results_anywhere_is_a_clear_error_not_a_stopiteration(tmp_path, monkeypatch):
    monkeypatch.delenv("RELKD_RESULTS_DIR", raising=False)
    monkeypatch.setattr(
        runs, "__file__", str(tmp_path / "site" / "relkd_tutorial" / "tutorial" / "runs.py")
    )
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ResultsNotFoundError, match="Set RELKD_RESULTS_DIR"):
        find_results_dir(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ResultsNotFoundError, match="results_dir=False"):
        benchmark_runs("transfer", ("ce",), fast=False, cache_dir=tmp_path / "cache")


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RELKD_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir(True) == tmp_path / "c" / "bench-fast"
    assert default_cache_dir(False) == tmp_path / "c" / "bench-default"
    monkeypatch.delenv("RELKD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir(True) == tmp_path / "x" / "relkd_tutorial" / "bench-fast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir(False) == Path.home() / ".cache" / "relkd_tutorial" / "bench-default"


def test_a_real_run_equals_the_benchmark_commands_run(tmp_path, monkeypatch):
    """The chapters' path trains with the benchmark's runner: the same row as the command."""

    def tiny(fast, preset="cpu"):
        base = default_settings(True)
        return base | {"transfer": replace(base["transfer"], pool_per_class=12, val_per_class=5,
                                           labelled_per_class=3, epochs=1, seeds=(0,))}  # fmt: skip

    monkeypatch.setattr(runs, "default_settings", tiny)
    monkeypatch.setattr(cli, "default_settings", tiny)
    threads = torch.get_num_threads()
    got = benchmark_runs("transfer", ("ce",), fast=True, cache_dir=tmp_path / "cache")
    assert torch.get_num_threads() == threads  # restored after training
    assert got.trained == 1 and got[0]["status"] == "ok"
    out = tmp_path / "bench"
    assert cli.main(["--fast", "--settings", "transfer", "--methods", "ce", "--out", str(out),
                     "--no-plots"]) == 0  # fmt: skip
    ref = read_runs(out / "runs.csv")
    assert [r["key"] for r in ref] == [got[0]["key"]]
    for metric in ("acc", "acc_tops", "acc_footwear", "kendall_tau", "dist_corr", "train_acc"):
        assert ref[0][metric] == got[0][metric], metric


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def synthetic(spec: str = "s") -> list[dict]:
    rows = [row(spec, m, s, a) for (m, s), a in ACC.items()]
    rows.append(row(spec, "grkd", 0, 0.72))  # one seed only
    return read_back(rows)


def read_back(rows: list[dict]) -> list[dict]:
    """Rows as ``read_runs`` gives them (floats, int seeds)."""
    out = []
    for r in rows:
        r = dict(r)
        for k in ("acc", "acc_tops", "acc_footwear", "kendall_tau", "dist_corr", "train_acc",
                  "seconds", "peak_mem_mb", "load1"):  # fmt: skip
            r[k] = float(r[k])
        out.append(r)
    return out


def test_summary_table_is_mean_sample_std_and_t_interval_in_percent():
    table = summary_table(synthetic())
    assert [r["method"] for r in table] == ["ce", "kd", "grkd"]
    ce = [100 * ACC["ce", s] for s in range(4)]
    mean, std, n = mean_std(ce)
    half = T_975_TABLE[3] * std / math.sqrt(4)  # the printed t_{0.975, 3} = 3.182
    assert table[0]["mean"] == pytest.approx(mean) and table[0]["std"] == pytest.approx(std)
    assert std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in ce) / 3))  # ddof = 1
    assert table[0]["low"] == pytest.approx(mean - half, abs=2e-3)
    assert table[0]["high"] == pytest.approx(mean + half, abs=2e-3)
    assert table[2]["n"] == 1 and math.isnan(table[2]["low"]) and math.isnan(table[2]["std"])
    tau = summary_table(synthetic(), "kendall_tau")
    assert tau[0]["mean"] == pytest.approx(sum(0.5 + ACC["ce", s] / 10 for s in range(4)) / 4)
    text = table._repr_markdown_()
    assert text.splitlines()[0] == "| label | n | mean | std | low | high |"
    assert f"| CE | 4 | {mean:.2f} |" in text
    with pytest.raises(ValueError, match="metric must be one of"):
        summary_table(synthetic(), "accuracy")


def test_paired_vs_is_the_reports_paired_difference():
    rows = synthetic()
    d = paired_vs(rows, "kd", "ce")
    ref = next(x for x in comparisons(rows, families=["ce"], metrics=["acc"])
               if x["method"] == "kd")  # fmt: skip
    assert {k: d[k] for k in ref} == ref
    diffs = [100 * (ACC["kd", s] - ACC["ce", s]) for s in range(4)]
    assert d["mean"] == pytest.approx(sum(diffs) / 4) and d["n"] == 4
    assert verdict(d) == ("beats" if d["low"] > 0 else "is within noise of")
    assert verdict({"within_noise": False, "mean": -1.0}) == "trails"
    table = paired_table(rows, "kd")
    assert [r["label"] for r in table] == ["CE", "GRKD"] and table.unit == "points"
    with pytest.raises(ValueError, match="no paired difference 'rkd'"):
        paired_vs(rows, "rkd", "ce")


def test_tables_need_one_setting():
    rows = synthetic() + [dict(r, setting="low-data") for r in synthetic()]
    with pytest.raises(ValueError, match="pass setting="):
        summary_table(rows)
    assert len(summary_table(rows, setting="low-data")) == 3
    with pytest.raises(ValueError, match="no rows of setting 'standard'"):
        paired_table(rows, setting="standard")


def test_printed_paths_do_not_leak_the_machines_layout(tmp_path, specs, monkeypatch, capsys):
    """Committed notebook outputs may not show absolute paths (``tests/test_notebooks.py``)."""
    repo = tmp_path / "repo"
    results = write(repo / "results", committed(specs))
    (repo / "notebooks").mkdir()
    monkeypatch.chdir(repo / "notebooks")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    got = benchmark_runs("transfer", ("ce", "kd"), fast=False, results_dir=results,
                         cache_dir=tmp_path / "home" / ".cache" / "x", train=False)  # fmt: skip
    out = capsys.readouterr().out
    assert "8 from ../results/runs.csv" in out and str(tmp_path) not in out
    assert runs.shown(tmp_path / "home" / ".cache" / "x") == "~/.cache/x"
    assert runs.shown(repo / "notebooks" / "a.csv") == "a.csv"
    assert str(tmp_path) not in got.describe()
