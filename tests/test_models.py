"""Models: the (features, logits) contract, shapes, parameter counts against published numbers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relkd_tutorial.models import (
    CIFAR_MODEL_NAMES,
    CPU_MODEL_NAMES,
    MODEL_NAMES,
    available_models,
    build_model,
    count_parameters,
)

# Published parameter counts (millions) for 100 classes: RepDistiller / CRD (Tian et al. 2020;
# the GPU setting of docs/benchmark.md). Our count must round to the same 0.01M.
PUBLISHED_M = {"resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_16_2": 0.70, "wrn_40_2": 2.26}
FEATURE_DIM = {
    "teacher_cnn": 128,
    "student_cnn_s": 32,
    "student_cnn_m": 64,
    "resnet8x4": 256,
    "resnet32x4": 256,
    "wrn_16_2": 128,
    "wrn_40_2": 128,
}


def test_names():
    assert available_models() == list(MODEL_NAMES)
    assert set(MODEL_NAMES) == set(CPU_MODEL_NAMES) | set(CIFAR_MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet18")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("teacher_cnn", num_classes=0)


@pytest.mark.parametrize("name", CIFAR_MODEL_NAMES)
def test_cifar_nets_match_published_parameter_counts_and_shapes(name):
    model = build_model(name, num_classes=100, in_channels=3, seed=0)
    assert round(count_parameters(model) / 1e6, 2) == PUBLISHED_M[name]
    assert model.feature_dim == FEATURE_DIM[name] and model.num_classes == 100
    features, logits = model.eval()(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, FEATURE_DIM[name]) and logits.shape == (2, 100)


@pytest.mark.parametrize("name", CPU_MODEL_NAMES)
@pytest.mark.parametrize("in_channels,size", [(1, 28), (3, 32)])
def test_cpu_nets_shapes(name, in_channels, size):
    model = build_model(name, num_classes=10, in_channels=in_channels, seed=0)
    features, logits = model(torch.randn(4, in_channels, size, size))
    assert features.shape == (4, FEATURE_DIM[name]) and logits.shape == (4, 10)
    assert model.feature_dim == FEATURE_DIM[name] and model.num_classes == 10


def test_cpu_net_sizes():
    """Teacher ~0.2-0.3M parameters; students 5-50x smaller (the brief's CPU budget)."""
    n = {name: count_parameters(build_model(name)) for name in CPU_MODEL_NAMES}
    assert 200_000 <= n["teacher_cnn"] <= 300_000
    for s in ("student_cnn_s", "student_cnn_m"):
        assert 5 <= n["teacher_cnn"] / n[s] <= 50
    assert n["student_cnn_s"] < n["student_cnn_m"]


@pytest.mark.parametrize("name", ["teacher_cnn", "student_cnn_s", "resnet8x4", "wrn_16_2"])
def test_features_are_the_pooled_penultimate_and_logits_are_fc_of_them(name):
    in_channels = 3 if name in CIFAR_MODEL_NAMES else 1
    model = build_model(name, num_classes=7, in_channels=in_channels, seed=0).eval()
    x = torch.randn(3, in_channels, 32, 32)
    fmaps = []
    model.body.register_forward_hook(lambda m, i, o: fmaps.append(o))
    with torch.no_grad():
        features, logits = model(x)
    (fmap,) = fmaps  # (B, D, h, w), the last feature map
    assert fmap.shape[1] == model.feature_dim
    assert bool((fmap >= 0).all())  # after the last ReLU (BN-ReLU for the WRN)
    torch.testing.assert_close(features, fmap.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, F.linear(features, model.fc.weight, model.fc.bias))


def test_wrn_feature_follows_the_final_bn_relu():
    model = build_model("wrn_16_2", 10, 3, seed=0)
    last_two = list(model.body.children())[-2:]
    assert isinstance(last_two[0], torch.nn.BatchNorm2d) and isinstance(last_two[1], torch.nn.ReLU)


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("student_cnn_s", seed=5)
    after = torch.rand(3)
    b = build_model("student_cnn_s", seed=5)
    c = build_model("student_cnn_s", seed=6)
    assert torch.equal(expected, after)  # building under a seed did not consume the global RNG
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_channels_last_gives_the_same_outputs():
    model = build_model("student_cnn_m", seed=0).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        f1, z1 = model(x)
        model = model.to(memory_format=torch.channels_last)
        f2, z2 = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(f1, f2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z1, z2, rtol=1e-4, atol=1e-5)
