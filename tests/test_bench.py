"""The benchmark: statistics, resume/skip, n/a logic, full config, a tiny CLI run."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import re
from pathlib import Path

import pytest
import torch
from _helpers import T_975_TABLE

from relkd_tutorial.bench import cli, figures, full, report, runner, workspace
from relkd_tutorial.bench import settings as bench_settings
from relkd_tutorial.bench import store as bench_store
from relkd_tutorial.bench.recipes import recipes_of_meta
from relkd_tutorial.bench.tuned import arm_rows
from relkd_tutorial.bench.verdict import comparisons
from relkd_tutorial.data import ImageSet, load_fashion_mnist, partially_labelled, select_classes
from relkd_tutorial.models import build_model
from relkd_tutorial.stats import describe_corrected as describe_difference  # no family: p=None
from relkd_tutorial.stats import (
    mean_std,
    paired_difference,
    t_cdf,
    t_quantile,
    t_two_sided_p,
)
from relkd_tutorial.training import lr_factor

# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", sorted(T_975_TABLE))
def test_t_quantile_matches_the_nist_table(df: int) -> None:
    # the table prints 3 decimals: agreement to half a unit in the last place
    assert abs(t_quantile(0.975, df) - T_975_TABLE[df]) <= 5e-4


@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_closed_forms(p: float) -> None:
    # nu = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi, so t_p = tan(pi (p - 1/2))
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    # nu = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), inverted: t_p = (2p - 1) / sqrt(2 p (1 - p))
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_t_quantile_tends_to_the_normal_and_inverts_the_cdf() -> None:
    assert t_quantile(0.975, 1e9) == pytest.approx(1.959963984540054, abs=1e-6)
    for df in (1, 2, 4, 7.5, 30):
        for p in (0.01, 0.3, 0.5, 0.8, 0.999):
            q = t_quantile(p, df)
            assert t_cdf(q, df) == pytest.approx(p, abs=1e-10)
            assert t_quantile(1 - p, df) == pytest.approx(-q, abs=1e-9)
    assert t_cdf(0.0, 3) == 0.5
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0


def test_two_sided_p_closed_forms() -> None:
    # nu = 1 (Cauchy): P(|T| >= t) = 1 - 2 atan(t) / pi; nu = 2: P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    for t in (0.0, 0.1, 0.5, 2.0, 30.0, 1e4):
        assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)
        assert t_two_sided_p(-t, 2) == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)
    assert math.isnan(t_two_sided_p(math.nan, 3))


@pytest.mark.parametrize(
    "call",
    [
        lambda: t_quantile(0.0, 3),
        lambda: t_quantile(1.0, 3),
        lambda: t_quantile(0.9, 0),
        lambda: t_cdf(1.0, -1),
        lambda: paired_difference([1.0, 2.0], [1.0]),
        lambda: paired_difference([1.0, math.nan], [1.0, 2.0]),
        lambda: paired_difference([1.0, 2.0], [1.0, 2.0], confidence=1.0),
        lambda: mean_std([]),
    ],
)
def test_bad_input_raises(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_paired_interval_on_a_hand_computed_example() -> None:
    # d = a - b = (2, 3, 4): mean 3, sample std sqrt(((2-3)^2 + 0 + (4-3)^2) / 2) = 1,
    # standard error 1/sqrt(3); t_{0.975, 2} = 0.95 / sqrt(2 * 0.975 * 0.025) = 4.302652729...
    # half width = 4.302652729749 / sqrt(3) = 2.484138...  ->  CI (0.515862, 5.484138)
    diff = paired_difference([82.0, 83.0, 85.0], [80.0, 80.0, 81.0])
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
    assert (diff.mean, diff.std, diff.n) == (pytest.approx(3.0), pytest.approx(1.0), 3)
    assert diff.low == pytest.approx(3.0 - half, rel=1e-9)
    assert diff.high == pytest.approx(3.0 + half, rel=1e-9)
    assert half == pytest.approx(2.484138, abs=1e-6)
    assert not diff.within_noise
    # the interval is paired: the unpaired spread of a and b (about 1.5) does not enter
    assert paired_difference([1.0, 5.0, 9.0], [0.0, 4.0, 8.0]).low == pytest.approx(1.0)


def test_the_sentences_say_within_noise_when_the_interval_holds_zero() -> None:
    beats = describe_difference("GRKD", "CE", paired_difference([82, 83, 85], [80, 80, 81]))
    assert beats.startswith("GRKD beats CE by 3.00 points (95% CI +0.52 to +5.48, 3 paired seeds)")
    trails = describe_difference("KD", "CE", paired_difference([80, 80, 81], [82, 83, 85]))
    assert trails.startswith("KD trails CE by 3.00 points")
    noisy = paired_difference([80.0, 82.0, 81.0], [81.0, 80.0, 81.5])
    assert noisy.low < 0 < noisy.high and noisy.within_noise
    text = describe_difference("RKD", "CE", noisy)
    assert "within noise" in text and "do not separate" in text and "beats" not in text
    single = describe_difference("RRD", "CE", paired_difference([80.0], [79.0]))
    assert "single seed" in single and "no claim" in single
    assert paired_difference([80.0], [79.0]).within_noise


def test_mean_std_uses_the_sample_standard_deviation() -> None:
    mean, std, n = mean_std([1.0, 2.0, 3.0, 4.0])
    assert (mean, n) == (2.5, 4)
    assert std == pytest.approx(math.sqrt(5.0 / 3.0))
    assert math.isnan(mean_std([7.0])[1])


# ---------------------------------------------------------------------------------------------
# Keys, n/a logic
# ---------------------------------------------------------------------------------------------


def test_describe_params_is_short_and_sorted() -> None:
    assert bench_settings.describe_params({}) == "defaults"
    assert bench_settings.describe_params('{"temperature":2.0,"grkd_weight":3.0}') == (
        "grkd_weight=3, temperature=2"
    )


def test_fingerprint_tracks_what_changes_a_result() -> None:
    s = bench_settings.default_settings(fast=True)["transfer"]
    base = s.fingerprint("teacherA")
    assert base == dataclasses.replace(s, seeds=(7,), curves=True, default_seeds=1).fingerprint(
        "teacherA"
    )
    assert base != dataclasses.replace(s, epochs=s.epochs + 1).fingerprint("teacherA")
    assert base != s.fingerprint("teacherB")


class _FakeWorkspace:
    def __init__(self, shared: bool, epochs: int = 5) -> None:
        self.shared_classes = shared
        self.setting = bench_settings.default_settings(fast=True)["transfer"]
        self.setting = dataclasses.replace(self.setting, epochs=epochs)


def test_cross_task_marks_exactly_the_logit_methods_not_applicable() -> None:
    cross, same = _FakeWorkspace(shared=False), _FakeWorkspace(shared=True)
    for method in bench_settings.METHODS:
        assert runner.applicable(method, same) is None
        reason = runner.applicable(method, cross)
        assert (reason is not None) == (method in bench_settings.NEEDS_SHARED_CLASSES)
    assert {
        "kd",
        "grkd",
        "grkd_kd",
        "rank_soft",
        "rank_listwise",
        "rrd_kd",
        "dist",
        "pseudo_label",
    } == set(bench_settings.NEEDS_SHARED_CLASSES)
    for method in ("ce", "rkd", "rrd", "refilled"):
        assert runner.applicable(method, cross) is None
    assert "2 epochs" in runner.applicable("refilled", _FakeWorkspace(shared=True, epochs=1))


def test_the_pseudo_label_control_runs_only_where_there_are_unlabelled_images() -> None:
    ws = _FakeWorkspace(shared=True)
    for name, setting in bench_settings.default_settings(fast=False).items():
        ws.setting = setting
        reason = runner.applicable("pseudo_label", ws)
        has = name in ("transfer", "cross-task")
        assert bench_settings.has_unlabelled(setting) == has, name
        assert (reason is None) == has, name  # low-data, standard: it would be CE exactly
        assert runner.applicable("ce", ws) is None and runner.applicable("kd", ws) is None
    assert "CE exactly" in bench_settings.NEEDS_UNLABELLED["pseudo_label"]


def test_groups_follow_the_class_selection() -> None:
    _, test = load_fashion_mnist("subset")
    assert workspace.class_groups(test) == {"tops": (0, 2, 4, 6), "footwear": (5, 7, 9)}
    student = select_classes(test, bench_settings.CROSS_TASK_STUDENT_CLASSES)  # sandal, shirt, ...
    assert workspace.class_groups(student) == {"footwear": (0, 2, 4)}  # one top: nothing to confuse


def test_peak_memory_is_measured_on_cpu() -> None:
    if not Path("/proc/self/clear_refs").exists():  # no /proc: the documented nan
        with runner.peak_memory(torch.device("cpu")) as memory:
            pass
        assert math.isnan(memory.mib)
        return
    gc.collect()  # garbage of earlier tests freed inside the block would hide what it adds
    with runner.peak_memory(torch.device("cpu")) as memory:
        # 64 MiB: above malloc's largest mmap threshold (32 MiB), so fresh pages, all touched
        block = torch.ones(64 * 2**20 // 4)
        block += 1
    # what the block added, in MiB: not bytes, not 0, not the process's whole resident set
    assert 56.0 <= memory.mib < 256.0, memory.mib
    del block


# ---------------------------------------------------------------------------------------------
# Presets: what the main job runs (plan contents only, no training)
# ---------------------------------------------------------------------------------------------


def test_cpu_preset_is_the_powered_main_job() -> None:
    cpu = bench_settings.default_settings(fast=False, preset="cpu")
    assert bench_settings.DEFAULT_SETTINGS == ("transfer", "low-data", "standard")
    assert (
        set(bench_settings.DEFAULT_SETTINGS) < set(cpu) and "cross-task" in cpu
    )  # opt-in, but defined
    t, low, std = cpu["transfer"], cpu["low-data"], cpu["standard"]
    assert all(s.pool_per_class is None and s.val_per_class == 100 for s in cpu.values())
    assert (t.labelled_per_class, t.keep_unlabelled) == (50, True)
    assert (t.epochs, t.seeds) == (5, tuple(range(16)))  # >= 8 paired seeds
    assert (low.labelled_per_class, low.keep_unlabelled, low.epochs, low.batch_size) == (
        50, False, 30, 64
    )  # fmt: skip
    assert low.seeds == tuple(range(8))  # >= 8 seeds
    # the paper-default runs of the tuned methods: the first 8 seeds of transfer and low-data
    assert (t.default_seeds, low.default_seeds, std.default_seeds) == (8, 8, 0)
    assert (std.labelled_per_class, std.epochs, std.seeds, std.curves) == (
        None, 20, (0, 1, 2), True
    )  # fmt: skip
    # every method x seeds, no recipe; without unlabelled images the pseudo-label
    # control is one n/a row, not a run per seed
    counts = [
        len(runner.final_jobs(cpu[n], bench_settings.METHODS))
        for n in bench_settings.DEFAULT_SETTINGS
    ]
    n, labelled_only = len(bench_settings.METHODS), len(bench_settings.NEEDS_UNLABELLED)
    assert counts == [16 * n, 8 * (n - labelled_only), 3 * (n - labelled_only)]
    # the data sizes the preset promises: the whole subset beside the validation split
    pool, val, _ = workspace._fashion_splits(t)
    assert (len(pool), len(val)) == (9000, 1000)
    assert pool.class_counts().tolist() == [900] * 10 and val.class_counts().tolist() == [100] * 10
    transfer_set = partially_labelled(pool, t.labelled_per_class, seed=0)
    assert int((transfer_set.labels >= 0).sum()) == 500 and len(transfer_set) == 9000
    assert len(workspace._fashion_splits(std)[0]) == 9000
    assert len(workspace._fashion_splits(low)[0]) == 9000  # low-data keeps 50 per class of it
    fingerprints = {
        name: {s.fingerprint("T") for s in bench_settings.default_settings(False, name).values()}
        for name in bench_settings.PRESETS
    }
    for a, b in [("cpu", "quick"), ("cpu", "large"), ("quick", "large")]:
        assert fingerprints[a].isdisjoint(fingerprints[b]), "results of presets are never mixed"


def test_quick_preset_is_the_previous_default() -> None:
    quick = bench_settings.default_settings(fast=False, preset="quick")
    t, low, std = quick["transfer"], quick["low-data"], quick["standard"]
    assert (t.labelled_per_class, t.pool_per_class, t.epochs, t.seeds) == (50, 300, 8, (0, 1, 2, 3))
    assert (low.epochs, low.seeds, std.pool_per_class, std.epochs, std.seeds) == (
        20, (0, 1, 2), 200, 10, (0,)
    )  # fmt: skip
    assert len(workspace._fashion_splits(t)[0]) == 3000


def test_large_preset_is_bigger() -> None:
    cpu = bench_settings.default_settings(fast=False, preset="cpu")
    large = bench_settings.default_settings(fast=False, preset="large")
    assert set(large) == set(cpu)
    assert large["transfer"].pool_per_class is None and len(large["transfer"].seeds) == 8
    # like the cpu preset: the tuned methods' paper-default arm in transfer and low-data
    assert large["transfer"].default_seeds > 0 and large["low-data"].default_seeds > 0
    for name in cpu:
        assert large[name].epochs > cpu[name].epochs, name
        assert len(large[name].seeds) >= min(3, len(cpu[name].seeds)), name
    with pytest.raises(ValueError, match="preset"):
        bench_settings.default_settings(fast=False, preset="huge")
    # fast mode ignores the preset
    assert bench_settings.default_settings(True, "cpu") == bench_settings.default_settings(
        True, "large"
    )


def test_preset_and_threads_follow_the_device() -> None:
    assert cli.default_preset("cpu") == "cpu" and cli.default_preset("cuda") == "large"
    assert cli.default_threads("cpu", None) == 1
    assert cli.default_threads("cpu", 2) == 2
    assert cli.default_threads("cuda", None) is None


def _configure(argv: list[str], device: str = "cpu"):
    return cli.configure(cli.build_parser().parse_args(argv), device)


def test_configure_plumbs_preset_settings_and_fast() -> None:
    cpu = bench_settings.default_settings(fast=False, preset="cpu")
    large = bench_settings.default_settings(fast=False, preset="large")
    fast, settings, methods = _configure(["--no-fast"])
    assert not fast and list(settings) == list(bench_settings.DEFAULT_SETTINGS)
    assert settings == {n: cpu[n] for n in bench_settings.DEFAULT_SETTINGS}
    assert methods == list(bench_settings.METHODS)
    assert _configure(["--no-fast"], device="cuda")[1]["transfer"] == large["transfer"]
    assert _configure(["--no-fast", "--preset", "large"])[1]["low-data"] == large["low-data"]
    opt_in = _configure(["--no-fast", "--settings", "cross-task"])[1]
    assert opt_in == {"cross-task": cpu["cross-task"]}
    quick = _configure(["--fast", "--preset", "large"])[1]
    assert quick["transfer"] == bench_settings.default_settings(True)["transfer"]


def test_plan_flag_prints_the_cpu_preset(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        assert cli.main(["--plan", "--no-fast", "--device", "cpu"]) == 0
        assert torch.get_num_threads() == 1  # one thread on a CPU unless --threads says otherwise
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "default mode, cpu preset, 1 torch thread" in out
    assert "transfer:" in out and "low-data:" in out and "standard:" in out
    assert "cross-task:" not in out
    n = len(bench_settings.METHODS)  # the shipped recipes may tune some: at least these runs
    counts = [int(x) for x in re.findall(r"up to (\d+) training runs", out)]
    # no pseudo-label runs without unlabelled images
    assert len(counts) == 3 and all(
        c >= k * m for c, k, m in zip(counts, (16, 8, 3), (n, n - 1, n - 1), strict=True)
    )
    assert "at their recipes" in out


# ---------------------------------------------------------------------------------------------
# The results store: append, skip, repair
# ---------------------------------------------------------------------------------------------


def _row(key: str, **extra) -> dict:
    row = {c: "" for c in bench_store.RUN_COLUMNS}
    row.update(key=key, setting="transfer", spec="s", phase="final", method="ce", params="{}")
    row.update(seed=0, status="ok", acc=0.5)
    row.update(extra)
    return row


def test_store_appends_skips_and_repairs_an_interrupted_line(tmp_path: Path) -> None:
    store = bench_store.ResultStore(tmp_path)
    store.append(_row("a"), [{"epoch": 1, "loss": 1.0}])
    store.append(_row("b", seed=1, acc=math.nan, status="diverged"))
    assert store.done() == {"a", "b"}
    rows = store.rows()
    assert rows[0]["acc"] == 0.5 and math.isnan(rows[1]["acc"]) and rows[1]["seed"] == 1
    with open(store.runs_path, "a") as f:  # a crash in the middle of an append
        f.write("c,transfer,s,final,ce,{},2,o")
    assert store.done() == {"a", "b"}
    store.append(_row("d", seed=3))
    assert [r["key"] for r in store.rows()] == ["a", "b", "d"]
    assert store.histories_path.read_text().splitlines()[1].startswith("a,1")


def test_meta_json_names_the_cpu_and_its_instruction_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU @ 3.00GHz\nflags\t: avx2\n")
    monkeypatch.setattr(bench_store, "_CPUINFO", cpuinfo)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    bench_store.record_invocation(tmp_path, {"command": "first"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    capability = torch.backends.cpu.get_cpu_capability()
    for where in (meta["environment"], meta["invocations"][0]):
        assert where["cpu_model"] == "Test CPU @ 3.00GHz"
        assert where["cpu_capability"] == capability
        assert where["aten_cpu_capability"] == "avx2"
    # no /proc/cpuinfo: platform.processor(); the variable unset: None; each invocation its own
    monkeypatch.setattr(bench_store, "_CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(bench_store.platform, "processor", lambda: "x86_64-fallback")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    bench_store.record_invocation(tmp_path, {"command": "second"})
    meta = json.loads((tmp_path / "meta.json").read_text())
    first, second = meta["invocations"]
    assert first["cpu_model"] == "Test CPU @ 3.00GHz" and first["aten_cpu_capability"] == "avx2"
    assert second["cpu_model"] == meta["environment"]["cpu_model"] == "x86_64-fallback"
    assert second["aten_cpu_capability"] is None and second["command"] == "second"


# ---------------------------------------------------------------------------------------------
# The full (CIFAR-100) setting: built, never run here
# ---------------------------------------------------------------------------------------------


def test_full_plan_is_the_repdistiller_recipe() -> None:
    plans = full.build_full_plan(teacher_checkpoints={"resnet32x4": "/x/r.pt"})
    assert [p.pair for p in plans] == ["resnet32x4->resnet8x4", "wrn_40_2->wrn_16_2"]
    first = plans[0]
    assert (first.teacher, first.student, first.teacher_checkpoint) == (
        "resnet32x4",
        "resnet8x4",
        "/x/r.pt",
    )
    assert plans[1].teacher_checkpoint is None
    assert (first.epochs, first.batch_size, first.crop_padding, first.flip) == (240, 64, 4, True)
    assert first.methods == bench_settings.METHODS and first.seeds == (0, 1, 2)
    cfg = first.config(seed=1)
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov) == (
        "sgd",
        0.05,
        0.9,
        5e-4,
        False,
    )
    assert (cfg.schedule, cfg.gamma, cfg.epochs, cfg.seed) == ("step", 0.1, 240, 1)
    factors = {e: lr_factor(cfg, e, 240) for e in (0, 149, 150, 179, 180, 209, 210, 239)}
    expected = {0: 1, 149: 1, 150: 0.1, 179: 0.1, 180: 0.01, 209: 0.01, 210: 1e-3, 239: 1e-3}
    assert factors == pytest.approx(expected)
    assert first.published == {
        "teacher": 79.42,
        "ce": 72.50,
        "kd": 73.33,
        "rkd": 71.90,
        "crd": 75.51,
        "rrd": 74.48,
        "rrd_kd": 75.08,
    }
    rrd = first.method_kwargs("rrd_kd")
    assert rrd == {"student_dim": 256, "teacher_dim": 256, "queue_size": 16384}
    assert plans[1].method_kwargs("rrd")["teacher_dim"] == 128
    assert first.method_kwargs("refilled") == {"num_classes": 100}
    assert first.setting == "full:resnet32x4->resnet8x4"
    assert full.parse_teacher_checkpoints(["/p.pt"], ["wrn_40_2->wrn_16_2"]) == {
        "wrn_40_2": "/p.pt"
    }
    with pytest.raises(SystemExit):
        full.parse_teacher_checkpoints(["/p.pt"], list(full.FULL_PAIRS))
    with pytest.raises(ValueError, match="unknown pairs"):
        full.build_full_plan(["resnet56->resnet20"])


def test_plan_flag_prints_the_full_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--plan", "--settings", "transfer,full", "--pairs", "wrn_40_2->wrn_16_2"]) == 0
    out = capsys.readouterr().out
    assert "full wrn_40_2->wrn_16_2: 240 epochs" in out and "[150, 180, 210]" in out
    assert "transfer:" in out


def test_a_half_written_last_row_is_dropped_and_the_next_append_starts_clean(tmp_path) -> None:
    store = bench_store.ResultStore(tmp_path)
    store.append({"key": "a", "setting": "s", "status": "ok", "acc": 0.5})
    with open(store.runs_path, "a") as f:
        f.write("b,s,spec")  # a crash in the middle of an append
    assert [r["key"] for r in store.rows()] == ["a"]
    store.append({"key": "c", "setting": "s", "status": "ok", "acc": 0.25})
    assert [(r["key"], r["acc"]) for r in store.rows()] == [("a", 0.5), ("c", 0.25)]
    store.runs_path.write_text("key,setting")  # not one whole line
    assert store.rows() == [] and store.runs_path.read_text() == ""


def test_the_full_setting_trains_records_and_resumes(tmp_path: Path, monkeypatch) -> None:
    """run_full on a stand-in for CIFAR-100 (random images, a given teacher, one epoch): each
    run is recorded as it finishes, an n/a method gets its row, the same command skips all."""
    g = torch.Generator().manual_seed(0)

    def images(n: int) -> ImageSet:
        pixels = torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        return ImageSet(
            pixels,
            torch.arange(n) % 100,
            [str(c) for c in range(100)],
            "fake",
            (0.5,) * 3,
            (0.25,) * 3,
        )

    monkeypatch.setattr(full, "load_cifar100", lambda root: (images(200), images(100)))
    teacher = tmp_path / "wrn.pt"
    torch.save(build_model("wrn_40_2", 100, 3, seed=0).state_dict(), teacher)
    argv = ["--settings", "full", "--pairs", "wrn_40_2->wrn_16_2", "--methods", "ce,pseudo_label",
            "--seeds", "0", "--epochs", "1", "--teacher-checkpoint", f"wrn_40_2={teacher}",
            "--out", str(tmp_path / "out"), "--no-plots", "--recipes", "none"]  # fmt: skip
    assert cli.main(argv) == 0
    rows = bench_store.read_runs(tmp_path / "out/runs.csv")
    assert sorted((r["method"], r["status"]) for r in rows) == [
        ("ce", "ok"),
        ("pseudo_label", "n/a"),
    ]
    assert cli.main(argv) == 0  # the same command: nothing left to train
    assert len(bench_store.read_runs(tmp_path / "out/runs.csv")) == 2


# ---------------------------------------------------------------------------------------------
# A tiny CLI run, then the same command again (everything skipped)
# ---------------------------------------------------------------------------------------------


def test_tiny_cli_run_resumes_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = tmp_path / "teacher.pt"
    torch.save(build_model("teacher_cnn", 10, 1, seed=0).state_dict(), teacher)
    out = tmp_path / "out"
    argv = [
        "--fast", "--recipes", "none", "--settings", "transfer,cross-task", "--methods", "ce,kd", "--seeds", "0,1",
        "--epochs", "1", "--pool-per-class", "6", "--labelled-per-class", "3", "--teacher", str(teacher), "--out", str(out),
        "--jobs", "1",  # in this process, so that the patched run_job is the one called
    ]  # fmt: skip
    calls: list[str] = []
    real_run_job = runner.run_job

    def counting_run_job(job, ws):
        calls.append(job.key(ws.spec))
        return real_run_job(job, ws)

    monkeypatch.setattr(runner, "run_job", counting_run_job)
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    # transfer: 2 methods x 2 seeds; cross-task: CE x 2 seeds, KD is n/a
    assert len(calls) == 6
    assert "== transfer ==" in printed and "n/a: matches the teacher's class" in printed
    rows = bench_store.read_runs(out / "runs.csv")
    assert len(rows) == 7 and sum(r["status"] == "n/a" for r in rows) == 1
    assert {r["seed"] for r in rows if r["status"] == "ok"} == {0, 1}
    finals = [r for r in rows if r["phase"] == "final" and r["status"] == "ok"]
    assert all(0.0 <= r["acc"] <= 1.0 for r in finals)
    assert all(-1.0 <= r["kendall_tau"] <= 1.0 for r in finals if r["setting"] == "transfer")
    assert all(math.isnan(r["kendall_tau"]) for r in finals if r["setting"] == "cross-task")
    assert all(r["eval_split"] == "test" for r in rows)  # the validation split is the tuning's
    for name in ("results.md", "summary.csv", "differences.csv", "meta.json",
                 "accuracy.png", "differences.png", "kendall_tau.png", "curves.png"):  # fmt: skip
        assert (out / name).exists(), name
    report = (out / "results.md").read_text()
    assert "n/a:" in report and "paired seeds" in report

    calls.clear()
    assert cli.main(argv) == 0  # the same command: every run is already there
    printed = capsys.readouterr().out
    assert calls == [] and "0 runs trained" in printed
    assert len(bench_store.read_runs(out / "runs.csv")) == 7


def test_an_interrupted_benchmark_keeps_its_runs_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the plumbing only: run_job is replaced by a stand-in that trains nothing
    from relkd_tutorial.training import TrainingInterrupted

    out = tmp_path / "out"
    argv = [
        "--fast", "--settings", "low-data", "--methods", "ce,kd", "--seeds", "0,1", "--epochs", "1",
        "--pool-per-class", "6", "--labelled-per-class", "3", "--out", str(out), "--no-plots",
        "--jobs", "1",  # the patched run_job runs in this process (tests/test_bench_parallel.py: 2)
    ]  # fmt: skip
    calls: list[str] = []
    stop_at = [3]

    def fake_run_job(job, ws):
        calls.append(job.key(ws.spec))
        if len(calls) == stop_at[0]:
            raise TrainingInterrupted("stopped by SIGTERM", 15, None, 0, 1)
        row = _row(job.key(ws.spec), setting=job.setting, spec=ws.spec, method=job.method,
                   params=bench_settings.params_tag(job.params), seed=job.seed, eval_split="test")  # fmt: skip
        row.update({c: 0.5 for c in bench_store.NUMERIC_COLUMNS})
        return row, [{"epoch": 1, "loss": 1.0}]

    monkeypatch.setattr(runner, "run_job", fake_run_job)
    assert cli.main(argv) == 128 + 15
    assert "run the same command again" in capsys.readouterr().err
    kept = bench_store.read_runs(out / "runs.csv")
    assert [r["key"] for r in kept] == calls[:2]

    calls.clear()
    stop_at[0] = 0
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "resuming: 2 of these runs" in printed and "[3/4]" in printed and "[4/4]" in printed
    assert len(calls) == 2 and not set(calls) & {r["key"] for r in kept}
    assert len(bench_store.read_runs(out / "runs.csv")) == 4


def test_report_functions_on_synthetic_rows() -> None:
    rows = []
    for seed, (ce, grkd) in enumerate([(0.70, 0.74), (0.72, 0.75), (0.71, 0.76)]):
        for method, acc in (("ce", ce), ("grkd", grkd)):
            rows.append(
                _row(
                    f"{method}{seed}",
                    method=method,
                    seed=seed,
                    acc=acc,
                    kendall_tau=0.5,
                    acc_tops=acc,
                    acc_footwear=acc,
                    dist_corr=0.3,
                    seconds=1.0,
                    peak_mem_mb=1.0,
                    train_acc=0.9,
                )  # fmt: skip
            )
    summary = report.summarize_runs(rows)
    assert [e["method"] for e in summary] == ["ce", "grkd"]
    assert summary[1]["acc_mean"] == pytest.approx(0.75)
    diffs = comparisons(rows, families=("ce",), metrics=("acc",))
    assert len(diffs) == 1 and diffs[0]["mean"] == pytest.approx(4.0)
    assert diffs[0]["sentence"].startswith("[top-1] GRKD beats CE by 4.00 points")


def test_curves_fall_back_to_training_accuracy_without_test_curves() -> None:
    rows = [_row("a", setting="standard"), _row("b", setting="transfer")]
    histories = {
        "a": [{"epoch": 1.0, "eval_acc": 0.5, "train_acc": 0.4}],
        "b": [{"epoch": 1.0, "eval_acc": math.nan, "train_acc": 0.4}],
    }
    assert figures.curve_value(rows, histories, "standard") == "eval_acc"
    assert figures.curve_value(rows, histories, "transfer") == "train_acc"
    assert figures.curve_value(rows, {}, "standard") == "train_acc"


# ---------------------------------------------------------------------------------------------
# The main job itself, in fast mode: every default setting, every method, the shipped teacher
# ---------------------------------------------------------------------------------------------


def test_main_job_fast_mode_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m relkd_tutorial.bench --fast`` (what CI can afford of the README's main job)."""
    out = tmp_path / "bench-fast"
    assert cli.main(["--fast", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    settings = bench_settings.default_settings(fast=True)
    rows = bench_store.read_runs(out / "runs.csv")
    # the headline arm: every method at its shipped recipe (or its defaults) on every seed
    recipes = recipes_of_meta(json.loads((out / "meta.json").read_text()))
    finals = [r for r in arm_rows(rows, recipes, "tuned") if r["phase"] == "final"]
    for name in bench_settings.DEFAULT_SETTINGS:
        assert f"== {name} ==" in printed, name
        for method in bench_settings.METHODS:
            mine = [r for r in finals if r["setting"] == name and r["method"] == method]
            if method in bench_settings.NEEDS_UNLABELLED and name != "transfer":
                assert [r["status"] for r in mine] == ["n/a"], (name, method)  # CE exactly there
                continue
            seeds = sorted(r["seed"] for r in mine)
            assert seeds == list(settings[name].seeds), (name, method, seeds)
    everything = [r for r in rows if r["phase"] == "final"]  # both arms
    ok = [r for r in everything if r["status"] == "ok"]
    not_run = [r for r in everything if r["status"] == "n/a"]
    assert len(ok) + len(not_run) == len(everything), [
        r for r in everything if r["status"] not in ("ok", "n/a")
    ]
    assert {r["method"] for r in not_run} <= set(bench_settings.NEEDS_UNLABELLED)
    assert all(0.1 <= r["acc"] <= 1.0 for r in ok)  # ten classes: every student beats chance
    assert all(-1.0 <= r["kendall_tau"] <= 1.0 for r in ok)
    for name in ("results.md", "summary.csv", "differences.csv", "meta.json", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
