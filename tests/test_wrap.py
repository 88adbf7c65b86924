"""``wrap_classifier``: torchvision (and timm-style) classifiers in the ``(features, logits)`` contract.

Offline (``weights=None``), small inputs. The promises: logits bit-identical to ``model(x)`` in
train and eval mode, features = the input of the final linear layer (width ``in_features``,
``fc(features) == logits``), gradients reach every parameter, the original's parameters and
state dict are kept, the head can be named, a headless model gets a clear error, and the wrapped
model trains in ``fit`` with every method.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from relkd_tutorial import (
    ImageSet,
    TensorLoader,
    TrainConfig,
    WrappedClassifier,
    available_methods,
    build_method,
    fit,
    wrap_classifier,
)


def tiny_vit(num_classes: int = 10) -> VisionTransformer:
    return VisionTransformer(
        image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=num_classes,
    )  # fmt: skip


# (name, builder, expected head, input side)
ARCHS = [
    ("resnet18", lambda: tvm.resnet18(num_classes=10), "fc", 32),
    ("mobilenet_v3_small", lambda: tvm.mobilenet_v3_small(num_classes=10), "classifier.3", 32),
    ("efficientnet_b0", lambda: tvm.efficientnet_b0(num_classes=10), "classifier.1", 32),
    ("convnext_tiny", lambda: tvm.convnext_tiny(num_classes=10), "classifier.2", 32),
    ("regnet_x_400mf", lambda: tvm.regnet_x_400mf(num_classes=10), "fc", 32),
    ("densenet121", lambda: tvm.densenet121(num_classes=10), "classifier", 32),
    ("vit_tiny", tiny_vit, "heads.head", 32),
]


def build(builder, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return builder()


@pytest.mark.parametrize("name, builder, head, side", ARCHS, ids=[a[0] for a in ARCHS])
def test_logits_are_bit_identical_features_feed_the_head_and_gradients_reach_every_parameter(
    name, builder, head, side
):
    model = build(builder)
    wrapped = wrap_classifier(model)
    assert wrapped.head_name == head
    linear = model.get_submodule(head)
    assert (wrapped.feature_dim, wrapped.num_classes) == (linear.in_features, 10)
    x = torch.randn(4, 3, side, side)
    for mode in ("eval", "train"):
        model.train(mode == "train")
        torch.manual_seed(1)  # the same dropout / stochastic-depth draws for both calls
        with torch.no_grad():
            expected = model(x)
        torch.manual_seed(1)
        features, logits = wrapped(x)
        assert torch.equal(logits, expected), (name, mode)
        assert features.shape == (4, linear.in_features), (name, mode)
        assert torch.equal(wrapped.fc(features), logits), (name, mode)
    # train mode, with gradients: every parameter of the original model gets one
    (features.square().mean() + F.cross_entropy(logits, torch.arange(4))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert float(sum(p.grad.abs().sum() for p in model.parameters())) > 0


def test_the_wrapper_keeps_the_original_parameters_and_state_dict():
    model = build(lambda: tvm.mobilenet_v3_small(num_classes=5))
    wrapped = wrap_classifier(model)
    assert wrapped.model is model
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in model.parameters()]
    original = model.state_dict()
    state = wrapped.state_dict()
    assert list(state) == ["model." + k for k in original]
    assert all(state["model." + k] is not None and torch.equal(state["model." + k], v)
               for k, v in original.items())  # fmt: skip
    # a state dict saved from the wrapper loads back into the plain model and vice versa
    other = wrap_classifier(build(lambda: tvm.mobilenet_v3_small(num_classes=5), seed=9))
    other.load_state_dict(state)
    plain = build(lambda: tvm.mobilenet_v3_small(num_classes=5), seed=8)
    plain.load_state_dict({k.removeprefix("model."): v for k, v in other.state_dict().items()})
    x = torch.randn(2, 3, 32, 32)
    for m in (model, other, plain):
        m.eval()
    assert torch.equal(other(x)[1], model(x)) and torch.equal(plain(x), model(x))
    # the original is trained in place and unwrap() returns it without the hook
    head = model.get_submodule("classifier.3")
    assert len(head._forward_hooks) == 1
    assert wrapped.unwrap() is model and len(head._forward_hooks) == 0


def test_head_by_name_or_module_and_clear_errors_for_a_wrong_one():
    model = build(lambda: tvm.mobilenet_v3_small(num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    by_name = wrap_classifier(model, head="classifier.3")
    assert by_name.head_name == "classifier.3" and by_name.feature_dim == 1024
    by_module = wrap_classifier(model, head=model.classifier[3])
    assert by_module.head_name == "classifier.3"
    assert torch.equal(by_name(x)[1], model(x)) and torch.equal(by_module(x)[0], by_name(x)[0])
    with pytest.raises(ValueError, match=r"no submodule 'classifier\.9'.*'classifier\.3'"):
        wrap_classifier(model, head="classifier.9")
    with pytest.raises(ValueError, match=r"'classifier\.1' is a Hardswish, not an nn\.Linear"):
        wrap_classifier(model, head="classifier.1")
    with pytest.raises(ValueError, match="not part of the model"):
        wrap_classifier(model, head=nn.Linear(3, 4))
    with pytest.raises(TypeError, match="head must be"):
        wrap_classifier(model, head=3)  # type: ignore[arg-type]
    # a linear layer that is not the final one: its output is not what the model returns
    inner = wrap_classifier(model, head="classifier.0")
    with pytest.raises(ValueError, match="does not return the output of 'classifier.0'"):
        inner(x)


def test_a_model_without_a_linear_head_gets_an_error_that_says_what_to_do():
    with pytest.raises(ValueError, match="SqueezeNet.*no nn.Linear.*1x1 convolution.*FeatureClass"):
        wrap_classifier(tvm.squeezenet1_1(num_classes=10))
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="could not find the head of Sequential"):
        wrap_classifier(headless)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        wrap_classifier(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="already wrapped"):
        wrap_classifier(wrap_classifier(tiny_vit()))


class _TwiceHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.fc(x))


class _TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.fc(x), x


class _TokenHead(nn.Module):  # the "head" is applied to every token, not to a pooled vector
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


def test_forward_refuses_a_head_that_is_not_the_single_final_classifier():
    with pytest.raises(ValueError, match="ran 2 times"):
        wrap_classifier(_TwiceHead())(torch.randn(2, 4))
    with pytest.raises(TypeError, match="returned tuple, not a logits tensor"):
        wrap_classifier(_TupleOut())(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"must be \(B, D\) pooled features.*\(2, 5, 4\)"):
        wrap_classifier(_TokenHead())(torch.randn(2, 5, 4))


def test_calling_the_original_model_directly_records_nothing_and_copies_are_independent():
    model = build(tiny_vit).eval()
    wrapped = wrap_classifier(model)
    second = wrap_classifier(model)  # two wrappers on one model: each records only its own runs
    x = torch.randn(3, 3, 32, 32)
    for _ in range(3):
        model(x)
        second(x)
    assert wrapped._seen == [] and second._seen == []
    clone = copy.deepcopy(wrapped)
    assert torch.equal(clone(x)[1], model(x))
    with torch.no_grad():
        clone.model.heads.head.bias.add_(1.0)
    assert torch.equal(clone(x)[1], model(x) + 1.0)
    assert torch.equal(wrapped(x)[1], model(x))  # the original is untouched


def test_compile_autocast_and_channels_last_keep_the_logits():
    model = build(lambda: tvm.resnet18(num_classes=10)).eval()
    wrapped = wrap_classifier(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # dynamo traces the hook without a graph break (fullgraph); eager backend: no codegen
        compiled = torch.compile(wrapped, backend="eager", fullgraph=True)
        features, logits = compiled(x)
        assert torch.equal(logits, model(x)) and torch.equal(features, wrapped(x)[0])
        model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features, logits = wrapped(xc)
            expected = model(xc)
    assert logits.dtype == torch.bfloat16 and torch.equal(logits, expected)


# --------------------------------------------------------------------------------------------
# timm's API, mimicked (independent of timm; tests/test_timm.py runs the real models)
# --------------------------------------------------------------------------------------------


class FakeTimm(nn.Module):
    """timm's classifier API: ``forward_features``, ``forward_head(x, pre_logits)``,
    ``get_classifier()``, ``num_features``, ``num_classes``; ``forward`` is their composition.
    The classifier is registered *before* a trailing auxiliary ``nn.Linear`` so that "the last
    linear layer" would pick the wrong one: only ``get_classifier()`` finds the head."""

    def __init__(self, num_classes: int = 3, conv_head: bool = False) -> None:
        super().__init__()
        self.num_features, self.num_classes = 6, num_classes
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        if num_classes == 0:
            self.head: nn.Module = nn.Identity()
        elif conv_head:  # timm's ClassifierHead(use_conv=True): a 1x1 convolution, then flatten
            self.head = nn.Conv2d(6, num_classes, 1)
        else:
            self.head = nn.Linear(6, num_classes)
        self.head_drop = nn.Dropout(0.5)
        self.aux = nn.Linear(6, 2)  # not the classifier

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.stem(x))  # (B, 6, H, W)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(x.mean(dim=(2, 3)))  # (B, 6)
        if pre_logits:
            return x
        if isinstance(self.head, nn.Conv2d):
            return self.head(x[:, :, None, None]).flatten(1)
        return self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def test_a_timm_model_is_wrapped_through_get_classifier():
    model = build(FakeTimm)
    wrapped = wrap_classifier(model)
    assert wrapped.head_name == "head" and wrapped.feature_dim == 6 and wrapped.num_classes == 3
    x = torch.randn(4, 3, 8, 8)
    for mode in (False, True):  # eval, then train (head dropout on)
        model.train(mode)
        torch.manual_seed(2)
        expected = model(x)
        torch.manual_seed(2)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.manual_seed(2)
        features, logits = wrapped(x)
        assert torch.equal(logits, expected) and torch.equal(features, pre)
        assert torch.equal(model.head(features), logits)


