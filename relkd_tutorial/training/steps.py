"""What the loop runs around the optimizer step: the forward, a step's inputs, evaluation.

The forward passes run under autocast (``bf16``, or ``fp16`` with a ``GradScaler`` on CUDA); the
*losses* are computed on float32 copies of the outputs (:func:`make_step_inputs`), so relational
losses never see bf16 distances. :func:`student_forward` and :func:`make_step_inputs` are the
distributed seams (the student is wrapped in DDP; :func:`.distributed.gather_step_inputs` follows).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Batch
from ..methods import Method, StepInputs
from ..teacher import TeacherCache, as_batch, module_device, run_model
from .config import TrainConfig, _autocast_dtype, resolve_device
from .distributed import get_world_size, loader_world_size, sum_over_ranks


def to_host(values: Tensor) -> list[float]:
    """Copy a 1-D tensor to Python floats: the loop's only kind of host synchronisation (a GPU's
    queue drains); every read of the loop and of :func:`evaluate` is one call, so a test can count
    them.
    """
    return values.tolist()


def student_forward(
    model: nn.Module,
    x: Tensor,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """The student's ``(features (B, D), logits (B, C))``: the one place the student runs."""
    return run_model(
        model, x, "student", channels_last=channels_last, autocast_dtype=autocast_dtype
    )


def make_step_inputs(
    features: Tensor,
    logits: Tensor,
    batch: Batch,
    teacher_features: Tensor | None = None,
    teacher_logits: Tensor | None = None,
) -> StepInputs:
    """Everything a method sees at one step; outputs narrower than float32 are cast to float32.

    Raises ``ValueError`` for a student with fewer than 2 outputs (a shape check, no sync): the
    softmax and cross-entropy of one class are constant, so nothing would be learnt.
    """
    if logits.dim() == 2 and logits.shape[1] < 2:
        raise ValueError(
            f"the student returns {logits.shape[1]} logit per sample (logits of shape "
            f"{tuple(logits.shape)}): a softmax over one class is always 1 and its cross-entropy "
            "0, so nothing would be learnt; build it with num_classes >= 2 (a data set needs at "
            "least two classes)"
        )
    if torch.is_grad_enabled() and logits.requires_grad and not features.requires_grad:
        warnings.warn(
            "the student's features do not require grad (detached, or computed under no_grad) "
            "while its logits do: a loss on the features (RKD, RRD, REFILLED, ...) cannot "
            "train the student; return the features without .detach()",
            stacklevel=3,
        )
    f, z = (x.to(torch.promote_types(x.dtype, torch.float32)) for x in (features, logits))
    return StepInputs(f, z, batch.y, teacher_features, teacher_logits, batch.index)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[object],
    device: str | torch.device | None = None,
    *,
    amp: str = "off",
    channels_last: bool = False,
) -> dict[str, float]:
    """``{"acc", "loss", "n", "labelled"}``: accuracy and mean cross-entropy of ``model`` over the
    labelled samples of ``loader`` (NaN if none), in eval mode (the mode is restored), one host
    read.
    """
    device = module_device(model) if device is None else resolve_device(device)
    dtype = _autocast_dtype(amp, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    labelled = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    try:
        for item in loader:
            batch = as_batch(item, device)
            _, logits = student_forward(
                model, batch.x, channels_last=channels_last, autocast_dtype=dtype
            )
            keep = batch.y >= 0  # (B,) labelled samples
            # labelled rows first, the rest ignored: the sum adds the labelled rows' losses in
            # the same order as over logits[keep], with no host read to count them
            first = torch.argsort((~keep).to(torch.uint8), stable=True)  # (B,)
            z, y = logits.float()[first], batch.y[first]  # (B, C), (B,)
            loss_sum += F.cross_entropy(z, y, reduction="sum", ignore_index=-1).double()
            correct += ((logits.argmax(dim=1) == batch.y) & keep).sum()
            labelled += keep.sum()
            n += batch.y.shape[0]
    finally:
        model.train(was_training)
    loss_total, hits, count = to_host(torch.stack([loss_sum, correct.double(), labelled.double()]))
    return _scores(loss_total, int(hits), n, count)


def _scores(loss_sum: float, correct: float, n: float, count: float) -> dict[str, float]:
    """:func:`evaluate`'s record from its sums (accuracy and loss NaN without a labelled sample)."""
    nan = float("nan")
    acc, loss = (correct / count, loss_sum / count) if count else (nan, nan)
    return {"acc": acc, "loss": loss, "n": int(n), "labelled": int(count)}


def _evaluate_all_ranks(
    student: nn.Module, loader: Iterable[object], device: torch.device, config: TrainConfig
) -> dict[str, float]:
    """:func:`evaluate`; with a loader sharded over the ranks, the ranks' counts are summed."""
    result = evaluate(student, loader, device, amp=config.amp, channels_last=config.channels_last)
    if get_world_size() == 1 or (loader_world_size(loader) or 1) == 1:
        return result
    count = result["labelled"]
    correct = round(result["acc"] * count) if count else 0
    loss_sum = result["loss"] * count if count else 0.0
    correct, loss_sum, n, count = sum_over_ranks([correct, loss_sum, result["n"], count], device)
    return _scores(loss_sum, correct, n, count)


def _run_setup(
    method: Method,
    teacher: nn.Module | TeacherCache | None,
    setup_loader: Iterable[object] | None,
    device: torch.device,
    channels_last: bool,
    autocast_dtype: torch.dtype | None,
) -> None:
    """Give ``method.setup`` the teacher's outputs over the whole un-augmented training set."""
    if setup_loader is not None:  # (fit refused a needs_setup method without a teacher)
        cache = TeacherCache.build(
            teacher,  # type: ignore[arg-type]
            setup_loader,
            device,
            channels_last=channels_last,
            autocast_dtype=autocast_dtype,
            storage_device=device,
        )
    elif isinstance(teacher, TeacherCache):
        cache = teacher  # built by one pass over the un-augmented training set
    else:
        raise ValueError(
            f"{type(method).__name__} needs the teacher's outputs over the whole un-augmented training set before "
            "training: pass setup_loader=<the training set without augmentation, yielding "
            "Batch or (x, y, index)>, or teacher=TeacherCache.build(teacher, that_loader)"
        )
    method.setup(cache.setup_data())


def _finite(*modules: nn.Module) -> Tensor:
    """``True`` (a 0-dim bool tensor, on the device) if no parameter or float buffer holds NaN/inf."""
    flags = [
        torch.isfinite(t).all()
        for module in modules
        for t in [*module.parameters(), *module.buffers()]
        if t.is_floating_point()
    ]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)


