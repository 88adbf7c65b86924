"""Every relation primitive against a loop written straight from its definition (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relkd_tutorial import relations as R

SIZES = [(2, 3), (5, 4), (9, 7)]


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _naive_dist(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    out = torch.zeros(n, n, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            out[i, j] = torch.sqrt(((x[i] - x[j]) ** 2).sum())
    return out


# ---------------------------------------------------------------------------- sample relations


@pytest.mark.parametrize("b,d", SIZES)
def test_pairwise_distances_match_loop(b: int, d: int) -> None:
    x = _rand(b, d, seed=b) + 5.0  # an offset: the centring must not change anything
    naive = _naive_dist(x)
    torch.testing.assert_close(R.pairwise_distances(x), naive, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(
        R.pairwise_distances(x, squared=True), naive**2, rtol=1e-6, atol=1e-12
    )


def test_pairwise_distances_coincident_rows_are_zero_with_finite_gradient() -> None:
    x = _rand(5, 4, seed=1)
    x = torch.cat([x, x[:2]]).requires_grad_(True)  # rows 5, 6 duplicate rows 0, 1
    d = R.pairwise_distances(x)
    assert d[0, 5] == 0 and d[5, 0] == 0 and d[1, 6] == 0
    assert torch.all(d.diagonal() == 0)
    (grad,) = torch.autograd.grad(d.sum(), x)
    assert torch.isfinite(grad).all()
    # away from the coincident pairs, the gradient is the loop's
    x2 = x.detach().clone().requires_grad_(True)
    (g_naive,) = torch.autograd.grad(
        sum(
            torch.sqrt(((x2[i] - x2[j]) ** 2).sum())
            for i in range(7)
            for j in range(7)
            if i != j and {i, j} not in ({0, 5}, {1, 6})
        ),
        x2,
    )
    torch.testing.assert_close(grad, g_naive, rtol=1e-6, atol=1e-9)


def test_pairwise_distances_float32_coincident_rows_exactly_zero() -> None:
    x = torch.randn(6, 32) * 10 + 100  # a large offset and float32 rounding
    x[3] = x[1]
    d = R.pairwise_distances(x)
    assert d[1, 3] == 0
    torch.testing.assert_close(d, _naive_dist(x.double()).float(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("b,d", SIZES)
def test_normalized_distances_match_loop(b: int, d: int) -> None:
    x = _rand(b, d, seed=10 + b)
    naive = _naive_dist(x)
    mu = naive.sum() / (b * (b - 1))
    psi = R.normalized_pairwise_distances(x)
    torch.testing.assert_close(psi, naive / mu, rtol=1e-6, atol=1e-12)
    off = psi[~torch.eye(b, dtype=torch.bool)]
    assert math.isclose(float(off.mean()), 1.0, rel_tol=1e-9)


def test_normalized_distances_of_identical_rows_are_zero() -> None:
    x = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    psi = R.normalized_pairwise_distances(x)
    assert torch.all(psi == 0)
    (grad,) = torch.autograd.grad(psi.sum(), x)
    assert torch.isfinite(grad).all()


def _naive_angles(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    out = torch.zeros(n, n, n, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            for k in range(n):
                u, w = x[i] - x[j], x[k] - x[j]
                if u.norm() == 0 or w.norm() == 0:
                    continue  # degenerate: no direction, cosine 0 (authors' convention)
                out[i, j, k] = (u / u.norm()) @ (w / w.norm())
    return out


@pytest.mark.parametrize("b,d", [(3, 2), (6, 4), (8, 3)])
def test_angle_cosines_match_loop(b: int, d: int) -> None:
    x = _rand(b, d, seed=20 + b) - 3.0
    torch.testing.assert_close(R.angle_cosines(x), _naive_angles(x), rtol=1e-6, atol=1e-10)


def test_angle_cosines_coincident_rows_give_zero_and_finite_gradient() -> None:
    x = _rand(5, 3, seed=3)
    x = torch.cat([x, x[:1]]).requires_grad_(True)  # row 5 duplicates row 0
    a = R.angle_cosines(x)
    torch.testing.assert_close(a.detach(), _naive_angles(x.detach()), rtol=1e-6, atol=1e-10)
    assert torch.all(a[0, 5] == 0) and torch.all(a[:, 5, 0] == 0)
    (grad,) = torch.autograd.grad(a.sum(), x)
    assert torch.isfinite(grad).all()


def test_gram_and_inverse_distances() -> None:
    x = _rand(6, 4, seed=4)
    gram, inv = R.gram_and_inverse_distances(x)
    xc = x - x.mean(0)
    torch.testing.assert_close(gram, xc @ xc.t())
    naive = _naive_dist(x)
    expected = torch.where(naive > 0, 1.0 / naive, torch.zeros_like(naive))
    torch.testing.assert_close(inv, expected, rtol=1e-6, atol=0.0)


def test_cosine_similarity_matrix_matches_loop() -> None:
    a, b = _rand(4, 5, seed=5), _rand(7, 5, seed=6)
    a[2] = 0.0  # a zero row has similarity 0 with everything
    s = R.cosine_similarity_matrix(a, b)
    for i in range(4):
        for k in range(7):
            expected = 0.0 if i == 2 else float(a[i] @ b[k] / (a[i].norm() * b[k].norm()))
            assert math.isclose(float(s[i, k]), expected, rel_tol=1e-9, abs_tol=1e-12)
    torch.testing.assert_close(R.cosine_similarity_matrix(b), R.cosine_similarity_matrix(b, b))


def test_off_diagonal_helpers() -> None:
    m = _rand(4, 4, seed=7)
    assert R.off_diagonal_mask(4).sum() == 12
    expected = (m.sum() - m.diagonal().sum()) / 12
    torch.testing.assert_close(R.mean_off_diagonal(m), expected)


# ---------------------------------------------------------------------------- class relations


def _tied_scores(b: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (b, c), generator=g).double()  # many ties


def test_preference_mask_and_counts_match_loop() -> None:
    t = _tied_scores(3, 8, 0)
    mask = R.preference_mask(t)
    wins, losses = R.preference_counts(t)
    for i in range(3):
        for a in range(8):
            for b in range(8):
                assert bool(mask[i, a, b]) == bool(t[i, a] > t[i, b])
            assert wins[i, a] == sum(int(t[i, a] > t[i, b]) for b in range(8))
            assert losses[i, a] == sum(int(t[i, b] > t[i, a]) for b in range(8))
    torch.testing.assert_close(wins, mask.sum(2))
    torch.testing.assert_close(losses, mask.sum(1))


def test_descending_order_is_stable_and_tie_blocks() -> None:
    t = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0, 1.0]])
    values, order = R.descending_order(t)
    assert order.tolist() == [[1, 2, 4, 0, 5, 3]]  # ties in index order
    assert R.tie_block_ends(values).tolist() == [[3, 3, 3, 5, 5, 6]]
    t = _tied_scores(4, 9, 1)
    values, order = R.descending_order(t)
    ends = R.tie_block_ends(values)
    for i in range(4):
        for a in range(9):
            expected = next((b for b in range(9) if values[i, b] < values[i, a]), 9)
            assert ends[i, a] == expected


def topk_membership(t: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, C)`` mask of the ``k`` first classes of each row in ``descending_order``."""
    idx = R.descending_order(t)[1][:, : min(int(k), t.shape[1])]  # (B, k)
    return torch.zeros_like(t, dtype=torch.bool).scatter(1, idx, True)


