"""GRKD: naive-loop agreement for every option, the promised invariances, edge cases, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _bad_inputs import assert_rejects_bad_pairs

from relkd_tutorial.losses import GRKDLoss, grkd_loss
from relkd_tutorial.losses import grkd as grkd_module


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _tied(b: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 4, (b, c), generator=g).double()
    t[0] = 2.0  # one sample whose teacher logits are all tied
    return t


def _naive_grkd(z, t, temperature=1.0, top_k=None, weighting="uniform", reduction="mean"):
    """The equation as written: (1/B) sum_i (1/|P_i|) sum_{(j,k) in P_i} w softplus(-(z_j - z_k)/tau);
    ``reduction="sum"`` without the 1/|P_i|."""
    b, c = z.shape
    p = F.softmax(t, dim=1)
    per_sample = []
    for i in range(b):
        # the group: the first k classes of the teacher's order, ties broken by class index
        order = sorted(range(c), key=lambda a: (-float(t[i, a]), a))
        group = set(order if top_k is None else order[:top_k])
        total, count = z.new_zeros(()), 0
        for j in range(c):
            for k in range(c):
                if t[i, j] > t[i, k] and (j in group or k in group):
                    w = 1.0 if weighting == "uniform" else p[i, j] - p[i, k]
                    total = total + w * F.softplus(-(z[i, j] - z[i, k]) / temperature)
                    count += 1
        per_sample.append(total / count if count and reduction == "mean" else total)
    return torch.stack(per_sample).mean()


OPTIONS = [
    {},
    {"temperature": 2.5},
    {"top_k": 1},
    {"top_k": 3},
    {"weighting": "prob_gap"},
    {"top_k": 2, "weighting": "prob_gap", "temperature": 0.5},
    {"temperature": 0.5},
    {"top_k": 5},
    {"reduction": "sum"},
    {"top_k": 3, "reduction": "sum"},
    {"weighting": "prob_gap", "reduction": "sum", "temperature": 4.0},
]


@pytest.mark.parametrize("options", OPTIONS, ids=str)
@pytest.mark.parametrize("b,c,ties", [(2, 2, False), (3, 6, True), (4, 11, False), (3, 9, True)])
def test_matches_naive_loop(options: dict, b: int, c: int, ties: bool) -> None:
    z = _rand(b, c, seed=c, scale=2.0).requires_grad_(True)
    t = _tied(b, c, seed=c) if ties else _rand(b, c, seed=c + 1, scale=3.0)
    loss, naive = grkd_loss(z, t, **options), _naive_grkd(z, t, **options)
    torch.testing.assert_close(loss, naive, rtol=1e-6, atol=1e-12)
    (g,) = torch.autograd.grad(loss, z)
    (g_naive,) = torch.autograd.grad(naive, z)
    torch.testing.assert_close(g, g_naive, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    "options", [{}, {"top_k": 3}, {"weighting": "prob_gap"}, {"reduction": "sum"}], ids=str
)
@pytest.mark.parametrize("ties", [False, True])
def test_gradcheck(options: dict, ties: bool) -> None:
    z = _rand(3, 6, seed=1).requires_grad_(True)
    t = _tied(3, 6, seed=2) if ties else _rand(3, 6, seed=3)
    assert torch.autograd.gradcheck(lambda x: grkd_loss(x, t, **options), (z,))


def test_fast_path_equals_masked_kernel_across_chunks(monkeypatch) -> None:
    # top_k = C - 1 keeps every pair (the last class is never preferred) but takes the masked
    # kernel; small chunks exercise the chunk loops of both paths.
    from relkd_tutorial import relations

    monkeypatch.setattr(relations, "PAIR_CHUNK_ELEMENTS", 500)
    monkeypatch.setattr(grkd_module, "PAIR_CHUNK_ELEMENTS", 500)
    z = _rand(6, 120, seed=4, scale=3.0).requires_grad_(True)
    for t in (_rand(6, 120, seed=5), _tied(6, 120, seed=6)):
        for reduction in ("mean", "sum"):
            fast = grkd_loss(z, t, reduction=reduction)
            masked = grkd_loss(z, t, top_k=119, reduction=reduction)
            torch.testing.assert_close(fast, masked, rtol=1e-10, atol=1e-12)
            (g_fast,) = torch.autograd.grad(fast, z)
            (g_masked,) = torch.autograd.grad(masked, z)
            torch.testing.assert_close(g_fast, g_masked, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options", [{}, {"top_k": 4}], ids=str)
def test_depends_on_teacher_only_through_its_order(options: dict) -> None:
    z = _rand(5, 10, seed=7, scale=2.0).requires_grad_(True)
    t = _rand(5, 10, seed=8)
    base = grkd_loss(z, t, **options)
    (g_base,) = torch.autograd.grad(base, z)
    for transformed in (t.exp(), t**3, 2.0 * t + 5.0, torch.sigmoid(t)):
        loss = grkd_loss(z, transformed, **options)
        (g,) = torch.autograd.grad(loss, z)
        torch.testing.assert_close(loss, base, rtol=1e-12, atol=0.0)
        torch.testing.assert_close(g, g_base, rtol=1e-12, atol=1e-15)


def test_probability_gap_weighting_is_not_order_invariant() -> None:
    # documented exception: the weights p_j - p_k change under a monotone map of t
    z, t = _rand(4, 6, seed=9), _rand(4, 6, seed=10)
    a = grkd_loss(z, t, weighting="prob_gap")
    b = grkd_loss(z, 3.0 * t, weighting="prob_gap")
    assert abs(float(a - b)) > 1e-3


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_shift_invariance_and_zero_gradient_sum(options: dict) -> None:
    z = _rand(4, 8, seed=11).requires_grad_(True)
    t = _tied(4, 8, seed=12)
    shift = _rand(4, 1, seed=13, scale=50.0)
    loss = grkd_loss(z, t, **options)
    torch.testing.assert_close(grkd_loss(z + shift, t, **options), loss, rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(g.sum(1), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-14)


def test_swapping_a_misordered_pair_decreases_the_loss() -> None:
    t = torch.tensor([[3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    z = torch.tensor([[0.5, 2.0, 1.0, -1.0]], dtype=torch.float64)  # classes 0, 1 mis-ordered
    swapped = z[:, [1, 0, 2, 3]]
    assert float(grkd_loss(swapped, t)) < float(grkd_loss(z, t))
    for _ in range(20):  # and for random mis-ordered pairs
        zr, tr = _rand(1, 7, seed=_), _rand(1, 7, seed=100 + _)
        j, k = int(tr.argmax()), int(tr.argmin())
        if zr[0, j] < zr[0, k]:
            zs = zr.clone()
            zs[0, [j, k]] = zr[0, [k, j]]
            assert float(grkd_loss(zs, tr)) < float(grkd_loss(zr, tr))


def test_all_tied_sample_contributes_zero_and_counts_in_the_mean() -> None:
    z = _rand(2, 5, seed=14).requires_grad_(True)
    t = torch.stack([torch.full((5,), 1.5, dtype=torch.float64), _rand(5, seed=15)])
    for options in ({}, {"top_k": 2}, {"weighting": "prob_gap"}, {"reduction": "sum"}):
        loss = grkd_loss(z, t, **options)
        torch.testing.assert_close(loss, grkd_loss(z[1:], t[1:], **options) / 2)  # 1/B, B = 2
        (g,) = torch.autograd.grad(loss, z)
        assert torch.all(g[0] == 0)
    assert float(grkd_loss(z[:1], t[:1]).detach()) == 0.0
    assert float(grkd_loss(z[:1], t[:1], reduction="sum").detach()) == 0.0
    assert float(grkd_loss(_rand(3, 1, seed=16), _rand(3, 1, seed=17))) == 0.0  # C = 1: no pairs


def test_minimum_is_approached_by_a_student_that_spreads_the_teacher_order() -> None:
    g = torch.Generator().manual_seed(18)
    t = torch.stack([torch.randperm(6, generator=g) for _ in range(3)]).double()  # gaps >= 1
    losses = [float(grkd_loss(s * t, t)) for s in (0.0, 1.0, 10.0, 100.0)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-10
    assert abs(losses[0] - math.log(2.0)) < 1e-12  # all gaps 0: log 2


def test_extreme_logits_low_precision_and_no_teacher_gradient() -> None:
    for options in ({}, {"top_k": 3}, {"weighting": "prob_gap"}):
        z = (torch.randn(4, 20) * 1e4).requires_grad_(True)
        t = (torch.randn(4, 20) * 1e4).requires_grad_(True)
        loss = grkd_loss(z, t, **options)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and t.grad is None
        naive = _naive_grkd(z.detach().double()[:2], t.detach().double()[:2], **options)
        torch.testing.assert_close(
            grkd_loss(z.detach()[:2], t.detach()[:2], **options).double(),
            naive,
            rtol=1e-5,
            atol=0.0,
        )
    for dtype in (torch.bfloat16, torch.float16):
        z = torch.randn(8, 10).to(dtype).requires_grad_(True)
        t = torch.randn(8, 10)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = grkd_loss(z, t)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()


def test_module_and_bad_input() -> None:
    z, t = _rand(3, 5, seed=19), _rand(3, 5, seed=20)
    module = GRKDLoss(temperature=2.0, top_k=2, weighting="prob_gap")
    torch.testing.assert_close(module(z, t), grkd_loss(z, t, 2.0, 2, "prob_gap"))
    assert "top_k=2" in repr(module)
    summed = GRKDLoss(temperature=2.0, top_k=2, weighting="prob_gap", reduction="sum")
    torch.testing.assert_close(summed(z, t), grkd_loss(z, t, 2.0, 2, "prob_gap", "sum"))
    assert "reduction='sum'" in repr(summed)
    with pytest.raises(ValueError, match="reduction"):
        grkd_loss(z, t, reduction="none")
    with pytest.raises(ValueError, match="reduction"):
        GRKDLoss(reduction="batchmean")
    assert_rejects_bad_pairs(grkd_loss, "student_logits", "teacher_logits", width_must_match=True)
    with pytest.raises(ValueError, match="weighting"):
        grkd_loss(z, t, weighting="gap")
    with pytest.raises(ValueError, match="top_k"):
        grkd_loss(z, t, top_k=0)
    with pytest.raises(TypeError, match="top_k"):
        grkd_loss(z, t, top_k=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        grkd_loss(z, t, temperature=-1.0)


# The benchmark's GRKD ablation (issue 11): one knob changed from the default per variant.
ABLATION = {
    "default (all classes, uniform, tau 1; sum over pairs)": {"reduction": "sum"},
    "mean over pairs": {},
    "top-5": {"top_k": 5},
    "top-3": {"top_k": 3},
    "prob-gap weights": {"weighting": "prob_gap"},
    "tau 0.5": {"temperature": 0.5},
    "tau 2": {"temperature": 2.0},
    "tau 4": {"temperature": 4.0},
}


def test_every_ablation_variant_matches_its_equation_and_moves_the_loss() -> None:
    z = _rand(8, 10, seed=21, scale=2.0)
    t = _rand(8, 10, seed=22, scale=3.0)  # no ties
    values = {}
    for name, options in ABLATION.items():
        got = grkd_loss(z, t, **options)
        torch.testing.assert_close(got, _naive_grkd(z, t, **options), rtol=1e-10, atol=1e-14)
        values[name] = float(got)
    ordered = sorted(values.values())
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    assert min(gaps) > 1e-4, values  # every knob changes the value: none is ignored


@pytest.mark.parametrize("top_k", [None, 5, 3])
def test_sum_over_pairs_is_the_mean_times_the_pair_count(top_k: int | None) -> None:
    # without ties |P_i| = C(C-1)/2 (all classes) or k(2C - k - 1)/2 (pairs led by the top k)
    c = 10
    z, t = _rand(5, c, seed=23), _rand(5, c, seed=24)
    k = c if top_k is None else top_k
    n_pairs = k * (2 * c - k - 1) // 2
    assert n_pairs == (45 if top_k is None else {5: 35, 3: 24}[top_k])
    mean = grkd_loss(z, t, top_k=top_k)
    torch.testing.assert_close(grkd_loss(z, t, top_k=top_k, reduction="sum"), n_pairs * mean)