def _check_finite_state(epoch: int, *modules: nn.Module) -> None:
    """Raise if a parameter or float buffer holds NaN/inf: the epoch's mean loss can be finite while
    the weights are not (the last step's update), so the loop checks before writing a checkpoint
    (one read, :func:`_finite`; one per tensor only to name the culprit).
    """
    if bool(_finite(*modules)):
        return
    for module in modules:
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise FloatingPointError(
                    f"epoch {epoch + 1}: {type(module).__name__}.{name} holds NaN or inf after "
                    "the epoch; try a lower lr, grad_clip or amp='off' (the last good checkpoint "
                    "was not replaced)"
                )


def check_models_have_data(**modules: object) -> None:
    """Refuse a module whose tensors are on the meta device (built with ``device="meta"``: shapes,
    no data; ``.to()`` would fail deep inside PyTorch). Metadata only, no sync.
    """
    for name, module in modules.items():
        if not isinstance(module, nn.Module):
            continue
        meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if meta:
            raise ValueError(
                f"the {name}'s tensors {meta[:3]} are on the meta device and hold no values: "
                f"materialise the {name} first (module.to_empty(device='cpu') and initialise or "
                "load its weights), or build it without device='meta'"
            )


def check_first_batch(x: Tensor, epoch: int) -> None:
    """Once per epoch the first batch's images must be finite (one sync), so a NaN pixel or a zero
    std is named as the data's fault, not the network's.
    """
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"the first training batch of epoch {epoch + 1} has NaN or Inf pixel values in its "
            "images x: check the data set and its normalisation (a std of 0, a division by 0)"
        )
