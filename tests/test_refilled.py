"""REFILLED: mining, both stage-1 forms and the stage-2 local classifier against their equations."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

import relkd_tutorial.relations as relations
from relkd_tutorial import Refilled, SetupData, StepInputs, input_checks
from relkd_tutorial.losses.refilled import (
    batch_classes,
    centre_labels,
    class_centres,
    embedding_distances,
    mine_triplets,
    refilled_classifier_kl,
    refilled_embedding_loss,
)
from relkd_tutorial.relations import semi_hard_triplets, triplet_label_masks

D64 = torch.float64


def naive_distances(f: torch.Tensor) -> list[list[float]]:
    """d_ij = ||f_i/|f_i| - f_j/|f_j|||, straight from the definition."""
    phi = [row / row.norm() for row in f]
    return [[(x - y).norm().item() for y in phi] for x in phi]


def naive_mine(d, labels, margin):
    """All (a, p, n) with y_a = y_p, a != p, y_n != y_a, 0 < d_an - d_ap <= margin; -1 excluded."""
    y = labels.tolist()
    out = []
    for a in range(len(y)):
        for p in range(len(y)):
            for n in range(len(y)):
                if y[a] < 0 or y[p] < 0 or y[n] < 0:
                    continue
                if y[a] == y[p] and a != p and y[n] != y[a] and 0 < d[a][n] - d[a][p] <= margin:
                    out.append((a, p, n))
    return out


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def naive_stage1(fs, ft, labels, margin, tau1, form):
    ds, dt = naive_distances(fs), naive_distances(ft)
    triplets = naive_mine(ds, labels, margin)
    if not triplets:
        return 0.0
    if form == "triplet":
        total = 0.0
        for a, p, n in triplets:
            ps, pt = sigmoid((ds[a][n] - ds[a][p]) / tau1), sigmoid((dt[a][n] - dt[a][p]) / tau1)
            total += 0.5 * (pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps)))
        return total / len(triplets)
    tuples = defaultdict(list)
    for a, p, n in triplets:
        tuples[(a, p)].append(n)
    total = 0.0
    for (a, p), negatives in tuples.items():

        def pi(d, a=a, p=p, negatives=negatives):
            e = [math.exp(-d[a][p] / tau1)] + [math.exp(-d[a][n] / tau1) for n in negatives]
            return [x / sum(e) for x in e]

        pis, pit = pi(ds), pi(dt)
        total += sum(t * math.log(t / s) for t, s in zip(pit, pis, strict=True))  # no 1/2
    return total / len(tuples)


def make_batch(b, ds, dt, classes, seed, unlabelled=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(b, ds, generator=g, dtype=dtype)
    ft = torch.randn(b, dt, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    y[:unlabelled] = -1
    return fs, ft, y


# ----------------------------------------------------------------------------- mining


@pytest.mark.parametrize(
    ("b", "classes", "unlabelled", "margin"), [(6, 2, 0, 0.2), (12, 3, 2, 0.2), (16, 4, 3, 0.5)]
)
def test_mining_matches_naive_triple_loop(b, classes, unlabelled, margin):
    fs, _, y = make_batch(b, 5, 3, classes, seed=b, unlabelled=unlabelled)
    a, p, n = mine_triplets(fs, y, margin)
    expected = naive_mine(naive_distances(fs), y, margin)
    assert expected, "the test batch should contain semi-hard triplets"
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True)) == expected  # same order


def test_mining_primitive_in_chunks(monkeypatch):
    fs, _, y = make_batch(20, 4, 3, 3, seed=7, unlabelled=2)
    d = embedding_distances(fs)
    whole = semi_hard_triplets(d, y, 0.3)
    monkeypatch.setattr(relations, "_TRIPLET_CHUNK", 7 * 20)  # 7 (anchor, positive) pairs a chunk
    chunked = semi_hard_triplets(d, y, 0.3)
    for x, z in zip(whole, chunked, strict=True):
        assert torch.equal(x, z)
    assert whole[0].dtype == torch.long


def test_mining_boundaries_are_exclusive_at_zero_and_inclusive_at_the_margin():
    # anchor 0, positive 1 at 0.25; negatives 2, 3, 4 at 0.25 (gap 0), 0.5 (gap = m), 0.75 (> m)
    d = torch.zeros(5, 5)
    d[0, 1:] = torch.tensor([0.25, 0.25, 0.5, 0.75])
    d = d + d.t()
    y = torch.tensor([0, 0, 1, 1, 1])
    a, p, n = semi_hard_triplets(d, y, margin=0.25)
    assert list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))[:1] == [(0, 1, 3)]
    assert (0, 1, 2) not in set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert (0, 1, 4) not in set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))


def test_label_masks_exclude_unlabelled_and_self():
    y = torch.tensor([0, 0, 1, -1, 1])
    pos, neg = triplet_label_masks(y)
    for i in range(5):
        for j in range(5):
            labelled = y[i] >= 0 and y[j] >= 0
            assert pos[i, j] == (labelled and y[i] == y[j] and i != j)
            assert neg[i, j] == (labelled and y[i] != y[j])


# ----------------------------------------------------------------------------- stage 1 values


@pytest.mark.parametrize("form", ["triplet", "tuple"])
@pytest.mark.parametrize(
    ("b", "ds", "dt", "classes", "tau1"),
    [(6, 4, 3, 2, 4.0), (10, 5, 7, 3, 4.0), (14, 6, 6, 3, 0.3)],
)
def test_stage1_matches_naive_loop(form, b, ds, dt, classes, tau1):
    fs, ft, y = make_batch(b, ds, dt, classes, seed=b + ds, unlabelled=1)
    got = refilled_embedding_loss(fs, ft, y, margin=0.4, tau1=tau1, form=form)
    expected = naive_stage1(fs, ft, y, 0.4, tau1, form)
    assert expected > 0
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_tuple_form_with_one_negative_is_twice_the_triplet_form():
    # softmax over [-d_ap, -d_an] / tau1 is (P, 1 - P): the tuple KL is the binary KL, and the 1/2
    # belongs to the triplet form only (the official code), so one negative gives exactly 2x
    fs, ft, y = make_batch(16, 5, 6, 3, seed=3)
    a, p, n = mine_triplets(fs, y, 0.5)
    # keep the first negative of every (anchor, positive): one negative per tuple
    key = a * 16 + p
    keep = torch.ones_like(key, dtype=torch.bool)
    keep[1:] = key[1:] != key[:-1]
    one = (a[keep], p[keep], n[keep])
    assert one[0].shape[0] < a.shape[0]  # some tuples did have several negatives
    triplet = refilled_embedding_loss(fs, ft, y, form="triplet", triplets=one)
    tuple_ = refilled_embedding_loss(fs, ft, y, form="tuple", triplets=one)
    torch.testing.assert_close(tuple_, 2.0 * triplet, rtol=1e-12, atol=0)
    # with several negatives the forms differ beyond that factor
    assert not torch.allclose(
        refilled_embedding_loss(fs, ft, y, 0.5, form="tuple"),
        2.0 * refilled_embedding_loss(fs, ft, y, 0.5, form="triplet"),
    )


def official_tuple_loss(fs, ft, triplets, tau1, lambda1):
    """The official tuple form, written from its equation with plain floats:

    ``L1 = lambda1 * (1/G) sum_(a,p) sum_j pi^T_j log(pi^T_j / pi^S_j)``,
    ``pi(a,p) = softmax([-d_ap, -d_an_1, ..., -d_an_M] / tau1)`` (no 1/2).
    """
    ds, dt = naive_distances(fs), naive_distances(ft)
    groups = {}  # (a, p) -> its negatives, in first-seen order
    for a, p, n in zip(*(t.tolist() for t in triplets), strict=True):
        groups.setdefault((a, p), []).append(n)
    per_tuple = []
    for (a, p), negatives in groups.items():
        kl = 0.0
        scores_t = [-dt[a][p] / tau1] + [-dt[a][n] / tau1 for n in negatives]
        scores_s = [-ds[a][p] / tau1] + [-ds[a][n] / tau1 for n in negatives]
        zt = sum(math.exp(v) for v in scores_t)
        zs = sum(math.exp(v) for v in scores_s)
        for vt, vs in zip(scores_t, scores_s, strict=True):
            pt, ps = math.exp(vt) / zt, math.exp(vs) / zs
            kl += pt * math.log(pt / ps)
        per_tuple.append(kl)
    return lambda1 * sum(per_tuple) / len(per_tuple)


@pytest.mark.parametrize(("seed", "tau1"), [(11, 4.0), (12, 0.5)])
def test_tuple_form_matches_the_official_loss_at_the_same_lambda1(seed, tau1):
    """Refilled(form="tuple")'s stage-1 term is the official lambda1 * mean_tuples sum KL."""
    fs, ft, y = make_batch(14, 5, 7, 3, seed=seed)
    triplets = mine_triplets(fs, y, 0.5)
    counts = torch.unique_consecutive(triplets[0] * 14 + triplets[1], return_counts=True)[1]
    assert counts.max() > 1  # some tuple has several negatives
    expected = official_tuple_loss(fs, ft, triplets, tau1, 1000.0)
    got = 1000.0 * refilled_embedding_loss(fs, ft, y, 0.5, tau1, "tuple", triplets=triplets)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    method = Refilled(form="tuple", margin=0.5, tau1=tau1, lambda1=1000.0)
    method.set_stage("embedding")
    inputs = StepInputs(
        student_features=fs,
        student_logits=torch.zeros(14, 3, dtype=D64),
        labels=y,
        teacher_features=ft,
    )
    terms = method.loss_terms(inputs)
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-10)


