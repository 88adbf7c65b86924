"""Any classifier in one line: :func:`wrap_classifier` gives it the ``(features, logits)`` contract.

:class:`WrappedClassifier` hooks the final ``nn.Linear`` (the *head*; each head of a model with
two) and runs the *unchanged* model once: ``logits = model(x)`` bit for bit (same dropout draws
and BN updates, under autocast, ``channels_last``, DDP and ``torch.compile``), ``features`` = the
head's input (timm's *pre-logits*). Each forward checks that every head ran once and that the
model returned its output, or says what to pass. The head: ``head=`` by name or module, else
timm's ``get_classifier()``, else the last ``nn.Linear``; ``docs/models.md`` says how each
tested architecture is read. ``wrapped.model`` is the original module (state dict under
``model.``); :meth:`WrappedClassifier.unwrap` removes the hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

__all__ = ["WrappedClassifier", "wrap_classifier"]


class WrappedClassifier(nn.Module):
    """A classifier ``model(x) -> logits`` seen as ``(features, logits)``; build with
    :func:`wrap_classifier`. ``head_names``: the head(s) whose input is read (``head_name`` if one);
    ``feature_dim`` ``D``, ``num_classes`` ``C``.
    """

    feature_dim: int
    num_classes: int

    def __init__(
        self,
        model: nn.Module,
        head_names: str | Sequence[str],
        *,
        feature_dim: int,
        num_classes: int,
        from_timm: bool = False,
    ) -> None:
        super().__init__()
        self._from_timm = bool(from_timm)  # the heads came from timm's get_classifier()
        self.model = model
        self.head_names = (head_names,) if isinstance(head_names, str) else tuple(head_names)
        if not self.head_names:
            raise ValueError("a WrappedClassifier needs at least one head")
        self.head_name = self.head_names[0] if len(self.head_names) == 1 else None
        self.feature_dim = int(feature_dim)
        self.num_classes = int(num_classes)
        self._active = False  # the hooks record only while this wrapper runs the model
        self._seen: list[tuple[nn.Module, Tensor, Any]] = []
        self._handles = [
            model.get_submodule(name).register_forward_hook(self._record)
            for name in self.head_names
        ]

    @property
    def heads(self) -> tuple[nn.Module, ...]:
        """The head module(s), in the order of ``head_names``."""
        return tuple(self.model.get_submodule(name) for name in self.head_names)

    @property
    def fc(self) -> nn.Module:
        """The head (as ``FeatureClassifier.fc``): ``logits == fc(features)`` for a linear head."""
        if self.head_name is None:
            raise TypeError(
                f"{type(self.model).__name__} has {len(self.head_names)} heads "
                f"{list(self.head_names)} whose outputs are combined into the logits, so no "
                "single layer maps the features to the logits; use .heads"
            )
        return self.model.get_submodule(self.head_name)

    def _record(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._active:
            self._seen.append((module, args[0], output))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C_in, H, W)`` images -> ``(features (B, D), logits (B, C))``."""
        self._active = True  # _seen is empty: the last forward cleared it
        try:
            logits = self.model(x)
            seen = list(self._seen)
        finally:
            self._active = False
            self._seen.clear()
        model_name = type(self.model).__name__
        if not isinstance(logits, Tensor):
            raise TypeError(
                f"{model_name} returned {type(logits).__name__}, not a logits tensor; "
                "wrap_classifier needs a model whose forward returns (B, C) logits (e.g. build "
                "GoogLeNet/Inception with aux_logits=False, call "
                "model.set_distilled_training(False) on a distilled timm model, or call it in "
                "eval mode)"
            )
        inputs = []
        for name, head in zip(self.head_names, self.heads, strict=True):
            runs = [(inp, out) for module, inp, out in seen if module is head]
            if len(runs) != 1:
                raise ValueError(
                    f"the head {name!r} ran {len(runs)} times in one forward pass; "
                    "wrap_classifier needs the final layer that computes the logits once: pass "
                    "head='<the name of the final nn.Linear in model.named_modules()>'"
                )
            inputs.append(runs[0][0])
            output = runs[0][1]
        if len(self.heads) == 1 and not _is_returned(output, logits):
            raise ValueError(
                f"{model_name} does not return the output of its classifier "
                f"{self.head_name!r} (from get_classifier()) as its logits: something is added "
                "after it (VOLO adds its aux_head's token scores), so no layer's input "
                "determines the logits. Build the model without that term (VOLO: "
                "timm.create_model(..., use_aux_head=False)), or write a module returning "
                "(features, logits) like relkd_tutorial.models.FeatureClassifier"
                if self._from_timm
                else f"{model_name} does not return the output of {self.head_name!r} as its "
                "logits (something runs after that layer, or the logits combine several layers), "
                "so it is not the final classifier: pass head='<name of the nn.Linear whose "
                "output the model returns>'; for a timm model whose logits average two heads (a "
                "distilled model), leave head=None"
            )
        features = _pre_logits(inputs)
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
        if not isinstance(features, Tensor) or features.dim() != 2 or logits.dim() != 2:
            raise ValueError(
                f"the head's input must be (B, D) pooled features and the logits (B, C), got "
                f"{shape} and {tuple(logits.shape)}; the head found ({self.head_names}) is "
                "applied to a feature map or tokens, not a pooled vector: pass head='<name of "
                "the final nn.Linear>'"
            )
        if features.shape[1] != self.feature_dim or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self.model).__name__} gave features {shape} and logits "
                f"{tuple(logits.shape)}, but its head(s) {list(self.head_names)} declare "
                f"feature_dim={self.feature_dim} and num_classes={self.num_classes}"
            )
        return features, logits

    def unwrap(self) -> nn.Module:
        """Remove the hooks and return the original model (trained in place)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.model

    def extra_repr(self) -> str:
        return (
            f"heads={list(self.head_names)}, feature_dim={self.feature_dim}, "
            f"num_classes={self.num_classes}"
        )


def _is_returned(output: Any, logits: Tensor) -> bool:
    """The model returned the head's output: the same tensor, or a ``(B, C, 1, 1)`` map flattened."""
    return output is logits or (
        isinstance(output, Tensor)
        and output.dim() == 4
        and tuple(output.shape[2:]) == (1, 1)
        and tuple(output.shape[:2]) == tuple(logits.shape)
    )


