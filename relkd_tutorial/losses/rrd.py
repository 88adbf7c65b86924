"""RRD: Relational Representation Distillation (Giakoumoglou & Stathaki, arXiv 2407.12073).

The student learns to see a memory of past teacher embeddings the way the teacher sees it. Each
sample is projected to a unit embedding (student ``s_i``, teacher ``u_i``); both are compared with
every key ``q_k`` of a FIFO queue ``Q`` of past teacher embeddings,

    p^T_i(k) = softmax_k(<u_i, q_k> / tau_t),     p^S_i(k) = softmax_k(<s_i, q_k> / tau_s),

    L_RRD = -(1/B) sum_i sum_k p^T_i(k) log p^S_i(k) = (1/B) sum_i [ KL(p^T_i || p^S_i) + H(p^T_i) ].

``H(p^T_i)`` does not depend on the student (the paper's "KL connection"); with ``u_i`` in the queue
and ``tau_t -> 0`` the loss becomes InfoNCE (the "InfoNCE connection").

Defaults: ``tau_s = 0.04 < tau_t = 0.10`` (the student sharper, as the abstract says; the authors'
first code release), ``d = 128``, ``K = 16384`` (CIFAR). Our choices where the paper is silent (the
inputs L2-normalised inside the loss, the queue written after the loss, only written slots used
until the queue is full, a frozen random teacher head) and how the later official code differs
are in ``docs/rrd.md``. The math runs in float32 or wider with autocast off
(:func:`relkd_tutorial._checks.loss_dtype`).

Shapes: ``B`` batch, ``d`` embedding width, ``K`` queue length, ``D_S``/``D_T`` feature widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_count,
    check_feature_pair,
    check_float_tensor,
    check_positive,
    check_same,
    full_precision,
    loss_dtype,
)
from ..relations import cosine_similarity_matrix, unit_rows

UPDATE_ORDERS = ("after", "before")


def _log_probs(
    student_emb: Tensor, teacher_emb: Tensor, queue: Tensor, tau_s: float, tau_t: float
) -> tuple[Tensor, Tensor]:
    """:func:`rrd_log_probs` without the input checks (for callers that have checked already)."""
    with full_precision(student_emb, teacher_emb, queue) as dtype:
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
    """``(log p^S, log p^T)``, each ``(B, K)``: ``log softmax_k(<s_i, q_k> / tau_s)`` and
    ``log softmax_k(<u_i, q_k> / tau_t)``, the three inputs L2-normalised here (choice).

    ``student_emb`` ``s`` and ``teacher_emb`` ``u`` are ``(B, d)``, ``queue`` ``q`` is ``(K, d)``;
    the teacher side and the queue carry no gradient. Float32 or wider.
    """
    s = check_float_tensor("student_emb", student_emb, 2, "(B, d)")
    t = check_float_tensor("teacher_emb", teacher_emb, 2, "(B, d)")
    q = check_float_tensor("queue", queue, 2, "(K, d)")
    check_same("shape", "student_emb", s, "teacher_emb", t)
    check_same("embedding width", "student_emb", s, "queue", q)
    check_same("device", "student_emb", s, "teacher_emb", t)
    check_same("device", "student_emb", s, "queue", q)
    return _log_probs(s, t, q, check_positive("tau_s", tau_s), check_positive("tau_t", tau_t))


def rrd_loss(
    student_emb: Tensor,
    teacher_emb: Tensor,
    queue: Tensor,
    tau_s: float = 0.04,
    tau_t: float = 0.10,
) -> Tensor:
    """RRD's loss, ``L = -(1/B) sum_i sum_k p^T_i(k) log p^S_i(k)``, a scalar (``docs/rrd.md``).

    Inputs as for :func:`rrd_log_probs` (``K >= 1``). The value includes the teacher's entropy
    ``H(p^T)``, as the equation is written; :func:`rrd_decomposition` splits it.
    """
    return _cross_entropy(*rrd_log_probs(student_emb, teacher_emb, queue, tau_s, tau_t))


def rrd_decomposition(
    student_emb: Tensor,
    teacher_emb: Tensor,
    queue: Tensor,
    tau_s: float = 0.04,
    tau_t: float = 0.10,
) -> dict[str, Tensor]:
    """``{"loss": L_RRD, "kl": mean_i KL(p^T_i || p^S_i), "entropy": mean_i H(p^T_i)}``;
    ``"loss"`` and ``"kl"`` carry the same gradient, ``"entropy"`` none."""
    log_p_s, log_p_t = rrd_log_probs(student_emb, teacher_emb, queue, tau_s, tau_t)
    p_t = log_p_t.exp()  # (B, K)
    kl = (p_t * (log_p_t - log_p_s)).sum(dim=1).mean()
    entropy = -(p_t * log_p_t).sum(dim=1).mean()
    return {"loss": _cross_entropy(log_p_s, log_p_t), "kl": kl, "entropy": entropy}


class ProjectionHead(nn.Module):
    """``e = normalize(W f + b)``, ``(B, in_dim) -> (B, out_dim)``: a linear layer and an L2 norm.

    ``trainable=False``: a fixed random projection (``requires_grad=False``, run under
    ``no_grad`` in float32 or wider with autocast off; RRD's teacher head). A trainable head runs
    under the caller's autocast; its output is normalised in float32 or wider.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, trainable: bool = True) -> None:
        super().__init__()
        check_count("in_dim", in_dim)
        check_count("out_dim", out_dim)
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
        with torch.no_grad(), full_precision(features, weight) as dtype:
            h = F.linear(features.to(dtype), weight.to(dtype), bias.to(dtype))  # (B, d)
            return unit_rows(h)


class EmbeddingQueue(nn.Module):
    """A FIFO queue of ``size`` (``K``) embeddings of width ``dim`` (``d``), in buffers (so it
    moves with ``.to`` and checkpoints): ``keys`` ``(K, d)`` (random unit vectors at first, drawn
    from ``generator``), ``ptr`` (where the next write starts) and ``filled`` (``<= K``).

    Writes go to slots ``ptr, ptr+1, ...`` modulo ``K``; a batch longer than the queue keeps only
    its last ``K`` rows. Until the queue is full, :meth:`valid_keys` returns only the written slots
    ``0 .. filled-1`` (choice).
    """

    keys: Tensor
    ptr: Tensor
    filled: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_count("size", size)
        check_count("dim", dim)
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
        check_same("embedding width", "embeddings", embeddings, "queue keys", self.keys)
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
    """RRD with its heads and queue: ``forward(f^S (B, D_S), f^T (B, D_T)) -> L_RRD``.

    ``s = normalize(W_s f^S + b_s)`` (learnable), ``u = normalize(W_t f^T + b_t)`` (frozen),
    ``L = rrd_loss(s, u, Q)`` over the valid queue slots. ``update="after"`` (default): the caller
    writes the batch after the step with :meth:`update_queue`; ``"before"``: :meth:`forward`
    writes it first, so each ``u_i`` is an implicit positive. ``embed_dim`` ``d`` (128),
    ``queue_size`` ``K`` (16384 on CIFAR; at most the training-set size), ``tau_s`` (0.04),
    ``tau_t`` (0.10).
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
        self.update = check_choice("update", update, UPDATE_ORDERS)
        self.tau_s = check_positive("tau_s", tau_s)
        self.tau_t = check_positive("tau_t", tau_t)
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
        check_feature_pair(student_features, teacher_features)
        u = self.teacher_head(teacher_features)  # (B, d), no gradient
        if self.update == "before":
            self.queue.enqueue(u)
        s = self.student_head(student_features)  # (B, d)
        keys = self.queue.valid_keys()  # (K', d)
        if keys.shape[0] == 0:  # nothing written yet: no relation target (choice)
            return s.sum() * 0.0
        # the features were checked above and the queue on every write: skip the re-checks
        return _cross_entropy(*_log_probs(s, u, keys, self.tau_s, self.tau_t))
