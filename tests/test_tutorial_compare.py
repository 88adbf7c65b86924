"""The comparison helpers of chapters 03-05 (``relkd_tutorial.tutorial.runs``) and the shipped
cross-task teacher's loader (``relkd_tutorial.pretrained``)."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import T_975_TABLE

from relkd_tutorial.bench.settings import CONTROLS
from relkd_tutorial.data import TensorLoader, load_fashion_mnist, select_classes
from relkd_tutorial.pretrained import (
    CROSS_TASK_TEACHER_CLASSES,
    load_shipped_teacher,
    shipped_teacher_info,
    shipped_teacher_stem,
)
from relkd_tutorial.stats import mean_std, paired_difference
from relkd_tutorial.training import evaluate
from relkd_tutorial.tutorial.runs import against, control_table, paired_rows, seed_table
from tests.test_tutorial_runs import read_back, row

SEEDS = range(4)
ACC = {
    "ce": [0.70, 0.72, 0.69, 0.71],
    "kd": [0.75, 0.78, 0.74, 0.77],
    "rrd": [0.71, 0.73, 0.70, 0.71],
    "rrd_kd": [0.76, 0.78, 0.75, 0.78],
}


def rows() -> list[dict]:
    return read_back([row("s", m, s, ACC[m][s]) for m in ACC for s in SEEDS])


def test_control_table_pairs_each_method_with_its_control_in_points():
    table = control_table(rows())
    got = {d["method"]: d for d in table}
    assert set(got) == {"kd", "rrd", "rrd_kd"}
    for method, d in got.items():
        assert d["baseline"] == CONTROLS[method]
        want = paired_difference(
            [100 * x for x in ACC[method]], [100 * x for x in ACC[CONTROLS[method]]]
        )
        assert d["mean"] == pytest.approx(want.mean) and d["low"] == pytest.approx(want.low)
        assert d["high"] == pytest.approx(want.high)
    assert got["rrd_kd"]["label"] == "RRD+KD − KD" and got["rrd_kd"]["baseline"] == "kd"
    tau = {d["method"]: d for d in control_table(rows(), "kendall_tau")}
    assert tau["rrd"]["mean"] == pytest.approx(
        sum((0.5 + a / 10) - (0.5 + b / 10) for a, b in zip(ACC["rrd"], ACC["ce"], strict=True)) / 4
    )


def test_against_uses_the_claim_and_the_interval():
    d = {"claim": "beats", "baseline": "ce", "mean": 2.25, "low": 0.5, "high": 4.0,
         "p_holm": 0.031, "metric": "acc"}  # fmt: skip
    assert against(d) == "beats CE (+2.2 points, 95% CI +0.5 to +4.0, Holm p 0.031)"
    noise = dict(d, claim="within noise", low=-1.0)
    assert against(noise).startswith("is within noise of CE (+2.2 points, 95% CI -1.0 to")
    one = {"claim": "within noise", "baseline": "CE", "mean": 0.12345, "low": math.nan,
           "high": math.nan, "metric": "kendall_tau"}  # fmt: skip
    assert against(one, digits=3) == "is within noise of CE (+0.123)"


def test_seed_table_is_mean_sample_std_and_t_interval():
    table = seed_table({"a": [0.70, 0.72, 0.69, 0.71], "b": [0.8]}, scale=100)
    a, b = table
    mean, std, _ = mean_std([70.0, 72.0, 69.0, 71.0])
    assert a["mean"] == pytest.approx(mean) and a["std"] == pytest.approx(std)
    assert std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in (70, 72, 69, 71)) / 3))
    half = T_975_TABLE[3] * std / 2
    assert a["low"] == pytest.approx(mean - half, abs=2e-3)
    assert a["high"] == pytest.approx(mean + half, abs=2e-3)
    assert b["n"] == 1 and math.isnan(b["std"]) and math.isnan(b["low"])


def test_paired_rows_pair_by_seed_and_say_within_noise():
    values = {"CE": [1.0, 2.0, 3.0], "up": [2.0, 3.1, 3.9], "same": [1.5, 1.5, 3.5]}
    got = {d["method"]: d for d in paired_rows(values, "CE")}
    assert set(got) == {"up", "same"}
    up = paired_difference(values["up"], values["CE"])
    assert got["up"]["mean"] == pytest.approx(up.mean) and got["up"]["low"] == pytest.approx(up.low)
    assert got["up"]["claim"] == "beats" and not got["up"]["within_noise"]
    assert got["same"]["within_noise"] and got["same"]["claim"] == "within noise"
    assert got["up"]["label"] == "up − CE"
    assert paired_rows({"CE": [1.0], "x": [2.0]}, "CE")[0]["within_noise"]  # no interval
    with pytest.raises(ValueError, match="baseline"):
        paired_rows(values, "KD")


def test_shipped_teacher_stems():
    assert shipped_teacher_stem(None) == "teacher_cnn_fashion_mnist"
    assert shipped_teacher_stem(range(10)) == "teacher_cnn_fashion_mnist"
    assert shipped_teacher_stem((0, 1, 2, 3, 4)) == "teacher_cnn_fashion_mnist_classes0-4"
    assert shipped_teacher_stem([0, 2, 5]) == "teacher_cnn_fashion_mnist_classes0_2_5"
    for bad in ([], [1, 1], [10]):
        with pytest.raises(ValueError, match="distinct"):
            shipped_teacher_stem(bad)


def test_the_cross_task_teacher_is_the_recorded_one_and_as_long_trained():
    teacher = load_shipped_teacher(classes=CROSS_TASK_TEACHER_CLASSES)
    record = shipped_teacher_info(classes=CROSS_TASK_TEACHER_CLASSES)
    full = shipped_teacher_info()
    assert record["classes"] == list(CROSS_TASK_TEACHER_CLASSES)
    assert len(record["history"]) == len(full["history"])  # the same epochs as the 10-class one
    assert record["model"] == full["model"]
    _, test = load_fashion_mnist("subset")
    test5 = select_classes(test, CROSS_TASK_TEACHER_CLASSES)
    acc = evaluate(teacher, TensorLoader.for_evaluation(test5))["acc"]
    assert acc == pytest.approx(record["test_accuracy"], abs=1e-6)
    batch = next(iter(TensorLoader.for_evaluation(test5, 8)))
    with torch.no_grad():
        assert teacher(batch.x)[1].shape == (8, 5)
