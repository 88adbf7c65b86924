"""The device self-check (``python -m relkd_tutorial.selfcheck``), run tiny on the CPU.

It must run end to end (in-process and as a module, writing JSON), give one row per method x
mode, say why a skipped mode was skipped, and its float64 comparison must catch a loss that is
off by 1e-3 on the device path. Speeds are printed, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relkd_tutorial import KD, available_methods, selfcheck

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report():
    # every method, every mode, the tiny nets (a CPU's default), 2 steps per epoch
    return selfcheck.run_selfcheck("cpu", steps=2)


def test_every_method_and_mode_has_a_row(report):
    modes = [m.name for m in selfcheck.MODES]
    assert modes == ["fp32", "bf16", "fp16", "channels_last", "compile"]
    got = [(r["method"], r["mode"]) for r in report["rows"]]
    assert got == [(m, mode) for m in available_methods() for mode in modes]
    assert report["size"]["teacher"] == "teacher_cnn" and report["steps"] == 2
    table = selfcheck.format_table(report).splitlines()
    assert len(table) == 2 + len(got)
    print("\n" + selfcheck.format_table(report))


def test_rows_pass_or_say_why_they_were_skipped(report):
    for row in report["rows"]:
        if row["status"] == "skipped":
            assert row["reason"], row
            continue
        assert row["status"] == "ok", row
        assert row["err_over_tol"] <= 1 and row["train_terms_finite"]
        assert row["images_per_s"] > 0 and row["peak_mib"] is None  # n/a on a CPU
        terms = row["terms"]
        assert any(k.endswith("loss") for k in terms)
        for term in terms.values():
            assert math.isfinite(term["device"]) and math.isfinite(term["float64"])
            assert term["abs_err"] <= term["tol"]
    fp16 = [r for r in report["rows"] if r["mode"] == "fp16"]
    assert all(r["status"] == "skipped" and "CUDA" in r["reason"] for r in fp16)
    ran = {r["mode"] for r in report["rows"] if r["status"] == "ok"}
    assert {"fp32", "bf16", "channels_last"} <= ran  # these always run on a CPU


def test_checked_terms_are_not_trivial(report):
    rows = {(r["method"], r["mode"]): r for r in report["rows"]}
    # RRD's queue is filled before the check, so its term is a real value, not the empty queue's 0
    assert abs(rows["rrd", "fp32"]["terms"]["rrd"]["float64"]) > 0.1
    # REFILLED is checked in both stages
    refilled = rows["refilled", "fp32"]["terms"]
    assert {"embedding:loss", "classifier:loss", "classifier:local_kl"} <= set(refilled)
    # bf16 really ran in bf16: its error is far above fp32's
    assert (
        rows["kd", "bf16"]["terms"]["kd"]["abs_err"]
        > 10 * rows["kd", "fp32"]["terms"]["kd"]["abs_err"]
    )


def _off_on_the_device_path(monkeypatch, delta: float) -> None:
    """KD's terms shifted by ``delta`` on the float32 (device) path only, not on float64."""
    original = KD.loss_terms

    def shifted(self, inputs):
        terms = original(self, inputs)
        if inputs.student_logits.dtype == torch.float32:
            terms = {k: v + delta for k, v in terms.items()}
        return terms

    monkeypatch.setattr(KD, "loss_terms", shifted)


def test_float64_comparison_detects_a_1e3_mismatch(monkeypatch, tmp_path):
    _off_on_the_device_path(monkeypatch, 1e-3)
    (row,) = selfcheck.run_selfcheck("cpu", methods=["kd"], modes=["fp32"], steps=1)["rows"]
    assert row["status"] == "FAIL" and row["err_over_tol"] > 1
    assert row["terms"]["kd"]["abs_err"] == pytest.approx(1e-3, rel=0.05)
    out = tmp_path / "fail.json"
    argv = ["--methods", "kd", "--modes", "fp32", "--steps", "1", "--json", str(out)]
    assert selfcheck.main(argv) == 1
    assert json.loads(out.read_text())["rows"][0]["status"] == "FAIL"


def test_the_same_shift_passes_within_bf16_tolerance(monkeypatch):
    # the tolerance is per precision: 1e-3 is inside bf16's, so the bf16 row still passes
    _off_on_the_device_path(monkeypatch, 1e-3)
    (row,) = selfcheck.run_selfcheck("cpu", methods=["kd"], modes=["bf16"], steps=1)["rows"]
    assert row["status"] == "ok" and row["rtol"] == 5e-2


def test_a_row_that_raises_is_an_error_not_a_skip(monkeypatch):
    def broken(self, inputs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(KD, "loss_terms", broken)
    (row,) = selfcheck.run_selfcheck("cpu", methods=["kd"], modes=["fp32"], steps=1)["rows"]
    assert row["status"] == "error" and "kernel exploded" in row["reason"]


def test_compile_without_a_compiler_is_skipped_with_the_reason(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", no_compiler)
    selfcheck._compile_probe.cache_clear()
    try:
        (row,) = selfcheck.run_selfcheck("cpu", methods=["ce"], modes=["compile"])["rows"]
    finally:
        selfcheck._compile_probe.cache_clear()
    assert row["status"] == "skipped"
    assert row["reason"] == "torch.compile unavailable: RuntimeError: no C++ compiler found"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown modes.*fp8"):
        selfcheck.run_selfcheck("cpu", modes=["fp8"])


def test_module_command_writes_json(tmp_path):
    out = tmp_path / "selfcheck.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "relkd_tutorial.selfcheck", "--tiny", "--json", str(out)]
    cmd += ["--methods", "kd", "rrd", "--modes", "fp32", "fp16", "--steps", "1"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| kd | fp32 | ok |" in result.stdout and "| rrd | fp16 | skipped |" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["mode"]) for r in rows] == [
        ("kd", "fp32"),
        ("kd", "fp16"),
        ("rrd", "fp32"),
        ("rrd", "fp16"),
    ]


def test_cifar_epoch_shrinks_on_cpu(tmp_path):
    out = tmp_path / "epoch.json"
    argv = ["--epoch-cifar", "--epoch-images", "16", "--epoch-batch", "8", "--json", str(out)]
    assert selfcheck.main(argv) == 0
    epoch = json.loads(out.read_text())["epoch"]
    assert (epoch["images"], epoch["batch_size"], epoch["amp"]) == (16, 8, "off")
    assert epoch["images_per_s"] > 0 and epoch["peak_mib"] is None
    assert math.isfinite(epoch["loss"])
