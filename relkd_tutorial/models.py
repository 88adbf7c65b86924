"""Teacher and student networks. Every model returns ``(features, logits)`` (``docs/models.md``).

``features`` ``(B, D)``: the last feature map after its last ReLU, globally average-pooled;
``logits = model.fc(features)``; ``model.feature_dim == D``. CPU-sized nets for 28x28x1 and
32x32x3 inputs (``teacher_cnn``, VGG-style with BN, the notebooks' shipped teacher;
``student_cnn_s``, ``student_cnn_m``) and the CRD/RepDistiller CIFAR nets (Tian et al., ICLR 2020)
built from their published descriptions: ``resnet8x4``, ``resnet32x4`` (post-activation CIFAR
ResNet, He et al. 2016), ``wrn_16_2``, ``wrn_40_2`` (pre-activation Wide ResNet, Zagoruyko &
Komodakis 2016). Global average pooling (the CIFAR nets' 8x8 pool on 32x32 inputs, any size works;
choice); Kaiming-normal convolutions (fan-out), BN 1 / 0, PyTorch's default linear layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FeatureClassifier(nn.Module):
    """Base class: a feature extractor ``body`` followed by one linear layer ``fc``.

    Subclasses build ``self.body`` (image -> last feature map, after its last ReLU) and set
    ``feature_dim``; ``forward`` pools, flattens and classifies, so that ``logits == fc(features)``
    holds by construction.
    """

    feature_dim: int
    num_classes: int

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self.fc = nn.Linear(feature_dim, num_classes)
        for m in self.modules():  # Kaiming-normal convolutions (fan-out), BN 1 / 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C_in, H, W)`` -> ``(features (B, D), logits (B, num_classes))``."""
        fmap = self.body(x)  # (B, D, h, w), after the last ReLU
        features = F.adaptive_avg_pool2d(fmap, 1).flatten(1)  # (B, D) pooled penultimate features
        return features, self.fc(features)  # (B, D), (B, num_classes)


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: BN follows), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class PlainCNN(FeatureClassifier):
    """A VGG-style stack: groups of 3x3 conv-BN-ReLU layers, 2x2 max-pool between groups.

    ``widths`` lists one tuple of channel counts per group, e.g. ``((8,), (16,), (32,))`` is three
    single-conv groups. The feature is the last group's output (after its ReLU), globally
    average-pooled: ``D = widths[-1][-1]``. For 28x28 inputs and three groups the last map is 7x7.
    """

    def __init__(
        self, widths: tuple[tuple[int, ...], ...], num_classes: int = 10, in_channels: int = 1
    ) -> None:
        layers: list[nn.Module] = []
        c = in_channels
        for g, group in enumerate(widths):
            if g > 0:
                layers.append(nn.MaxPool2d(2))  # halve the resolution between groups
            for width in group:
                layers.append(conv_bn_relu(c, width))
                c = width
        super().__init__(nn.Sequential(*layers), feature_dim=c, num_classes=num_classes)


class BasicBlock(nn.Module):
    """Post-activation residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is the identity, or a 1x1 conv + BN when the stride or width changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stages(
    layers: list[nn.Module], block: Callable[[int, int, int], nn.Module], c: int,
    widths: tuple[int, ...], n: int,
) -> int:  # fmt: skip
    """Append ``n`` blocks per stage of ``widths`` to ``layers`` (strides 1, 2, 2: a stage's first
    block downsamples) and return the last width."""
    for s, width in enumerate(widths):
        for b in range(n):
            layers.append(block(c, width, 2 if (s > 0 and b == 0) else 1))
            c = width
    return c


class CifarResNet(FeatureClassifier):
    """CIFAR ResNet of depth ``6n + 2`` (He et al. 2016, §4.2; RepDistiller ``resnetD``).

    Stem: 3x3 conv to 32 channels + BN + ReLU. Three stages of ``n`` BasicBlocks with widths
    64, 128, 256 (the "x4" nets) and strides 1, 2, 2. Feature: the last block's output (after its
    ReLU), pooled: ``D = 256``. ``resnet8x4``: n=1; ``resnet32x4``: n=5.
    """

    def __init__(self, depth: int, num_classes: int = 100, in_channels: int = 3) -> None:
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        layers: list[nn.Module] = [conv_bn_relu(in_channels, 32)]  # the stem
        c = _stages(layers, BasicBlock, 32, (64, 128, 256), (depth - 2) // 6)
        super().__init__(nn.Sequential(*layers), feature_dim=c, num_classes=num_classes)


class PreActBlock(nn.Module):
    """Pre-activation block: ``conv(relu(bn(conv(relu(bn(x)))))) + shortcut``.

    When the width or stride changes, the shortcut is a 1x1 conv applied to the pre-activated
    input ``relu(bn(x))`` (He et al. 2016b, "Identity mappings"); otherwise it is ``x`` itself.
    Dropout is 0, as in the benchmark, so it is omitted.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(FeatureClassifier):
    """WRN-``depth``-``k`` (Zagoruyko & Komodakis 2016), ``n = (depth - 4) / 6`` blocks per stage.

    Stem: 3x3 conv to 16 channels. Stages of widths ``16k, 32k, 64k`` with strides 1, 2, 2. The
    final BN-ReLU belongs to the body, so the feature is post-activation: ``D = 64k``.
    """

    def __init__(self, depth: int, k: int, num_classes: int = 100, in_channels: int = 3) -> None:
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)]
        c = _stages(layers, PreActBlock, 16, (16 * k, 32 * k, 64 * k), (depth - 4) // 6)
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]  # final BN-ReLU
        super().__init__(nn.Sequential(*layers), feature_dim=c, num_classes=num_classes)


_BUILDERS: dict[str, Callable[[int, int], FeatureClassifier]] = {
    "teacher_cnn": lambda c, i: PlainCNN(((32, 32), (64, 64), (128, 128)), c, i),
    "student_cnn_s": lambda c, i: PlainCNN(((8,), (16,), (32,)), c, i),
    "student_cnn_m": lambda c, i: PlainCNN(((16,), (32,), (64,)), c, i),
    "resnet8x4": lambda c, i: CifarResNet(8, c, i),
    "resnet32x4": lambda c, i: CifarResNet(32, c, i),
    "wrn_16_2": lambda c, i: WideResNet(16, 2, c, i),
    "wrn_40_2": lambda c, i: WideResNet(40, 2, c, i),
}

#: Names accepted by :func:`build_model`: the CPU-sized nets first, then the CIFAR benchmark nets.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
CPU_MODEL_NAMES: tuple[str, ...] = ("teacher_cnn", "student_cnn_s", "student_cnn_m")
CIFAR_MODEL_NAMES: tuple[str, ...] = ("resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_2")


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODEL_NAMES)


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 1, seed: int | None = None
) -> FeatureClassifier:
    """Build a model of :data:`MODEL_NAMES`:
    ``forward(x) -> (features (B, D), logits (B, num_classes))``; ``in_channels`` 1 (Fashion-MNIST)
    or 3. ``seed``: initialised under ``torch.manual_seed(seed)`` in a forked RNG (independent of,
    and not disturbing, the global RNG).
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return _BUILDERS[name](num_classes, in_channels)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
