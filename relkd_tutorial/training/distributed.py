"""Data-parallel training in which relational losses see the *global* batch (``docs/pitfalls.md``).

A relational loss computed per shard would relate each sample only to the ``B / W`` samples of
its rank. So (``fit`` calls these) every rank runs the DDP student (:func:`wrap_student`) and the
teacher on its slice of the global batch, :func:`gather_step_inputs` all-gathers the step's
tensors (the student's differentiably) so every rank computes the same global loss, and the
gather's backward (:class:`AllGather`) returns this rank's block of the *summed* gradient, which
DDP then averages. With ``Y = [y_0; ...; y_{W-1}]``, ``y_r = f(theta, x_r)``:

    dL/dtheta = sum_r J_r^T g_r,    g_r = dL/dy_r,  J_r = dy_r/dtheta;

returning ``g_r`` alone would make DDP's average ``W`` times too small (OpenGait #36); block ``r``
of ``sum_q G^(q)`` is ``W g_r``, and the sum (the gather's adjoint) stays right when ranks compute
different losses. Method parameters see the gathered inputs; the loop averages their gradients
(:func:`average_gradients`) and broadcasts the method's state from rank 0
(:func:`broadcast_module_state`). Launch with ``torchrun``; call :func:`init_distributed` first
(``tests/_dist_worker.py`` is a complete example).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..methods import StepInputs


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment (``env://``); return this
    rank's device: ``cuda:LOCAL_RANK`` with NCCL (if CUDA is available), else ``cpu`` with gloo.
    Without ``WORLD_SIZE`` (a plain launch) nothing is initialised; calling it again is harmless.
    """
    use_cuda = torch.cuda.is_available() and backend in (None, "nccl")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if "WORLD_SIZE" not in os.environ or not dist.is_available():
        return device
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend or ("nccl" if use_cuda else "gloo"),
            timeout=timedelta(seconds=timeout_s),
            **({"device_id": device} if use_cuda else {}),
        )
    return device


def cleanup() -> None:
    """Leave the process group (call at the end of a ``torchrun`` script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's batch size ``[B_0, ..., B_{W-1}]`` (one small all-gather)."""
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]


def _gather(x: Tensor, sizes: list[int]) -> Tensor:
    """Every rank's ``x`` along dim 0, rank 0 first, each padded to the largest size, then cut."""
    largest = max(sizes)
    x = x.contiguous()
    if x.shape[0] < largest:
        pad = x.new_zeros((largest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])  # (max B_r, ...)
    blocks = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(blocks, x)
    return torch.cat([b[:n] for b, n in zip(blocks, sizes, strict=True)])  # (sum B_r, ...)


class AllGather(torch.autograd.Function):
    """``Y = [y_0; ...; y_{W-1}]`` on every rank (ranks may hold different batch sizes); backward:
    block ``r`` of the gradient summed over ranks (the module docstring says why the sum).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.rank = get_rank()
        return _gather(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        total = grad.contiguous().clone()  # all_reduce works in place; autograd owns ``grad``
        dist.all_reduce(total, op=dist.ReduceOp.SUM)  # sum_q G^(q)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None  # block r


def all_gather(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Every rank's ``x`` ``(B_r, ...)`` concatenated along dim 0 (rank 0 first),
    ``(sum_r B_r, ...)``, differentiable if ``x`` is (:class:`AllGather`); ``sizes``: every ``B_r``
    if known (saves one collective). ``x`` itself without a process group.
    """
    if not is_distributed():
        return x
    sizes = gather_sizes(x.shape[0], x.device) if sizes is None else sizes
    if x.requires_grad:
        return AllGather.apply(x, sizes)
    with torch.no_grad():
        return _gather(x, sizes)


def gather_step_inputs(inputs: StepInputs) -> StepInputs:
    """The global batch's :class:`StepInputs`, rank 0's rows first; the student's tensors keep their
    gradient (:class:`AllGather`), ``None`` fields stay ``None``.
    """
    if not is_distributed():
        return inputs
    sizes = gather_sizes(inputs.student_logits.shape[0], inputs.student_logits.device)
    fields = vars(inputs).items()  # (B, ...) each, in the dataclass's order
    return StepInputs(**{k: None if t is None else all_gather(t, sizes) for k, t in fields})


def wrap_student(
    student: nn.Module, device: torch.device, *, sync_batchnorm: bool = False
) -> nn.Module:
    """``DistributedDataParallel(student)`` (the student stays the module to checkpoint); DDP
    broadcasts rank 0's state and averages gradients. ``sync_batchnorm`` converts the BatchNorm
    layers in place to ``SyncBatchNorm`` first (CUDA only).
    """
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError(
                "sync_batchnorm=True needs CUDA (PyTorch's SyncBatchNorm does not run on "
                f"{device.type}); on the CPU use a model without BatchNorm or accept per-rank "
                "batch statistics"
            )
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(student)  # in place below the root
        if converted is not student:
            raise TypeError("sync_batchnorm=True: the student itself must not be a BatchNorm layer")
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    # find_unused_parameters: a method may leave part of the student out of the loss (RKD's
    # metric convention and REFILLED's first stage never use the classifier). DDP must then not
    # wait for those gradients; they stay None, as in one process (no weight decay, no momentum).
    return nn.parallel.DistributedDataParallel(student, device_ids=ids, find_unused_parameters=True)


@torch.no_grad()
def broadcast_module_state(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if not is_distributed():
        return
    for t in [*module.parameters(), *module.buffers()]:
        if t.numel():
            dist.broadcast(t.data, src=src)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Each parameter's gradient becomes its mean over the ranks (same parameters, same order)."""
    if not is_distributed():
        return
    world = get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def any_rank(flag: bool, device: torch.device) -> bool:
    """``True`` on every rank if ``flag`` is true on at least one (e.g. a stop request)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), rank 0 first; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of a list of numbers over the ranks (float64)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def loader_world_size(loader: object) -> int | None:
    """How many ranks ``loader`` is sharded over, if it says (TensorLoader, DistributedSampler)."""
    size = getattr(loader, "world_size", None)
    if size is None:
        size = getattr(getattr(loader, "sampler", None), "num_replicas", None)
    return None if size is None else int(size)


def check_sharded_loader(loader: object, name: str = "train_loader") -> None:
    """Refuse a training loader not sharded over exactly the running ranks (an unsharded one would
    put every sample ``W`` times into the gathered batch)."""
    world = get_world_size()
    size = loader_world_size(loader)
    if size is not None and size != world:
        raise ValueError(
            f"{name} is sharded over world_size={size} but {world} processes are running; build "
            f"it with rank=get_rank(), world_size=get_world_size() (TensorLoader) or a "
            "DistributedSampler"
        )
    if size is None:
        raise ValueError(
            f"{name} does not say how it is sharded over the {world} processes; use "
            "TensorLoader(..., rank=get_rank(), world_size=get_world_size(), drop_last=True) or "
            "a DataLoader with a DistributedSampler"
        )
