"""tutorial/loss_scale.py: gradient shares, the tuning journal's ranks, REFILLED's triplet counts."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from relkd_tutorial.bench.settings import default_settings  # noqa: E402
from relkd_tutorial.bench.workspace import build_workspace  # noqa: E402
from relkd_tutorial.data import TensorLoader  # noqa: E402
from relkd_tutorial.models import build_model  # noqa: E402
from relkd_tutorial.relations import triplet_label_masks  # noqa: E402
from relkd_tutorial.tutorial import loss_scale as ls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
JOURNAL = REPO / "results" / "tuning" / "tuning.journal"


# --- the weight multiplier -------------------------------------------------------------------


def test_multiplier_is_one_at_the_defaults_and_the_geometric_mean_of_the_weights() -> None:
    assert ls.weight_multiplier("kd", {"kd_weight": 0.9, "temperature": 8.0}) == pytest.approx(1.0)
    assert ls.weight_multiplier("kd", {"kd_weight": 9.0}) == pytest.approx(10.0)
    # RKD: 25 and 50 by default; x4 and x1 -> geometric mean x2
    assert ls.weight_multiplier(
        "rkd", {"distance_weight": 100.0, "angle_weight": 50.0}
    ) == pytest.approx(2.0)
    # a missing weight counts as its default
    assert ls.weight_multiplier("rkd", {"distance_weight": 100.0}) == pytest.approx(2.0)


def test_refilled_multiplier_follows_lambda2_only() -> None:
    assert ls.weight_knobs("refilled") == ("lambda2",)
    assert ls.weight_multiplier("refilled", {"lambda1": 1e5, "lambda2": 10.0}) == pytest.approx(0.1)


def test_multiplier_rejects_a_method_without_weight_and_a_bad_weight() -> None:
    with pytest.raises(ValueError, match="no tuned loss weight"):
        ls.weight_multiplier("ce", {})
    with pytest.raises(ValueError, match="must be positive"):
        ls.weight_multiplier("kd", {"kd_weight": 0.0})


# --- nearest trial and rank on a synthetic study -----------------------------------------------


def _row(method: str, number: int, multiplier: float, value: float) -> dict:
    return {"setting": "s", "method": method, "number": number, "value": value,
            "params": {}, "multiplier": multiplier}  # fmt: skip


def _study() -> list[dict]:
    # KD is best at x1, worst at x10; GRKD peaks at x3; RKD has one good trial
    return [
        _row("kd", 0, 1.0, 0.80),
        _row("kd", 1, 10.0, 0.10),
        _row("kd", 2, 0.1, 0.60),
        _row("grkd", 0, 1.0, 0.70),
        _row("grkd", 1, 3.0, 0.85),
        _row("rkd", 0, 1.0, 0.75),
    ]


def test_rank_moves_with_the_weight() -> None:
    rows = _study()
    assert ls.tuned_scores(rows) == {"kd": 0.80, "rkd": 0.75, "grkd": 0.85}
    at = {x: ls.rank_at(rows, "kd", x) for x in (1.0, 10.0, 0.1)}
    assert [at[x]["rank"] for x in (1.0, 10.0, 0.1)] == [2, 3, 3]
    assert at[10.0]["value"] == 0.10 and at[10.0]["trial"]["number"] == 1
    assert all(v["tuned_rank"] == 2 and v["of"] == 3 for v in at.values())
    assert ls.rank_at(rows, "grkd", 1.0)["rank"] == 3
    assert ls.rank_at(rows, "grkd", 2.0)["rank"] == 1  # log-nearest of 1 and 3 is 3
    # the other methods keep their tuned scores
    assert ls.rank_at(rows, "kd", 10.0)["scores"] == {"kd": 0.10, "rkd": 0.75, "grkd": 0.85}


def test_nearest_is_on_a_log_scale_and_a_tie_goes_to_the_earlier_trial() -> None:
    rows = _study()
    assert ls.nearest_trial(rows, "kd", 2.5)["number"] == 0  # |log 2.5| < |log 4|
    assert ls.nearest_trial(rows, "kd", 4.0)["number"] == 1
    tie = [_row("kd", 5, 2.0, 0.5), _row("kd", 3, 0.5, 0.4)]
    assert ls.nearest_trial(tie, "kd", 1.0)["number"] == 3


def test_rank_rejects_bad_input() -> None:
    rows = _study()
    with pytest.raises(ValueError, match="no trial of 'dist'"):
        ls.rank_at(rows, "dist", 1.0)
    for bad in (0.0, -1.0, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="positive finite"):
            ls.nearest_trial(rows, "kd", bad)  # type: ignore[arg-type]
    mixed = [*rows, {**_row("kd", 9, 1.0, 0.5), "setting": "other"}]
    with pytest.raises(ValueError, match="several settings"):
        ls.tuned_scores(mixed)


def test_rank_table_and_markdown() -> None:
    table = ls.rank_table(_study(), multipliers=(1.0, 10.0))
    kd = next(r for r in table if r["method"] == "KD")
    assert kd["x1"].startswith("2 ") and kd["x10"].startswith("3 ")
    assert kd["ranks over its trials"] == "2 to 3"
    text = ls.markdown_table(table)
    assert text.splitlines()[0].startswith("| method | tuned | x1 | x10 |")
    with pytest.raises(ValueError, match="no rows"):
        ls.markdown_table([])


# --- the committed journal (read through Optuna) -----------------------------------------------


def test_committed_journal_reads_into_rows_with_the_default_first() -> None:
    rows = ls.trial_rows(JOURNAL, "transfer")
    assert {r["setting"] for r in rows} == {"transfer"}
    assert "refilled" in ls.methods(rows) and "ce" not in ls.methods(rows)
    for m in ls.methods(rows):
        first = min((r for r in rows if r["method"] == m), key=lambda r: r["number"])
        if ls.weight_knobs(m):  # trial 0 is the enqueued default
            assert first["multiplier"] == pytest.approx(1.0), m
    assert all(0.0 <= r["value"] <= 1.0 for r in rows)


def test_journal_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.journal"
    with pytest.raises(FileNotFoundError, match="no tuning journal"):
        ls.trial_rows(missing)
    assert not missing.exists()  # Optuna would have created it


# --- triplets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_label_triplets_matches_the_package_masks(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(-1, 4, (30,), generator=g)
    positive, negative = triplet_label_masks(labels)
    by_masks = int((positive.sum(1) * negative.sum(1)).sum())
    assert ls.label_triplets(labels) == by_masks


def test_label_triplets_edge_cases_and_bad_input() -> None:
    assert ls.label_triplets(torch.full((8,), -1)) == 0
    assert ls.label_triplets(torch.zeros(8, dtype=torch.long)) == 0  # one class: no negative
    assert ls.label_triplets(torch.tensor([0, 0, 1])) == 2
    with pytest.raises(ValueError, match="1-d integer"):
        ls.label_triplets(torch.zeros(3))


def test_semi_hard_count_grows_with_the_margin_and_ignores_unlabelled() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(40, 8, generator=g)
    y = torch.arange(40) % 4
    small, large = ls.semi_hard_count(f, y, 0.05), ls.semi_hard_count(f, y, 0.5)
    assert 0 < small < large <= ls.label_triplets(y)
    y_half = y.clone()
    y_half[::2] = -1
    assert ls.semi_hard_count(f, y_half, 0.5) < large


# --- measurements on a small workspace ---------------------------------------------------------


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    setting = default_settings(fast=True)["transfer"]
    teacher = build_model("student_cnn_s", 10, 1, seed=7)  # any network: no weights to read
    return build_workspace(setting, tmp_path_factory.mktemp("ws"), torch.device("cpu"),
                           log=lambda _: None, teacher=teacher)  # fmt: skip


def test_gradient_shares_sum_to_one_and_follow_the_weight(ws) -> None:
    variants = [
        ("KD", "kd", {}),
        ("KD x10", "kd", {"kd_weight": 9.0}),
        ("REFILLED", "refilled", {}),
    ]
    rows = ls.initial_gradient_shares(ws, [0], variants)
    by = {(r["label"], r["term"]): r for r in rows}
    for label in ("KD", "KD x10", "REFILLED (classifier)"):
        assert math.fsum(r["share"] for r in rows if r["label"] == label) == pytest.approx(1.0)
    assert by[("KD x10", "kd")]["norm"] == pytest.approx(10 * by[("KD", "kd")]["norm"], rel=1e-4)
    assert by[("KD x10", "kd")]["share"] > by[("KD", "kd")]["share"]
    assert by[("KD x10", "ce")]["norm"] == pytest.approx(by[("KD", "ce")]["norm"], rel=1e-6)
    assert by[("REFILLED (embedding)", "relation")]["share"] == 1.0  # no CE in stage 1
    with pytest.raises(ValueError, match="seeds is empty"):
        ls.initial_gradient_shares(ws, [], variants)


def test_refilled_budget_follows_the_stage_fraction_and_the_labels(ws) -> None:
    short = ls.refilled_budget(ws, 0, stage1_fraction=0.25)
    long = ls.refilled_budget(ws, 0, stage1_fraction=0.75)
    assert short["epochs"] == long["epochs"] == ws.setting.epochs
    assert short["stage1_epochs"] < long["stage1_epochs"]
    loader = TensorLoader(ws.train_set(0), ws.setting.batch_size, augment=False, seed=0)
    assert long["stage1_steps"] == long["stage1_epochs"] * len(loader)
    assert short["labelled"] < short["batch"]  # transfer: most of the batch is unlabelled
    assert short["semi_hard"] <= short["label_triplets"]
    assert short["semi_hard_teacher"] > short["semi_hard"]  # the teacher labels the rest
    wider = ls.refilled_budget(ws, 0, margin=1.0)
    assert wider["semi_hard"] >= short["semi_hard"]
    assert wider["semi_hard_teacher"] > short["semi_hard_teacher"]


def test_plots_draw(ws) -> None:
    rows = _study()
    fig, axes = plt.subplots(1, 3)
    ls.plot_weight_scores(axes[0], rows, title="t")
    assert len(axes[0].lines) == 3 + 1  # three methods and the x1 line
    view = ls.plot_rank_view(axes[1:], rows, "kd", 10.0)
    assert view["rank"] == 3 and axes[2].get_title().startswith("rank 3 of 3")
    plt.close(fig)
