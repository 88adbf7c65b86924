"""Teacher outputs: run a frozen teacher live, or look its outputs up in a cache by sample index.

:func:`teacher_outputs` accepts both: a live teacher runs on the (augmented) batch in eval mode
without gradient; a :class:`TeacherCache` holds one pass over the *un-augmented* training set and
is looked up by ``Batch.index``, each image's position in its data set, never its position in the
batch or the step (``docs/pitfalls.md``). The same pass is a ``needs_setup`` method's
:class:`SetupData`. :func:`as_batch` turns any loader item into a :class:`Batch` on the device.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ._checks import input_checks_enabled, is_integer
from .data import Batch
from .methods import SetupData


def as_batch(item: object, device: torch.device | str | None = None) -> Batch:
    """Adapt one loader item, a ``Batch`` or an ``(x, y[, index])`` tuple, to a :class:`Batch` on
    ``device`` (labels as ``int64``, ``-1`` = unlabelled). Without an index, ``index`` is ``None``:
    fine unless a :class:`TeacherCache` must look the batch up (wrap the data set in
    :class:`IndexedDataset`).
    """
    if isinstance(item, Batch):
        x, y, index = item.x, item.y, item.index
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        x, y = item[0], item[1]
        index = item[2] if len(item) == 3 else None
    else:
        raise TypeError(
            "a loader must yield relkd_tutorial.data.Batch or (x, y) / (x, y, index) tuples, got "
            f"{type(item).__name__}"
            + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
        )
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"batch x and y must be tensors, got {type(x).__name__} and {type(y).__name__}"
        )
    index = None if index is None else torch.as_tensor(index)
    _check_batch(x, y, index)
    if device is not None:
        x, y, index = (
            None if t is None else t.to(device, non_blocking=True) for t in (x, y, index)
        )
    index = None if index is None else index.long()
    return Batch(x=x, y=y.long(), index=index)  # type: ignore[arg-type]  # index may be None


def _check_batch(x: Tensor, y: Tensor, index: Tensor | None) -> None:
    """Refuse a batch the loop would silently misread; dtypes, shapes and devices only (no sync).

    Float labels would be truncated by ``.long()`` (``0.7 -> 0``), boolean ones read as classes
    0/1, uint8 pixels would reach the network unnormalised, and meta tensors hold no data.
    """
    for name, t in (("x", x), ("y", y), ("index", index)):
        if t is not None and t.device.type == "meta":
            raise ValueError(
                f"the loader yields batch {name} on the meta device, which holds no data: "
                "build the data set from real tensors"
            )
    if not x.is_floating_point():
        raise TypeError(
            f"batch images x must be floating-point (normalised pixels), got {x.dtype}: raw "
            "pixels need x.float() / 255 and a normalisation; TensorLoader and image_loader "
            "do both"
        )
    if not is_integer(y):
        raise TypeError(
            f"batch labels y must be integer class indices (int64; -1 = unlabelled), got "
            f"{y.dtype}: float labels would be truncated (0.7 -> class 0), booleans read as "
            "classes 0 and 1, and one-hot or soft labels are not supported; convert class "
            "indices with y.long(), or one-hot rows with y.argmax(dim=1)"
        )
    if y.dim() != 1 or (x.dim() > 0 and y.shape[0] != x.shape[0]):
        raise ValueError(
            f"batch labels y must have shape (B,) = ({x.shape[0] if x.dim() else '?'},), got "
            f"{tuple(y.shape)} (for images of shape {tuple(x.shape)}); flatten (B, 1) labels "
            "with y.view(-1)"
        )
    if index is not None and (not is_integer(index) or index.shape != y.shape):
        raise TypeError(
            f"batch index must be integer sample positions of shape {tuple(y.shape)}, got "
            f"{index.dtype} of shape {tuple(index.shape)}"
        )


class IndexedDataset(torch.utils.data.Dataset):
    """Wrap a map-style data set so that item ``i`` is ``(x, y, i)``: the index keys caches."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[object, object, int]:
        x, y = self.dataset[i][:2]
        return x, y, i


