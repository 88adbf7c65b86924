"""How hard each loss term pulls on the student: the gradient norm of every weighted term.

Which term dominates the optimizer's gradient is decided by the weights as much as by the terms,
so two methods "at their defaults" may differ mostly in how loud their distillation term is.
:func:`term_gradient_norms` gives ``n_k = || d(term_k) / d theta ||_2`` (``theta``: the student's
trainable parameters) through the same path as a step of ``fit``; :func:`gradient_shares` gives
``n_k / sum_j n_j``. ``benchmarks/gradient_shares.py`` prints them for every benchmark method.
"""

from __future__ import annotations

import torch
from torch import nn

from ..methods import Method
from ..teacher import TeacherCache, as_batch, teacher_outputs
from .steps import make_step_inputs, student_forward


def term_gradient_norms(
    method: Method,
    student: nn.Module,
    batch: object,
    teacher: nn.Module | TeacherCache | None = None,
) -> dict[str, float]:
    """``{term: ||grad||_2}`` of each weighted term except ``"loss"`` w.r.t. the student's
    parameters, at one batch.

    One step's forward as in ``fit`` (student and method in training mode; the teacher's outputs if
    ``method.needs_teacher``), then one ``torch.autograd.grad`` per term. Nothing changes: weights,
    buffers (BN statistics) and modes are restored. A method's own parameters are not counted; a
    method with a setup pass or stages must be set up and in its stage. A term that does not reach
    the student has norm 0. ``batch``: a ``Batch`` or ``(x, y[, index])``.
    """
    if method.needs_teacher and teacher is None:
        raise ValueError(f"method {method.name!r} needs a teacher (needs_teacher=True)")
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the student has no trainable parameters to measure gradients on")
    b = as_batch(batch, params[0].device)
    buffers = {k: v.clone() for k, v in student.named_buffers()}
    modes = student.training, method.training
    student.train()
    method.train()
    try:
        features, logits = student_forward(student, b.x)
        t_feat = t_logits = None
        if method.needs_teacher:
            assert teacher is not None
            t_feat, t_logits = teacher_outputs(teacher, b)
        terms = method.loss_terms(make_step_inputs(features, logits, b, t_feat, t_logits))
        names = [k for k in terms if k != "loss"]
        norms: dict[str, float] = {}
        for i, name in enumerate(names):
            grads = torch.autograd.grad(
                terms[name], params, retain_graph=i < len(names) - 1, allow_unused=True
            )
            squares = [g.detach().double().pow(2).sum() for g in grads if g is not None]
            norms[name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
        return norms
    finally:
        with torch.no_grad():
            for k, v in student.named_buffers():
                v.copy_(buffers[k])
        student.train(modes[0])
        method.train(modes[1])


def gradient_shares(norms: dict[str, float]) -> dict[str, float]:
    """Each term's share of the summed norms, ``n_k / sum_j n_j`` (all 0 if every norm is 0)."""
    total = sum(norms.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in norms.items()}