def test_tuple_form_does_not_depend_on_the_order_of_user_supplied_triplets():
    fs, ft, y = make_batch(16, 5, 6, 3, seed=3)
    triplets = mine_triplets(fs, y, 0.5)
    sorted_loss = refilled_embedding_loss(fs, ft, y, 0.5, form="tuple", triplets=triplets)
    for seed in range(3):
        perm = torch.randperm(triplets[0].shape[0], generator=torch.Generator().manual_seed(seed))
        permuted = tuple(t[perm] for t in triplets)
        got = refilled_embedding_loss(fs, ft, y, 0.5, form="tuple", triplets=permuted)
        torch.testing.assert_close(got, sorted_loss, rtol=1e-12, atol=0)
    # and the expected value is the official loss of the set, whatever its order
    expected = official_tuple_loss(fs, ft, triplets, 4.0, 1.0)
    assert sorted_loss.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("form", ["triplet", "tuple"])
def test_zero_when_student_distances_equal_teacher_distances(form):
    fs, _, y = make_batch(12, 5, 5, 3, seed=4)
    # a teacher of another width whose normalised embedding is an isometry of the student's:
    # scale each sample, pad with zeros and rotate -- every distance is unchanged
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=D64))
    ft = (2.5 * torch.cat([fs, torch.zeros(12, 3, dtype=D64)], dim=1)) @ q
    fs = fs.clone().requires_grad_(True)
    loss = refilled_embedding_loss(fs, ft, y, margin=0.5, form=form)
    (grad,) = torch.autograd.grad(loss, fs)
    assert mine_triplets(fs, y, 0.5)[0].numel() > 0
    assert abs(loss.item()) < 1e-12 and grad.abs().max().item() < 1e-10
    # and a different teacher gives a positive loss
    other = torch.randn(12, 8, dtype=D64)
    assert refilled_embedding_loss(fs, other, y, margin=0.5, form=form).item() > 0


