"""The benchmark's throughput machinery: --jobs, the workspace cache on disk, the student layout."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from relkd_tutorial.bench import cli, parallel, runner, workspace
from relkd_tutorial.bench import settings as bench_settings
from relkd_tutorial.bench import store as bench_store
from relkd_tutorial.models import build_model

HOST_COLUMNS = {"seconds", "peak_mem_mb", "load1"}  # wall time, memory, the machine's load
# fast-mode settings, shrunk further so that the two invocations stay quick
# every method at its defaults whatever the shipped recipes tune (tests/test_bench_tuned.py
# covers the recipes), so the run counts below hold
SMALL = ["--fast", "--settings", "transfer", "--seeds", "0,1", "--epochs", "2",
         "--pool-per-class", "40", "--no-plots", "--recipes", "none"]  # fmt: skip


def _by_key(path: Path) -> dict[str, dict]:
    return {r["key"]: r for r in bench_store.read_runs(path)}


def _histories(path: Path) -> dict[tuple[str, str], dict]:
    import csv

    with open(path, newline="") as f:
        return {(r["key"], r["epoch"]): r for r in csv.DictReader(f)}


def test_the_rows_do_not_depend_on_the_number_of_jobs(tmp_path: Path, capsys) -> None:
    argv = [*SMALL, "--methods", "ce,kd,rrd"]
    assert cli.main([*argv, "--jobs", "1", "--out", str(tmp_path / "one")]) == 0
    assert cli.main([*argv, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    assert "2 jobs" in capsys.readouterr().out
    one, two = _by_key(tmp_path / "one/runs.csv"), _by_key(tmp_path / "two/runs.csv")
    assert len(one) == 3 * 2 and one.keys() == two.keys()
    for key, row in one.items():
        for column in bench_store.RUN_COLUMNS:
            if column not in HOST_COLUMNS:
                assert str(row[column]) == str(two[key][column]), (key, column)
    h1, h2 = _histories(tmp_path / "one/histories.csv"), _histories(tmp_path / "two/histories.csv")
    assert h1.keys() == h2.keys()
    for k, rec in h1.items():
        assert {c: v for c, v in rec.items() if c != "seconds"} == {
            c: v for c, v in h2[k].items() if c != "seconds"
        }
    assert multiprocessing.active_children() == []  # the pool ended its workers


def test_a_failing_run_is_reported_and_the_others_are_kept(tmp_path: Path, monkeypatch) -> None:
    """A run that raises in a worker stops the benchmark with its traceback; the runs that
    finished in the other worker are all recorded."""
    jobs = [(0, runner.Job("transfer", "final", m, {}, 0)) for m in ("ce", "kd", "boom", "rkd")]
    monkeypatch.setattr(parallel, "_run", _fake_run)
    recorded: list[str] = []
    with pytest.raises(parallel.WorkerError, match="no such method: boom"):
        parallel.run_in_workers(jobs, lambda job, row, h: recorded.append(job.method), [None], 2)
    assert {"ce", "kd"} <= set(recorded) and "boom" not in recorded
    assert multiprocessing.active_children() == []


def _fake_run(job, ref):  # a module-level stand-in, so that spawned workers can unpickle it
    if job.method == "boom":
        raise ValueError(f"no such method: {job.method}")
    time.sleep(0.2 if job.method == "rkd" else 0.0)
    return {"key": job.method}, []


def test_default_jobs_are_the_usable_cores_on_a_cpu_and_one_on_a_gpu() -> None:
    assert parallel.default_jobs("cpu") == len(os.sched_getaffinity(0))
    assert parallel.default_jobs("cuda") == 1
    assert cli.build_parser().parse_args(["--jobs", "3"]).jobs == 3
    with pytest.raises(SystemExit):
        cli.main(["--plan", "--jobs", "0"])
    with pytest.raises(ValueError, match="never fork"):
        parallel.spawn_pool(2, start_method="fork")


def test_a_stopped_parallel_benchmark_keeps_its_finished_runs_and_resumes(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    argv = [*SMALL, "--methods", "ce,kd,grkd", "--jobs", "2", "--out", str(out)]
    runs = out / "runs.csv"

    def stop_after_first_row() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if runs.exists() and len(bench_store.read_runs(runs)) >= 1:
                os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would
                return
            time.sleep(0.05)

    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=stop_after_first_row, daemon=True)
    killer.start()
    assert cli.main(argv) == 128 + signal.SIGTERM
    killer.join()
    assert "run the same command again" in capsys.readouterr().err
    assert multiprocessing.active_children() == []  # no worker left behind
    kept = bench_store.read_runs(runs)
    assert 1 <= len(kept) < 6 and all(r["status"] == "ok" for r in kept)
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are restored

    assert cli.main(argv) == 0  # the same command: only the missing runs
    printed = capsys.readouterr().out
    assert f"resuming: {len(kept)} of these runs" in printed
    rows = bench_store.read_runs(runs)
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
    assert [r["key"] for r in rows[: len(kept)]] == [r["key"] for r in kept]


# ---------------------------------------------------------------------------------------------
# The workspace on disk
# ---------------------------------------------------------------------------------------------


def _small_workspace(tmp_path: Path, teacher_seed: int = 0, **changes) -> workspace.Workspace:
    setting = bench_settings.default_settings(fast=True)["transfer"]
    setting = dataclasses.replace(
        setting, pool_per_class=8, val_per_class=4, labelled_per_class=2, **changes
    )
    teacher = build_model("teacher_cnn", 10, 1, seed=teacher_seed)
    return workspace.build_workspace(
        setting, tmp_path, torch.device("cpu"), teacher=teacher, log=lambda _: None
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[workspace.Workspace, Path]:
    root = tmp_path_factory.mktemp("ws")
    ws = _small_workspace(root)
    ws.test = ws.val  # a small test split: the teacher runs over 40 + 80 images only
    path = workspace.prepare_workspace(ws, root / "cache", log=lambda _: None)
    return ws, path


def test_a_saved_workspace_loads_back_exactly(saved) -> None:
    ws, path = saved
    assert path.exists() and path.name.startswith("workspace_transfer_")
    loaded = workspace.load_workspace(path, "cpu", ws.setting, channels_last=True)
    assert loaded.spec == ws.spec and workspace.workspace_key(loaded) == workspace.workspace_key(ws)
    for name in ("pool", "val", "test"):
        a, b = getattr(ws, name), getattr(loaded, name)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert (a.class_names, a.mean, a.std) == (b.class_names, b.mean, b.std)
    assert loaded.teacher_id == ws.teacher_id
    assert loaded._caches.keys() == ws._caches.keys()
    for data in ws.image_sets():
        mine, theirs = ws.teacher_cache(data), loaded.teacher_cache(data)
        assert torch.equal(mine.features, theirs.features)
        assert torch.equal(mine.logits, theirs.logits)
        assert torch.equal(theirs.labels, data.labels)
    assert loaded.cache_seconds == 0.0  # nothing was recomputed
    # the invocation's own setting replaces the saved one (seeds, sweep, curves) ...
    other = dataclasses.replace(ws.setting, seeds=(5,), curves=True)
    assert workspace.load_workspace(path, "cpu", other).setting == other
    # ... but never another configuration
    with pytest.raises(workspace.CacheError, match="another configuration"):
        workspace.load_workspace(path, "cpu", dataclasses.replace(ws.setting, epochs=99))


def test_a_second_invocation_uses_the_cache_instead_of_the_teacher(saved, monkeypatch) -> None:
    ws, path = saved
    fresh = dataclasses.replace(ws, _caches={}, cache_seconds=0.0)

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran although its outputs were cached")

    monkeypatch.setattr(workspace.TeacherCache, "build", no_teacher)
    assert workspace.prepare_workspace(fresh, path.parent, log=lambda _: None) == path
    assert fresh._caches.keys() == ws._caches.keys()


def test_a_corrupt_or_stale_cache_is_rebuilt_with_a_message(saved, tmp_path: Path) -> None:
    ws, path = saved
    directory = tmp_path / "cache"
    directory.mkdir()
    copy = directory / path.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the tensors
    copy.write_bytes(bytes(data))
    messages: list[str] = []
    fresh = dataclasses.replace(ws, _caches={})
    assert not workspace.attach_cached_outputs(fresh, directory, messages.append)
    assert fresh._caches == {}, "a corrupt file is never used"
    assert len(messages) == 1 and "rebuilding" in messages[0]
    assert "corrupt" in messages[0] or "does not load" in messages[0]
    with pytest.raises(workspace.CacheError):
        workspace.load_workspace(copy, "cpu")
    workspace.prepare_workspace(fresh, directory, log=messages.append)  # rebuilt, then valid
    assert workspace.load_workspace(copy, "cpu").teacher_id == ws.teacher_id

    copy.write_bytes(b"not a torch file")  # truncated / garbage
    messages.clear()
    assert not workspace.attach_cached_outputs(dataclasses.replace(ws, _caches={}), directory,
                                               messages.append)  # fmt: skip
    assert "does not load" in messages[0]

    # stale: a valid file of another workspace under this workspace's name
    other = _small_workspace(tmp_path, teacher_seed=1)
    other.test = other.val
    other_path = workspace.save_workspace(other, tmp_path / "other")
    copy.write_bytes(other_path.read_bytes())
    messages.clear()
    assert not workspace.attach_cached_outputs(dataclasses.replace(ws, _caches={}), directory,
                                               messages.append)  # fmt: skip
    assert "stale" in messages[0]


def test_the_cache_key_follows_the_fingerprints(saved, tmp_path: Path, monkeypatch) -> None:
    ws, _ = saved
    key = workspace.workspace_key(ws)
    other_teacher = dataclasses.replace(ws, teacher_id="another")
    assert workspace.workspace_key(other_teacher) != key
    longer = dataclasses.replace(ws, setting=dataclasses.replace(ws.setting, epochs=9))
    assert workspace.workspace_key(longer) != key
    relabelled = dataclasses.replace(
        ws, val=dataclasses.replace(ws.val, labels=ws.val.labels.flip(0))
    )
    assert workspace.workspace_key(relabelled) != key
    seeds = dataclasses.replace(ws, setting=dataclasses.replace(ws.setting, seeds=(3,)))
    assert workspace.workspace_key(seeds) == key  # seeds do not change the splits or the teacher
    monkeypatch.setenv(workspace.CACHE_ENV, str(tmp_path / "env"))
    assert workspace.cache_dir(tmp_path / "out") == tmp_path / "env"
    monkeypatch.delenv(workspace.CACHE_ENV)
    assert workspace.cache_dir(tmp_path / "out") == tmp_path / "out" / "cache"


# ---------------------------------------------------------------------------------------------
# The students' layout (channels_last), a knob with its own fingerprint
# ---------------------------------------------------------------------------------------------


def test_the_layout_reaches_the_training_config_and_the_spec(saved, monkeypatch) -> None:
    ws, _ = saved
    contiguous = dataclasses.replace(ws, channels_last=False)
    assert ws.channels_last and contiguous.spec != ws.spec
    seen = []
    real_fit = runner.fit

    def spy(student, method, loader, config, **kwargs):
        seen.append(config.channels_last)
        return real_fit(student, method, loader, config, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    short = dataclasses.replace(ws, setting=dataclasses.replace(ws.setting, epochs=1))
    for w in (dataclasses.replace(short, channels_last=False), short):
        row, _ = runner.run_job(runner.Job("transfer", "final", "ce", {}, 0), w)
        assert row["status"] == "ok" and row["spec"] == w.spec
    assert seen == [False, True]
    assert runner.student_config(ws.setting, 0, torch.device("cpu"), True).channels_last
