"""Faults: a run killed mid-epoch resumes to the same weights; a damaged checkpoint never passes.

- Real signals: ``tests/_fault_worker.py`` runs as a subprocess; after a few steps it receives
  SIGTERM (or SIGINT), finishes the step, writes a mid-epoch checkpoint and exits with
  ``128 + signal``. Resuming here gives weights, RRD queue and history *bitwise* equal to an
  uninterrupted run (same thread count, CPU).
- The same in one process with a plain ``DataLoader`` (shuffled, over an indexed data set).
- Truncated, empty, random, unsafe and foreign checkpoint files: a clear ``ValueError`` naming the
  file, no silent fresh start, no file replaced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _fault_worker import run
from torch.utils.data import DataLoader, TensorDataset

from relkd_tutorial.methods import KD
from relkd_tutorial.models import build_model
from relkd_tutorial.teacher import IndexedDataset
from relkd_tutorial.training import (
    TrainConfig,
    TrainingInterrupted,
    fit,
    load_checkpoint,
    save_checkpoint,
)
from relkd_tutorial.training.checkpoint import previous_checkpoint
from relkd_tutorial.training.signals import StopSignals

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_fault_worker.py")
STOP_AFTER = 5  # steps the worker reports before it is signalled (of 36)


def strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted():
    student, method, history = run(None)
    return student.state_dict(), method.state_dict(), strip(history)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """One worker per signal, started together; each is signalled after its 5th step."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    threads = str(torch.get_num_threads())  # bitwise equality needs the same thread count
    procs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        folder = tmp_path_factory.mktemp(sig.name)
        cmd = [sys.executable, str(WORKER), str(folder), threads, "0.3"]
        procs[sig] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env), folder)  # fmt: skip
    seen = {}
    for sig, (proc, _) in procs.items():  # signal each in turn (the other one keeps running)
        assert proc.stdout is not None
        seen[sig] = 0
        while seen[sig] < STOP_AFTER:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            seen[sig] += line.strip() == "step"
        proc.send_signal(sig)
    results = {}
    for sig, (proc, folder) in procs.items():
        out = proc.stdout.read()  # through the same buffered reader as readline()
        err = proc.stderr.read()
        proc.wait(timeout=300)
        results[sig] = (proc.returncode, err, folder, seen[sig] + out.count("step"))
    return results


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_run_resumes_to_the_weights_of_an_uninterrupted_run(
    killed_runs, uninterrupted, sig
):
    code, err, folder, steps = killed_runs[sig]
    assert code == 128 + sig, err
    assert f"{sig.name} received: finishing the current step" in err
    assert f"training stopped by {sig.name} after step" in err and "resume=True" in err
    state = load_checkpoint(folder / "last.pt")
    assert state["epoch"] * 12 + state["step"] == steps  # it stopped right after the last step
    assert state["step"] > 0 and steps < 36  # a mid-epoch checkpoint, before the end of the run

    student, method, history = run(str(folder), resume=True)
    model, method_state, reference = uninterrupted
    assert_bitwise(student.state_dict(), model)
    assert_bitwise(method.state_dict(), method_state)  # RRD's head and queue
    assert strip(history) == reference


# ---------------------------------------------------------------------------------------------
# The same in one process, with a plain shuffling DataLoader
# ---------------------------------------------------------------------------------------------


class SignalAt(KD):
    """KD that sends this process a signal after its ``at``-th step."""

    def __init__(self, at: int | None, sig: int = signal.SIGINT) -> None:
        super().__init__()
        self.at, self.sig, self.steps = at, sig, 0

    def after_step(self, inputs) -> None:
        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), self.sig)


def dataloader_run(checkpoint_dir, at=None, resume=False):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 10, 10, generator=g), torch.arange(48) % 3
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=8, shuffle=True)
    student = build_model("student_cnn_s", 3, 1, seed=1)
    teacher = build_model("student_cnn_m", 3, 1, seed=2)
    config = TrainConfig(
        epochs=2, lr=0.05, device="cpu", progress=False, seed=0,
        checkpoint_dir=checkpoint_dir, resume=resume,
    )  # fmt: skip
    history = fit(student, SignalAt(at), loader, config, teacher=teacher)
    return student.state_dict(), strip(history)


def test_a_dataloader_run_stopped_mid_epoch_resumes_exactly(tmp_path):
    reference, reference_history = dataloader_run(None)
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="SIGINT after step 2 of epoch 2") as stop:
        dataloader_run(str(tmp_path), at=8)  # 6 steps per epoch: epoch 2, step 2
    assert signal.getsignal(signal.SIGINT) is previous  # the handlers are restored
    assert stop.value.checkpoint == str(tmp_path / "last.pt") and stop.value.exit_code == 130
    assert (stop.value.epoch, stop.value.step) == (1, 2)
    state, history = dataloader_run(str(tmp_path), resume=True)
    assert_bitwise(state, reference)
    assert history == reference_history


