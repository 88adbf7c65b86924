"""Any method + KD as one composition (``with_kd``, ``"<name>+kd"``, the aliases ``rrd_kd`` and
``grkd_kd``): the same terms, in the same order, summed in the same order, bit for bit, as the
former per-combination classes computed them from the pure losses."""

from __future__ import annotations

import inspect

import pytest
import torch

from relkd_tutorial import (
    GRKD,
    RRD,
    RRDKD,
    GRKDWithKD,
    StepInputs,
    WithKD,
    available_methods,
    build_method,
    grkd_loss,
    kd_loss,
    supervised_cross_entropy,
    with_kd,
)
from relkd_tutorial.losses.rrd import rrd_loss


def _inputs(seed: int = 0, b: int = 12, c: int = 5) -> StepInputs:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (b,), generator=g)
    labels[::4] = -1  # some unlabelled samples
    return StepInputs(
        student_features=torch.randn(b, 6, generator=g).requires_grad_(True),
        student_logits=torch.randn(b, c, generator=g).requires_grad_(True),
        labels=labels,
        teacher_features=torch.randn(b, 10, generator=g),
        teacher_logits=3 * torch.randn(b, c, generator=g),
    )


def _assert_bitwise(terms: dict, parts: list[tuple[str, torch.Tensor]], leaf: torch.Tensor) -> None:
    """``terms`` is the former classes' dict: ``loss`` = ``sum`` of ``parts`` in this order, then
    the parts; values and the gradient with respect to ``leaf`` equal bit for bit."""
    expected = {"loss": sum(v for _, v in parts), **dict(parts)}
    assert list(terms) == list(expected)  # the names and their order (the history's columns)
    for name in expected:
        assert torch.equal(terms[name], expected[name]), name
    (got,) = torch.autograd.grad(terms["loss"], leaf, retain_graph=True)
    (want,) = torch.autograd.grad(expected["loss"], leaf)
    assert torch.equal(got, want)


def test_grkd_kd_is_bitwise_the_former_class() -> None:
    x = _inputs()
    z, t = x.student_logits, x.teacher_logits
    for kw in ({}, {"ce_weight": 0.1, "kd_weight": 0.9}, {"kd_temperature": 2.0, "top_k": 3}):
        m = build_method("grkd_kd", **kw)
        terms = m.loss_terms(x)
        ce_w, kd_w = kw.get("ce_weight", 1.0), kw.get("kd_weight", 1.0)
        parts = [
            ("ce", ce_w * supervised_cross_entropy(z, x.labels)),
            ("kd", kd_w * kd_loss(z, t, kw.get("kd_temperature", 4.0))),
            ("grkd", 1.0 * grkd_loss(z, t, 1.0, kw.get("top_k"))),
        ]
        _assert_bitwise(terms, parts, z)
    # a zero CE weight drops the CE term, as GRKD does: KD comes first
    assert list(build_method("grkd_kd", ce_weight=0.0).loss_terms(x)) == ["loss", "kd", "grkd"]


def test_rrd_kd_is_bitwise_the_former_class() -> None:
    x, earlier = _inputs(1), _inputs(2)
    torch.manual_seed(0)
    m = build_method("rrd_kd", student_dim=6, teacher_dim=10, embed_dim=4, queue_size=16,
                     ce_weight=0.1, kd_weight=0.9)  # fmt: skip
    torch.manual_seed(0)
    plain = RRD(6, 10, embed_dim=4, queue_size=16)  # the same random heads and queue
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), plain.state_dict().values(), strict=True))  # fmt: skip
    m.after_step(earlier)  # a queue write goes to the wrapped RRD
    assert int(m.rrd.queue.filled) == 12
    z, t = x.student_logits, x.teacher_logits
    s = m.rrd.student_head(x.student_features)
    u = m.rrd.teacher_embed(x.teacher_features)
    parts = [
        ("ce", 0.1 * supervised_cross_entropy(z, x.labels)),
        ("kd", 0.9 * kd_loss(z, t, 4.0)),
        ("rrd", 1.0 * rrd_loss(s, u, m.rrd.queue.valid_keys(), 0.04, 0.10)),
    ]
    _assert_bitwise(m.loss_terms(x), parts, z)


def test_the_composition_keeps_the_methods_seams_and_state() -> None:
    m = RRDKD(6, 10, embed_dim=4, queue_size=16, kd_weight=0.5, kd_temperature=3.0)
    assert isinstance(m, WithKD) and m.name == "rrd_kd" and m.needs_teacher
    assert (m.kd_weight, m.kd_temperature, m.rrd_weight) == (0.5, 3.0, 1.0)
    assert list(m.state_dict()) == list(m.base.state_dict())  # checkpoints as before: no prefix
    assert [id(p) for p in m.parameters()] == [id(p) for p in m.base.parameters()]
    other = RRDKD(6, 10, embed_dim=4, queue_size=16)
    other.load_state_dict(m.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), m.state_dict().values(), strict=True))  # fmt: skip
    r = build_method("refilled+kd", kd_weight=0.3, lambda1=5.0)  # stages and setup pass through
    assert r.needs_setup and [s.name for s in r.stages()] == ["embedding", "classifier"]
    r.set_stage("classifier")
    assert r.stage == r.base.stage == "classifier" and r.lambda1 == 5.0
    assert list(inspect.signature(GRKDWithKD).parameters)[-3:] == ["reduction", "kd_weight", "kd_temperature"]  # fmt: skip
    with pytest.raises(TypeError, match="positional"):
        GRKDWithKD(1.0, 2.0)  # the former third positional was kd_weight: refused, not rebound
    with pytest.raises(TypeError, match="KD term"):
        with_kd(build_method("kd"))
    with pytest.raises(ValueError, match="kd_weight"):
        with_kd(GRKD(), kd_weight=-1.0)
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nothing+kd")
    x = _inputs()
    x.teacher_logits = None
    with pytest.raises(ValueError, match="teacher_logits"):
        build_method("rkd+kd").loss_terms(x)


@pytest.mark.parametrize("name", [n for n in available_methods() if "kd" not in n])
def test_any_method_plus_kd_adds_exactly_the_kd_term(name: str) -> None:
    dims = {"student_dim": 6, "teacher_dim": 10, "queue_size": 16} if name == "rrd" else {}
    x = _inputs(3)
    torch.manual_seed(0)
    plain = build_method(name, **dims)
    torch.manual_seed(0)
    combo = build_method(f"{name}+kd", kd_weight=0.7, kd_temperature=2.0, **dims)
    if plain.needs_setup:
        return  # REFILLED: covered by the seams test above (its setup needs a data pass)
    terms, alone = combo.loss_terms(x), plain.loss_terms(x)
    assert torch.equal(terms["kd"], 0.7 * kd_loss(x.student_logits, x.teacher_logits, 2.0))
    assert [k for k in terms if k != "kd"] == list(alone)
    assert all(torch.equal(terms[k], alone[k]) for k in alone if k != "loss")
    torch.testing.assert_close(terms["loss"], alone["loss"] + terms["kd"])
    # the controlled weights: KD's own 0.1 CE + 0.9 KD, plus the method's term
    controlled = with_kd(build_method(name, **dims), 0.9, ce_weight=0.1)
    assert (controlled.ce_weight, controlled.kd_weight) == (0.1, 0.9)