def run_model(
    model: nn.Module,
    x: Tensor,
    who: str,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """``model(x)`` checked as ``(features (B, D), logits (B, C))``, under autocast if
    ``autocast_dtype`` is given, with ``channels_last`` images if asked; ``who`` names the model
    in the errors."""
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(
        device_type=x.device.type,
        dtype=autocast_dtype or torch.bfloat16,
        enabled=autocast_dtype is not None,
    ):
        out = model(x)
    if (
        not isinstance(out, (tuple, list))
        or len(out) != 2
        or not all(isinstance(t, Tensor) for t in out)
    ):
        raise TypeError(
            f"the {who} must return (features (B, D), logits (B, C)) like the models in "
            f"relkd_tutorial.models; got {type(out).__name__}"
        )
    features, logits = out
    if features.dim() != 2 or logits.dim() != 2 or features.shape[0] != logits.shape[0]:
        raise ValueError(
            f"the {who} must return features (B, D) and logits (B, C); got shapes "
            f"{tuple(features.shape)} and {tuple(logits.shape)}"
        )
    return features, logits


@dataclass
class TeacherCache:
    """The teacher's outputs for every sample of a data set, row ``i`` = sample index ``i``.

    Build with :meth:`build` (one pass over an un-augmented loader), look up with :meth:`lookup`.
    ``labels`` are the student's labels the loader yielded (so the cache can serve as
    :class:`SetupData`). A row is the teacher's output for the un-augmented image: for augmented
    training run the teacher live (``fit`` warns).
    """

    features: Tensor  # (N, D_T) float32
    logits: Tensor  # (N, C_T) float32
    labels: Tensor  # (N,) int64

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.dim() != 2 or self.logits.dim() != 2 or self.labels.dim() != 1:
            raise ValueError(
                "TeacherCache needs features (N, D), logits (N, C) and labels (N,), got "
                f"{tuple(self.features.shape)}, {tuple(self.logits.shape)}, "
                f"{tuple(self.labels.shape)}"
            )
        if self.logits.shape[0] != n or self.labels.shape[0] != n:
            raise ValueError(
                f"TeacherCache rows disagree: {n} features, {self.logits.shape[0]} logits, "
                f"{self.labels.shape[0]} labels"
            )

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def device(self) -> torch.device:
        return self.features.device

    def to(self, device: torch.device | str) -> TeacherCache:
        """A copy on ``device`` (the tensors are not copied if they are already there)."""
        return TeacherCache(*(t.to(device) for t in (self.features, self.logits, self.labels)))

    def lookup(self, index: Tensor | None) -> tuple[Tensor, Tensor]:
        """Rows ``index`` of the cache: ``(features (B, D_T), logits (B, C_T))`` on ``index``'s
        device.

        With input checks on (the default, see :func:`relkd_tutorial.set_input_checks`) an index
        outside ``[0, N)`` raises instead of silently wrapping around (``-1`` would be the last
        row).
        """
        if index is None:
            raise ValueError(
                "this batch has no sample index, so a TeacherCache cannot look up its outputs; "
                "yield Batch(x, y, index) or (x, y, index) (e.g. wrap the data set in "
                "relkd_tutorial.teacher.IndexedDataset)"
            )
        if input_checks_enabled() and index.numel():
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= len(self):
                raise ValueError(
                    f"batch index has values in [{lo}, {hi}] but the TeacherCache has {len(self)} "
                    "rows; was it built on the same data set as this loader?"
                )
        rows = index.to(self.device)  # (B,)
        return self.features[rows].to(index.device), self.logits[rows].to(index.device)

    def setup_data(self) -> SetupData:
        """The whole cache as the :class:`SetupData` a ``needs_setup`` method receives."""
        return SetupData(self.features, self.logits, self.labels)

    def save(self, path: str | Path) -> None:
        """Save to a file loadable with ``torch.load(..., weights_only=True)``."""
        torch.save({k: v.cpu() for k, v in vars(self).items()}, Path(path))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> TeacherCache:
        """Load a cache written by :meth:`save`."""
        return cls(**torch.load(Path(path), map_location=device, weights_only=True))

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: nn.Module | TeacherCache,
        loader: Iterable[object],
        device: torch.device | str | None = None,
        *,
        channels_last: bool = False,
        autocast_dtype: torch.dtype | None = None,
        storage_device: torch.device | str = "cpu",
    ) -> TeacherCache:
        """One pass of ``teacher`` (a module, run in eval mode on ``device``, default its own; or a
        cache, re-keyed by this loader's indices and labels) over ``loader``, keyed by sample index.

        ``loader`` yields ``Batch`` or ``(x, y, index)``; one that says it augments is refused.
        Every index in ``[0, N)``, ``N = max index + 1``, must occur (a gap raises: a missing row
        would read as zeros); a repeated index keeps its last output.
        ``channels_last``/``autocast_dtype`` as in the loop; the cache lives on ``storage_device``
        (CPU by default).
        """
        if getattr(loader, "augments", False):
            raise ValueError(
                "TeacherCache.build got a loader that augments its batches: the cache would hold "
                "the outputs for one random view of each image. Build it over the un-augmented "
                "set, e.g. TensorLoader.for_evaluation(data) (one cache per fixed view)"
            )
        if device is None:
            device = module_device(teacher) if isinstance(teacher, nn.Module) else teacher.device
        device = torch.device(device)
        chunks: list[tuple[Tensor, ...]] = []
        for item in loader:
            batch = as_batch(item, device)
            if batch.index is None:
                raise ValueError(
                    "TeacherCache.build needs sample indices: the loader must yield Batch or "
                    "(x, y, index) (e.g. wrap the data set in relkd_tutorial.teacher.IndexedDataset)"
                )
            f, z = teacher_outputs(
                teacher, batch, channels_last=channels_last, autocast_dtype=autocast_dtype
            )
            chunks.append(tuple(t.to(storage_device) for t in (batch.index, f, z, batch.y)))
        if not chunks:
            raise ValueError("TeacherCache.build got an empty loader")
        # (N',), (N', D_T), (N', C_T), (N',)
        index, feats, logits, labels = (torch.cat(column) for column in zip(*chunks, strict=True))
        if int(index.min()) < 0:
            raise ValueError(f"sample indices must be >= 0, got {int(index.min())}")
        n = int(index.max()) + 1
        missing = int((torch.bincount(index, minlength=n) == 0).sum())  # rows no sample filled
        if missing:
            raise ValueError(
                f"the loader's indices leave {missing} of {n} rows of the cache empty; build the "
                "cache over the whole data set (indices 0..N-1), un-augmented and without drop_last"
            )
        rows = [t.new_zeros(n, *t.shape[1:]) for t in (feats, logits, labels)]  # (N, ...) each
        for out, t in zip(rows, (feats, logits, labels), strict=True):
            out[index] = t
        return cls(*rows)


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s first parameter (else buffer) is; the CPU if it has neither."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device


@torch.no_grad()
def teacher_outputs(
    teacher: nn.Module | TeacherCache,
    batch: Batch,
    *,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """The teacher's ``(features (B, D_T), logits (B, C_T))`` for a batch, float32, no gradient.

    A cache is looked up by ``batch.index``; a module runs on ``batch.x`` in eval mode (it is
    switched to eval mode if it is not: a teacher is frozen, and BN must use its running
    statistics) under ``torch.no_grad()``, optionally under autocast.
    """
    if isinstance(teacher, TeacherCache):
        f, z = teacher.lookup(batch.index)
        return f.float(), z.float()
    if not isinstance(teacher, nn.Module):
        raise TypeError(
            f"teacher must be an nn.Module or a TeacherCache, got {type(teacher).__name__}"
        )
    if teacher.training:
        teacher.eval()
    f, z = run_model(
        teacher, batch.x, "teacher", channels_last=channels_last, autocast_dtype=autocast_dtype
    )
    return f.float(), z.float()
