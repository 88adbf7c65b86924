"""The pseudo-label control: CE on the labels + CE on the teacher's top class over the unlabelled.

``pseudo_label_loss`` against a naive loop over a hand-built batch, its invariances (only the
teacher's argmax matters: no temperature), the batch without unlabelled images (pure CE, the same
gradient as :class:`CrossEntropy`), each knob, and bad input. The knob table of
``tests/test_knobs_methods.py`` pins its defaults as well.
"""

from __future__ import annotations

import math

import pytest
import torch

from relkd_tutorial import CrossEntropy, PseudoLabel, StepInputs, build_method
from relkd_tutorial.methods.logit_relation import pseudo_label_loss

# a batch of 4, 3 classes: rows 1 and 3 unlabelled; the teacher says class 2 for row 1 (with a
# confident margin) and class 0 for row 3
Z = torch.tensor(
    [[2.0, 0.0, -1.0], [0.5, 1.5, -0.5], [0.0, 0.0, 3.0], [-1.0, 2.0, 0.0]], dtype=torch.float64
)
T = torch.tensor(
    [[9.0, 0.0, 0.0], [0.0, 1.0, 4.0], [0.0, 5.0, 0.0], [3.0, 2.9, -1.0]], dtype=torch.float64
)
Y = torch.tensor([0, -1, 2, -1])


def _nll(z: torch.Tensor, k: int) -> float:
    """``-log softmax(z)_k`` written out."""
    return -(float(z[k]) - math.log(sum(math.exp(float(v)) for v in z)))


def test_pseudo_label_loss_is_the_mean_ce_on_the_teachers_top_class_over_unlabelled() -> None:
    naive = (_nll(Z[1], 2) + _nll(Z[3], 0)) / 2  # the teacher's argmax, not the student's
    assert float(pseudo_label_loss(Z, T, Y)) == pytest.approx(naive, rel=1e-12)
    terms = PseudoLabel()(StepInputs(torch.zeros(4, 2), Z, Y, teacher_logits=T))
    ce = (_nll(Z[0], 0) + _nll(Z[2], 2)) / 2  # the labelled rows with their own labels
    assert float(terms["ce"]) == pytest.approx(ce, rel=1e-12)
    assert float(terms["pseudo"]) == pytest.approx(naive, rel=1e-12)
    assert float(terms["loss"]) == pytest.approx(ce + naive, rel=1e-12)
    assert set(terms) == {"loss", "ce", "pseudo"}


def test_only_the_teachers_argmax_matters_hard_labels_no_temperature() -> None:
    base = pseudo_label_loss(Z, T, Y)
    # any positive scale or shift of a teacher row keeps its argmax, so the loss is unchanged
    for t in (3.0 * T, 0.01 * T, T + 7.0, T.exp()):
        torch.testing.assert_close(pseudo_label_loss(Z, t, Y), base, rtol=0, atol=0)
    # the teacher's labelled rows are never read
    t = T.clone()
    t[[0, 2]] = torch.randn(2, 3, dtype=torch.float64)
    torch.testing.assert_close(pseudo_label_loss(Z, t, Y), base, rtol=0, atol=0)
    # a different top class on an unlabelled row does change it
    t = T.clone()
    t[3, 1] = 3.5
    assert float(pseudo_label_loss(Z, t, Y)) != pytest.approx(float(base))


def test_gradcheck_in_float64() -> None:
    z = Z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: pseudo_label_loss(x, T, Y), (z,))
    # the teacher gets no gradient through the method
    t = T.clone().requires_grad_(True)
    PseudoLabel()(StepInputs(torch.zeros(4, 2), z, Y, teacher_logits=t))["loss"].backward()
    assert t.grad is None


def test_zero_when_the_student_puts_all_mass_on_the_teachers_class() -> None:
    z = 200.0 * torch.nn.functional.one_hot(T.argmax(1), 3).to(torch.float64)
    assert float(pseudo_label_loss(z, T, Y)) == pytest.approx(0.0, abs=1e-12)


def test_a_batch_without_unlabelled_images_is_pure_ce() -> None:
    labelled = torch.tensor([0, 1, 2, 0])
    z1, z2 = Z.clone().requires_grad_(True), Z.clone().requires_grad_(True)
    terms = PseudoLabel(pseudo_weight=5.0)(StepInputs(torch.zeros(4, 2), z1, labelled,
                                                      teacher_logits=T))  # fmt: skip
    ce = CrossEntropy()(StepInputs(torch.zeros(4, 2), z2, labelled))
    assert float(terms["pseudo"].detach()) == 0.0
    torch.testing.assert_close(terms["loss"], ce["loss"], rtol=0, atol=0)
    terms["loss"].backward()
    ce["loss"].backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=0, atol=0)


def test_a_batch_without_labelled_images_is_the_pseudo_term_alone() -> None:
    unlabelled = torch.full((4,), -1)
    terms = PseudoLabel()(StepInputs(torch.zeros(4, 2), Z, unlabelled, teacher_logits=T))
    assert float(terms["ce"]) == 0.0
    naive = sum(_nll(Z[i], int(T[i].argmax())) for i in range(4)) / 4
    assert float(terms["loss"]) == pytest.approx(naive, rel=1e-12)


def test_each_weight_scales_its_own_term_and_zero_drops_it() -> None:
    x = StepInputs(torch.zeros(4, 2), Z, Y, teacher_logits=T)
    base = PseudoLabel()(x)
    scaled = PseudoLabel(ce_weight=0.5, pseudo_weight=3.0)(x)
    assert float(scaled["ce"]) == pytest.approx(0.5 * float(base["ce"]), rel=1e-12)
    assert float(scaled["pseudo"]) == pytest.approx(3.0 * float(base["pseudo"]), rel=1e-12)
    assert set(PseudoLabel(pseudo_weight=0.0)(x)) == {"loss", "ce"}
    assert set(PseudoLabel(ce_weight=0.0)(x)) == {"loss", "pseudo"}
    assert isinstance(build_method("pseudo_label"), PseudoLabel)


def test_bad_input_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="pseudo_weight"):
        PseudoLabel(pseudo_weight=-1.0)
    with pytest.raises(ValueError, match="ce_weight"):
        PseudoLabel(ce_weight=-0.1)
    with pytest.raises(ValueError, match="teacher_logits"):  # no teacher logits supplied
        PseudoLabel()(StepInputs(torch.zeros(4, 2), Z, Y))
    with pytest.raises(ValueError, match="student's classes"):  # the teacher of other classes
        pseudo_label_loss(Z, T[:, :2], Y)
    with pytest.raises(ValueError, match="labels"):
        pseudo_label_loss(Z, T, torch.tensor([0, -1, 3, -1]))  # class 3 of 3
    with pytest.raises(ValueError, match="labels"):
        pseudo_label_loss(Z, T, torch.tensor([0, -1, 2]))  # one label short