@pytest.mark.parametrize("form", ["triplet", "tuple"])
def test_stage1_gradcheck_with_fixed_triplets(form):
    fs, ft, y = make_batch(8, 4, 3, 2, seed=5)
    triplets = mine_triplets(fs, y, 0.5)
    assert triplets[0].numel() > 0
    x = fs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s: refilled_embedding_loss(s, ft, y, 0.5, 0.5, form, triplets=triplets), (x,)
    )


@pytest.mark.parametrize("form", ["triplet", "tuple"])
@pytest.mark.parametrize(
    "labels",
    [torch.zeros(6, dtype=torch.long), torch.full((6,), -1), torch.tensor([0, 1, 2, 3, 4, 5])],
    ids=["one-class", "unlabelled", "no-positives"],
)
def test_no_triplet_gives_zero_with_a_gradient_path(form, labels):
    fs = torch.randn(6, 4, requires_grad=True)
    loss = refilled_embedding_loss(fs, torch.randn(6, 3), labels, form=form)
    assert loss.item() == 0.0
    loss.backward()
    assert fs.grad is not None and torch.isfinite(fs.grad).all()


def test_no_semi_hard_negative_gives_zero():
    # two tight, far-apart clusters: every negative is much farther than the margin
    fs = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    assert mine_triplets(fs, y, 0.2)[0].numel() == 0
    loss = refilled_embedding_loss(fs, torch.randn(4, 3), y)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(fs.grad).all()


