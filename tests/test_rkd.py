"""RKD distance and angle losses: naive loops, gradients, invariances, edge cases, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _bad_inputs import assert_rejects_bad_pairs

from relkd_tutorial.losses import RKDLoss, rkd_angle_loss, rkd_distance_loss
from relkd_tutorial.relations import angle_cosines


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _huber(e: torch.Tensor) -> torch.Tensor:
    return 0.5 * e**2 if abs(float(e.detach())) <= 1 else abs(e) - 0.5


def _naive_distance_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    b = s.shape[0]

    def psi(x: torch.Tensor) -> list[list[torch.Tensor]]:
        d = [[torch.linalg.vector_norm(x[i] - x[j]) for j in range(b)] for i in range(b)]
        mu = sum(d[i][j] for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
        return [[d[i][j] / mu for j in range(b)] for i in range(b)]

    ps, pt = psi(s), psi(t)
    return sum(_huber(ps[i][j] - pt[i][j]) for i in range(b) for j in range(b)) / b**2


def _naive_cos(x: torch.Tensor, i: int, j: int, k: int) -> torch.Tensor:
    u, w = x[i] - x[j], x[k] - x[j]
    nu, nw = torch.linalg.vector_norm(u), torch.linalg.vector_norm(w)
    if float(nu.detach()) == 0.0 or float(nw.detach()) == 0.0:
        return x.new_zeros(())  # degenerate: cosine 0 on both sides (authors' convention)
    return (u / nu) @ (w / nw)


def _naive_angle_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    b = s.shape[0]
    total = s.new_zeros(())
    for i in range(b):
        for j in range(b):
            for k in range(b):
                total = total + _huber(_naive_cos(s, i, j, k) - _naive_cos(t, i, j, k))
    return total / b**3  # all B^3 ordered triplets, degenerate ones included


@pytest.mark.parametrize("b,ds,dt", [(2, 3, 3), (5, 4, 6), (8, 2, 5)])
def test_distance_loss_matches_loop(b: int, ds: int, dt: int) -> None:
    s = _rand(b, ds, seed=b, scale=2.0).requires_grad_(True)
    t = _rand(b, dt, seed=b + 100)
    loss, naive = rkd_distance_loss(s, t), _naive_distance_loss(s, t)
    torch.testing.assert_close(loss, naive, rtol=1e-6, atol=1e-12)
    (g,) = torch.autograd.grad(loss, s)
    (g_naive,) = torch.autograd.grad(naive, s)
    torch.testing.assert_close(g, g_naive, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("b,chunk", [(3, None), (5, 2), (7, 1), (7, 3)])
def test_angle_loss_matches_loop(b: int, chunk: int | None) -> None:
    s = _rand(b, 3, seed=b, scale=3.0).requires_grad_(True)  # large errors: both Huber branches
    t = _rand(b, 4, seed=b + 50)
    loss, naive = rkd_angle_loss(s, t, chunk_size=chunk), _naive_angle_loss(s, t)
    torch.testing.assert_close(loss, naive, rtol=1e-6, atol=1e-12)
    (g,) = torch.autograd.grad(loss, s)
    (g_naive,) = torch.autograd.grad(naive, s)
    torch.testing.assert_close(g, g_naive, rtol=1e-6, atol=1e-12)


def test_angle_loss_matches_dense_autograd_at_a_larger_batch() -> None:
    # the fused kernel vs autograd through the whole (B, B, B) cosine tensor
    s = _rand(24, 6, seed=1).requires_grad_(True)
    t = _rand(24, 8, seed=2)
    for chunk in (None, 5):
        loss = rkd_angle_loss(s, t, chunk_size=chunk)
        dense = F.smooth_l1_loss(angle_cosines(s), angle_cosines(t), beta=1.0)
        torch.testing.assert_close(loss, dense, rtol=1e-9, atol=1e-14)
        (g,) = torch.autograd.grad(loss, s)
        (g_dense,) = torch.autograd.grad(dense, s)
        torch.testing.assert_close(g, g_dense, rtol=1e-7, atol=1e-14)


def test_gradcheck() -> None:
    s = _rand(5, 3, seed=3, scale=2.0).requires_grad_(True)
    t = _rand(5, 2, seed=4)
    assert torch.autograd.gradcheck(lambda x: rkd_angle_loss(x, t, chunk_size=2), (s,))
    assert torch.autograd.gradcheck(lambda x: rkd_distance_loss(x, t), (s,))


def test_zero_when_the_student_is_a_similarity_transform_of_the_teacher() -> None:
    t = _rand(9, 4, seed=5)
    q, _ = torch.linalg.qr(_rand(4, 4, seed=6))  # a rotation/reflection
    s = 3.0 * t @ q + 7.0  # scale, rotate, shift: distances scale, angles stay
    assert float(rkd_distance_loss(s, t)) < 1e-20
    assert float(rkd_angle_loss(s, t)) < 1e-20
    other = _rand(9, 4, seed=7)
    assert float(rkd_distance_loss(other, t)) > 0 and float(rkd_angle_loss(other, t)) > 0


def test_degenerate_tuples_count_in_the_mean() -> None:
    # three points: 27 triplets, of which 6 have three distinct indices and 3 are (i, j, i)
    # with cosine 1 on both sides; the rest are degenerate (cosine 0). Put the student on a line
    # (cosines +-1) and the teacher on an equilateral triangle (cosines 1/2).
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)
    # vertex at the middle point (j = 1): cos = -1 vs 1/2 -> |e| = 1.5 -> 1.0, twice;
    # vertex at an end point: cos = 1 vs 1/2 -> e = 0.5 -> 0.125, four times
    expected = (2 * 1.0 + 4 * 0.125) / 27
    assert math.isclose(float(rkd_angle_loss(s, t)), expected, rel_tol=1e-12)


def test_coincident_samples_give_finite_loss_and_gradient() -> None:
    base = torch.randn(6, 16)
    s = torch.cat([base, base[:2]]).requires_grad_(True)  # duplicate images in the batch
    t = torch.cat([base @ torch.randn(16, 8), torch.randn(2, 8)])  # the teacher sees them apart
    for loss_fn in (rkd_distance_loss, rkd_angle_loss):
        loss = loss_fn(s, t)
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    same = torch.ones(5, 3, requires_grad=True)  # every sample identical
    for loss_fn in (rkd_distance_loss, rkd_angle_loss):
        loss = loss_fn(same, torch.randn(5, 3))
        (g,) = torch.autograd.grad(loss, same)
        assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_coincident_pair_matches_loop_in_float64() -> None:
    s = _rand(5, 3, seed=8)
    s = torch.cat([s, s[1:2]])
    t = _rand(6, 3, seed=9)
    torch.testing.assert_close(rkd_angle_loss(s, t), _naive_angle_loss(s, t), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(
        rkd_distance_loss(s, t), _naive_distance_loss(s, t), rtol=1e-6, atol=1e-12
    )


def test_large_features_and_teacher_gets_no_gradient() -> None:
    s = (torch.randn(10, 8) * 1e4).requires_grad_(True)
    t = (torch.randn(10, 8) * 1e4).requires_grad_(True)
    loss = rkd_distance_loss(s, t) + rkd_angle_loss(s, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert t.grad is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_student_under_autocast(dtype: torch.dtype) -> None:
    s32 = torch.randn(16, 32).abs()  # ReLU-like pooled features
    s = s32.to(dtype).requires_grad_(True)
    t = torch.randn(16, 24).abs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = [rkd_distance_loss(s, t), rkd_angle_loss(s, t)]
    for loss, loss_fn in zip(losses, (rkd_distance_loss, rkd_angle_loss), strict=True):
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, s)
        assert g.dtype == dtype and torch.isfinite(g.float()).all()
        # the loss math ran in float32 on the rounded inputs (no bf16 Gram matrix)
        torch.testing.assert_close(loss.detach(), loss_fn(s.detach().float(), t))


def test_module_and_bad_input() -> None:
    s, t = _rand(6, 3, seed=10), _rand(6, 5, seed=11)
    module = RKDLoss(distance_weight=25.0, angle_weight=50.0)
    expected = 25.0 * rkd_distance_loss(s, t) + 50.0 * rkd_angle_loss(s, t)
    torch.testing.assert_close(module(s, t), expected)
    torch.testing.assert_close(RKDLoss(1.0, 0.0)(s, t), rkd_distance_loss(s, t))
    assert_rejects_bad_pairs(
        rkd_distance_loss, "student_features", "teacher_features", False, min_batch=2
    )
    assert_rejects_bad_pairs(rkd_angle_loss, "student_features", "teacher_features", False, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        rkd_angle_loss(s, t, chunk_size=0)
    with pytest.raises(ValueError, match="angle_weight"):
        RKDLoss(angle_weight=-1.0)