def test_without_a_checkpoint_dir_the_stop_says_nothing_was_saved():
    with pytest.raises(TrainingInterrupted, match="nothing was saved"):
        dataloader_run(None, at=1)


def test_stop_signals_record_wait_insist_and_never_lose_a_signal():
    pid, delivered = os.getpid(), []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: delivered.append(signum))
    # A process started in the background by a non-interactive shell inherits SIGINT *ignored*,
    # and Python then installs no KeyboardInterrupt handler: install it, as in a terminal.
    original_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopSignals(announce=False) as stop:
            os.kill(pid, signal.SIGTERM)
            assert stop.signum == signal.SIGTERM and not delivered  # recorded, not acted on
            os.kill(pid, signal.SIGINT)  # another signal while a stop is pending: waits too
            assert stop.signum == signal.SIGTERM
        assert delivered == [signal.SIGTERM]  # still pending at the end: delivered, not lost
        with StopSignals(announce=False):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGTERM)  # the same signal again: to the previous handler now
            assert delivered == [signal.SIGTERM] * 2
        with StopSignals(announce=False), pytest.raises(KeyboardInterrupt):
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGINT)  # Python's default handler: KeyboardInterrupt at once
    finally:
        signal.signal(signal.SIGTERM, original)
        signal.signal(signal.SIGINT, original_int)


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints
# ---------------------------------------------------------------------------------------------


class NotOurs:
    """A class pickled by reference: weights_only loading must refuse it."""


def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif kind == "state_dict":  # a valid torch file that is not a training checkpoint
        torch.save(build_model("student_cnn_s", 3, 1).state_dict(), path)
    elif kind == "missing_entries":  # our format tag, but no optimizer
        state = load_checkpoint(path)
        del state["optimizer"]
        torch.save(state, path)
    elif kind == "unsafe":
        torch.save({"format": "relkd_tutorial.checkpoint/1", "x": NotOurs()}, path)


MESSAGES = {
    "truncated": "is truncated or corrupt",
    "empty": "is empty",
    "random": "is truncated or corrupt",
    "state_dict": "not a relkd_tutorial training checkpoint",
    "missing_entries": r"lacks the entries \['optimizer'\]",
    "unsafe": "refuses to load",
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    dataloader_run(str(folder))  # 2 epochs: last.pt (epoch 2) and last.previous.pt (epoch 1)
    return folder


@pytest.mark.parametrize("kind", list(MESSAGES))
def test_a_damaged_checkpoint_is_refused_by_name_and_never_replaced(good_run, tmp_path, kind):
    for name in ("last.pt", "last.previous.pt"):
        (tmp_path / name).write_bytes((good_run / name).read_bytes())
    path = tmp_path / "last.pt"
    _damage(path, kind)
    damaged = path.read_bytes()
    if kind != "missing_entries":
        with pytest.raises(ValueError, match=MESSAGES[kind]) as err:
            load_checkpoint(path)
        assert str(path) in str(err.value)
    with pytest.raises(ValueError, match=MESSAGES[kind]) as err:
        dataloader_run(str(tmp_path), resume=True)  # never a silent fresh start
    assert str(path) in str(err.value) and "last.previous.pt" in str(err.value)
    assert path.read_bytes() == damaged  # nothing replaced the damaged file
    assert load_checkpoint(previous_checkpoint(path))["epoch"] == 1


def test_the_previous_checkpoint_is_kept_and_continues_the_run(good_run, tmp_path):
    assert load_checkpoint(good_run / "last.pt")["epoch"] == 2
    fallback = tmp_path / "fallback.pt"
    fallback.write_bytes((good_run / "last.previous.pt").read_bytes())
    reference, _ = dataloader_run(None)
    state, history = dataloader_run(str(tmp_path / "new"), resume=str(fallback))
    assert_bitwise(state, reference)
    assert [r["epoch"] for r in history] == [1, 2]


def test_a_failed_write_keeps_both_files(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"format": "relkd_tutorial.checkpoint/1", "epoch": 1})
    save_checkpoint(path, {"format": "relkd_tutorial.checkpoint/1", "epoch": 2})
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        save_checkpoint(path, {"format": "relkd_tutorial.checkpoint/1", "f": lambda: 0})
    assert load_checkpoint(path)["epoch"] == 2
    assert load_checkpoint(previous_checkpoint(path))["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.previous.pt", "last.pt"]  # no temporary file
