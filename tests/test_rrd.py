"""RRD: the loss against its equation, its two connections (KL, InfoNCE), the heads and the queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relkd_tutorial import input_checks
from relkd_tutorial.losses.rrd import (
    EmbeddingQueue,
    ProjectionHead,
    RRDLoss,
    rrd_decomposition,
    rrd_log_probs,
    rrd_loss,
)

D64 = torch.float64


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def naive_rrd(s: torch.Tensor, u: torch.Tensor, q: torch.Tensor, tau_s: float, tau_t: float):
    """-(1/B) sum_i sum_k p^T_i(k) log p^S_i(k), written with Python loops from the equation."""
    s, u, q = unit(s).tolist(), unit(u).tolist(), unit(q).tolist()

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    total = 0.0
    for i in range(len(s)):
        zs = [math.exp(dot(s[i], qk) / tau_s) for qk in q]
        zt = [math.exp(dot(u[i], qk) / tau_t) for qk in q]
        for k in range(len(q)):
            total -= zt[k] / sum(zt) * math.log(zs[k] / sum(zs))
    return total / len(s)


@pytest.mark.parametrize(
    ("b", "d", "k", "tau_s", "tau_t"),
    [(1, 3, 1, 0.04, 0.1), (4, 5, 7, 0.04, 0.1), (9, 16, 33, 0.2, 0.07), (6, 8, 12, 1.0, 1.0)],
)
def test_matches_naive_double_loop(b, d, k, tau_s, tau_t):
    g = torch.Generator().manual_seed(b * 100 + k)
    s, u, q = (torch.randn(n, d, generator=g, dtype=D64) for n in (b, b, k))
    got = rrd_loss(s, u, q, tau_s, tau_t)
    assert got.dtype == D64
    assert got.item() == pytest.approx(naive_rrd(s, u, q, tau_s, tau_t), rel=1e-6)


def test_inputs_are_normalised_inside():
    g = torch.Generator().manual_seed(1)
    s, u, q = (torch.randn(n, 6, generator=g, dtype=D64) for n in (5, 5, 11))
    scaled = rrd_loss(3.0 * s, 0.5 * u, 7.0 * q)
    torch.testing.assert_close(scaled, rrd_loss(unit(s), unit(u), unit(q)), rtol=1e-12, atol=0)


def test_kl_plus_entropy_decomposition():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(7, 8, generator=g, dtype=D64, requires_grad=True)
    u, q = torch.randn(7, 8, generator=g, dtype=D64), torch.randn(20, 8, generator=g, dtype=D64)
    parts = rrd_decomposition(s, u, q, 0.04, 0.1)
    torch.testing.assert_close(parts["loss"], parts["kl"] + parts["entropy"], rtol=1e-12, atol=0)
    torch.testing.assert_close(parts["loss"], rrd_loss(s, u, q, 0.04, 0.1), rtol=1e-12, atol=0)
    assert parts["kl"].item() > 0
    # the entropy, independently: H(p^T) from an explicit softmax
    p_t = torch.softmax(unit(u) @ unit(q).t() / 0.1, dim=1)
    entropy = -(p_t * p_t.log()).sum(1).mean()
    torch.testing.assert_close(parts["entropy"], entropy, rtol=1e-10, atol=0)
    assert not parts["entropy"].requires_grad  # a constant for the student
    (g_loss,) = torch.autograd.grad(parts["loss"], s, retain_graph=True)
    (g_kl,) = torch.autograd.grad(parts["kl"], s)
    torch.testing.assert_close(g_loss, g_kl, rtol=1e-10, atol=1e-14)


def test_infonce_limit():
    """Queue holding u_i and tau_t -> 0: p^T_i is one-hot on u_i, and L_RRD is InfoNCE."""
    g = torch.Generator().manual_seed(3)
    b, d = 6, 16
    s, u = torch.randn(b, d, generator=g, dtype=D64), torch.randn(b, d, generator=g, dtype=D64)
    others = torch.randn(10, d, generator=g, dtype=D64)
    perm = torch.randperm(b + 10, generator=g)
    queue = torch.cat([u, others])[perm]  # u_i sits at slot position_of[i]
    position_of = torch.argsort(perm)[:b]
    tau_s = 0.07
    got = rrd_loss(s, u, queue, tau_s=tau_s, tau_t=1e-4)
    # InfoNCE with the teacher positive, written independently
    infonce = 0.0
    sn, qn = unit(s), unit(queue)
    for i in range(b):
        logits = qn @ sn[i] / tau_s  # (K,)
        infonce += -(logits[position_of[i]] - torch.logsumexp(logits, 0)).item()
    assert got.item() == pytest.approx(infonce / b, rel=1e-6)


def test_minimum_when_student_equals_teacher():
    g = torch.Generator().manual_seed(4)
    u, q = torch.randn(5, 8, generator=g, dtype=D64), torch.randn(30, 8, generator=g, dtype=D64)
    s = u.clone().requires_grad_(True)
    parts = rrd_decomposition(s, u, q, tau_s=0.1, tau_t=0.1)
    (grad,) = torch.autograd.grad(parts["loss"], s)
    assert grad.abs().max().item() < 1e-10
    assert abs(parts["kl"].item()) < 1e-12
    # any other student is worse
    for _ in range(5):
        other = u + 0.3 * torch.randn(5, 8, generator=g, dtype=D64)
        assert rrd_loss(other, u, q, 0.1, 0.1).item() > parts["loss"].item()


def test_gradcheck_loss_and_student_head():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(4, 5, generator=g, dtype=D64, requires_grad=True)
    u, q = torch.randn(4, 5, generator=g, dtype=D64), torch.randn(9, 5, generator=g, dtype=D64)
    assert torch.autograd.gradcheck(lambda x: rrd_loss(x, u, q, 0.5, 0.3), (s,))

    head = ProjectionHead(4, 5).double()
    f = torch.randn(3, 4, generator=g, dtype=D64, requires_grad=True)
    w = head.linear.weight.detach().clone().requires_grad_(True)
    bias = head.linear.bias.detach().clone().requires_grad_(True)

    def through_head(f, w, bias):
        emb = torch.func.functional_call(head, {"linear.weight": w, "linear.bias": bias}, (f,))
        return rrd_loss(emb, u[:3], q, 0.5, 0.3)

    assert torch.autograd.gradcheck(through_head, (f, w, bias))


def test_teacher_side_gets_no_gradient():
    u = torch.randn(3, 4, dtype=D64, requires_grad=True)
    q = torch.randn(6, 4, dtype=D64, requires_grad=True)
    s = torch.randn(3, 4, dtype=D64, requires_grad=True)
    log_p_s, log_p_t = rrd_log_probs(s, u, q)
    assert not log_p_t.requires_grad
    rrd_loss(s, u, q).backward()
    assert u.grad is None and q.grad is None and s.grad is not None


# ----------------------------------------------------------------------------- queue


def test_queue_fifo_wraps_when_size_is_not_a_multiple_of_batch():
    queue = EmbeddingQueue(size=5, dim=2)
    rows = torch.arange(14, dtype=torch.float32).reshape(7, 2)  # 7 distinct rows r0..r6
    queue.enqueue(rows[0:2])
    assert int(queue.filled) == 2 and int(queue.ptr) == 2
    torch.testing.assert_close(queue.valid_keys(), rows[0:2])  # only the written slots
    queue.enqueue(rows[2:4])
    assert int(queue.filled) == 4
    torch.testing.assert_close(queue.chronological(), rows[0:4])
    queue.enqueue(rows[4:6])  # wraps: r4 -> slot 4, r5 -> slot 0
    assert int(queue.filled) == 5 and int(queue.ptr) == 1
    torch.testing.assert_close(
        queue.keys, torch.stack([rows[5], rows[1], rows[2], rows[3], rows[4]])
    )
    torch.testing.assert_close(queue.chronological(), rows[1:6])  # r0, the oldest, is gone
    torch.testing.assert_close(queue.valid_keys(), queue.keys)  # full: every slot takes part


def test_queue_batch_longer_than_queue_keeps_the_newest_rows():
    queue = EmbeddingQueue(size=3, dim=2)
    queue.enqueue(torch.zeros(1, 2))
    rows = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    queue.enqueue(rows)
    assert int(queue.filled) == 3 and int(queue.ptr) == (1 + 5) % 3
    torch.testing.assert_close(queue.chronological(), rows[2:])


def test_queue_initial_keys_are_unit_and_unused_before_written():
    queue = EmbeddingQueue(size=8, dim=4)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(8))
    assert queue.valid_keys().shape == (0, 4)

    crit = RRDLoss(3, 5, embed_dim=4, queue_size=8)
    fs, ft = torch.randn(2, 3), torch.randn(2, 5)
    crit.update_queue(ft)  # two slots written
    before = crit(fs, ft)
    crit.queue.keys[2:] = torch.randn(6, 4)  # the unwritten slots may hold anything
    torch.testing.assert_close(crit(fs, ft), before)
    expected = rrd_loss(crit.student_head(fs), crit.teacher_embed(ft), crit.queue.keys[:2])
    torch.testing.assert_close(before, expected)


def test_queue_validation():
    with pytest.raises(ValueError, match="size"):
        EmbeddingQueue(0, 4)
    with pytest.raises(TypeError, match="dim"):
        EmbeddingQueue(4, 2.0)  # type: ignore[arg-type]
    queue = EmbeddingQueue(4, 3)
    with pytest.raises(ValueError, match="embedding width"):
        queue.enqueue(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating"):
        queue.enqueue(torch.ones(2, 3, dtype=torch.long))


def test_state_dict_round_trip():
    torch.manual_seed(0)
    crit = RRDLoss(3, 5, embed_dim=4, queue_size=7)
    for _ in range(3):
        crit.update_queue(torch.randn(3, 5))
    fs, ft = torch.randn(3, 3), torch.randn(3, 5)
    torch.manual_seed(1)
    fresh = RRDLoss(3, 5, embed_dim=4, queue_size=7)
    fresh.load_state_dict(crit.state_dict())
    for name in ("keys", "ptr", "filled"):
        assert torch.equal(getattr(fresh.queue, name), getattr(crit.queue, name))
    torch.testing.assert_close(fresh(fs, ft), crit(fs, ft))
    assert set(crit.state_dict()) >= {"queue.keys", "queue.ptr", "queue.filled"}


# ----------------------------------------------------------------------------- heads, orders


def test_teacher_head_is_frozen_and_unchanged_by_an_optimizer_step():
    crit = RRDLoss(3, 5, embed_dim=4, queue_size=6)
    crit.update_queue(torch.randn(4, 5))
    frozen = [p.detach().clone() for p in crit.teacher_head.parameters()]
    trained = [p.detach().clone() for p in crit.student_head.parameters()]
    assert all(not p.requires_grad for p in crit.teacher_head.parameters())
    opt = torch.optim.SGD(crit.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    crit(torch.randn(4, 3), torch.randn(4, 5)).backward()
    assert all(p.grad is None for p in crit.teacher_head.parameters())
    opt.step()
    for before, p in zip(frozen, crit.teacher_head.parameters(), strict=True):
        assert torch.equal(before, p)
    assert any(
        not torch.equal(b, p) for b, p in zip(trained, crit.student_head.parameters(), strict=True)
    )
    # even if someone unfreezes it, the teacher embedding carries no gradient
    crit.teacher_head.requires_grad_(True)
    assert not crit.teacher_embed(torch.randn(2, 5)).requires_grad


def test_update_after_versus_before():
    torch.manual_seed(0)
    after = RRDLoss(3, 5, embed_dim=4, queue_size=10, update="after")
    before = RRDLoss(3, 5, embed_dim=4, queue_size=10, update="before")
    before.load_state_dict(after.state_dict())  # identical heads and queue
    fs, ft = torch.randn(4, 3, requires_grad=True), torch.randn(4, 5)

    # first step: "after" has nothing to compare with yet, "before" compares with its own batch
    loss_after = after(fs, ft)
    assert loss_after.item() == 0.0 and int(after.queue.filled) == 0
    loss_after.backward()  # a gradient path exists
    assert torch.isfinite(fs.grad).all()
    s, u = before.student_head(fs), before.teacher_embed(ft)
    torch.testing.assert_close(before(fs, ft), rrd_loss(s, u, u))
    assert int(before.queue.filled) == 4

    # second step with a new batch: "after" (written once, by hand) sees only the old batch,
    # "before" sees the old and the new one
    after.update_queue(ft)
    fs2, ft2 = torch.randn(4, 3), torch.randn(4, 5)
    s2, u2 = after.student_head(fs2), after.teacher_embed(ft2)
    torch.testing.assert_close(after(fs2, ft2), rrd_loss(s2, u2, u))
    torch.testing.assert_close(before(fs2, ft2), rrd_loss(s2, u2, torch.cat([u, u2])))


def test_queue_write_between_forward_and_backward_is_safe():
    crit = RRDLoss(3, 5, embed_dim=4, queue_size=6)
    crit.update_queue(torch.randn(6, 5))
    fs = torch.randn(3, 3, requires_grad=True)
    loss = crit(fs, torch.randn(3, 5))
    crit.update_queue(torch.randn(3, 5))  # in-place buffer write before backward
    loss.backward()
    assert torch.isfinite(fs.grad).all()


def test_rrdloss_validation():
    with pytest.raises(ValueError, match="update"):
        RRDLoss(3, 5, update="during")
    with pytest.raises(ValueError, match="tau_s"):
        RRDLoss(3, 5, tau_s=0.0)
    crit = RRDLoss(3, 5, embed_dim=4, queue_size=6)
    with pytest.raises(ValueError, match=r"features must have shape \(B, 3\)"):
        crit(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="same batch size"):
        crit(torch.randn(2, 3), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"teacher_features must have shape \(B, D_T\)"):
        crit(torch.randn(2, 3), torch.randn(2, 5, 1))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (
            (torch.randn(3), torch.randn(3, 4), torch.randn(5, 4)),
            ValueError,
            r"student_emb.*\(B, d\)",
        ),
        ((torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 4)), ValueError, "same shape"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 3)), ValueError, "embedding width"),
        ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(5)), ValueError, r"queue.*\(K, d\)"),
        (
            (torch.ones(3, 4, dtype=torch.long), torch.randn(3, 4), torch.randn(5, 4)),
            TypeError,
            "student_emb",
        ),
        (
            (torch.randn(3, 4), torch.randn(3, 4), torch.ones(5, 4, dtype=torch.int32)),
            TypeError,
            "queue",
        ),
        (
            (torch.randn(3, 4), torch.full((3, 4), float("nan")), torch.randn(5, 4)),
            ValueError,
            "teacher_emb contains NaN",
        ),
        (
            (torch.randn(3, 4), torch.randn(3, 4), torch.full((5, 4), float("inf"))),
            ValueError,
            "queue contains NaN or Inf",
        ),
        ((torch.randn(0, 4), torch.randn(0, 4), torch.randn(5, 4)), ValueError, "empty"),
        (
            (torch.randn(3, 4), torch.randn(3, 4), torch.randn(0, 4)),
            ValueError,
            "queue must not be empty",
        ),
    ],
)
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        rrd_loss(*args)


def test_bad_temperature_and_device():
    s, u, q = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="tau_t"):
        rrd_loss(s, u, q, tau_t=-1.0)
    with pytest.raises(TypeError, match="tau_s"):
        rrd_loss(s, u, q, tau_s="0.1")  # type: ignore[arg-type]
    with input_checks(False), pytest.raises(ValueError, match="device"):
        rrd_loss(s, u, q.to("meta"))


# ----------------------------------------------------------------------------- edge cases


def test_coincident_samples_are_finite():
    s = torch.ones(4, 6, requires_grad=True)
    u = torch.ones(4, 6)
    q = torch.ones(5, 6)
    loss = rrd_loss(s, u, q)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert loss.item() == pytest.approx(math.log(5), rel=1e-6)  # uniform over 5 equal keys


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_student_with_fp32_teacher(low):
    torch.manual_seed(0)
    crit = RRDLoss(16, 24, embed_dim=8, queue_size=64)
    crit.update_queue(torch.randn(64, 24))
    fs, ft = torch.randn(32, 16), torch.randn(32, 24)
    reference = crit(fs, ft)
    x = fs.to(low).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crit(x, ft)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad.float()).all()
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)
    # the pure function promotes a low-precision student as well
    s = crit.student_head(fs).to(low)
    assert rrd_loss(s, crit.teacher_embed(ft), crit.queue.keys).dtype == torch.float32


def test_low_precision_matches_fp32_math_under_autocast():
    """Autocast must not push the (B, K) similarity matmul into bf16."""
    g = torch.Generator().manual_seed(6)
    s, u, q = (F.normalize(torch.randn(n, 32, generator=g), dim=1) for n in (16, 16, 256))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = rrd_loss(s, u, q)
    torch.testing.assert_close(inside, rrd_loss(s, u, q), rtol=1e-6, atol=0)