def test_topk_membership_is_order_based_and_breaks_ties_by_index() -> None:
    t = torch.tensor([[0.5, 2.0, 2.0, 2.0, -1.0]])
    assert topk_membership(t, 2).tolist() == [[False, True, True, False, False]]
    t = _rand(5, 10, seed=8)
    m = topk_membership(t, 3)
    assert m.sum(1).tolist() == [3] * 5
    for i in range(5):
        top = sorted(range(10), key=lambda c: -float(t[i, c]))[:3]
        assert set(torch.nonzero(m[i]).flatten().tolist()) == set(top)
    assert torch.equal(topk_membership(t.exp(), 3), m)  # order only
    assert topk_membership(t, 99).all()


def _naive_pair_sum(v: torch.Tensor) -> torch.Tensor:
    b, c = v.shape
    return torch.stack(
        [
            sum(torch.logaddexp(v[i, a], v[i, k]) for a in range(c) for k in range(a + 1, c))
            for i in range(b)
        ]
    )


@pytest.mark.parametrize("b,c,scale", [(2, 2, 1.0), (3, 7, 1.0), (4, 23, 5.0), (2, 9, 900.0)])
def test_pairwise_logaddexp_sum_matches_loop(b: int, c: int, scale: float) -> None:
    # scale 900 exceeds the exp-trick's range in float64 and exercises the stable path
    v = _rand(b, c, seed=c, scale=scale).requires_grad_(True)
    p = R.pairwise_logaddexp_sum(v)
    naive = _naive_pair_sum(v)
    torch.testing.assert_close(p, naive, rtol=1e-9, atol=1e-9)
    (g,) = torch.autograd.grad(p.sum(), v)
    (g_naive,) = torch.autograd.grad(naive.sum(), v)
    torch.testing.assert_close(g, g_naive, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(R.soft_wins(v), g_naive, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("stable", [False, True])
def test_pairwise_kernel_chunk_boundaries_and_gradcheck(monkeypatch, stable: bool) -> None:
    monkeypatch.setattr(R, "PAIR_CHUNK_ELEMENTS", 20)  # 2 x 9 -> 1 row per chunk
    scale = 500.0 if stable else 1.0
    v = _rand(2, 9, seed=2, scale=scale).requires_grad_(True)
    torch.testing.assert_close(
        R.pairwise_logaddexp_sum(v), _naive_pair_sum(v), rtol=1e-9, atol=1e-9
    )
    if not stable:
        assert torch.autograd.gradcheck(R.pairwise_logaddexp_sum, (v,))


def test_soft_wins_properties_and_float32_extremes() -> None:
    v = _rand(3, 6, seed=9)
    w = R.soft_wins(v)
    torch.testing.assert_close(w.sum(1), torch.full((3,), 15.0, dtype=torch.float64))
    for i in range(3):
        for a in range(6):
            expected = sum(torch.sigmoid(v[i, a] - v[i, k]) for k in range(6) if k != a)
            assert math.isclose(float(w[i, a]), float(expected), rel_tol=1e-12)
    z = (torch.randn(4, 50) * 1e4).requires_grad_(True)  # logits of +-1e4 in float32
    p = R.pairwise_logaddexp_sum(z)
    (g,) = torch.autograd.grad(p.sum(), z)
    assert torch.isfinite(p).all() and torch.isfinite(g).all()
    torch.testing.assert_close(
        p.double(), _naive_pair_sum(z.detach().double()), rtol=1e-5, atol=0.0
    )


def test_pairwise_logistic_identity() -> None:
    """sum_{a<b} BCE(sigma(v_a - v_b), y_ab) = P(v) - sum_a Y_a v_a for any y_ab + y_ba = 1."""
    v = _rand(2, 6, seed=11)
    y = torch.rand(2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.triu(y, 1) + torch.tril(1 - y.transpose(1, 2), -1)  # y_ba = 1 - y_ab
    lhs = torch.zeros(2, dtype=torch.float64)
    for i in range(2):
        for a in range(6):
            for b in range(a + 1, 6):
                x = v[i, a] - v[i, b]
                lhs[i] += F.binary_cross_entropy_with_logits(x, y[i, a, b])
    big_y = y.sum(2) - torch.diagonal(y, dim1=1, dim2=2)
    torch.testing.assert_close(lhs, R.pairwise_logaddexp_sum(v) - (big_y * v).sum(1))
