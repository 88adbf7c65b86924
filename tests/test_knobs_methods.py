"""Every constructor argument and every default of every method, observed in its loss terms.

One table drives the tests: for each method, the terms it must return written *independently*
from the pure loss functions of :mod:`relkd_tutorial.losses`, with every default spelled out here
as a literal number (KD's ``0.1 CE + 0.9 KD(T=4)``, RKD's 1 / 25 / 50, RRD's ``tau_s = 0.04``,
``tau_t = 0.10``, REFILLED's ``lambda1 = 1000``, ``lambda2 = 100``, stage-2 ``ce_weight = 1``, ...).

- ``test_defaults_are_pinned``: ``build_method(name)`` gives exactly the terms of the literal
  defaults (a changed, swapped or dropped default fails).
- ``test_each_argument_is_used``: each argument set to another value gives the terms of that value,
  and they differ from the default's (an ignored argument fails); a *weight* scales its named term
  by exactly the ratio of the weights and leaves every other term as it was.

Only the package's public names are imported (the root, ``relkd_tutorial.methods`` and
``relkd_tutorial.losses``), so the tests survive a reshuffle of the modules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from relkd_tutorial import SetupData, StepInputs, build_method, seeded
from relkd_tutorial.losses import (
    class_centres,
    dist_inter_loss,
    dist_intra_loss,
    grkd_loss,
    kd_loss,
    listwise_rank_loss,
    refilled_classifier_kl,
    refilled_embedding_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rrd_loss,
    soft_pairwise_rank_loss,
)

B, C, D_S, D_T = 12, 5, 6, 7
TIGHT = {"rtol": 1e-12, "atol": 1e-14}

# Which term a weight multiplies.
WEIGHT_TERM = {
    "ce_weight": "ce",
    "kd_weight": "kd",
    "distance_weight": "rkd_distance",
    "angle_weight": "rkd_angle",
    "grkd_weight": "grkd",
    "rank_weight": "rank",
    "rrd_weight": "rrd",
    "lambda1": "relation",
    "lambda2": "local_kl",
    "beta": "dist_inter",
    "gamma": "dist_intra",
    "pseudo_weight": "pseudo",
}


def inputs(seed: int = 0) -> StepInputs:
    """A float64 step: 12 samples, 5 classes, two unlabelled; teacher logits without ties."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(B) % 3  # classes 0..2: class 3 has a REFILLED centre but is not in the batch
    y[[3, 8]] = -1
    return StepInputs(
        student_features=torch.randn(B, D_S, generator=g, dtype=torch.float64),
        student_logits=torch.randn(B, C, generator=g, dtype=torch.float64),
        labels=y,
        teacher_features=torch.randn(B, D_T, generator=g, dtype=torch.float64).relu() + 0.1,
        teacher_logits=3 * torch.randn(B, C, generator=g, dtype=torch.float64),
    )


def ce(x: StepInputs) -> Tensor:
    keep = x.labels >= 0  # labelled samples only; float64 logits give a float64 CE
    return F.cross_entropy(x.student_logits[keep], x.labels[keep])


def setup_data() -> SetupData:
    """REFILLED's setup pass: 20 teacher features of classes 0..3 (class 4 has no centre)."""
    g = torch.Generator().manual_seed(11)
    feats = torch.randn(20, D_T, generator=g, dtype=torch.float64).relu() + 0.1
    labels = torch.arange(20) % 4
    labels[0] = -1
    return SetupData(feats, torch.zeros(20, C, dtype=torch.float64), labels)


# ---------------------------------------------------------------------------------------------
# The expected terms, from the equations, every default a literal
# ---------------------------------------------------------------------------------------------


def kd_terms(m, x, ce_weight=0.1, kd_weight=0.9, temperature=4.0):
    z, t = x.student_logits, x.teacher_logits
    return {"ce": ce_weight * ce(x), "kd": kd_weight * kd_loss(z, t, temperature)}


def rkd_terms(m, x, ce_weight=1.0, distance_weight=25.0, angle_weight=50.0, convention="cifar"):
    if convention == "metric":  # the convention's weights, unless given explicitly
        ce_weight, distance_weight, angle_weight = 0.0, 1.0, 2.0
    f_s, f_t = x.student_features, x.teacher_features
    terms = {
        "ce": ce_weight * ce(x),
        "rkd_distance": distance_weight * rkd_distance_loss(f_s, f_t),
        "rkd_angle": angle_weight * rkd_angle_loss(f_s, f_t),
    }
    weights = {"ce": ce_weight, "rkd_distance": distance_weight, "rkd_angle": angle_weight}
    return {k: v for k, v in terms.items() if weights[k] > 0}  # a zero weight: no term


