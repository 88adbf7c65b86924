"""term_gradient_norms: each weighted term's gradient norm w.r.t. the student, and its share."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from relkd_tutorial import build_method, build_model
from relkd_tutorial.data import Batch
from relkd_tutorial.methods import StepInputs
from relkd_tutorial.training import gradient_shares, term_gradient_norms


def _setup(seed: int = 0):
    student = build_model("student_cnn_s", 10, 1, seed=seed)
    teacher = build_model("student_cnn_s", 10, 1, seed=seed + 1).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 1, 28, 28, generator=g)
    y = torch.arange(16) % 10
    y[::3] = -1  # some unlabelled images, as in transfer
    return student, teacher, Batch(x, y, torch.arange(16))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_method_with_one_term_has_share_one() -> None:
    student, _, batch = _setup()
    norms = term_gradient_norms(build_method("ce"), student, batch)
    assert list(norms) == ["ce"] and norms["ce"] > 0
    assert gradient_shares(norms) == {"ce": 1.0}
    assert gradient_shares({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}


def test_doubling_a_terms_weight_doubles_its_norm_only() -> None:
    student, teacher, batch = _setup(1)
    base = term_gradient_norms(build_method("kd"), student, batch, teacher)
    double = term_gradient_norms(build_method("kd", kd_weight=1.8), student, batch, teacher)
    assert set(base) == {"ce", "kd"}
    assert double["kd"] == pytest.approx(2 * base["kd"], rel=1e-6)
    assert double["ce"] == pytest.approx(base["ce"], rel=1e-6)
    shares = gradient_shares(base)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["kd"] == pytest.approx(base["kd"] / (base["kd"] + base["ce"]))


def test_norms_equal_a_hand_computed_autograd_norm() -> None:
    # the step as written out by hand: train-mode forward, the method's terms, one grad per term
    student, teacher, batch = _setup(2)
    method = build_method("dist", ce_weight=0.5, beta=2.0, gamma=0.7, temperature=2.0)
    got = term_gradient_norms(method, student, batch, teacher)
    reference = build_model("student_cnn_s", 10, 1, seed=2).train()
    with torch.no_grad():
        _, t_logits = teacher(batch.x)
    features, logits = reference(batch.x)
    inputs = StepInputs(features, logits, batch.y, teacher_logits=t_logits, index=batch.index)
    terms = method.loss_terms(inputs)
    assert list(got) == ["ce", "dist_inter", "dist_intra"]
    for name in got:
        reference.zero_grad()
        terms[name].backward(retain_graph=True)
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in reference.parameters()))
        assert got[name] == pytest.approx(float(norm), rel=1e-5), name


def test_the_student_is_left_as_it_was() -> None:
    student, teacher, batch = _setup(3)
    student.eval()
    before = _state(student)
    term_gradient_norms(build_method("rkd"), student, batch, teacher)
    after = _state(student)
    assert not student.training  # its mode is restored
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert all(p.grad is None for p in student.parameters())


def test_a_missing_teacher_is_refused() -> None:
    student, _, batch = _setup(4)
    with pytest.raises(ValueError, match="needs a teacher"):
        term_gradient_norms(build_method("kd"), student, batch)
