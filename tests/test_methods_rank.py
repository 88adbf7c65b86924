"""The KD, RKD, GRKD and ranking methods: terms, weights, gradients, unlabelled samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from relkd_tutorial.losses import (
    grkd_loss,
    kd_loss,
    listwise_rank_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_pairwise_rank_loss,
)
from relkd_tutorial.methods import (
    GRKD,
    KD,
    RKD,
    GRKDWithKD,
    ListwiseRank,
    Method,
    RKDAngle,
    RKDDistance,
    SoftRank,
    StepInputs,
    WithKD,
    available_methods,
    build_method,
    supervised_cross_entropy,
)

EXPECTED = {
    "kd": (KD, {"ce", "kd"}),
    "rkd": (RKD, {"ce", "rkd_distance", "rkd_angle"}),
    "rkd_d": (RKDDistance, {"ce", "rkd_distance"}),
    "rkd_a": (RKDAngle, {"ce", "rkd_angle"}),
    "grkd": (GRKD, {"ce", "grkd"}),
    "grkd_kd": (WithKD, {"ce", "kd", "grkd"}),
    "rank_soft": (SoftRank, {"ce", "rank"}),
    "rank_listwise": (ListwiseRank, {"ce", "rank"}),
}


def _inputs(labels: list[int], seed: int = 0) -> StepInputs:
    g = torch.Generator().manual_seed(seed)
    b, c = len(labels), 6
    return StepInputs(
        student_features=torch.randn(b, 8, generator=g).requires_grad_(True),
        student_logits=torch.randn(b, c, generator=g).requires_grad_(True),
        labels=torch.tensor(labels),
        # requires_grad on the teacher side too: the methods must not send gradient there
        teacher_features=torch.randn(b, 12, generator=g).requires_grad_(True),
        teacher_logits=(3 * torch.randn(b, c, generator=g)).requires_grad_(True),
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_build_terms_sum_and_gradients_reach_only_the_student(name: str) -> None:
    cls, names = EXPECTED[name]
    assert name in available_methods()
    method = build_method(name)
    assert isinstance(method, cls) and isinstance(method, Method) and method.needs_teacher
    inputs = _inputs([0, 1, -1, 2, 5, -1])
    terms = method(inputs)
    assert set(terms) == names | {"loss"}
    parts = sum(v for k, v in terms.items() if k != "loss")
    torch.testing.assert_close(terms["loss"], parts)
    terms["loss"].backward()
    assert inputs.teacher_features.grad is None and inputs.teacher_logits.grad is None
    uses_features = name.startswith("rkd")
    student = inputs.student_features if uses_features else inputs.student_logits
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert float(student.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_unlabelled_samples(name: str) -> None:
    method = build_method(name)
    inputs = _inputs([-1, -1, -1, -1, -1])
    terms = method(inputs)
    assert float(terms["ce"].detach()) == 0.0  # no labelled sample: CE is 0, not 0/0
    distill = sum(v for k, v in terms.items() if k not in ("loss", "ce"))
    assert float(distill.detach()) > 0  # distillation terms still use every sample
    terms["loss"].backward()
    student = inputs.student_features if name.startswith("rkd") else inputs.student_logits
    assert torch.isfinite(student.grad).all() and float(student.grad.abs().sum()) > 0


def test_terms_are_the_weighted_losses() -> None:
    inputs = _inputs([0, -1, 3, 1, -1, 2])
    z, t = inputs.student_logits, inputs.teacher_logits.detach()
    f_s, f_t = inputs.student_features, inputs.teacher_features.detach()
    labelled = inputs.labels >= 0
    ce = F.cross_entropy(z[labelled], inputs.labels[labelled])  # labelled samples only

    terms = KD()(inputs)  # 0.1 CE + 0.9 KD(T=4)
    torch.testing.assert_close(terms["ce"], 0.1 * ce)
    torch.testing.assert_close(terms["kd"], 0.9 * kd_loss(z, t, 4.0))

    terms = RKD()(inputs)  # CE + 25 L_D + 50 L_A
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["rkd_distance"], 25 * rkd_distance_loss(f_s, f_t))
    torch.testing.assert_close(terms["rkd_angle"], 50 * rkd_angle_loss(f_s, f_t))

    terms = RKD(convention="metric")(inputs)  # 1 L_D + 2 L_A, no CE
    assert set(terms) == {"loss", "rkd_distance", "rkd_angle"}
    torch.testing.assert_close(terms["rkd_angle"], 2 * rkd_angle_loss(f_s, f_t))
    assert set(RKD(angle_weight=0.0)(inputs)) == {"loss", "ce", "rkd_distance"}
    terms = RKDDistance(distance_weight=3.0)(inputs)
    torch.testing.assert_close(terms["rkd_distance"], 3 * rkd_distance_loss(f_s, f_t))

    terms = GRKDWithKD(grkd_weight=2.0, kd_weight=0.5, temperature=2.0, top_k=3)(inputs)
    torch.testing.assert_close(terms["grkd"], 2.0 * grkd_loss(z, t, 2.0, 3))
    torch.testing.assert_close(terms["kd"], 0.5 * kd_loss(z, t, 4.0))
    torch.testing.assert_close(terms["ce"], ce)

    terms = GRKD(weighting="prob_gap")(inputs)
    torch.testing.assert_close(terms["grkd"], grkd_loss(z, t, weighting="prob_gap"))
    terms = SoftRank(rank_weight=4.0, teacher_temperature=2.0)(inputs)
    torch.testing.assert_close(terms["rank"], 4.0 * soft_pairwise_rank_loss(z, t, 1.0, 2.0))
    terms = ListwiseRank(top_k=2, temperature=3.0)(inputs)
    torch.testing.assert_close(terms["rank"], listwise_rank_loss(z, t, 3.0, 2))


def test_all_weights_zero_and_missing_teacher() -> None:
    inputs = _inputs([0, 1, 2])
    terms = KD(ce_weight=0.0, kd_weight=0.0)(inputs)
    assert set(terms) == {"loss"} and float(terms["loss"].detach()) == 0.0
    terms["loss"].backward()  # still has a graph
    no_teacher = StepInputs(inputs.student_features, inputs.student_logits, inputs.labels)
    for name in EXPECTED:
        field = "teacher_features" if name.startswith("rkd") else "teacher_logits"
        with pytest.raises(ValueError, match=field):
            build_method(name)(no_teacher)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="convention"):
        RKD(convention="imagenet")
    with pytest.raises(ValueError, match="kd_weight"):
        KD(kd_weight=-1.0)
    with pytest.raises(ValueError, match="weighting"):
        build_method("grkd", weighting="margin")
    with pytest.raises(ValueError, match="temperature"):
        build_method("rank_soft", teacher_temperature=0.0)


def _naive_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """``-(1/|L|) sum_{i in L} log softmax(z_i)_{y_i}`` with Python floats (double precision)."""
    terms = []
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        if y < 0:
            continue
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        terms.append(log_z - row[y])
    return sum(terms) / len(terms)


def test_supervised_cross_entropy_float64_in_float64_out() -> None:
    g = torch.Generator().manual_seed(3)
    z = 20 * torch.randn(9, 7, generator=g, dtype=torch.float64)  # large logits: f32 rounds visibly
    y = torch.tensor([0, 6, -1, 3, 3, -1, 1, 5, 2])
    got = supervised_cross_entropy(z, y)
    assert got.dtype == torch.float64
    assert abs(float(got) - _naive_cross_entropy(z, y)) < 1e-12 * abs(_naive_cross_entropy(z, y))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast does not lower it either
        assert supervised_cross_entropy(z, y).dtype == torch.float64
    # float32 and bf16 inputs compute in float32 (the package's loss_dtype rule)
    assert supervised_cross_entropy(z.float(), y).dtype == torch.float32
    assert supervised_cross_entropy(z.bfloat16(), y).dtype == torch.float32
    # and the CE method's term is that value
    inputs = StepInputs(torch.zeros(9, 2, dtype=torch.float64), z, y)
    assert build_method("ce")(inputs)["ce"].dtype == torch.float64
    assert torch.autograd.gradcheck(
        lambda x: supervised_cross_entropy(x, y), (z.clone().requires_grad_(True),)
    )


# The GRKD ablation as the benchmark builds it: build_method kwargs -> grkd_loss options.
GRKD_ABLATION = [
    {},
    {"top_k": 5},
    {"top_k": 3},
    {"weighting": "prob_gap"},
    {"temperature": 0.5},
    {"temperature": 2.0},
    {"temperature": 4.0},
    {"reduction": "sum"},
]


@pytest.mark.parametrize("name", ["grkd", "grkd_kd"])
def test_grkd_methods_pass_every_ablation_knob_through(name: str) -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(6, 10, generator=g, dtype=torch.float64)
    t = 3 * torch.randn(6, 10, generator=g, dtype=torch.float64)
    inputs = StepInputs(torch.zeros(6, 2, dtype=torch.float64), z, torch.arange(6), None, t)
    seen = set()
    for options in GRKD_ABLATION:
        terms = build_method(name, **options)(inputs)
        torch.testing.assert_close(terms["grkd"], grkd_loss(z, t, **options), rtol=1e-12, atol=0)
        seen.add(round(float(terms["grkd"]), 8))
    assert len(seen) == len(GRKD_ABLATION)  # each variant gives its own value: no knob ignored
    with pytest.raises(ValueError, match="reduction"):
        build_method(name, reduction="none")