def test_coincident_samples_and_low_precision_are_finite():
    fs = torch.ones(8, 4)
    fs[4:] = -1.0
    fs = fs + 0.05 * torch.randn(8, 4)
    fs[1] = fs[0]  # two coincident samples
    y = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    ft = torch.randn(8, 6)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = fs.to(dtype).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for form in ("triplet", "tuple"):
                loss = refilled_embedding_loss(x, ft, y, margin=2.0, form=form)
                (grad,) = torch.autograd.grad(loss, x)
                assert loss.dtype == torch.float32
                assert torch.isfinite(loss) and torch.isfinite(grad.float()).all()


def test_stage1_bad_input():
    fs, ft, y = torch.randn(4, 3), torch.randn(4, 5), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"student_features must have shape \(B, D_S\)"):
        refilled_embedding_loss(fs[0], ft, y)
    with pytest.raises(ValueError, match="same batch size"):
        refilled_embedding_loss(fs, ft[:3], y)
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        refilled_embedding_loss(fs, ft, y.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        refilled_embedding_loss(fs, ft, y[:3])
    with pytest.raises(TypeError, match="teacher_features must have a floating dtype"):
        refilled_embedding_loss(fs, ft.long(), y)
    with pytest.raises(ValueError, match="NaN"):
        refilled_embedding_loss(fs * float("nan"), ft, y)
    with pytest.raises(ValueError, match="form"):
        refilled_embedding_loss(fs, ft, y, form="pair")
    with pytest.raises(ValueError, match="margin"):
        refilled_embedding_loss(fs, ft, y, margin=0.0)
    with pytest.raises(ValueError, match="tau1"):
        refilled_embedding_loss(fs, ft, y, tau1=-4.0)
    with pytest.raises(ValueError, match="outside"):
        bad = (torch.tensor([0]), torch.tensor([1]), torch.tensor([9]))
        refilled_embedding_loss(fs, ft, y, triplets=bad)
    with input_checks(False), pytest.raises(ValueError, match="device"):
        refilled_embedding_loss(fs, ft.to("meta"), y)


# ----------------------------------------------------------------------------- stage 2


def naive_centres(f, y, c):
    out = []
    for k in range(c):
        rows = [f[i] for i in range(len(y)) if y[i] == k]
        if not rows:
            out.append(torch.zeros(f.shape[1], dtype=f.dtype))
            continue
        mean = sum(rows) / len(rows)
        out.append(mean / mean.norm())
    return torch.stack(out)


def naive_stage2_kl(z, ft, y, centres, tau2):
    labelled = [int(v) for v in y.tolist() if v >= 0]
    classes = sorted(set(labelled))
    total = 0.0
    for i in range(z.shape[0]):
        zeta = [(ft[i] @ centres[k]).item() / tau2 for k in classes]
        zs = [z[i, k].item() / tau2 for k in classes]
        pt = [math.exp(v) / sum(math.exp(w) for w in zeta) for v in zeta]
        ps = [math.exp(v) / sum(math.exp(w) for w in zs) for v in zs]
        total += sum(t * math.log(t / s) for t, s in zip(pt, ps, strict=True))
    return total / z.shape[0]


def test_centres_against_naive_computation():
    f, _, y = make_batch(30, 5, 1, 6, seed=8, unlabelled=4)
    y[y == 5] = 4  # class 5 absent
    got = class_centres(f, y, 7)
    torch.testing.assert_close(got, naive_centres(f, y, 7), rtol=1e-12, atol=1e-15)
    assert torch.equal(got[5], torch.zeros(5, dtype=D64)) and torch.equal(got[6], got[5])
    # local centres are the same function of the batch only
    torch.testing.assert_close(class_centres(f[:10], y[:10], 7), naive_centres(f[:10], y[:10], 7))


@pytest.mark.parametrize(
    ("b", "c", "dt", "tau2"), [(5, 3, 4, 2.0), (12, 7, 6, 2.0), (9, 5, 3, 0.5)]
)
def test_stage2_matches_naive_loop(b, c, dt, tau2):
    _, ft, y = make_batch(b, 1, dt, c, seed=b * c, unlabelled=1)
    centres = class_centres(torch.randn(50, dt, dtype=D64), torch.arange(50) % c, c)
    z = torch.randn(b, c, dtype=D64)
    got = refilled_classifier_kl(z, ft, y, centres, tau2)
    assert got.item() == pytest.approx(naive_stage2_kl(z, ft, y, centres, tau2), rel=1e-6)


def test_stage2_only_batch_classes_get_a_column():
    c = 6
    ft = torch.randn(8, 4, dtype=D64)
    y = torch.tensor([0, 0, 2, 2, 3, -1, 3, 0])  # C_B = {0, 2, 3}; -1 gives no class
    assert batch_classes(y, c).tolist() == [True, False, True, True, False, False]
    centres = class_centres(torch.randn(40, 4, dtype=D64), torch.arange(40) % c, c)
    z = torch.randn(8, c, dtype=D64, requires_grad=True)
    loss = refilled_classifier_kl(z, ft, y, centres)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.equal(grad[:, [1, 4, 5]], torch.zeros(8, 3, dtype=D64))
    assert grad[:, [0, 2, 3]].abs().sum() > 0
    shifted = z.detach().clone()
    shifted[:, [1, 4, 5]] += 100.0  # absent classes cannot change the loss
    torch.testing.assert_close(refilled_classifier_kl(shifted, ft, y, centres), loss.detach())
    # the unlabelled row takes part: its logits move the loss
    moved = z.detach().clone()
    moved[5, 0] += 3.0
    assert refilled_classifier_kl(moved, ft, y, centres).item() != pytest.approx(loss.item())
    # the option beyond the paper: every class with a centre
    wide = refilled_classifier_kl(z, ft, y, centres, restrict_to_batch=False)
    every = torch.arange(8) % c  # a batch holding every class gives the same columns
    assert wide.item() == pytest.approx(refilled_classifier_kl(z, ft, every, centres).item())


def test_stage2_zero_and_gradient_when_student_matches_teacher_classifier():
    ft = torch.randn(6, 4, dtype=D64)
    y = torch.tensor([0, 1, 1, 2, 0, 2])
    centres = class_centres(ft, y, 3)
    z = (ft @ centres.t()).requires_grad_(True)
    loss = refilled_classifier_kl(z, ft, y, centres)
    (grad,) = torch.autograd.grad(loss, z)
    assert abs(loss.item()) < 1e-12 and grad.abs().max() < 1e-12
    # shift-invariant per row, as a softmax is
    torch.testing.assert_close(refilled_classifier_kl(z + 5.0, ft, y, centres), loss)


def test_stage2_gradcheck():
    _, ft, y = make_batch(6, 1, 4, 4, seed=9, unlabelled=1)
    centres = class_centres(torch.randn(20, 4, dtype=D64), torch.arange(20) % 5, 5)
    z = torch.randn(6, 5, dtype=D64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: refilled_classifier_kl(x, ft, y, centres, 2.0), (z,))


def test_stage2_edge_cases():
    ft = torch.randn(4, 3)
    centres = class_centres(torch.randn(8, 3), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]), 4)
    z = torch.randn(4, 4, requires_grad=True)
    # no labelled sample: no C_B, zero with a gradient path
    loss = refilled_classifier_kl(z, ft, torch.full((4,), -1), centres)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    # one class in the batch: both distributions are one-hot on it
    assert refilled_classifier_kl(z, ft, torch.zeros(4, dtype=torch.long), centres).item() == 0.0
    # a class present in the batch but without a centre
    with pytest.raises(ValueError, match=r"classes \[3\] .* no class centre"):
        refilled_classifier_kl(z, ft, torch.tensor([0, 3, 1, 1]), centres)
    # low precision: bf16 logits under autocast, fp32 teacher cache
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zb = z.detach().bfloat16().requires_grad_(True)
        low = refilled_classifier_kl(zb, ft, torch.tensor([0, 2, 1, 1]), centres)
    low.backward()
    assert low.dtype == torch.float32 and torch.isfinite(zb.grad.float()).all()


