"""Hinton KD: the equation, its T^2 factor and batchmean reduction, edge cases, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _bad_inputs import assert_rejects_bad_pairs

from relkd_tutorial.losses import KDLoss, kd_loss


def _rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _naive_kd(z: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    b, c = z.shape
    total = z.new_zeros(())
    for i in range(b):
        zmax, tmax = z[i].max(), t[i].max()
        qz = [torch.exp((z[i, k] - zmax) / temp) for k in range(c)]
        pt = [torch.exp((t[i, k] - tmax) / temp) for k in range(c)]
        sq, sp = sum(qz), sum(pt)
        for k in range(c):
            p, q = pt[k] / sp, qz[k] / sq
            total = total + p * torch.log(p / q)
    return temp**2 * total / b


@pytest.mark.parametrize("b,c,temp", [(1, 2, 1.0), (3, 5, 4.0), (6, 10, 2.5)])
def test_kd_matches_loop(b: int, c: int, temp: float) -> None:
    z, t = _rand(b, c, seed=1), _rand(b, c, seed=2, scale=3.0)
    torch.testing.assert_close(kd_loss(z, t, temp), _naive_kd(z, t, temp), rtol=1e-6, atol=1e-12)


def test_kd_gradient_is_t_times_q_minus_p_over_b() -> None:
    # L = T^2 (1/B) sum_i sum_c p_ic (log p_ic - log q_ic),  q_i = softmax(z_i / T).
    # d(-sum_c p_c log q_c)/dz_k = (q_k - p_k) / T  (softmax cross-entropy with a 1/T inside), so
    # dL/dz_ik = T^2 (1/B) (q_ik - p_ik) / T = T (q_ik - p_ik) / B.  A mean over B*C (KLDivLoss's
    # default) would give an extra 1/C; a missing T^2 would give (q - p) / (T B).
    b, c, temp = 4, 7, 4.0
    z = _rand(b, c, seed=3, scale=2.0).requires_grad_(True)
    t = _rand(b, c, seed=4, scale=2.0)
    (grad,) = torch.autograd.grad(kd_loss(z, t, temp), z)
    q, p = F.softmax(z.detach() / temp, dim=1), F.softmax(t / temp, dim=1)
    torch.testing.assert_close(grad, temp * (q - p) / b, rtol=1e-10, atol=1e-14)


def test_kd_reduction_is_batchmean() -> None:
    z, t = _rand(3, 6, seed=5), _rand(3, 6, seed=6)
    single = kd_loss(z, t)
    # duplicating the batch leaves a per-sample mean unchanged
    torch.testing.assert_close(kd_loss(torch.cat([z, z]), torch.cat([t, t])), single)
    # the sum over samples of the one-sample losses, divided by B
    per_sample = torch.stack([kd_loss(z[i : i + 1], t[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, per_sample.mean())


def test_kd_zero_at_teacher_and_positive_elsewhere() -> None:
    t = _rand(4, 5, seed=7)
    assert abs(float(kd_loss(t + 3.0, t))) < 1e-12  # softmax ignores a constant shift
    assert float(kd_loss(_rand(4, 5, seed=8), t)) > 0


def test_kd_teacher_gets_no_gradient() -> None:
    z = _rand(3, 4, seed=9).requires_grad_(True)
    t = _rand(3, 4, seed=10).requires_grad_(True)
    kd_loss(z, t).backward()
    assert t.grad is None and z.grad is not None


def test_kd_extreme_logits_are_finite() -> None:
    z = (torch.randn(4, 10) * 1e4).requires_grad_(True)
    t = torch.randn(4, 10) * 1e4
    loss = kd_loss(z, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kd_low_precision_under_autocast(dtype: torch.dtype) -> None:
    z = torch.randn(8, 10).to(dtype).requires_grad_(True)
    t = torch.randn(8, 10)  # an fp32 teacher cache beside a low-precision student
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = kd_loss(z, t)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()
    expected = kd_loss(z.detach().float(), t)
    torch.testing.assert_close(loss.detach(), expected)


def test_kd_module_and_bad_input() -> None:
    z, t = _rand(3, 4, seed=11), _rand(3, 4, seed=12)
    module = KDLoss(temperature=2.0)
    torch.testing.assert_close(module(z, t), kd_loss(z, t, 2.0))
    assert "temperature=2.0" in repr(module)
    assert_rejects_bad_pairs(kd_loss, "student_logits", "teacher_logits", width_must_match=True)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(z, t, temperature=0.0)
    with pytest.raises(TypeError, match="temperature"):
        KDLoss(temperature="4")  # type: ignore[arg-type]


def test_the_loss_modules_show_and_bind_their_functions_options() -> None:
    """Each loss module's constructor is its function's options (for ``help()`` and IDEs), in
    order, with the function's defaults; an unknown option is a TypeError naming it."""
    import inspect

    from relkd_tutorial.losses import (
        DISTLoss,
        GRKDLoss,
        ListwiseRankLoss,
        SoftPairwiseRankLoss,
        dist_loss,
        grkd_loss,
        listwise_rank_loss,
        soft_pairwise_rank_loss,
    )

    pairs = [(KDLoss, kd_loss), (GRKDLoss, grkd_loss), (DISTLoss, dist_loss),
             (SoftPairwiseRankLoss, soft_pairwise_rank_loss),
             (ListwiseRankLoss, listwise_rank_loss)]  # fmt: skip
    for module, fn in pairs:
        shown = inspect.signature(module).parameters
        options = list(inspect.signature(fn).parameters.values())[2:]
        assert list(shown) == [p.name for p in options], module.__name__
        assert [p.default for p in shown.values()] == [p.default for p in options]
    assert KDLoss(2.5).temperature == 2.5
    with pytest.raises(TypeError, match="tau"):
        KDLoss(tau=3.0)
