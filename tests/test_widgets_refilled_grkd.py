"""Widget computations and plots of notebooks 04 (REFILLED) and 05 (GRKD), across their inputs."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from relkd_tutorial.losses.grkd import grkd_loss  # noqa: E402
from relkd_tutorial.losses.refilled import refilled_embedding_loss  # noqa: E402
from relkd_tutorial.tutorial.plots import (  # noqa: E402
    plot_grkd_view,
    plot_loss_gradients,
    plot_preference_matrix,
    plot_refilled_anchor,
    plot_stage_curves,
)
from relkd_tutorial.tutorial.widgets import (  # noqa: E402
    RANKING_LOSSES,
    grkd_pair_view,
    pca_2d,
    ranking_loss_gradients,
    refilled_anchor_view,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _batch(b: int = 24, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(b, 6, generator=g, dtype=torch.float64)
    f_t = torch.randn(b, 9, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (b,), generator=g)
    return f_s, f_t, y


def _naive_anchor_triplets(f_s, y, anchor, margin):
    """(p, n) with y_p = y_a, p != a, y_n != y_a, 0 < d_an - d_ap <= m, from the definition."""
    phi = [row / row.norm() for row in f_s]
    d = lambda i, j: float((phi[i] - phi[j]).norm())  # noqa: E731
    ya = int(y[anchor])
    out = []
    if ya < 0:
        return out
    for p in range(len(y)):
        for n in range(len(y)):
            if p == anchor or int(y[p]) != ya or int(y[n]) < 0 or int(y[n]) == ya:
                continue
            gap = d(anchor, n) - d(anchor, p)
            if 0 < gap <= margin:
                out.append((p, n, d(anchor, p), d(anchor, n)))
    return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- pca_2d ---------------------------------------------------------------------------------------


def test_pca_2d_keeps_distances_of_planar_data_and_is_sign_stable():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 2, generator=g, dtype=torch.float64) @ torch.tensor(
        [[3.0, 1.0], [0.0, 1.0]], dtype=torch.float64
    )
    xy = pca_2d(x)
    assert xy.shape == (15, 2)
    assert np.allclose(xy.mean(axis=0), 0.0, atol=1e-12)
    d_in = torch.cdist(x, x).numpy()
    d_out = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    assert np.allclose(d_in, d_out, atol=1e-10)  # a rotation / reflection of the centred data
    assert np.var(xy[:, 0]) >= np.var(xy[:, 1])  # first axis = largest variance
    assert np.allclose(pca_2d(-x), xy)  # the sign rule removes the SVD's sign ambiguity


@pytest.mark.parametrize("shape", [(1, 5), (7, 1), (4, 3)])
def test_pca_2d_degenerate_shapes(shape):
    xy = pca_2d(torch.randn(*shape))
    assert xy.shape == (shape[0], 2)
    assert np.isfinite(xy).all()
    if shape[1] == 1:
        assert np.allclose(xy[:, 1], 0.0)
    if shape[0] == 1:
        assert np.allclose(xy, 0.0)


def test_pca_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="x"):
        pca_2d(torch.randn(3))
    with pytest.raises(TypeError, match="x"):
        pca_2d(np.zeros((3, 2)))


# --- refilled_anchor_view -------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.05, 0.2, 2.5])
@pytest.mark.parametrize("anchor", [0, 11, 23])
def test_anchor_view_matches_the_definition(anchor, margin):
    f_s, f_t, y = _batch()
    tau1 = 4.0
    view = refilled_anchor_view(f_s, f_t, y, anchor, margin, tau1)
    naive = _naive_anchor_triplets(f_s, y, anchor, margin)
    assert sorted(zip(view["positive"].tolist(), view["negative"].tolist(), strict=True)) == sorted(
        (p, n) for p, n, _, _ in naive
    )
    phi_s, phi_t = (torch.nn.functional.normalize(f.double(), dim=1) for f in (f_s, f_t))
    for i, (p, n) in enumerate(zip(view["positive"], view["negative"], strict=True)):
        dp, dn = float((phi_s[anchor] - phi_s[p]).norm()), float((phi_s[anchor] - phi_s[n]).norm())
        assert view["p_student"][i] == pytest.approx(_sigmoid((dn - dp) / tau1), rel=1e-10)
        assert 0.5 < view["p_student"][i] <= _sigmoid(margin / tau1) + 1e-12
        dp, dn = float((phi_t[anchor] - phi_t[p]).norm()), float((phi_t[anchor] - phi_t[n]).norm())
        pt = _sigmoid((dn - dp) / tau1)
        assert view["p_teacher"][i] == pytest.approx(pt, rel=1e-10)
        q = view["p_student"][i]
        kl = 0.5 * (pt * math.log(pt / q) + (1 - pt) * math.log((1 - pt) / (1 - q)))
        assert view["loss_terms"][i] == pytest.approx(kl, rel=1e-8, abs=1e-15)
    if len(naive):
        assert view["loss"] == pytest.approx(float(np.mean(view["loss_terms"])))
    else:
        assert view["loss"] == 0.0
    assert view["coords"].shape == (len(y), 2)
    ya = int(y[anchor])
    assert set(view["positives"].tolist()) == {i for i in range(len(y)) if int(y[i]) == ya} - {
        anchor
    }
    assert set(view["negatives"].tolist()) == {i for i in range(len(y)) if int(y[i]) != ya}


def test_anchor_views_add_up_to_the_package_loss():
    """Summing every anchor's terms over the batch gives the package's triplet-form loss."""
    f_s, f_t, y = _batch(b=20, classes=3, seed=3)
    views = [refilled_anchor_view(f_s, f_t, y, a, 0.3, 2.0) for a in range(len(y))]
    counts = sum(len(v["positive"]) for v in views)
    assert counts == views[0]["batch_triplets"] > 0
    total = sum(float(v["loss_terms"].sum()) for v in views) / counts
    assert total == pytest.approx(float(refilled_embedding_loss(f_s, f_t, y, 0.3, 2.0)), rel=1e-10)


def test_anchor_view_unlabelled_or_lonely_anchor_has_no_triplet():
    f_s, f_t, y = _batch(b=10)
    y = y.clone()
    y[0] = -1
    view = refilled_anchor_view(f_s, f_t, y, 0)
    assert view["label"] == -1 and len(view["positive"]) == 0 and view["loss"] == 0.0
    assert len(view["positives"]) == 0 and len(view["negatives"]) == 0
    y = torch.arange(10)  # every class once: no positive anywhere
    view = refilled_anchor_view(f_s, f_t, y, 4)
    assert len(view["positive"]) == 0 and view["batch_triplets"] == 0


def test_anchor_view_accepts_float32_and_numpy_int_anchor():
    f_s, f_t, y = _batch()
    view = refilled_anchor_view(f_s.float(), f_t.float(), y, np.int64(5))
    assert view["anchor"] == 5


def test_anchor_view_rejects_bad_input():
    f_s, f_t, y = _batch(b=8)
    with pytest.raises(ValueError, match="anchor"):
        refilled_anchor_view(f_s, f_t, y, 8)
    with pytest.raises(ValueError, match="anchor"):
        refilled_anchor_view(f_s, f_t, y, -1)
    with pytest.raises(TypeError, match="anchor"):
        refilled_anchor_view(f_s, f_t, y, True)
    with pytest.raises(TypeError, match="anchor"):
        refilled_anchor_view(f_s, f_t, y, 1.0)
    with pytest.raises(ValueError, match="margin"):
        refilled_anchor_view(f_s, f_t, y, 0, margin=0.0)
    with pytest.raises(ValueError, match="tau1"):
        refilled_anchor_view(f_s, f_t, y, 0, tau1=-1.0)
    with pytest.raises(ValueError, match="teacher_features"):
        refilled_anchor_view(f_s, f_t[:5], y, 0)
    with pytest.raises(ValueError, match="labels"):
        refilled_anchor_view(f_s, f_t, y[:5], 0)


# --- REFILLED plots -------------------------------------------------------------------------------


@pytest.mark.parametrize("with_images", [False, True])
def test_plot_refilled_anchor(with_images):
    f_s, f_t, y = _batch()
    view = refilled_anchor_view(f_s, f_t, y, 2, margin=0.5)
    assert len(view["positive"]) > 0
    images = np.random.default_rng(0).random((len(y), 28, 28)) if with_images else None
    fig = plt.figure()
    out = plot_refilled_anchor(view, fig, images=images, max_thumbnails=3)
    assert out is fig
    expected = 2 + (1 + 3 * 3 if with_images else 0)  # map, probabilities, strip + 3 trios
    assert len(fig.axes) == expected
    ax_prob = fig.axes[1]
    assert len(ax_prob.collections[0].get_offsets()) == len(view["positive"])


def test_plot_refilled_anchor_without_triplets_says_so_and_redraws():
    f_s, f_t, y = _batch(b=10)
    view = refilled_anchor_view(f_s, f_t, torch.arange(10), 0)
    fig = plt.figure()
    plot_refilled_anchor(view, fig, images=np.zeros((10, 4, 4)))
    plot_refilled_anchor(view, fig)  # redraw on the same figure: cleared, not stacked
    assert len(fig.axes) == 2
    assert any("no semi-hard" in t.get_text() for t in fig.axes[1].texts)


def test_plot_stage_curves_marks_stage_changes():
    history = [
        {"epoch": 1, "stage": "embedding", "eval_acc": 0.2},
        {"epoch": 2, "stage": "embedding", "eval_acc": 0.2},
        {"epoch": 3, "stage": "classifier", "eval_acc": 0.7},
    ]
    single = [{"epoch": e, "stage": "main", "eval_acc": 0.5} for e in (1, 2, 3)]
    fig, ax = plt.subplots()
    assert plot_stage_curves({"refilled": history, "ce": single}, ax) is ax
    assert len(ax.lines) == 3  # two curves and one stage boundary
    vertical = [ln for ln in ax.lines if len(set(np.asarray(ln.get_xdata(), float))) == 1]
    assert len(vertical) == 1 and vertical[0].get_xdata()[0] == 2.5


# --- grkd_pair_view --------------------------------------------------------------------------------

T5 = [2.0, 1.0, 0.5, -1.0, 0.0]
Z5 = [0.0, 1.0, 2.0, -1.0, 0.3]


@pytest.mark.parametrize("tau", [0.25, 1.0, 4.0])
@pytest.mark.parametrize("top_k", [None, 1, 3, 5, 9])
def test_pair_view_matches_the_definition(tau, top_k):
    view = grkd_pair_view(T5, Z5, tau, top_k)
    c = len(T5)
    order = sorted(range(c), key=lambda j: -T5[j])
    top = set(order[: top_k or c])
    pairs = [(j, k) for j in range(c) for k in range(c) if T5[j] > T5[k] and j in top]
    assert view["n_pairs"] == len(pairs) == int(view["preferred"].sum())
    assert {tuple(p) for p in np.argwhere(view["preferred"]).tolist()} == set(pairs)
    violated = {(j, k) for j, k in pairs if Z5[j] <= Z5[k]}
    assert {tuple(p) for p in np.argwhere(view["violated"]).tolist()} == violated
    naive = [math.log1p(math.exp(-(Z5[j] - Z5[k]) / tau)) for j, k in pairs]
    assert view["pair_loss"].sum() == pytest.approx(sum(naive), rel=1e-12)
    assert view["loss"] == pytest.approx(sum(naive) / len(naive), rel=1e-10)
    z = torch.tensor([Z5], dtype=torch.float64, requires_grad=True)
    grkd_loss(z, torch.tensor([T5], dtype=torch.float64), tau, top_k).backward()
    assert np.allclose(view["grad"], z.grad[0].numpy(), atol=1e-14)
    assert abs(view["grad"].sum()) < 1e-12
    assert view["teacher_order"] == order
    # Kendall tau from its definition (no ties in T5 or Z5): (concordant - discordant) / #pairs
    signs = [
        math.copysign(1.0, (T5[j] - T5[k]) * (Z5[j] - Z5[k]))
        for j in range(c)
        for k in range(j + 1, c)
    ]
    assert view["kendall_tau"] == pytest.approx(sum(signs) / len(signs), rel=1e-12)


def test_pair_view_extremes():
    agree = grkd_pair_view(T5, [10 * t for t in T5])
    assert agree["n_violated"] == 0 and agree["kendall_tau"] == pytest.approx(1.0)
    # the smallest teacher gap is 0.5, so every student gap is >= 5 and each pair costs at most
    # softplus(-5) = 0.0067
    assert agree["loss"] <= math.log1p(math.exp(-5.0))
    reverse = grkd_pair_view(T5, [-10 * t for t in T5])
    assert reverse["n_violated"] == reverse["n_pairs"] == 10
    assert reverse["kendall_tau"] == pytest.approx(-1.0)
    tied = grkd_pair_view([0.0] * 5, Z5)  # all tied teacher: no pair, no loss, no gradient
    assert tied["n_pairs"] == 0 and tied["loss"] == 0.0
    assert np.allclose(tied["grad"], 0.0) and math.isnan(tied["kendall_tau"])
    same = grkd_pair_view(T5, T5)  # student = teacher: nothing violated, but the loss is > 0
    assert same["n_violated"] == 0 and same["loss"] > 0
    ties = grkd_pair_view([1.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    assert ties["n_pairs"] == 2 and ties["n_violated"] == 2  # z_j = z_k counts as violated


def test_pair_view_rejects_bad_input():
    with pytest.raises(ValueError, match="same number"):
        grkd_pair_view([1.0, 0.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="C >= 2"):
        grkd_pair_view([1.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        grkd_pair_view([1.0, float("nan")], [1.0, 0.0])
    with pytest.raises(ValueError, match="temperature"):
        grkd_pair_view(T5, Z5, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        grkd_pair_view(T5, Z5, top_k=0)
    with pytest.raises(ValueError, match="student_logits"):
        grkd_pair_view(T5, [[1.0, 2.0]])


# --- ranking_loss_gradients -----------------------------------------------------------------------


def test_ranking_gradients_sum_to_zero_and_vanish_where_each_loss_is_minimal():
    grads = ranking_loss_gradients(T5, Z5)
    assert list(grads) == list(RANKING_LOSSES)
    for name, entry in grads.items():
        assert entry["grad"].shape == (5,)
        assert abs(entry["grad"].sum()) < 1e-12, name
        assert np.abs(entry["grad"]).max() > 1e-3, name  # a mismatched student gets pushed
    same = ranking_loss_gradients(T5, T5, kd_temperature=4.0, temperature=1.0)
    assert np.allclose(same["KD"]["grad"], 0.0, atol=1e-12)  # KD's minimum: z = t + const
    assert np.allclose(same["soft pairwise"]["grad"], 0.0, atol=1e-12)  # same temperatures
    # the hard-order losses keep widening correctly ordered gaps: never zero at z = t
    assert np.abs(same["GRKD"]["grad"]).max() > 1e-3
    assert np.abs(same["listwise"]["grad"]).max() > 1e-3
    # ... and push them apart in the teacher's order (the top class up, the bottom one down)
    top, bottom = int(np.argmax(T5)), int(np.argmin(T5))
    for name in ("GRKD", "listwise"):
        assert same[name]["grad"][top] < 0 < same[name]["grad"][bottom], name


def test_ranking_gradients_reject_bad_input():
    with pytest.raises(ValueError, match="kd_temperature"):
        ranking_loss_gradients(T5, Z5, kd_temperature=0.0)
    with pytest.raises(ValueError, match="same number"):
        ranking_loss_gradients(T5, Z5[:3])


# --- GRKD plots ------------------------------------------------------------------------------------


def test_plot_preference_matrix_writes_one_number_per_pair():
    view = grkd_pair_view(T5, Z5, top_k=2)
    fig, ax = plt.subplots()
    assert plot_preference_matrix(view, ax, list("abcde")) is ax
    assert len(ax.texts) == view["n_pairs"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        list("abcde")[i] for i in view["teacher_order"]
    ]


@pytest.mark.parametrize("teacher", [T5, [0.0] * 5])
def test_plot_grkd_view(teacher):
    fig = plt.figure()
    assert plot_grkd_view(grkd_pair_view(teacher, Z5), fig) is fig
    plot_grkd_view(grkd_pair_view(teacher, Z5), fig)
    assert len(fig.axes) == 3


def test_plot_loss_gradients_scales_each_loss_to_one():
    grads = ranking_loss_gradients(T5, Z5)
    fig, ax = plt.subplots()
    plot_loss_gradients(grads, ax)
    heights = np.array([p.get_height() for p in ax.patches]).reshape(len(grads), 5)
    assert np.allclose(np.abs(heights).max(axis=1), 1.0)
    zero = {"flat": {"loss": 0.0, "grad": np.zeros(5)}}
    fig, ax = plt.subplots()
    plot_loss_gradients(zero, ax)  # an all-zero gradient draws zero bars, no division by 0
    assert np.allclose([p.get_height() for p in ax.patches], 0.0)