def test_a_timm_model_with_a_conv_classifier_is_read_at_its_input_in_one_forward():
    model = build(lambda: FakeTimm(conv_head=True))
    wrapped = wrap_classifier(model)
    assert wrapped.head_name == "head" and (wrapped.feature_dim, wrapped.num_classes) == (6, 3)
    assert wrapped.fc is model.head
    x = torch.randn(4, 3, 8, 8)
    for mode in (False, True):  # train: the head dropout draws once, as in model(x)
        model.train(mode)
        torch.manual_seed(3)
        expected = model(x)
        after = torch.rand(1)  # the RNG stream after the model's own forward
        torch.manual_seed(3)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.manual_seed(3)
        features, logits = wrapped(x)
        assert torch.equal(logits, expected) and torch.equal(features, pre)
        assert torch.equal(torch.rand(1), after)
    with pytest.raises(ValueError, match="num_classes=0.*Build it with num_classes="):
        wrap_classifier(FakeTimm(num_classes=0))


# --------------------------------------------------------------------------------------------
# fit with every method, teacher and student both wrapped torchvision models
# --------------------------------------------------------------------------------------------


def tiny_images(n: int = 16, classes: int = 4) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes
    return ImageSet(images, labels, [f"c{k}" for k in range(classes)], "tiny", (0.5,) * 3,
                    (0.25,) * 3)  # fmt: skip