def test_stage2_bad_input():
    z, ft, y = torch.randn(4, 3), torch.randn(4, 5), torch.tensor([0, 1, 2, 1])
    centres = torch.randn(3, 5)
    with pytest.raises(ValueError, match=r"centres must have shape \(3, 5\)"):
        refilled_classifier_kl(z, ft, y, torch.randn(4, 5))
    with pytest.raises(ValueError, match="embedding width"):
        refilled_classifier_kl(z, ft, y, torch.randn(3, 6))
    with pytest.raises(ValueError, match="only 3 classes"):
        refilled_classifier_kl(z, ft, torch.tensor([0, 1, 3, 1]), centres)
    with pytest.raises(ValueError, match="same batch size"):
        refilled_classifier_kl(z, ft[:2], y, centres)
    with pytest.raises(ValueError, match="tau2"):
        refilled_classifier_kl(z, ft, y, centres, tau2=0.0)
    with pytest.raises(ValueError, match=r"labels has a label below -1"):
        class_centres(ft, torch.tensor([0, -2, 1, 1]), 3)


# ---------------------------------------------------------------------------------------------
# Stage-1 labels from the teacher's embedding (beyond the papers: Refilled(stage1_labels=...))
# ---------------------------------------------------------------------------------------------


def test_centre_labels_against_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    ft = torch.randn(9, 4, generator=g, dtype=D64)
    centres = class_centres(torch.randn(20, 4, generator=g, dtype=D64), torch.arange(20) % 4, 5)
    assert torch.equal(centres[4], torch.zeros(4, dtype=D64))  # class 4 has no centre
    y = torch.tensor([0, -1, 2, -1, -1, 3, -1, 1, -1])
    got = centre_labels(ft, y, centres)
    for i in range(9):
        if y[i] >= 0:
            assert int(got[i]) == int(y[i])  # a labelled sample keeps its label
        else:
            scores = {k: (ft[i] @ centres[k]).item() for k in range(4)}  # classes with a centre
            assert int(got[i]) == max(scores, key=scores.get)
    # a class without a centre is never given, even where its (zero) score would be the largest
    far = -10.0 * centres[:4].sum(0, keepdim=True)  # (1, 4): negative against every centre
    assert int(centre_labels(far, torch.tensor([-1]), centres)) != 4
    with pytest.raises(ValueError, match="no non-zero row"):
        centre_labels(ft, y, torch.zeros(5, 4, dtype=D64))
    with pytest.raises(ValueError, match="embedding width"):
        centre_labels(ft, y, torch.ones(5, 3, dtype=D64))
    with pytest.raises(ValueError, match="only 5 classes"):
        centre_labels(ft, torch.full((9,), 5), centres)