def rkd_d_terms(m, x, ce_weight=1.0, distance_weight=25.0, angle_weight=0.0):
    return rkd_terms(m, x, ce_weight, distance_weight, angle_weight)


def rkd_a_terms(m, x, ce_weight=1.0, distance_weight=0.0, angle_weight=50.0):
    return rkd_terms(m, x, ce_weight, distance_weight, angle_weight)


def grkd_terms(m, x, ce_weight=1.0, grkd_weight=1.0, temperature=1.0, top_k=None,
               weighting="uniform"):  # fmt: skip
    z, t = x.student_logits, x.teacher_logits
    return {"ce": ce_weight * ce(x), "grkd": grkd_weight * grkd_loss(z, t, temperature, top_k,
                                                                     weighting)}  # fmt: skip


def grkd_kd_terms(m, x, ce_weight=1.0, grkd_weight=1.0, kd_weight=1.0, temperature=1.0,
                  kd_temperature=4.0, top_k=None, weighting="uniform"):  # fmt: skip
    z, t = x.student_logits, x.teacher_logits
    return {
        "ce": ce_weight * ce(x),
        "kd": kd_weight * kd_loss(z, t, kd_temperature),
        "grkd": grkd_weight * grkd_loss(z, t, temperature, top_k, weighting),
    }


def soft_rank_terms(m, x, ce_weight=1.0, rank_weight=1.0, temperature=1.0,
                    teacher_temperature=1.0):  # fmt: skip
    z, t = x.student_logits, x.teacher_logits
    rank = soft_pairwise_rank_loss(z, t, temperature, teacher_temperature)
    return {"ce": ce_weight * ce(x), "rank": rank_weight * rank}


def listwise_terms(m, x, ce_weight=1.0, rank_weight=1.0, temperature=1.0, top_k=None):
    z, t = x.student_logits, x.teacher_logits
    rank = listwise_rank_loss(z, t, temperature, top_k)
    return {"ce": ce_weight * ce(x), "rank": rank_weight * rank}


def dist_terms(m, x, ce_weight=1.0, beta=1.0, gamma=1.0, temperature=1.0):
    z, t = x.student_logits, x.teacher_logits
    return {
        "ce": ce_weight * ce(x),
        "dist_inter": beta * dist_inter_loss(z, t, temperature),
        "dist_intra": gamma * dist_intra_loss(z, t, temperature),
    }


def _rrd(m, x, tau_s, tau_t):
    """RRD's loss from the method's own heads and queue, with the temperatures given here."""
    s = m.rrd.student_head(x.student_features)  # (B, d)
    u = m.rrd.teacher_embed(x.teacher_features)  # (B, d)
    return rrd_loss(s, u, m.rrd.queue.valid_keys(), tau_s, tau_t)


def rrd_terms(m, x, tau_s=0.04, tau_t=0.10, ce_weight=1.0, rrd_weight=1.0):
    return {"ce": ce_weight * ce(x), "rrd": rrd_weight * _rrd(m, x, tau_s, tau_t)}


def rrd_kd_terms(m, x, tau_s=0.04, tau_t=0.10, ce_weight=1.0, rrd_weight=1.0, kd_weight=1.0,
                 kd_temperature=4.0):  # fmt: skip
    z, t = x.student_logits, x.teacher_logits
    return {
        "ce": ce_weight * ce(x),
        "kd": kd_weight * kd_loss(z, t, kd_temperature),
        "rrd": rrd_weight * _rrd(m, x, tau_s, tau_t),
    }


def refilled_embedding_terms(m, x, margin=0.2, tau1=4.0, lambda1=1000.0, form="triplet",
                             stage1_labels="labelled"):  # fmt: skip
    f_s, f_t = x.student_features, x.teacher_features
    labels = x.labels
    if stage1_labels == "teacher":  # unlabelled samples: the top class of the global centres
        data = setup_data()
        table = class_centres(data.teacher_features, data.labels, C)  # (C, D_T), class 4 zero
        zeta = (f_t @ table.t()).masked_fill(table.abs().sum(1) == 0, float("-inf"))  # (B, C)
        labels = torch.where(labels >= 0, labels, zeta.argmax(1))
    return {"relation": lambda1 * refilled_embedding_loss(f_s, f_t, labels, margin, tau1, form)}


