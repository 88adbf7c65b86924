"""DIST (Huang et al. 2022): the equation, its zero set, its invariances, gradients, bad input.

``L = beta tau^2 (1 - mean_i rho(Y^s_i, Y^t_i)) + gamma tau^2 (1 - mean_j rho(Y^s_:j, Y^t_:j))``
with ``Y = softmax(z / tau)`` and Pearson's ``rho``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _bad_inputs import assert_rejects_bad_pairs

from relkd_tutorial import DIST, DISTLoss, StepInputs, build_method, dist_loss
from relkd_tutorial.losses import dist_inter_loss, dist_intra_loss, kd_loss


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _pair(b: int = 6, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return _rand(b, c, seed=seed), _rand(b, c, seed=seed + 100, scale=3.0)


# ---------------------------------------------------------------------------------------------
# The equation, written as loops over plain floats
# ---------------------------------------------------------------------------------------------


def _softmax_row(row: list[float], temp: float) -> list[float]:
    top = max(row)
    e = [math.exp((v - top) / temp) for v in row]
    return [v / sum(e) for v in e]


def _pearson(u: list[float], v: list[float]) -> float:
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    cov = sum((a - mu) * (b - mv) for a, b in zip(u, v, strict=True))
    su = math.sqrt(sum((a - mu) ** 2 for a in u))
    sv = math.sqrt(sum((b - mv) ** 2 for b in v))
    return cov / (su * sv)


def _naive(z: torch.Tensor, t: torch.Tensor, beta: float, gamma: float, temp: float) -> float:
    b, c = z.shape
    ys = [_softmax_row(z[i].tolist(), temp) for i in range(b)]
    yt = [_softmax_row(t[i].tolist(), temp) for i in range(b)]
    inter = 1 - sum(_pearson(ys[i], yt[i]) for i in range(b)) / b
    cols = [([ys[i][j] for i in range(b)], [yt[i][j] for i in range(b)]) for j in range(c)]
    intra = 1 - sum(_pearson(s, tt) for s, tt in cols) / c
    return beta * temp**2 * inter + gamma * temp**2 * intra


@pytest.mark.parametrize(
    ("b", "c", "beta", "gamma", "temp"),
    [(2, 2, 1.0, 1.0, 1.0), (6, 5, 1.0, 1.0, 1.0), (9, 10, 2.0, 0.5, 4.0), (4, 3, 0.3, 3.0, 0.5)],
)
def test_matches_naive_loop(b: int, c: int, beta: float, gamma: float, temp: float) -> None:
    z, t = _pair(b, c, seed=b + c)
    got = dist_loss(z, t, beta=beta, gamma=gamma, temperature=temp)
    assert float(got) == pytest.approx(_naive(z, t, beta, gamma, temp), rel=1e-10, abs=1e-12)
    # the two terms are the two halves of the equation
    inter = float(dist_inter_loss(z, t, temp))
    assert float(got) == pytest.approx(
        beta * inter + gamma * float(dist_intra_loss(z, t, temp)), rel=1e-12
    )
    assert inter == pytest.approx(_naive(z, t, 1.0, 0.0, temp), rel=1e-10, abs=1e-12)


def test_float32_agrees_with_float64_and_low_precision_is_promoted() -> None:
    z, t = _pair(16, 10, seed=3)
    ref = dist_loss(z, t, temperature=2.0)
    got = dist_loss(z.float(), t.float(), temperature=2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    low = dist_loss(z.bfloat16(), t.float(), temperature=2.0)
    assert low.dtype == torch.float32  # bf16 student beside an fp32 teacher: computed in fp32


# ---------------------------------------------------------------------------------------------
# Where it is zero, and what it cannot see
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temp", [0.5, 1.0, 4.0])
def test_zero_when_student_equals_teacher_and_bounded_by_two_tau_squared(temp: float) -> None:
    z, t = _pair(8, 6, seed=1)
    assert float(dist_loss(t, t, temperature=temp)) == pytest.approx(0.0, abs=1e-12)
    for part in (dist_inter_loss, dist_intra_loss):
        value = float(part(z, t, temp))
        assert 0.0 < value <= 2 * temp**2
    # a student whose probabilities are perfectly anti-correlated approaches the bound 2 tau^2
    anti = dist_inter_loss(-t, t, 1.0)
    assert float(anti) > 1.0


def test_adding_a_constant_to_a_row_of_logits_changes_nothing() -> None:
    # softmax(z + c 1) = softmax(z): the probabilities, hence both relations, are unchanged
    z, t = _pair(7, 5, seed=2)
    shift_s, shift_t = _rand(7, 1, seed=3, scale=10.0), _rand(7, 1, seed=4, scale=10.0)
    base = dist_loss(z, t, beta=1.3, gamma=0.7, temperature=2.0)
    moved = dist_loss(z + shift_s, t + shift_t, beta=1.3, gamma=0.7, temperature=2.0)
    torch.testing.assert_close(moved, base, rtol=1e-10, atol=1e-12)
    assert float(base) > 0.1


def test_a_student_mixed_with_the_uniform_distribution_pays_no_inter_class_cost() -> None:
    # Pearson ignores positive affine maps: Y^s_i = a_i Y^t_i + (1 - a_i)/C is a valid distribution
    # (a_i in (0, 1]) and a positive affine map of the teacher's row i, so L_inter = 0, while KD
    # charges the lost confidence. With one a for every row the columns are affine maps too.
    b, c, temp = 6, 5, 2.0
    t = _rand(b, c, seed=5, scale=3.0)
    y_t = torch.softmax(t / temp, dim=1)
    a = torch.linspace(0.2, 0.9, b, dtype=torch.float64)[:, None]  # (B, 1) one mix per image
    z = temp * torch.log(a * y_t + (1 - a) / c)  # softmax(z / temp) = a Y^t + (1 - a)/C
    assert float(dist_inter_loss(z, t, temp)) == pytest.approx(0.0, abs=1e-12)
    assert float(dist_intra_loss(z, t, temp)) > 1e-3  # per-row mixes break the column relation
    assert float(kd_loss(z, t, temp)) > 1e-2
    same = temp * torch.log(0.4 * y_t + 0.6 / c)  # one mix for all images
    assert float(dist_loss(same, t, temperature=temp)) == pytest.approx(0.0, abs=1e-12)


def test_permuting_images_or_classes_of_both_changes_nothing() -> None:
    z, t = _pair(9, 7, seed=6)
    rows, cols = torch.randperm(9), torch.randperm(7)
    base = dist_loss(z, t, beta=1.0, gamma=2.0, temperature=1.5)
    for perm_z, perm_t in ((z[rows], t[rows]), (z[:, cols], t[:, cols])):
        moved = dist_loss(perm_z, perm_t, beta=1.0, gamma=2.0, temperature=1.5)
        torch.testing.assert_close(moved, base, rtol=1e-12, atol=1e-14)
    # pairing an image with another image's teacher row is not a symmetry
    assert not torch.allclose(dist_loss(z[rows], t, beta=1.0, gamma=2.0, temperature=1.5), base)


def test_a_constant_teacher_row_counts_as_zero_correlation_without_nan() -> None:
    # Pearson's correlation is undefined for a constant vector: the floored denominator makes it 0
    z, t = _pair(4, 5, seed=7)
    t[2] = 0.5  # all classes tied: the teacher's probabilities are uniform for image 2
    z = z.requires_grad_(True)
    inter = dist_inter_loss(z, t, 1.0)
    rest = torch.cat([t[:2], t[3:]]), torch.cat([z[:2], z[3:]])
    expected = (1.0 + 3 * float(dist_inter_loss(rest[1].detach(), rest[0], 1.0))) / 4
    assert float(inter.detach()) == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(inter, z)
    assert torch.isfinite(grad).all() and float(grad[2].abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "gamma", "temp"), [(1.0, 1.0, 1.0), (0.5, 2.0, 3.0)])
def test_gradcheck(beta: float, gamma: float, temp: float) -> None:
    z = _rand(5, 4, seed=8).requires_grad_(True)
    t = _rand(5, 4, seed=9, scale=2.0)
    assert torch.autograd.gradcheck(
        lambda x: dist_loss(x, t, beta=beta, gamma=gamma, temperature=temp), (z,)
    )


def test_teacher_gets_no_gradient_and_row_gradients_sum_to_zero() -> None:
    z, t = _pair(6, 5, seed=10)
    z, t = z.requires_grad_(True), t.requires_grad_(True)
    dist_loss(z, t).backward()
    assert t.grad is None
    assert z.grad is not None
    # the loss sees z only through softmax rows: shifting a row is free, so its gradient sums to 0
    torch.testing.assert_close(z.grad.sum(dim=1), torch.zeros(6, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Each knob, and the method
# ---------------------------------------------------------------------------------------------


def test_beta_and_gamma_weight_their_own_term_only() -> None:
    z, t = _pair(6, 5, seed=11)
    inter, intra = float(dist_inter_loss(z, t)), float(dist_intra_loss(z, t))
    assert inter != pytest.approx(intra, rel=1e-3)
    assert float(dist_loss(z, t, beta=1.0, gamma=0.0)) == pytest.approx(inter, rel=1e-12)
    assert float(dist_loss(z, t, beta=0.0, gamma=1.0)) == pytest.approx(intra, rel=1e-12)
    got = float(dist_loss(z, t, beta=2.5, gamma=0.4))
    assert got == pytest.approx(2.5 * inter + 0.4 * intra, rel=1e-12)
    zero = dist_loss(z.requires_grad_(True), t, beta=0.0, gamma=0.0)
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_temperature_softens_both_sides_and_scales_by_tau_squared() -> None:
    # L(z, t; tau) = tau^2 L(z / tau, t / tau; 1): a knob ignored anywhere breaks this
    z, t = _pair(6, 5, seed=12)
    for temp in (0.5, 2.0, 4.0):
        got = dist_loss(z, t, beta=1.0, gamma=1.5, temperature=temp)
        ref = temp**2 * dist_loss(z / temp, t / temp, beta=1.0, gamma=1.5, temperature=1.0)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
        assert not torch.allclose(got, dist_loss(z, t, beta=1.0, gamma=1.5))


def test_defaults_are_beta_gamma_tau_one() -> None:
    z, t = _pair(6, 5, seed=13)
    expected = _naive(z, t, 1.0, 1.0, 1.0)
    assert float(dist_loss(z, t)) == pytest.approx(expected, rel=1e-10)
    assert float(DISTLoss()(z, t)) == pytest.approx(expected, rel=1e-10)
    module = DISTLoss(beta=2.0, gamma=0.5, temperature=3.0)
    assert "beta=2.0, gamma=0.5, temperature=3.0" in repr(module)
    torch.testing.assert_close(module(z, t), dist_loss(z, t, beta=2.0, gamma=0.5, temperature=3.0))


def test_method_terms_and_registry() -> None:
    z, t = _pair(8, 5, seed=14)
    y = torch.tensor([0, 1, -1, 2, -1, 4, 3, -1])
    x = StepInputs(torch.zeros(8, 3, dtype=torch.float64), z, y, teacher_logits=t)
    method = build_method("dist", ce_weight=0.5, beta=2.0, gamma=3.0, temperature=2.0)
    assert isinstance(method, DIST) and method.needs_teacher
    terms = method.loss_terms(x)
    assert set(terms) == {"loss", "ce", "dist_inter", "dist_intra"}
    torch.testing.assert_close(terms["dist_inter"], 2.0 * dist_inter_loss(z, t, 2.0))
    torch.testing.assert_close(terms["dist_intra"], 3.0 * dist_intra_loss(z, t, 2.0))
    torch.testing.assert_close(
        terms["loss"], terms["ce"] + terms["dist_inter"] + terms["dist_intra"]
    )
    only_inter = build_method("dist", gamma=0.0).loss_terms(x)
    assert set(only_inter) == {"loss", "ce", "dist_inter"}  # a zero weight: no term
    with pytest.raises(ValueError, match="teacher_logits"):
        method.loss_terms(StepInputs(x.student_features, z, y))


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_rejected_with_a_clear_message() -> None:
    assert_rejects_bad_pairs(dist_loss, "student_logits", "teacher_logits", True, min_batch=2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        dist_loss(torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        dist_inter_loss(torch.randn(4, 1), torch.randn(4, 1))
    with pytest.raises(ValueError, match="intra-class"):
        dist_intra_loss(torch.randn(1, 5), torch.randn(1, 5))
    # one image has an inter-class relation but no intra-class one: gamma = 0 accepts it
    one = dist_loss(torch.randn(1, 5), torch.randn(1, 5), gamma=0.0)
    assert torch.isfinite(one)
    for name, kwargs in (
        ("beta", {"beta": -1.0}),
        ("gamma", {"gamma": float("inf")}),
        ("temperature", {"temperature": 0.0}),
    ):
        with pytest.raises(ValueError, match=name):
            dist_loss(torch.randn(4, 5), torch.randn(4, 5), **kwargs)
        with pytest.raises(ValueError, match=name):
            DISTLoss(**kwargs)
    for name in ("ce_weight", "beta", "gamma"):
        with pytest.raises(ValueError, match=name):
            DIST(**{name: -0.5})
    with pytest.raises(ValueError, match="temperature"):
        DIST(temperature=-1.0)