def _transfer_batch(seed: int = 0):
    """A transfer-like batch: 64 samples of 4 well-separated classes, 6 of them labelled."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.arange(64) % 4
    means = 4.0 * torch.eye(8, dtype=D64)[:4]  # (4, 8)
    ft = means[truth] + 0.3 * torch.randn(64, 8, generator=g, dtype=D64)
    fs = ft[:, :6] + 0.8 * torch.randn(64, 6, generator=g, dtype=D64)
    y = torch.full((64,), -1)
    y[:6] = truth[:6]
    return fs, ft, y, truth


def test_teacher_labelled_stage1_mines_the_unlabelled_samples_too():
    fs, ft, y, truth = _transfer_batch()
    setup_feats, setup_labels = ft, truth  # the global centres: the teacher on labelled data

    counts = {}
    for mode in ("labelled", "teacher"):
        m = Refilled(stage1_labels=mode, num_classes=4).double()
        m.setup(SetupData(setup_feats, torch.zeros(64, 4, dtype=D64), setup_labels))
        terms = m(StepInputs(fs, torch.zeros(64, 4, dtype=D64), y, ft))
        # the same as the loss with the triplets mined under those labels
        labels = y if mode == "labelled" else centre_labels(ft, y, m.class_centres)
        a, p, n = mine_triplets(fs, labels)
        counts[mode] = a.shape[0]
        expected = 1000.0 * refilled_embedding_loss(fs, ft, labels, triplets=(a, p, n))
        torch.testing.assert_close(terms["relation"], expected, rtol=1e-12, atol=0)
    # separable classes: the teacher's centre labels are the true classes
    assert torch.equal(centre_labels(ft, y, m.class_centres), truth)
    assert counts["teacher"] > 20 * max(counts["labelled"], 1)
    # with local centres the batch's labelled samples give the centres
    local = Refilled(stage1_labels="teacher", centres="local").double()
    terms = local(StepInputs(fs, torch.zeros(64, 4, dtype=D64), y, ft))
    labels = centre_labels(ft, y, class_centres(ft, y, 4))
    assert mine_triplets(fs, labels)[0].shape[0] > counts["labelled"]
    expected = 1000.0 * refilled_embedding_loss(fs, ft, labels)
    torch.testing.assert_close(terms["relation"], expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="stage1_labels"):
        Refilled(stage1_labels="pseudo")
