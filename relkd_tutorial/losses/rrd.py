"""RRD: Relational Representation Distillation (Giakoumoglou & Stathaki, arXiv 2407.12073).

The student learns to see a memory of past teacher embeddings the way the teacher sees it. Each
sample is projected to a unit embedding (student ``s_i``, teacher ``u_i``); both are compared
with every key ``q_k`` of a FIFO queue ``Q`` of past teacher embeddings, giving two distributions
over the queue,

    p^T_i(k) = softmax_k(<u_i, q_k> / tau_t),     p^S_i(k) = softmax_k(<s_i, q_k> / tau_s),

and the loss is their cross-entropy,

    L_RRD = -(1/B) sum_i sum_k p^T_i(k) log p^S_i(k)
          = (1/B) sum_i [ KL(p^T_i || p^S_i) + H(p^T_i) ].

The entropy ``H(p^T_i)`` does not depend on the student, so minimising ``L_RRD`` minimises the KL
(the paper's "KL connection"). If the queue holds ``u_i`` itself and ``tau_t -> 0``, ``p^T_i`` is
one-hot on that slot and ``L_RRD`` becomes InfoNCE with the teacher embedding as the positive and
the rest of the queue as negatives (the "InfoNCE connection").

What we fixed where the paper (as far as its abstract and the authors' code show) is silent:

- (choice) the loss functions L2-normalise their inputs themselves, so they are defined for any
  non-zero vectors and agree with the equation for unit vectors (normalising twice is harmless).
- (choice) defaults ``tau_s = 0.04 < tau_t = 0.10``: the student is sharper, as the abstract says,
  and these are the values of the authors' first code release. The current official code changed
  them (a change, not a swap of those values): its training script uses ``tau_s = 0.1``,
  ``tau_t = 0.02`` (a sharper *teacher*), and its ``RRD.py`` docstring says ``tau_s = 0.02``,
  ``tau_t = 0.1`` (``docs/rrd.md``).
- (choice) the queue is written *after* the loss by default, so a batch is never its own
  positive (the authors' first release); ``update="before"`` is the later code's order.
- (choice) the queue starts as random unit vectors but, until it has been filled once, only the
  written slots take part; on the very first "after" step nothing is written yet and the RRD
  term is exactly 0 (with a gradient path); with ``update="before"`` the first step compares
  with that batch's own ``B`` rows only. The official code starts differently: its queue starts
  as random rows and *all* ``K`` of them take part in the loss from step 1, random rows being
  replaced only as batches overwrite them (after ``K / B`` steps).
- (choice) the teacher head is a fixed random projection (``requires_grad=False``): in the
  authors' code its output is only ever used detached, so it never receives a gradient and never
  moves; we make that explicit instead of leaving a dead parameter in the optimizer.
- Low precision: the loss math runs in float32 or wider with autocast off (see
  :func:`relkd_tutorial._checks.loss_dtype`); a bf16 student next to an fp32 teacher cache is fine.

Shapes: ``B`` batch, ``d`` embedding width (128), ``K`` queue length, ``D_S``/``D_T`` feature widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    check_float_tensor,
    check_positive,
    check_same_batch,
    check_same_device,
    check_same_shape,
    check_same_width,
    full_precision,
    loss_dtype,
)
from ..relations import cosine_similarity_matrix, unit_rows

UPDATE_ORDERS = ("after", "before")


def _check_rrd_inputs(
    student_emb: object, teacher_emb: object, queue: object, tau_s: float, tau_t: float
) -> None:
    check_float_tensor("student_emb", student_emb, 2, "(B, d)")
    check_float_tensor("teacher_emb", teacher_emb, 2, "(B, d)")
    check_float_tensor("queue", queue, 2, "(K, d)")
    assert isinstance(student_emb, Tensor)
    assert isinstance(teacher_emb, Tensor)
    assert isinstance(queue, Tensor)
    check_same_shape("student_emb", student_emb, "teacher_emb", teacher_emb)
    check_same_width("student_emb", student_emb, "queue", queue)
    check_same_device("student_emb", student_emb, "teacher_emb", teacher_emb)
    check_same_device("student_emb", student_emb, "queue", queue)
    check_positive("tau_s", tau_s)
    check_positive("tau_t", tau_t)


def _log_probs(
    student_emb: Tensor, teacher_emb: Tensor, queue: Tensor, tau_s: float, tau_t: float
) -> tuple[Tensor, Tensor]:
    """:func:`rrd_log_probs` without the input checks (for callers that have checked already)."""
    dtype = loss_dtype(student_emb, teacher_emb, queue)
    with full_precision(student_emb.device):
        keys = queue.detach().to(dtype)  # (K, d)
        log_p_s = F.log_softmax(
            cosine_similarity_matrix(student_emb.to(dtype), keys) / tau_s, dim=1
        )  # (B, K)
        with torch.no_grad():
            log_p_t = F.log_softmax(
                cosine_similarity_matrix(teacher_emb.detach().to(dtype), keys) / tau_t, dim=1
            )  # (B, K)
    return log_p_s, log_p_t


def _cross_entropy(log_p_s: Tensor, log_p_t: Tensor) -> Tensor:
    """``-(1/B) sum_i sum_k p^T_i(k) log p^S_i(k)`` from the two ``(B, K)`` log-distributions."""
    return -(log_p_t.exp() * log_p_s).sum(dim=1).mean()


def rrd_log_probs(
    student_emb: Tensor,
    teacher_emb: Tensor,
    queue: Tensor,
    tau_s: float = 0.04,
    tau_t: float = 0.10,
) -> tuple[Tensor, Tensor]:
    """The two distributions over the queue, as log-probabilities.

    ``log p^S_i(k) = log softmax_k(<s_i, q_k> / tau_s)`` and
    ``log p^T_i(k) = log softmax_k(<u_i, q_k> / tau_t)``, with all three inputs L2-normalised
    here (choice). The teacher side and the queue carry no gradient.

    Args:
        student_emb: ``(B, d)`` student embeddings ``s``.
        teacher_emb: ``(B, d)`` teacher embeddings ``u``.
        queue: ``(K, d)`` memory keys ``q``.
        tau_s: student temperature.
        tau_t: teacher temperature.

    Returns:
        ``(log_p_s, log_p_t)``, each ``(B, K)`` in float32 or wider; ``log_p_t`` is detached.
    """
    _check_rrd_inputs(student_emb, teacher_emb, queue, tau_s, tau_t)
    return _log_probs(student_emb, teacher_emb, queue, tau_s, tau_t)


def rrd_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    queue: Tensor,
    tau_s: float = 0.04,
    tau_t: float = 0.10,
) -> Tensor:
    """RRD's loss, ``L = -(1/B) sum_i sum_k p^T_i(k) log p^S_i(k)`` (``docs/rrd.md``).

    See :func:`rrd_log_probs` for the distributions. The value includes the teacher's entropy
    ``H(p^T)`` (a constant for the student), exactly as the equation is written; use
    :func:`rrd_decomposition` to see ``KL(p^T || p^S)`` and ``H(p^T)`` separately.

    Args:
        student_emb: ``(B, d)``; normalised inside (choice).
        teacher_emb: ``(B, d)``; normalised inside, no gradient.
        queue: ``(K, d)``, ``K >= 1``; normalised inside, no gradient.
        tau_s: student temperature (default 0.04, sharper).
        tau_t: teacher temperature (default 0.10).

    Returns:
        Scalar loss in float32 or wider.
    """
    return _cross_entropy(*rrd_log_probs(student_emb, teacher_emb, queue, tau_s, tau_t))


def rrd_decomposition(
    student_emb: Tensor,
    teacher_emb: Tensor,
    queue: Tensor,
    tau_s: float = 0.04,
    tau_t: float = 0.10,
) -> dict[str, Tensor]:
    """``L_RRD = KL(p^T || p^S) + H(p^T)``, each averaged over the batch.

    Returns:
        ``{"loss": L_RRD, "kl": (1/B) sum_i KL(p^T_i || p^S_i), "entropy": (1/B) sum_i H(p^T_i)}``;
        ``"loss"`` carries the student's gradient, ``"kl"`` the same gradient, ``"entropy"`` none.
    """
    log_p_s, log_p_t = rrd_log_probs(student_emb, teacher_emb, queue, tau_s, tau_t)
    p_t = log_p_t.exp()  # (B, K)
    kl = (p_t * (log_p_t - log_p_s)).sum(dim=1).mean()
    entropy = -(p_t * log_p_t).sum(dim=1).mean()
    return {"loss": _cross_entropy(log_p_s, log_p_t), "kl": kl, "entropy": entropy}


class ProjectionHead(nn.Module):
    """``e = normalize(W f + b)``: one linear layer to ``out_dim`` and an L2 normalisation.

    With ``trainable=False`` the head is a fixed random projection: its parameters have
    ``requires_grad=False`` and its forward pass runs under ``torch.no_grad()`` in float32 or
    wider with autocast off (RRD's teacher head). A trainable head runs under autocast if the
    caller enables it; its output is normalised in float32 or wider.

    Args:
        in_dim: feature width ``D``.
        out_dim: embedding width ``d`` (RRD: 128).
        trainable: ``False`` freezes the head.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, trainable: bool = True) -> None:
        super().__init__()
        _check_dim("in_dim", in_dim)
        _check_dim("out_dim", out_dim)
        self.linear = nn.Linear(in_dim, out_dim)
        self.trainable = bool(trainable)
        if not self.trainable:
            self.linear.requires_grad_(False)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, D)`` features -> ``(B, d)`` unit embeddings."""
        weight, bias = self.linear.weight, self.linear.bias
        if features.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"features must have shape (B, {weight.shape[1]}), got {tuple(features.shape)}"
            )
        if self.trainable:
            h = self.linear(features.to(weight.dtype))  # (B, d)
            return unit_rows(h.to(loss_dtype(h)))
        with torch.no_grad(), full_precision(features.device):
            dtype = loss_dtype(features, weight)
            h = F.linear(features.to(dtype), weight.to(dtype), bias.to(dtype))  # (B, d)
            return unit_rows(h)


class EmbeddingQueue(nn.Module):
    """A FIFO queue of ``K`` embeddings, kept in buffers so it moves with ``.to`` and checkpoints.

    Buffers:
        ``keys`` ``(K, d)``: the slots, initialised with random unit vectors.
        ``ptr`` ``()``: the slot the next write starts at (the oldest entry once full).
        ``filled`` ``()``: how many slots hold written embeddings (``<= K``).

    Writes go to slots ``ptr, ptr+1, ...`` modulo ``K``, so ``K`` need not be a multiple of the
    batch size; a batch longer than the queue keeps only its last ``K`` rows (the oldest rows would
    be overwritten within the same write anyway). Until the queue has been filled once, the written
    slots are exactly ``0 .. filled-1``, and :meth:`valid_keys` returns only those (choice).

    Args:
        size: ``K >= 1``.
        dim: ``d >= 1``.
        generator: optional RNG for the random initial keys.
    """

    keys: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        _check_dim("size", size)
        _check_dim("dim", dim)
        keys = F.normalize(torch.randn(size, dim, generator=generator), dim=1)  # (K, d)
        self.register_buffer("keys", keys)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self._filled = 0  # ``filled`` as the host knows it (it adds batch sizes): no device read

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._filled = int(self.filled)  # one read, when a checkpoint is loaded

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, embeddings: Tensor) -> None:
        """Write a ``(B, d)`` batch at the head of the queue, overwriting the oldest slots."""
        check_float_tensor("embeddings", embeddings, 2, f"(B, {self.keys.shape[1]})")
        check_same_width("embeddings", embeddings, "queue keys", self.keys)
        k, b = self.size, embeddings.shape[0]
        n = min(b, k)  # rows that survive this write
        rows = embeddings[b - n :].detach().to(self.keys.dtype)  # (n, d)
        offsets = torch.arange(b - n, b, device=self.keys.device)  # (n,)
        slots = (self.ptr + offsets) % k  # (n,)  distinct because n <= k
        self.keys.index_copy_(0, slots, rows.to(self.keys.device))
        self.ptr.copy_((self.ptr + b) % k)
        self.filled.copy_((self.filled + b).clamp(max=k))
        self._filled = min(self._filled + b, k)

    def valid_keys(self) -> Tensor:
        """The ``(K', d)`` slots that take part in the loss: all ``K`` once full, else the written."""
        return self.keys[: self._filled]

    def chronological(self) -> Tensor:
        """The valid keys, oldest first (for tests and plots)."""
        if int(self.filled) < self.size:
            return self.valid_keys()
        return self.keys.roll(-int(self.ptr), dims=0)  # (K, d)


class RRDLoss(nn.Module):
    """RRD with its projection heads and queue: ``forward(f^S, f^T) -> L_RRD``.

    ``s = normalize(W_s f^S + b_s)`` (learnable), ``u = normalize(W_t f^T + b_t)`` (frozen random
    projection, see the module docstring), ``L = rrd_loss(s, u, Q)`` over the valid queue slots.

    Queue order: with ``update="after"`` (default) the loss uses the queue as it is, and the
    caller writes the batch afterwards with :meth:`update_queue` (the method object does it in
    ``after_step``, after the optimizer step). With ``update="before"`` :meth:`forward` writes the
    batch first, so each ``u_i`` is in the queue and acts as an implicit positive.

    Args:
        student_dim: ``D_S``.
        teacher_dim: ``D_T``.
        embed_dim: ``d`` (128).
        queue_size: ``K`` (16384 on CIFAR; keep ``K`` at most the training-set size).
        tau_s: student temperature (0.04).
        tau_t: teacher temperature (0.10).
        update: ``"after"`` or ``"before"``.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        embed_dim: int = 128,
        queue_size: int = 16384,
        tau_s: float = 0.04,
        tau_t: float = 0.10,
        update: str = "after",
    ) -> None:
        super().__init__()
        if update not in UPDATE_ORDERS:
            raise ValueError(f"update must be one of {UPDATE_ORDERS}, got {update!r}")
        self.tau_s = check_positive("tau_s", tau_s)
        self.tau_t = check_positive("tau_t", tau_t)
        self.update = update
        self.student_head = ProjectionHead(student_dim, embed_dim, trainable=True)
        self.teacher_head = ProjectionHead(teacher_dim, embed_dim, trainable=False)
        self.queue = EmbeddingQueue(queue_size, embed_dim)

    def teacher_embed(self, teacher_features: Tensor) -> Tensor:
        """``(B, D_T)`` -> ``(B, d)`` unit teacher embeddings ``u`` (no gradient)."""
        check_float_tensor("teacher_features", teacher_features, 2, "(B, D_T)")
        return self.teacher_head(teacher_features)

    def update_queue(self, teacher_features: Tensor) -> None:
        """Write the batch's teacher embeddings into the queue."""
        self.queue.enqueue(self.teacher_embed(teacher_features))

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        check_float_tensor("student_features", student_features, 2, "(B, D_S)")
        check_float_tensor("teacher_features", teacher_features, 2, "(B, D_T)")
        check_same_batch("student_features", student_features, "teacher_features", teacher_features)
        check_same_device(
            "student_features", student_features, "teacher_features", teacher_features
        )
        u = self.teacher_head(teacher_features)  # (B, d), no gradient
        if self.update == "before":
            self.queue.enqueue(u)
        s = self.student_head(student_features)  # (B, d)
        keys = self.queue.valid_keys()  # (K', d)
        if keys.shape[0] == 0:  # nothing written yet: no relation target (choice)
            return s.sum() * 0.0
        # the features were checked above and the queue on every write: skip the re-checks
        return _cross_entropy(*_log_probs(s, u, keys, self.tau_s, self.tau_t))


def _check_dim(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