def refilled_classifier_terms(m, x, tau2=2.0, lambda2=100.0, ce_weight=1.0, centres="global",
                              num_classes=None, restrict_to_batch=True):  # fmt: skip
    f_t = x.teacher_features
    if centres == "local":
        table = class_centres(f_t, x.labels, C)  # (C, D_T) from the batch
    else:
        data = setup_data()
        k = max(num_classes or 0, int(data.labels.max()) + 1)
        table = class_centres(data.teacher_features, data.labels, k)  # (k, D_T)
        table = torch.cat([table, table.new_zeros(C - k, D_T)])  # (C, D_T): no centre = zeros
    kl = refilled_classifier_kl(x.student_logits, f_t, x.labels, table, tau2, restrict_to_batch)
    return {"ce": ce_weight * ce(x), "local_kl": lambda2 * kl}


def pseudo_label_terms(m, x, ce_weight=1.0, pseudo_weight=1.0):
    keep = x.labels < 0  # the unlabelled samples, with the teacher's top class as their label
    pseudo = F.cross_entropy(x.student_logits[keep], x.teacher_logits[keep].argmax(1))
    return {"ce": ce_weight * ce(x), "pseudo": pseudo_weight * pseudo}


RRD_DIMS = {"student_dim": D_S, "teacher_dim": D_T, "embed_dim": 8, "queue_size": 30}

# name -> (build_method name, fixed kwargs, stage, expected terms, {argument: another value})
Spec = tuple[str, dict[str, Any], str | None, Callable[..., dict[str, Tensor]], dict[str, Any]]
SPECS: dict[str, Spec] = {
    "kd": ("kd", {}, None, kd_terms, {"ce_weight": 0.7, "kd_weight": 0.3, "temperature": 2.0}),
    "rkd": ("rkd", {}, None, rkd_terms,
            {"ce_weight": 0.5, "distance_weight": 3.0, "angle_weight": 7.0,
             "convention": "metric"}),
    "rkd_d": ("rkd_d", {}, None, rkd_d_terms,
              {"ce_weight": 0.5, "distance_weight": 3.0, "angle_weight": 7.0}),
    "rkd_a": ("rkd_a", {}, None, rkd_a_terms,
              {"ce_weight": 0.5, "distance_weight": 3.0, "angle_weight": 7.0}),
    "grkd": ("grkd", {}, None, grkd_terms,
             {"ce_weight": 0.5, "grkd_weight": 3.0, "temperature": 2.0, "top_k": 2,
              "weighting": "prob_gap"}),
    "grkd_kd": ("grkd_kd", {}, None, grkd_kd_terms,
                {"ce_weight": 0.5, "grkd_weight": 3.0, "kd_weight": 0.25, "temperature": 2.0,
                 "kd_temperature": 1.5, "top_k": 2, "weighting": "prob_gap"}),
    "rank_soft": ("rank_soft", {}, None, soft_rank_terms,
                  {"ce_weight": 0.5, "rank_weight": 3.0, "temperature": 2.0,
                   "teacher_temperature": 0.5}),
    "rank_listwise": ("rank_listwise", {}, None, listwise_terms,
                      {"ce_weight": 0.5, "rank_weight": 3.0, "temperature": 2.0, "top_k": 2}),
    "dist": ("dist", {}, None, dist_terms,
             {"ce_weight": 0.5, "beta": 3.0, "gamma": 0.25, "temperature": 2.0}),
    "pseudo_label": ("pseudo_label", {}, None, pseudo_label_terms,
                     {"ce_weight": 0.5, "pseudo_weight": 3.0}),
    "rrd": ("rrd", RRD_DIMS, None, rrd_terms,
            {"tau_s": 0.2, "tau_t": 0.3, "ce_weight": 0.5, "rrd_weight": 3.0}),
    "rrd_kd": ("rrd_kd", RRD_DIMS, None, rrd_kd_terms,
               {"tau_s": 0.2, "tau_t": 0.3, "ce_weight": 0.5, "rrd_weight": 3.0,
                "kd_weight": 0.25, "kd_temperature": 1.5}),
    "refilled_embedding": ("refilled", {}, "embedding", refilled_embedding_terms,
                           {"margin": 0.5, "tau1": 1.5, "lambda1": 10.0, "form": "tuple",
                            "stage1_labels": "teacher"}),
    "refilled_classifier": ("refilled", {}, "classifier", refilled_classifier_terms,
                            {"tau2": 0.7, "lambda2": 3.0, "ce_weight": 0.4,
                             "centres": "local",
                             "restrict_to_batch": False}),
}  # fmt: skip

CASES = [(name, arg) for name, spec in SPECS.items() for arg in spec[4]]