def _pre_logits(inputs: list[Any]) -> Any:
    """The features from the heads' inputs, as timm's ``pre_logits`` combines them: one head's
    input; several: the one tensor they all read, else the mean of equal widths (DeiT's class and
    distillation tokens), else the concatenation (CrossViT's branches). ``(B, D, 1, 1)`` is
    flattened.
    """
    if all(t is inputs[0] for t in inputs):
        inputs = inputs[:1]
    flat = [
        t.flatten(1) if isinstance(t, Tensor) and t.dim() == 4 and t.shape[2:] == (1, 1) else t
        for t in inputs
    ]
    if len(flat) == 1 or any(not isinstance(t, Tensor) or t.dim() != 2 for t in flat):
        return flat[0]  # one head, or refused by forward with the shape
    if all(t.shape == flat[0].shape for t in flat):
        return sum(flat[1:], flat[0]) / len(flat)
    return torch.cat(flat, dim=1)


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
    listed = ", ".join(repr(n) for n in linears[-5:])
    return ValueError(
        f"wrap_classifier could not find the head of {type(model).__name__}: {why}. Pass "
        "head='<name>' with the name (as in model.named_modules()) of the final nn.Linear whose "
        "output the model returns as its logits, e.g. head='fc' (ResNet), "
        f"head='classifier.3' (MobileNetV3), head='heads.head' (ViT). Its nn.Linear layers: "
        f"{listed}"
    )


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is module), None)


def _named_head(model: nn.Module, head: str | nn.Module) -> str:
    """The name of the layer passed as ``head=`` (it must be an ``nn.Linear`` of ``model``)."""
    if not isinstance(head, (str, nn.Module)):
        raise TypeError(f"head must be a submodule name, a module or None, got {head!r}")
    name = _name_of(model, head) if isinstance(head, nn.Module) else head
    if name is None:
        raise ValueError("head= is a module that is not part of the model")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise _no_head_error(model, f"it has no submodule {name!r}") from None
    if not isinstance(module, nn.Linear):
        raise _no_head_error(model, f"{name!r} is a {type(module).__name__}, not an nn.Linear")
    return name