@pytest.fixture(scope="module")
def wrapped_teacher() -> WrappedClassifier:
    return wrap_classifier(build(lambda: tvm.resnet18(num_classes=4), seed=5)).eval()


@pytest.mark.parametrize("name", available_methods())
def test_fit_trains_a_wrapped_torchvision_student_with_every_method(name, wrapped_teacher):
    student = wrap_classifier(build(lambda: tvm.mobilenet_v3_small(num_classes=4), seed=6))
    kwargs = {}
    if name.startswith("rrd"):
        kwargs = {"student_dim": student.feature_dim, "teacher_dim": wrapped_teacher.feature_dim,
                  "embed_dim": 8, "queue_size": 16}  # fmt: skip
    method = build_method(name, **kwargs)
    data = tiny_images()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    history = fit(
        student, method, TensorLoader(data, 8, drop_last=True, augment=False, seed=1),
        TrainConfig(epochs=len(method.stages()), lr=0.01, device="cpu", progress=False, seed=0),
        teacher=wrapped_teacher,
        setup_loader=TensorLoader.for_evaluation(data, 8),
    )  # fmt: skip
    assert len(history) == len(method.stages())
    assert all(math.isfinite(r["loss"]) for r in history), history
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("model.features") for k in changed), name  # the body was trained