def make(name: str, **overrides: Any):
    """The method of a spec (seeded: RRD's heads and queue), set up and in its stage."""
    kind, fixed, stage, _, _ = SPECS[name]
    with seeded(5):
        method = build_method(kind, **fixed, **overrides).double()
    if method.needs_setup:
        method.setup(setup_data())
    if stage is not None:
        method.set_stage(stage)
    if hasattr(method, "rrd"):  # some teacher keys already in the queue: a non-trivial RRD term
        method.after_step(inputs(seed=1))
    return method


def check_terms(terms: dict[str, Tensor], expected: dict[str, Tensor], what: str) -> None:
    assert set(terms) == {"loss", *expected}, what
    for k, v in expected.items():
        torch.testing.assert_close(terms[k], v, msg=f"{what}: {k}", **TIGHT)
    total = sum(expected.values())
    torch.testing.assert_close(terms["loss"], total, msg=f"{what}: loss", **TIGHT)


@pytest.mark.parametrize("name", list(SPECS))
def test_defaults_are_pinned(name: str) -> None:
    method = make(name)
    x = inputs()
    terms = method.loss_terms(x)
    expected = SPECS[name][3](method, x)
    check_terms(terms, expected, f"{name} defaults")
    assert all(float(v.detach()) != 0.0 for v in expected.values()), "an input with a zero term"


@pytest.mark.parametrize(("name", "arg"), CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_each_argument_is_used(name: str, arg: str) -> None:
    value = SPECS[name][4][arg]
    x = inputs()
    default = make(name).loss_terms(x)
    method = make(name, **{arg: value})
    terms = method.loss_terms(x)
    check_terms(terms, SPECS[name][3](method, x, **{arg: value}), f"{name} {arg}={value}")
    changed = [
        k for k in terms if k not in default or not torch.allclose(terms[k], default[k], **TIGHT)
    ]
    assert changed, f"{name}: {arg}={value!r} changed nothing (test input has no power)"
    term = WEIGHT_TERM.get(arg)
    if term in default:  # a weight: exactly its ratio on its own term, nothing else moves
        base = inspect.signature(SPECS[name][3]).parameters[arg].default
        ratio = (terms[term] / default[term]).detach()
        assert float(ratio) == pytest.approx(value / base, rel=1e-6)
        assert set(changed) == {"loss", term}, changed


# ---------------------------------------------------------------------------------------------
# What the table cannot show: sizes, stages and the queue's write order
# ---------------------------------------------------------------------------------------------


def test_rrd_embed_dim_and_queue_size_set_the_shapes_with_defaults_128_and_16384() -> None:
    state = build_method("rrd", student_dim=D_S, teacher_dim=D_T).state_dict()
    assert state["rrd.queue.keys"].shape == (16384, 128)
    assert state["rrd.student_head.linear.weight"].shape == (128, D_S)
    assert state["rrd.teacher_head.linear.weight"].shape == (128, D_T)
    for kind in ("rrd", "rrd_kd"):
        state = build_method(kind, **RRD_DIMS).state_dict()
        assert state["rrd.queue.keys"].shape == (30, 8)
        assert state["rrd.student_head.linear.weight"].shape == (8, D_S)


@pytest.mark.parametrize("kind", ["rrd", "rrd_kd"])
def test_rrd_update_order_default_after_and_before(kind: str) -> None:
    x = inputs()
    after = build_method(kind, **RRD_DIMS).double()  # default: after_step writes the batch
    after.loss_terms(x)
    assert int(after.rrd.queue.filled) == 0
    after.after_step(x)
    assert int(after.rrd.queue.filled) == B
    before = build_method(kind, **RRD_DIMS, update="before").double()  # the loss writes first
    before.loss_terms(x)
    assert int(before.rrd.queue.filled) == B
    before.after_step(x)
    assert int(before.rrd.queue.filled) == B


def test_refilled_stages_default_to_three_tenths_embedding() -> None:
    stages = [(s.name, s.fraction) for s in build_method("refilled").stages()]
    assert stages == [("embedding", pytest.approx(0.3)), ("classifier", pytest.approx(0.7))]
    stages = [(s.name, s.fraction) for s in build_method("refilled", stage1_fraction=0.6).stages()]
    assert stages == [("embedding", pytest.approx(0.6)), ("classifier", pytest.approx(0.4))]


def test_refilled_global_centres_need_setup_and_num_classes_widens_them() -> None:
    assert build_method("refilled").needs_setup
    assert not build_method("refilled", centres="local").needs_setup
    for num_classes, rows in ((None, 4), (C, C)):  # the setup data's labels stop at class 3
        method = build_method("refilled", num_classes=num_classes).double()
        method.setup(setup_data())
        assert method.state_dict()["class_centres"].shape == (rows, D_T)
