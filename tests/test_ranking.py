"""Soft pairwise and listwise (Plackett-Luce) ranking losses: loops, properties, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _bad_inputs import assert_rejects_bad_pairs

from relkd_tutorial.losses import (
    ListwiseRankLoss,
    SoftPairwiseRankLoss,
    grkd_loss,
    listwise_rank_loss,
    soft_pairwise_rank_loss,
)


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _naive_soft(z, t, temperature=1.0, teacher_temperature=1.0):
    b, c = z.shape
    per_sample = []
    for i in range(b):
        total = z.new_zeros(())
        for j in range(c):
            for k in range(j + 1, c):
                q = torch.sigmoid((z[i, j] - z[i, k]) / temperature)
                y = torch.sigmoid((t[i, j] - t[i, k]) / teacher_temperature)
                total = total - y * torch.log(q) - (1 - y) * torch.log(1 - q)
        per_sample.append(total / (c * (c - 1) / 2))
    return torch.stack(per_sample).mean()


def _naive_listwise(z, t, temperature=1.0, top_k=None):
    b, c = z.shape
    k = c if top_k is None else min(top_k, c)
    per_sample = []
    for i in range(b):
        order = sorted(range(c), key=lambda a: (-float(t[i, a]), a))
        total = z.new_zeros(())
        for r in range(k):
            remaining = order[r:]  # all classes not yet placed, not only the top-k list
            num = torch.exp(z[i, order[r]] / temperature)
            den = sum(torch.exp(z[i, s] / temperature) for s in remaining)
            total = total - torch.log(num / den)
        per_sample.append(total)
    return torch.stack(per_sample).mean()


# ---------------------------------------------------------------------------- soft pairwise


@pytest.mark.parametrize("temps", [(1.0, 1.0), (2.0, 0.5), (0.3, 4.0)])
@pytest.mark.parametrize("b,c", [(1, 2), (3, 5), (4, 12)])
def test_soft_pairwise_matches_loop(b: int, c: int, temps: tuple[float, float]) -> None:
    z = _rand(b, c, seed=c, scale=2.0).requires_grad_(True)
    t = _rand(b, c, seed=c + 1, scale=2.0)
    loss, naive = soft_pairwise_rank_loss(z, t, *temps), _naive_soft(z, t, *temps)
    torch.testing.assert_close(loss, naive, rtol=1e-6, atol=1e-12)
    (g,) = torch.autograd.grad(loss, z)
    (g_naive,) = torch.autograd.grad(naive, z)
    torch.testing.assert_close(g, g_naive, rtol=1e-6, atol=1e-12)


def test_soft_pairwise_gradcheck() -> None:
    z = _rand(3, 6, seed=1).requires_grad_(True)
    t = _rand(3, 6, seed=2)
    assert torch.autograd.gradcheck(lambda x: soft_pairwise_rank_loss(x, t, 1.5, 0.7), (z,))


def test_soft_pairwise_minimum_matches_scaled_teacher_gaps() -> None:
    # dL/dz = 0 iff z / tau = t / tau_t + const: the student's gaps are the teacher's * tau/tau_t
    tau, tau_t = 2.0, 0.5
    t = _rand(3, 7, seed=3)
    z_star = (tau / tau_t * t + 4.0).requires_grad_(True)
    loss = soft_pairwise_rank_loss(z_star, t, tau, tau_t)
    (g,) = torch.autograd.grad(loss, z_star)
    torch.testing.assert_close(g, torch.zeros_like(g), rtol=0, atol=1e-15)
    # the minimum value is the mean binary entropy of the targets, not 0
    y = torch.sigmoid((t[:, :, None] - t[:, None, :]) / tau_t)
    ent = -(y * y.log() + (1 - y) * (1 - y).log())
    upper = torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)
    torch.testing.assert_close(loss.detach(), ent[:, upper].mean(), rtol=1e-10, atol=0.0)
    for seed in range(5):  # any perturbation costs more
        bumped = z_star.detach() + 0.1 * _rand(3, 7, seed=seed)
        assert float(soft_pairwise_rank_loss(bumped, t, tau, tau_t)) > float(loss.detach())


def test_soft_pairwise_shift_invariance_and_hard_target_limit() -> None:
    z, t = _rand(3, 6, seed=4), _rand(3, 6, seed=5)
    loss = soft_pairwise_rank_loss(z, t)
    shifted = soft_pairwise_rank_loss(z + _rand(3, 1, seed=6, scale=30), t + 2.0)
    torch.testing.assert_close(shifted, loss, rtol=1e-10, atol=1e-12)
    # tau_t -> 0: the targets become the hard order, i.e. GRKD over all pairs (no ties here)
    torch.testing.assert_close(
        soft_pairwise_rank_loss(z, t, teacher_temperature=1e-9), grkd_loss(z, t), rtol=1e-9, atol=0
    )


# ---------------------------------------------------------------------------- listwise


@pytest.mark.parametrize("options", [{}, {"top_k": 1}, {"top_k": 3, "temperature": 2.0}], ids=str)
@pytest.mark.parametrize("b,c,ties", [(1, 2, False), (3, 6, True), (4, 11, False)])
def test_listwise_matches_loop(options: dict, b: int, c: int, ties: bool) -> None:
    z = _rand(b, c, seed=c, scale=2.0).requires_grad_(True)
    if ties:
        t = torch.randint(0, 3, (b, c), generator=torch.Generator().manual_seed(c)).double()
    else:
        t = _rand(b, c, seed=c + 1)
    loss, naive = listwise_rank_loss(z, t, **options), _naive_listwise(z, t, **options)
    torch.testing.assert_close(loss, naive, rtol=1e-6, atol=1e-12)
    (g,) = torch.autograd.grad(loss, z)
    (g_naive,) = torch.autograd.grad(naive, z)
    torch.testing.assert_close(g, g_naive, rtol=1e-6, atol=1e-12)


def test_listwise_gradcheck_and_properties() -> None:
    z = _rand(3, 7, seed=7).requires_grad_(True)
    t = _rand(3, 7, seed=8)
    assert torch.autograd.gradcheck(lambda x: listwise_rank_loss(x, t, 1.3, 4), (z,))
    loss = listwise_rank_loss(z, t, top_k=4)
    (g,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(g.sum(1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-14)
    shift = _rand(3, 1, seed=9, scale=40.0)
    torch.testing.assert_close(listwise_rank_loss(z + shift, t, top_k=4), loss, rtol=1e-10, atol=0)
    for transformed in (t.exp(), t**3, 0.5 * t - 1.0):  # only the teacher's order matters
        torch.testing.assert_close(listwise_rank_loss(z, transformed, top_k=4), loss)


def test_listwise_top1_is_cross_entropy_on_the_teacher_argmax() -> None:
    z, t = _rand(5, 8, seed=10), _rand(5, 8, seed=11)
    expected = F.cross_entropy(z / 2.0, t.argmax(1))
    torch.testing.assert_close(listwise_rank_loss(z, t, temperature=2.0, top_k=1), expected)


def test_listwise_denominators_include_the_classes_outside_the_list() -> None:
    t = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    inside = torch.tensor([[4.0, 3.0, -5.0, -5.0, -5.0]], dtype=torch.float64)
    outside_first = torch.tensor([[4.0, 3.0, -5.0, -5.0, 9.0]], dtype=torch.float64)
    # only the top-2 list is scored, yet an outside class ranked first must cost more
    assert (
        float(listwise_rank_loss(outside_first, t, top_k=2))
        > float(listwise_rank_loss(inside, t, top_k=2)) + 4.0
    )
    # and a student that follows the order with growing margins drives the loss to 0
    losses = [float(listwise_rank_loss(s * t, t, top_k=3)) for s in (0.0, 1.0, 10.0, 100.0)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-30
    assert math.isclose(losses[0], math.log(5) + math.log(4) + math.log(3), rel_tol=1e-12)


# ---------------------------------------------------------------------------- both


@pytest.mark.parametrize("loss_fn", [soft_pairwise_rank_loss, listwise_rank_loss])
def test_extreme_logits_low_precision_and_no_teacher_gradient(loss_fn) -> None:
    z = (torch.randn(4, 20) * 1e4).requires_grad_(True)
    t = (torch.randn(4, 20) * 1e4).requires_grad_(True)
    loss = loss_fn(z, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all() and t.grad is None
    for dtype in (torch.bfloat16, torch.float16):
        zl = torch.randn(8, 10).to(dtype).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(zl, torch.randn(8, 10))
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert zl.grad.dtype == dtype and torch.isfinite(zl.grad.float()).all()


def test_modules_and_bad_input() -> None:
    z, t = _rand(3, 5, seed=12), _rand(3, 5, seed=13)
    torch.testing.assert_close(
        SoftPairwiseRankLoss(2.0, 0.5)(z, t), soft_pairwise_rank_loss(z, t, 2.0, 0.5)
    )
    torch.testing.assert_close(ListwiseRankLoss(2.0, 3)(z, t), listwise_rank_loss(z, t, 2.0, 3))
    assert "teacher_temperature=0.5" in repr(SoftPairwiseRankLoss(2.0, 0.5))
    for loss_fn in (soft_pairwise_rank_loss, listwise_rank_loss):
        assert_rejects_bad_pairs(loss_fn, "student_logits", "teacher_logits", True)
    with pytest.raises(ValueError, match="C >= 2"):
        soft_pairwise_rank_loss(torch.randn(3, 1), torch.randn(3, 1))
    with pytest.raises(ValueError, match="teacher_temperature"):
        soft_pairwise_rank_loss(z, t, teacher_temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        listwise_rank_loss(z, t, top_k=0)