def _timm_heads(model: nn.Module, classifier: Any) -> tuple[str, ...]:
    """The names of the module(s) ``model.get_classifier()`` returned: one ``nn.Linear``, the last
    ``nn.Linear`` of a classifier block, a 1x1 convolution, or two heads (:func:`_pre_logits`)."""
    found = (
        tuple(classifier) if isinstance(classifier, (tuple, list, nn.ModuleList)) else (classifier,)
    )
    kinds = ", ".join(type(m).__name__ for m in found) or "nothing"
    if not found or any(not isinstance(m, nn.Module) for m in found):
        raise _no_head_error(model, f"get_classifier() returned {kinds}, not modules")
    if any(isinstance(m, nn.Identity) for m in found):
        raise ValueError(
            f"{type(model).__name__} has no classifier: get_classifier() returned {kinds}, which "
            f"is what a timm model built with num_classes=0 has (its num_classes is "
            f"{getattr(model, 'num_classes', '?')!r}). Build it with num_classes=<number of "
            "classes> (timm.create_model(name, num_classes=10)), or call "
            "model.reset_classifier(<number of classes>)"
        )
    if len(found) == 1 and not isinstance(found[0], nn.Linear):
        inside = [m for m in found[0].modules() if isinstance(m, nn.Linear)]
        if inside:  # a classifier block that pools, normalises, ... then applies an nn.Linear
            found = (inside[-1],)
    names = tuple(_name_of(model, m) for m in found)
    if any(n is None or n == "" for n in names):
        raise _no_head_error(model, "get_classifier() returned a module that is not a submodule")
    return names  # type: ignore[return-value]


def _width(module: nn.Module, *, inputs: bool) -> int | None:
    """A head's input width (``inputs``) or output width: its first / last layer that states one."""
    layers = list(module.modules())
    for m in layers if inputs else reversed(layers):
        if isinstance(m, nn.Linear):
            return m.in_features if inputs else m.out_features
        if isinstance(m, nn.Conv2d):
            return m.in_channels if inputs else m.out_channels
        if inputs and isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return m.num_features
        if inputs and isinstance(m, nn.LayerNorm):
            return int(m.normalized_shape[-1])
    return None


def wrap_classifier(model: nn.Module, head: str | nn.Module | None = None) -> WrappedClassifier:
    """Wrap a classifier ``model(x) -> logits`` so that it returns
    ``(features (B, D), logits (B, C))``.

    ``features`` is the input of the final linear layer (timm's pre-logits), ``logits`` is
    ``model(x)``, bit-identical (see the module docstring). ``model``: a torchvision or timm
    classifier (``num_classes > 0``) or any module ending in an ``nn.Linear`` whose output it
    returns; ``head``: that layer, by name in ``model.named_modules()`` (``"fc"``,
    ``"classifier.3"``, ``"heads.head"``) or as the module, found from the structure when ``None``.
    Raises ``ValueError`` (no head found, not an ``nn.Linear``, a timm model without classifier; the
    message says what to pass) or ``TypeError`` (not a module).

    Example:
        >>> import torchvision
        >>> student = wrap_classifier(torchvision.models.mobilenet_v3_small(num_classes=10))
        >>> features, logits = student(torch.randn(2, 3, 64, 64))  # (2, 576), (2, 10)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, WrappedClassifier):
        raise TypeError("model is already wrapped (a WrappedClassifier)")
    get_classifier = getattr(model, "get_classifier", None)
    if head is not None:
        names: tuple[str, ...] = (_named_head(model, head),)
    elif callable(get_classifier):  # timm's API
        names = _timm_heads(model, get_classifier())
    else:
        linears = _linear_names(model)
        if not linears:
            raise _no_head_error(model, "it has no nn.Linear layer")
        names = (linears[-1],)
    heads = [model.get_submodule(n) for n in names]
    lazy = [n for n, h in zip(names, heads, strict=True) if any(map(is_lazy, h.parameters()))]
    if lazy:
        raise ValueError(
            f"the head(s) {lazy} of {type(model).__name__} are lazy layers whose shapes are not "
            "known yet: run one forward pass (model(example_batch)) before wrap_classifier"
        )
    widths = [_width(h, inputs=True) for h in heads]
    classes = {_width(h, inputs=False) for h in heads}
    if None in widths or None in classes or len(classes) != 1:
        raise _no_head_error(
            model, f"the widths of its head(s) {list(names)} cannot be read from their layers"
        )
    feature_dim = widths[0] if len(set(widths)) == 1 else sum(widths)  # type: ignore[arg-type]
    return WrappedClassifier(
        model,
        names,
        feature_dim=feature_dim,  # type: ignore[arg-type]
        num_classes=classes.pop(),  # type: ignore[arg-type]
        from_timm=head is None and callable(get_classifier),
    )
