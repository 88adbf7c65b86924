"""Any classifier in one line: :func:`wrap_classifier` gives it the ``(features, logits)`` contract.

Every loss and the training loop want a model that returns ``(features (B, D), logits (B, C))``
(see :mod:`relkd_tutorial.models`). A torchvision or timm classifier returns only the logits
``z = W f + b``, computed by a final ``nn.Linear`` (the *head*) from its input ``f``. That input
is the feature the package means: the pooled, flattened penultimate activation (after the
network's last normalisation, dropout or hidden layer, whatever feeds the head).

How it is read out, exactly. :class:`WrappedClassifier` registers a forward hook on the head that
keeps the head's input ``f`` and output while the wrapper runs the *unchanged* model:

    logits   = model(x)          # the model's own forward: bit-identical to calling it directly
    features = input of head     # (B, D), D = head.in_features

Nothing is recomputed, so ``logits`` is ``model(x)`` bit for bit, in training and evaluation
mode, under autocast, ``channels_last``, DDP and ``torch.compile``, and ``logits == head(features)``
holds by construction (as for :class:`~relkd_tutorial.models.FeatureClassifier`). Each forward
checks that the head ran exactly once and that the model returned the head's output unchanged
(the same tensor); otherwise the chosen layer is not the final classifier and a clear error says
what to pass.

Finding the head (choice: from the model's structure, checked at the first forward):

1. ``head=`` given: a submodule name such as ``"classifier.3"`` or ``"heads.head"`` (as in
   ``model.named_modules()``), or the module itself; it must be an ``nn.Linear``.
2. a timm model (it has ``get_classifier()``): the module it returns if that is an ``nn.Linear``,
   else the last ``nn.Linear`` inside it. If the classifier holds no ``nn.Linear`` (a 1x1
   convolution), the wrapper uses timm's documented split instead: ``features =
   model.forward_head(model.forward_features(x), pre_logits=True)``, ``logits =
   model.forward_head(model.forward_features(x))`` (one ``forward_features`` pass; logits equal
   ``model(x)`` for every timm model, whose ``forward`` is exactly that composition).
3. otherwise the last ``nn.Linear`` in ``model.modules()`` (registration order, which is forward
   order in torchvision's classifiers: ``fc``, ``classifier[-1]``, ``heads.head``, ``head``).

The wrapped model keeps the original's parameters (the very same tensors, in the same order) and
its state dict under the prefix ``model.``; ``wrapped.model`` is the original module, trained in
place, and :meth:`WrappedClassifier.unwrap` removes the hook and returns it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["WrappedClassifier", "wrap_classifier"]


class WrappedClassifier(nn.Module):
    """A classifier ``model(x) -> logits`` seen as ``(features, logits)``; build with
    :func:`wrap_classifier`.

    Attributes:
        model: the original module (its parameters are this module's parameters).
        head_name: the name of the final linear layer in ``model`` (``None`` on timm's
            ``forward_head`` path).
        feature_dim: ``D``, the head's ``in_features``.
        num_classes: ``C``, the head's ``out_features``.
    """

    feature_dim: int
    num_classes: int

    def __init__(
        self,
        model: nn.Module,
        head_name: str | None,
        *,
        feature_dim: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.head_name = head_name
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self._active = False  # the hook records only while this wrapper runs the model
        self._seen: list[tuple[Tensor, Any]] = []
        self._handle = None
        if head_name is not None:
            self._handle = model.get_submodule(head_name).register_forward_hook(self._record)

    @property
    def fc(self) -> nn.Module:
        """The final linear layer (as ``FeatureClassifier.fc``): ``logits == fc(features)``."""
        if self.head_name is None:
            return self.model.get_classifier()  # type: ignore[operator,no-any-return]
        return self.model.get_submodule(self.head_name)

    def _record(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._active:
            self._seen.append((args[0], output))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C_in, H, W)`` images -> ``(features (B, D), logits (B, C))``."""
        if self.head_name is None:  # timm's documented split (module docstring, case 2)
            pooled = self.model.forward_features(x)  # type: ignore[operator]
            features = self.model.forward_head(pooled, pre_logits=True)  # type: ignore[operator]
            logits = self.model.forward_head(pooled)  # type: ignore[operator]
            return self._checked(features, logits), logits
        self._seen.clear()
        self._active = True
        try:
            logits = self.model(x)
            seen = list(self._seen)
        finally:
            self._active = False
            self._seen.clear()
        if not isinstance(logits, Tensor):
            raise TypeError(
                f"{type(self.model).__name__} returned {type(logits).__name__}, not a logits "
                "tensor; wrap_classifier needs a model whose forward returns (B, C) logits (e.g. "
                "build GoogLeNet/Inception with aux_logits=False, or call it in eval mode)"
            )
        if len(seen) != 1:
            raise ValueError(
                f"the head {self.head_name!r} ran {len(seen)} times in one forward pass; "
                "wrap_classifier needs the final nn.Linear that computes the logits once: pass "
                "head='<its name in model.named_modules()>'"
            )
        features, head_output = seen[0]
        if head_output is not logits:
            raise ValueError(
                f"{type(self.model).__name__} does not return the output of {self.head_name!r} "
                "as its logits (something runs after that layer), so it is not the final "
                "classifier: pass head='<name of the nn.Linear whose output the model returns>'"
            )
        return self._checked(features, logits), logits

    def _checked(self, features: Any, logits: Tensor) -> Tensor:
        if not isinstance(features, Tensor) or features.dim() != 2 or logits.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise ValueError(
                f"the head's input must be (B, D) pooled features and the logits (B, C), got "
                f"{shape} and {tuple(logits.shape)}; the head found ({self.head_name!r}) is "
                "applied to a feature map or tokens, not a pooled vector: pass head='<name of "
                "the final nn.Linear>'"
            )
        return features

    def unwrap(self) -> nn.Module:
        """Remove the hook and return the original model (trained in place)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return self.model

    def extra_repr(self) -> str:
        return (
            f"head={self.head_name!r}, feature_dim={self.feature_dim}, "
            f"num_classes={self.num_classes}"
        )


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def _no_head_error(model: nn.Module, why: str) -> ValueError:
    linears = _linear_names(model)
    if not linears:
        return ValueError(
            f"wrap_classifier could not find the head of {type(model).__name__}: {why}, so its "
            "logits are not a linear layer of a feature vector (SqueezeNet's come from a 1x1 "
            "convolution). Append an nn.Linear classifier, or write a module returning "
            "(features, logits) like relkd_tutorial.models.FeatureClassifier"
        )
    listed = ", ".join(repr(n) for n in linears[-5:]) if linears else "none"
    return ValueError(
        f"wrap_classifier could not find the head of {type(model).__name__}: {why}. Pass "
        "head='<name>' with the name (as in model.named_modules()) of the final nn.Linear whose "
        "output the model returns as its logits, e.g. head='fc' (ResNet), "
        f"head='classifier.3' (MobileNetV3), head='heads.head' (ViT). Its nn.Linear layers: "
        f"{listed}"
    )


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if m is module:
            return name
    return None


def _resolve_head(model: nn.Module, head: str | nn.Module | None) -> str | None:
    """The head's name in ``model``; ``None`` selects timm's ``forward_head`` path."""
    if head is not None:
        if isinstance(head, nn.Module):
            name = _name_of(model, head)
            if name is None:
                raise ValueError("head= is a module that is not part of the model")
        elif isinstance(head, str):
            name = head
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise _no_head_error(model, f"it has no submodule {name!r}") from None
        else:
            raise TypeError(f"head must be a submodule name, a module or None, got {head!r}")
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise _no_head_error(model, f"{name!r} is a {type(module).__name__}, not an nn.Linear")
        return name
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # timm's API
        classifier = get_classifier()
        if isinstance(classifier, nn.Module) and not isinstance(classifier, nn.Identity):
            inside = _linear_names(classifier)
            if isinstance(classifier, nn.Linear) or inside:
                target = classifier if isinstance(classifier, nn.Linear) else None
                if target is None:
                    target = classifier.get_submodule(inside[-1])
                name = _name_of(model, target)
                if name is not None:
                    return name
            elif callable(getattr(model, "forward_head", None)) and callable(
                getattr(model, "forward_features", None)
            ):
                return None
        raise _no_head_error(
            model,
            f"get_classifier() returned {type(classifier).__name__} (a timm model built with "
            "num_classes=0 has no head: build it with num_classes > 0)",
        )
    linears = _linear_names(model)
    if not linears:
        raise _no_head_error(model, "it has no nn.Linear layer")
    return linears[-1]


def wrap_classifier(model: nn.Module, head: str | nn.Module | None = None) -> WrappedClassifier:
    """Wrap a classifier ``model(x) -> logits`` so that it returns ``(features, logits)``.

    ``features`` ``(B, D)`` is the input of the final linear layer, ``logits`` ``(B, C)`` is
    ``model(x)``, bit-identical (the model's own forward runs unchanged; see the module docstring
    for how the head is found and checked).

    Args:
        model: a torchvision classification model (ResNet, MobileNetV3, EfficientNet, ConvNeXt,
            ViT, RegNet, DenseNet, ...), a timm model, or any module whose forward ends in an
            ``nn.Linear`` whose output it returns.
        head: the final linear layer, by name in ``model.named_modules()`` (``"fc"``,
            ``"classifier.3"``, ``"heads.head"``) or as the module; found from the model's
            structure when ``None``.

    Returns:
        A :class:`WrappedClassifier` with ``feature_dim``, ``num_classes``, ``fc`` (the head) and
        ``model`` (the original module, sharing its parameters).

    Raises:
        ValueError: no head can be found, or the named layer is not an ``nn.Linear`` (the message
            lists the model's linear layers and says what to pass).
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> import torchvision
        >>> student = wrap_classifier(torchvision.models.mobilenet_v3_small(num_classes=10))
        >>> features, logits = student(torch.randn(2, 3, 64, 64))  # (2, 576), (2, 10)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, WrappedClassifier):
        raise TypeError("model is already wrapped (a WrappedClassifier)")
    name = _resolve_head(model, head)
    if name is None:  # timm without a linear classifier
        width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
        classes = getattr(model, "num_classes", None)
        if not isinstance(width, int) or not isinstance(classes, int):
            raise _no_head_error(
                model, "its classifier has no nn.Linear and it states no num_features/num_classes"
            )
        return WrappedClassifier(model, None, feature_dim=width, num_classes=classes)
    linear = model.get_submodule(name)
    assert isinstance(linear, nn.Linear)
    return WrappedClassifier(
        model, name, feature_dim=linear.in_features, num_classes=linear.out_features
    )
