"""The widget callbacks of notebooks 00-03 (``relkd_tutorial.tutorial.widgets``) and their plots
(``relkd_tutorial.tutorial.plots``): values derived by hand, slider extremes, degenerate and bad input.

Each test names the notebook it serves (``test_00_...``, ``test_01_...``); ``test_shared_...``
covers helpers several notebooks use.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from relkd_tutorial.losses.rrd import rrd_loss  # noqa: E402
from relkd_tutorial.metrics import FASHION_MNIST_GROUPS  # noqa: E402
from relkd_tutorial.tutorial import plots, widgets  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- shared -------------------------------------------------------------------------------------


def test_shared_entropy_known_values() -> None:
    def entropy(logits: list[float]) -> float:
        return widgets.softened_distribution(logits, 1.0)["entropy"]

    assert entropy([2000.0, 0.0, 0.0]) == 0.0  # one-hot after underflow: 0 log 0 = 0
    assert entropy([0.0] * 8) == pytest.approx(math.log(8), rel=1e-12)
    assert entropy([0.5, 0.5]) == pytest.approx(math.log(2), rel=1e-12)


def test_shared_group_order_puts_groups_first_in_given_order() -> None:
    order = widgets.group_order(FASHION_MNIST_GROUPS, 10)
    assert order == [0, 2, 4, 6, 5, 7, 9, 1, 3, 8]
    assert sorted(order) == list(range(10))
    assert widgets.group_order({}, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="outside"):
        widgets.group_order({"a": (0, 10)}, 10)
    with pytest.raises(ValueError, match="more than one group"):
        widgets.group_order({"a": (0, 1), "b": (1, 2)}, 5)


def test_within_group_share_counts_only_off_diagonal_mass_inside_a_group() -> None:
    m = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]])
    # group {0, 1}: inside 0.3 + 0.1, all off-diagonal 0.3 + 0.2 + 0.1 + 0.1 + 0.25 + 0.25
    share = widgets.within_group_share(m, {"g": (0, 1)})
    assert share == pytest.approx(0.4 / 1.2, rel=1e-12)
    # the diagonal never counts, whatever its size
    m2 = m.copy()
    m2[np.diag_indices(3)] = 7.0
    assert widgets.within_group_share(m2, {"g": (0, 1)}) == pytest.approx(share, rel=1e-12)
    assert widgets.within_group_share(m, {"g": (0, 1, 2)}) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        widgets.within_group_share(-m, {"g": (0, 1)})
    with pytest.raises(ValueError, match="off-diagonal"):
        widgets.within_group_share(np.eye(3), {"g": (0, 1)})


def test_shared_block_contrast_on_a_block_matrix() -> None:
    # classes {0, 1} form a group; within = 0.8, between = 0.1, the rest 0.5 and diagonal 1
    m = np.full((4, 4), 0.5)
    m[0, 1] = m[1, 0] = 0.8
    m[:2, 2:] = m[2:, :2] = 0.1
    np.fill_diagonal(m, 1.0)
    out = widgets.block_contrast(m, {"g": (0, 1)})
    assert out["within"] == pytest.approx(0.8)
    assert out["between"] == pytest.approx(0.1)
    assert out["ratio"] == pytest.approx(8.0)
    # with the diagonal, within = mean(1, 0.8, 0.8, 1)
    assert widgets.block_contrast(m, {"g": (0, 1)}, skip_diagonal=False)["within"] == 0.9
    with pytest.raises(ValueError, match="square"):
        widgets.block_contrast(np.zeros((2, 3)), {"g": (0, 1)})
    with pytest.raises(ValueError, match="group of >= 2"):
        widgets.block_contrast(m, {"g": (0,)})


def test_shared_plot_heatmap_and_blocks() -> None:
    fig, ax = plt.subplots()
    m = np.arange(9.0).reshape(3, 3)
    m[0, 0] = np.nan
    plots.plot_heatmap(ax, m, ["a", "b", "c"], title="t", annotate=True)
    assert ax.get_title() == "t"
    assert np.array_equal(ax.images[0].get_array().filled(np.nan)[1:], m[1:])
    assert len(ax.texts) == 8  # the NaN cell is not annotated
    plots.outline_blocks(ax, [2, 1])
    assert len(ax.patches) == 2
    with pytest.raises(ValueError, match="labels"):
        plots.plot_heatmap(ax, m, ["a", "b"])
    with pytest.raises(ValueError, match="block sizes"):
        plots.outline_blocks(ax, [0])


def test_shared_plot_histories() -> None:
    fig, ax = plt.subplots()
    h = {"ce": [{"epoch": 1, "eval_acc": 0.5}, {"epoch": 2, "eval_acc": 0.6}]}
    plots.plot_histories(ax, h, "eval_acc")
    assert list(ax.lines[0].get_ydata()) == [0.5, 0.6]
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.plot_histories(ax, h, "loss")
    with pytest.raises(ValueError, match="empty"):
        plots.plot_histories(ax, {}, "loss")


# --- 00 setup and data --------------------------------------------------------------------------


def test_00_class_soft_confusion_matches_a_loop() -> None:
    logits, labels = _rand(40, 4, seed=1) * 3, torch.arange(40) % 3  # class 3 has no sample
    labels[5] = -1  # unlabelled: ignored
    for temp in (0.5, 1.0, 4.0):
        m = widgets.class_soft_confusion(logits, labels, temp)
        for k in range(3):
            rows = [F.softmax(logits[i] / temp, 0) for i in range(40) if labels[i] == k]
            np.testing.assert_allclose(m[k], torch.stack(rows).mean(0).numpy(), rtol=1e-12)
        np.testing.assert_allclose(m[:3].sum(1), 1.0, rtol=1e-12)
        assert np.isnan(m[3]).all()


def test_00_class_soft_confusion_temperature_extremes() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 4.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    cold = widgets.class_soft_confusion(logits, labels, 1e-3)
    np.testing.assert_allclose(cold[:2], np.eye(3)[:2], atol=1e-12)  # T -> 0: argmax one-hot
    hot = widgets.class_soft_confusion(logits, labels, 1e6)
    np.testing.assert_allclose(hot[:2], 1 / 3, atol=1e-5)  # T -> inf: uniform
    with pytest.raises(ValueError, match="temperature"):
        widgets.class_soft_confusion(logits, labels, 0.0)
    with pytest.raises(ValueError, match="labels"):
        widgets.class_soft_confusion(logits, torch.tensor([0]), 1.0)
    with pytest.raises(TypeError, match="integer"):
        widgets.class_soft_confusion(logits, torch.tensor([0.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match="labels go up to"):
        widgets.class_soft_confusion(logits, torch.tensor([0, 3]), 1.0)


def test_00_class_mean_cosine() -> None:
    f = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 2])
    s = widgets.class_mean_cosine(f, y, num_classes=4)
    expected = np.array([[1, 0, 1 / math.sqrt(2)], [0, 1, 1 / math.sqrt(2)]])
    np.testing.assert_allclose(s[:2, :3], expected, atol=1e-12)
    np.testing.assert_allclose(s[:3, :3], s[:3, :3].T)
    assert np.isnan(s[3]).all() and np.isnan(s[:, 3]).all()
    # invariant to scaling all features
    np.testing.assert_allclose(widgets.class_mean_cosine(5 * f, y), s[:3, :3], atol=1e-12)
    with pytest.raises(ValueError, match="num_classes"):
        widgets.class_mean_cosine(f, y, num_classes=2)
    with pytest.raises(ValueError, match="no labelled"):
        widgets.class_mean_cosine(f, torch.full((4,), -1), None)


def test_00_plot_image_grid_and_counts() -> None:
    images = torch.arange(5 * 4 * 4, dtype=torch.uint8).reshape(5, 1, 4, 4)
    labels = torch.tensor([0, 1, 0, 1, 0])
    fig = plt.figure()
    plots.plot_image_grid(fig, images, labels, ["a", "b"], per_class=3)
    axes = fig.axes
    assert len(axes) == 6
    assert [len(ax.images) for ax in axes] == [1, 1, 1, 1, 1, 0]  # class b has only two images
    np.testing.assert_array_equal(axes[1].images[0].get_array(), images[2, 0].numpy())
    assert axes[3].get_ylabel() == "b"
    with pytest.raises(ValueError, match="labels"):
        plots.plot_image_grid(plt.figure(), images, labels[:2], ["a", "b"])
    with pytest.raises(ValueError, match="one channel"):
        plots.plot_image_grid(plt.figure(), torch.zeros(5, 3, 4, 4), labels, ["a", "b"])
    fig, ax = plt.subplots()
    plots.plot_class_counts(ax, {"train": [3, 2], "test": [1, 1]}, ["a", "b"])
    assert [p.get_height() for p in ax.patches] == [3, 2, 1, 1]
    with pytest.raises(ValueError, match="entries"):
        plots.plot_class_counts(ax, {"train": [1, 2, 3]}, ["a", "b"])


# --- 01 KD --------------------------------------------------------------------------------------


def test_01_softened_distribution_values_and_extremes() -> None:
    t = torch.tensor([2.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    view = widgets.softened_distribution(t, 2.0)
    p = np.exp(t.numpy() / 2) / np.exp(t.numpy() / 2).sum()
    np.testing.assert_allclose(view["probs"], p, rtol=1e-12)
    assert view["entropy"] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    assert view["max_entropy"] == pytest.approx(math.log(4))
    assert view["top"] == 0 and view["probs"][0] == pytest.approx(p[0])
    cold = widgets.softened_distribution(t, 1e-4)  # T -> 0: one-hot, entropy 0
    assert cold["entropy"] == pytest.approx(0.0, abs=1e-12) and cold["probs"][cold["top"]] == 1.0
    hot = widgets.softened_distribution(t, 1e6)  # T -> inf: uniform, entropy log C
    assert hot["entropy"] / hot["max_entropy"] == pytest.approx(1.0, abs=1e-9)
    # huge logits stay finite (softmax is shift-invariant and stable)
    assert np.isfinite(widgets.softened_distribution(t * 1e4, 0.5)["probs"]).all()


def test_01_entropy_grows_with_temperature() -> None:
    t = _rand(10, seed=3) * 4
    h = widgets.entropy_curve(t, [0.25, 0.5, 1, 2, 4, 8, 16])
    assert (np.diff(h) > 0).all() and h[-1] < math.log(10)


def test_01_softened_distribution_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="temperature"):
        widgets.softened_distribution([1.0, 2.0], -1.0)
    with pytest.raises(TypeError, match="temperature"):
        widgets.softened_distribution([1.0, 2.0], "4")
    with pytest.raises(ValueError, match="at least 2"):
        widgets.softened_distribution([1.0], 1.0)
    with pytest.raises(ValueError, match="NaN"):
        widgets.softened_distribution([1.0, float("nan")], 1.0)
    with pytest.raises(ValueError, match=r"\(C,\)"):
        widgets.softened_distribution([[1.0, 2.0]], 1.0)


def test_01_plot_soft_targets() -> None:
    view = widgets.softened_distribution([0.0, 3.0, 1.0], 1.0)
    fig, ax = plt.subplots()
    plots.plot_soft_targets(ax, view, ["a", "b", "c"], true_class=2)
    np.testing.assert_allclose([p.get_height() for p in ax.patches], view["probs"])
    assert ax.patches[2].get_linewidth() == 2  # the true class is outlined: top is b, not c
    assert "T = 1" in ax.get_title() and "H(p)" in ax.get_title()
    with pytest.raises(ValueError, match="class names"):
        plots.plot_soft_targets(ax, view, ["a", "b"])


# --- 02 RKD -------------------------------------------------------------------------------------


def test_02_transform_points() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    out = widgets.transform_points(x, scale=2.0, angle_deg=90.0, shift=(1.0, 0.0))
    np.testing.assert_allclose(out, [[1.0, 2.0], [-1.0, 0.0], [1.0, 0.0]], atol=1e-12)
    moved = widgets.transform_points(x, moved_index=2, move=(0.5, -0.5))
    np.testing.assert_allclose(moved, [[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]])
    np.testing.assert_allclose(widgets.transform_points(x), x)  # defaults: identity
    with pytest.raises(ValueError, match="scale"):
        widgets.transform_points(x, scale=0.0)
    with pytest.raises(ValueError, match="moved_index"):
        widgets.transform_points(x, moved_index=3)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        widgets.transform_points(np.zeros((3, 3)))


def test_02_rkd_relations_zero_under_similarity_and_positive_when_a_point_moves() -> None:
    x = _rand(7, 2, seed=5).numpy()
    for scale, angle, shift in [(0.05, 0, (0, 0)), (20.0, 137.0, (3, -2)), (1.0, -90.0, (0, 9))]:
        s = widgets.transform_points(x, scale=scale, angle_deg=angle, shift=shift)
        rel = widgets.rkd_relations(x, s)
        assert rel["distance_loss"] < 1e-20 and rel["angle_loss"] < 1e-20
        np.testing.assert_allclose(rel["psi_student"], rel["psi_teacher"], atol=1e-12)
    rel = widgets.rkd_relations(x, widgets.transform_points(x, moved_index=0, move=(2.0, 1.0)))
    assert rel["distance_loss"] > 1e-3 and rel["angle_loss"] > 1e-3
    off = ~np.eye(7, dtype=bool)
    assert rel["psi_teacher"][off].mean() == pytest.approx(1.0)  # psi_D has off-diagonal mean 1


def test_02_rkd_relations_degenerate_and_bad_input() -> None:
    x = _rand(4, 2, seed=6).numpy()
    collapsed = np.zeros((4, 2))  # every student point on top of each other: finite, not NaN
    rel = widgets.rkd_relations(x, collapsed)
    assert np.isfinite(rel["distance_loss"]) and np.isfinite(rel["angle_loss"])
    assert (rel["psi_student"] == 0).all()
    with pytest.raises(ValueError, match="N >= 3"):
        widgets.rkd_relations(x[:2], x[:2])
    with pytest.raises(ValueError, match="same N"):
        widgets.rkd_relations(x, x[:3])
    # the widths may differ: a 2-D cloud embedded isometrically in 5-D has the same relations
    q, _ = torch.linalg.qr(_rand(5, 5, seed=7))
    wide = torch.as_tensor(x) @ q[:2]
    assert widgets.rkd_relations(x, wide)["angle_loss"] < 1e-20


def test_02_plot_rkd_relations_and_timings() -> None:
    x = _rand(5, 2, seed=8).numpy()
    s = widgets.transform_points(x, moved_index=1, move=(1.0, 0.0))
    rel = widgets.rkd_relations(x, s)
    fig, axes = plt.subplots(1, 3)
    plots.plot_rkd_relations(axes, x, s, rel, highlight=1)
    np.testing.assert_allclose(axes[1].images[0].get_array(), rel["psi_teacher"])
    assert f"{rel['distance_loss']:.4f}" in axes[2].get_title()
    with pytest.raises(ValueError, match="3 axes"):
        plots.plot_rkd_relations(axes[:2], x, s, rel)
    fig, ax = plt.subplots()
    plots.plot_timings(ax, [16, 32], {"gram": [1.0, 2.0], "diff": [2.0, 8.0]})
    assert len(ax.lines) == 2 and ax.get_xscale() == "log"
    with pytest.raises(ValueError, match="entries"):
        plots.plot_timings(ax, [16, 32], {"gram": [1.0]})


# --- 03 RRD -------------------------------------------------------------------------------------


def _rrd_inputs(k: int = 50, d: int = 8, seed: int = 9):
    q = F.normalize(_rand(k, d, seed=seed), dim=1)
    u = F.normalize(q[3] + 0.3 * _rand(d, seed=seed + 1), dim=0)
    s = F.normalize(u + 0.5 * _rand(d, seed=seed + 2), dim=0)
    return s, u, q


def test_03_rrd_sample_view_matches_the_package_and_sums() -> None:
    s, u, q = _rrd_inputs()
    view = widgets.rrd_sample_view(s, u, q, 0.04, 0.1)
    assert view["loss"] == pytest.approx(float(rrd_loss(s[None], u[None], q, 0.04, 0.1)))
    assert view["loss"] == pytest.approx(view["kl"] + view["entropy"], rel=1e-12)
    p_t, p_s = view["p_teacher"], view["p_student"]  # the same slot order
    kl = float(np.sum(np.where(p_t > 0, p_t * (np.log(p_t) - np.log(p_s)), 0.0)))
    assert view["kl"] == pytest.approx(kl, rel=1e-9) and kl > 1e-6  # KL(p^T || p^S), s != u
    assert view["p_teacher"].sum() == pytest.approx(1.0)
    assert view["p_student"].sum() == pytest.approx(1.0)
    assert (np.diff(view["p_teacher"]) <= 0).all()  # sorted by the teacher
    assert sorted(view["order"].tolist()) == list(range(50))
    assert view["effective_slots_teacher"] == pytest.approx(math.exp(view["entropy"]))


def test_03_rrd_sample_view_temperature_extremes() -> None:
    s, u, q = _rrd_inputs()
    # student == teacher and tau_s == tau_t: KL = 0, loss = H(p^T)
    same = widgets.rrd_sample_view(u, u, q, 0.1, 0.1)
    assert same["kl"] == pytest.approx(0.0, abs=1e-12)
    # tau_t -> 0: p^T is one-hot on the teacher's nearest key, entropy 0, 1 effective slot
    cold = widgets.rrd_sample_view(s, u, q, 0.04, 1e-4)
    assert cold["entropy"] == pytest.approx(0.0, abs=1e-9)
    assert cold["p_teacher"][0] == pytest.approx(1.0)
    assert cold["order"][0] == int(torch.argmax(q @ u))
    # very high temperatures: both uniform over the K slots
    hot = widgets.rrd_sample_view(s, u, q, 1e6, 1e6)
    assert hot["entropy"] == pytest.approx(math.log(50), rel=1e-6)
    assert hot["kl"] == pytest.approx(0.0, abs=1e-9)
    # a queue of one slot: both distributions are [1], loss 0
    one = widgets.rrd_sample_view(s, u, q[:1], 0.04, 0.1)
    assert one["loss"] == pytest.approx(0.0, abs=1e-12)


def test_03_rrd_sample_view_rejects_bad_input() -> None:
    s, u, q = _rrd_inputs()
    with pytest.raises(ValueError, match="tau_s"):
        widgets.rrd_sample_view(s, u, q, 0.0, 0.1)
    with pytest.raises(ValueError, match="tau_t"):
        widgets.rrd_sample_view(s, u, q, 0.1, float("inf"))
    with pytest.raises(ValueError, match="width d"):
        widgets.rrd_sample_view(s, u, q[:, :4], 0.1, 0.1)
    with pytest.raises(ValueError, match="queue"):
        widgets.rrd_sample_view(s, u, q[0], 0.1, 0.1)


def test_03_plot_queue_distributions() -> None:
    s, u, q = _rrd_inputs()
    view = widgets.rrd_sample_view(s, u, q, 0.04, 0.1)
    fig, ax = plt.subplots()
    plots.plot_queue_distributions(ax, view, top=20)
    np.testing.assert_allclose([p.get_height() for p in ax.patches], view["p_teacher"][:20])
    assert f"{view['loss']:.3f}" in ax.get_title()
    fig, ax = plt.subplots()
    plots.plot_queue_distributions(ax, view, top=None, log=True)
    assert len(ax.patches) == 50 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="top"):
        plots.plot_queue_distributions(ax, view, top=0)
