"""``wrap_classifier`` on real timm models (built with ``pretrained=False``: nothing is downloaded).

The promise, per architecture: the wrapped model's logits are ``model(x)`` bit for bit in eval
*and* train mode (dropout and stochastic depth on, under the same RNG state, which both leave in
the same place; BatchNorm statistics updated once, as by ``model(x)``), and the features are
what the table in ``docs/models.md`` says: timm's pre-logits
(``model.forward_head(model.forward_features(x), pre_logits=True)``), or for a single linear head
the head's input, with ``head(features) == logits``. Models that cannot be wrapped are refused
with a message that says what to do.

:data:`ARCHS` runs in CI (tiny inputs, one forward per mode, about ten seconds on one core);
:data:`MORE_ARCHS` are heavier models checked the same way with ``RELKD_TIMM_ALL=1 python -m
pytest tests/test_timm.py``. ``docs/models.md`` lists both; :func:`test_the_docs_table_lists_every_architecture`
keeps it in step.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from relkd_tutorial import TrainConfig, build_method, fit, wrap_classifier

timm = pytest.importorskip("timm")

REPO = Path(__file__).resolve().parents[1]

# (timm name, input side, how the features are read)
#   pre-logits: one nn.Linear head, its input == timm's pre-logits, head(features) == logits
#   conv:       a 1x1 convolution classifier on the pooled map; its input, flattened
#   after-norm: one nn.Linear after the head's own BatchNorm; its input (not timm's pre-logits)
#   shared:     two heads (class + distillation) reading one pooled vector: that vector
#   mean:       two heads reading two tokens of one width: their mean (timm's pre-logits)
#   concat:     one head per branch, different widths: their concatenation (timm's pre-logits)
ARCHS = [
    # CNNs
    ("test_resnet", 32, "pre-logits"),
    ("resnet10t", 32, "pre-logits"),
    ("resnest14d", 32, "pre-logits"),
    ("test_byobnet", 32, "pre-logits"),
    ("test_nfnet", 32, "pre-logits"),
    ("regnetx_002", 32, "pre-logits"),
    ("test_efficientnet", 32, "pre-logits"),
    ("mobilenetv3_small_050", 32, "pre-logits"),
    ("mobilenetv4_conv_small_050", 32, "pre-logits"),
    ("lcnet_050", 32, "pre-logits"),
    ("ghostnet_050", 32, "pre-logits"),
    ("rexnet_100", 32, "pre-logits"),
    ("hgnetv2_b0", 32, "pre-logits"),
    ("densenet121", 32, "pre-logits"),
    ("dla46_c", 32, "conv"),
    ("dpn48b", 32, "conv"),
    ("test_convnext", 32, "pre-logits"),
    ("inception_next_atto", 32, "pre-logits"),  # MLP head: fc1, act, norm, drop, fc2
    ("starnet_s050", 32, "pre-logits"),
    ("test_mambaout", 32, "pre-logits"),
    ("edgenext_xx_small", 64, "pre-logits"),
    # hybrids (convolution + attention)
    ("test_coatnet", 64, "pre-logits"),
    ("test_maxvit", 64, "pre-logits"),
    ("mobilevit_xxs", 64, "pre-logits"),
    ("mobilevitv2_050", 64, "pre-logits"),
    ("efficientvit_b0", 32, "pre-logits"),  # MLP head: linear, norm, act, drop, linear
    ("efficientvit_m0", 32, "after-norm"),
    ("pvt_v2_b0", 64, "pre-logits"),
    # ViTs and MLP mixers
    ("test_vit", 32, "pre-logits"),
    ("test_vit_relpos", 32, "pre-logits"),
    ("convit_tiny", 32, "pre-logits"),
    ("xcit_nano_12_p16_224", 32, "pre-logits"),
    ("eva02_tiny_patch14_224", 28, "pre-logits"),
    ("gmlp_ti16_224", 32, "pre-logits"),
    ("resmlp_12_224", 32, "pre-logits"),
    # two heads
    ("deit_tiny_distilled_patch16_224", 32, "mean"),
    ("pit_ti_distilled_224", 32, "mean"),
    ("levit_128s", 32, "shared"),
    ("efficientformerv2_s0", 32, "shared"),
    ("swiftformer_xs", 32, "shared"),
    ("crossvit_tiny_240", 120, "concat"),
]

MORE_ARCHS = [
    ("efficientnet_b0", 32, "pre-logits"),
    ("mixnet_s", 32, "pre-logits"),
    ("nf_resnet26", 32, "pre-logits"),
    ("repvgg_a0", 32, "pre-logits"),
    ("mobileone_s0", 32, "pre-logits"),
    ("selecsls42b", 32, "pre-logits"),
    ("hrnet_w18_small", 32, "pre-logits"),
    ("inception_v3", 75, "pre-logits"),
    ("vgg11", 32, "pre-logits"),  # ConvMlp pre-logits: two convolutions, then the head
    ("poolformerv2_s12", 32, "pre-logits"),
    ("mambaout_femto", 32, "pre-logits"),
    ("fastvit_t8", 64, "pre-logits"),
    ("coatnet_pico_rw_224", 64, "pre-logits"),
    ("maxvit_rmlp_pico_rw_256", 64, "pre-logits"),
    ("tiny_vit_5m_224", 64, "pre-logits"),
    ("visformer_tiny", 64, "pre-logits"),
    ("gcvit_xxtiny", 64, "pre-logits"),
    ("swin_s3_tiny_224", 64, "pre-logits"),
    ("twins_svt_small", 64, "pre-logits"),
    ("hiera_tiny_224", 64, "pre-logits"),
    ("sequencer2d_s", 32, "pre-logits"),  # the ClassifierHead pools: its fc's input is read
    ("nest_tiny", 32, "pre-logits"),
    ("cait_xxs24_224", 32, "pre-logits"),
    ("coat_lite_mini", 32, "pre-logits"),
    ("deit3_small_patch16_224", 32, "pre-logits"),
    ("mixer_s32_224", 32, "pre-logits"),
    ("levit_conv_128s", 32, "shared"),
    ("efficientformer_l1", 224, "shared"),  # its attention biases fix the input at 224
    ("crossvit_9_240", 240, "concat"),
]


def create(name: str, side: int, **kwargs) -> nn.Module:
    """``timm.create_model(name, num_classes=10)`` with dropout and stochastic depth on where the
    architecture takes them, and the input side where it takes one (seeded)."""
    tries = (
        {"img_size": side, "drop_rate": 0.2, "drop_path_rate": 0.1},
        {"drop_rate": 0.2, "drop_path_rate": 0.1},
        {"img_size": side, "drop_rate": 0.2},
        {"drop_rate": 0.2},
    )
    for extra in tries:
        torch.manual_seed(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return timm.create_model(name, pretrained=False, num_classes=10, **extra, **kwargs)
        except TypeError:
            continue
    raise AssertionError(f"{name} takes none of {tries}")


def check_architecture(name: str, side: int, read: str) -> None:
    model = create(name, side)
    wrapped = wrap_classifier(model)
    heads = wrapped.heads
    assert len(heads) == (2 if read in ("shared", "mean", "concat") else 1), name
    assert wrapped.num_classes == 10
    x = torch.randn(2, 3, side, side)
    for train in (False, True):  # eval first: it also fills lazily computed buffers (ConViT)
        model.train(train)
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        torch.manual_seed(1)
        with torch.no_grad():
            expected = model(x)
        after = torch.rand(3)  # the RNG stream after the model's own forward
        by_model = {k: v.clone() for k, v in model.named_buffers()}
        if train:  # the same starting BatchNorm statistics for the wrapper's forward
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
        torch.manual_seed(1)
        with torch.no_grad():
            features, logits = wrapped(x)
        mode = "train" if train else "eval"
        assert torch.equal(logits, expected), f"{name} ({mode}): logits differ from model(x)"
        assert torch.equal(torch.rand(3), after), f"{name} ({mode}): a different number of draws"
        assert all(torch.equal(v, by_model[k]) for k, v in model.named_buffers()), (name, mode)
        assert features.shape == (2, wrapped.feature_dim), (name, mode, features.shape)
    model.eval()
    with torch.no_grad():
        features, logits = wrapped(x)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        if len(heads) == 1 and isinstance(heads[0], nn.Linear):
            assert torch.equal(wrapped.fc(features), logits), name
        if read == "after-norm":  # the head normalises timm's pre-logits before its linear layer
            assert not torch.equal(features, pre) and features.shape == pre.shape, name
        else:
            assert torch.equal(features, pre.flatten(1)), f"{name}: features != pre-logits"


@pytest.mark.parametrize("name, side, read", ARCHS, ids=[a[0] for a in ARCHS])
def test_a_timm_model_is_wrapped_with_bit_identical_logits_in_eval_and_train(name, side, read):
    check_architecture(name, side, read)


@pytest.mark.skipif(
    not os.environ.get("RELKD_TIMM_ALL"), reason="heavier models: set RELKD_TIMM_ALL=1 to run"
)
@pytest.mark.parametrize("name, side, read", MORE_ARCHS, ids=[a[0] for a in MORE_ARCHS])
def test_more_timm_models_on_request(name, side, read):
    check_architecture(name, side, read)


def test_the_families_cover_what_the_docs_promise():
    kinds = {read for _, _, read in ARCHS}
    assert {"pre-logits", "conv", "after-norm", "shared", "mean", "concat"} <= kinds
    assert len(ARCHS) >= 25 and len({n for n, _, _ in ARCHS + MORE_ARCHS}) == len(
        ARCHS + MORE_ARCHS
    )


def test_the_docs_table_lists_every_architecture():
    text = (REPO / "docs" / "models.md").read_text()
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M)
    assert sorted(listed) == sorted(n for n, _, _ in ARCHS + MORE_ARCHS)


def test_a_distilled_two_head_model_trains_in_fit_and_both_heads_learn():
    student = wrap_classifier(create("deit_tiny_distilled_patch16_224", 32))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 10
    before = {n: student.model.get_submodule(n).weight.clone() for n in ("head", "head_dist")}
    history = fit(
        student, build_method("ce"), DataLoader(TensorDataset(x, y), 8),
        TrainConfig(epochs=1, lr=0.05, device="cpu", progress=False),
    )  # fmt: skip
    assert len(history) == 1
    for n, w in before.items():
        assert not torch.equal(student.model.get_submodule(n).weight, w), n


def test_models_that_cannot_be_wrapped_are_refused_with_what_to_do():
    x = torch.randn(2, 3, 32, 32)
    # built without a classifier: the message says so and how to get one
    for name in ("test_resnet", "deit_tiny_distilled_patch16_224"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            headless = (
                timm.create_model(name, pretrained=False, num_classes=0, img_size=32)
                if ("deit" in name)
                else timm.create_model(name, pretrained=False, num_classes=0)
            )
        with pytest.raises(ValueError, match=r"no classifier.*num_classes=0.*num_classes=<number"):
            wrap_classifier(headless)
    # a distilled model in distilled-training mode returns two logits in train mode
    deit = create("deit_tiny_distilled_patch16_224", 32)
    deit.set_distilled_training(True)
    with pytest.raises(TypeError, match=r"returned tuple.*set_distilled_training\(False\)"):
        wrap_classifier(deit).train()(x)
    # naming one of two heads: the message says to leave head=None
    with pytest.raises(ValueError, match=r"average two heads.*leave head=None"):
        wrap_classifier(deit, head="head").eval()(x)
    # VOLO adds its auxiliary token head after the classifier: no layer determines the logits
    volo = timm.create_model("volo_d1_224", pretrained=False, num_classes=10, img_size=32)
    with pytest.raises(ValueError, match=r"aux_head.*use_aux_head=False"):
        wrap_classifier(volo).eval()(x)
    fixed = timm.create_model(
        "volo_d1_224", pretrained=False, num_classes=10, img_size=32, use_aux_head=False
    ).eval()
    assert torch.equal(wrap_classifier(fixed)(x)[1], fixed(x))
    # fc is undefined for two heads, and says why
    with pytest.raises(TypeError, match=r"2 heads \['head', 'head_dist'\].*use \.heads"):
        _ = wrap_classifier(create("levit_128s", 32)).fc
