"""Shared pieces of the distributed tests, and the worker each spawned process runs.

Everything is float64 and without BatchNorm (per-rank BN statistics would differ from the
single-process ones by design, see ``relkd_tutorial.training.distributed``), so a 2-process result can be
compared with the 1-process one to 1e-10.

The worker (:func:`worker`) joins a gloo process group through
:func:`relkd_tutorial.training.distributed.init_distributed`, as under ``torchrun``, and saves what it
computed into ``out_dir`` (one file per rank); ``tests/test_distributed.py`` computes the
single-process references and compares.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from relkd_tutorial.data import ImageSet, TensorLoader
from relkd_tutorial.methods import Method, SetupData, StepInputs, build_method
from relkd_tutorial.teacher import TeacherCache
from relkd_tutorial.training import TrainConfig, fit, seeded

N, C, D_S, D_T, HW = 32, 3, 6, 5, 6  # samples, classes, feature widths, image side
GLOBAL_BATCH = 12  # the step of part (a): each of 2 ranks holds 6 rows
WORLD = 2


class TinyNet(nn.Module):
    """``(B, 1, H, W)`` -> ``(features (B, 6), logits (B, 3))``: conv, tanh, pool, linear. No BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, D_S, 3, padding=1)
        self.fc = nn.Linear(D_S, C)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.fc.weight.dtype)  # the loader yields float32
        features = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)  # (B, D_S)
        return features, self.fc(features)


def tiny_net() -> TinyNet:
    with seeded(3):
        return TinyNet().double()


def image_set() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, HW, HW), dtype=torch.uint8, generator=g)
    labels = torch.arange(N) % C
    return ImageSet(images, labels, [f"c{k}" for k in range(C)], "tiny", (0.5,), (0.25,))


def teacher_cache() -> TeacherCache:
    """A fixed random "teacher" for all ``N`` samples (float64; the loop reads it as float32)."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(N, D_T, generator=g, dtype=torch.float64)
    logits = torch.randn(N, C, generator=g, dtype=torch.float64)
    return TeacherCache(features, logits, torch.arange(N) % C)


# (name, build_method kwargs, stage or None, REFILLED setup?)
METHOD_CASES: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("ce", "ce", {}, None),
    ("kd", "kd", {}, None),
    ("rkd", "rkd", {}, None),
    ("rkd_metric", "rkd", {"convention": "metric"}, None),
    ("grkd", "grkd", {}, None),
    ("grkd_topk_gap", "grkd", {"top_k": 2, "weighting": "prob_gap"}, None),
    ("grkd_kd", "grkd_kd", {}, None),
    ("rank_soft", "rank_soft", {}, None),
    ("rank_listwise", "rank_listwise", {"top_k": 2}, None),
    (
        "rrd",
        "rrd",
        {"student_dim": D_S, "teacher_dim": D_T, "embed_dim": 4, "queue_size": 20},
        None,
    ),
    (
        "rrd_before",
        "rrd",
        {
            "student_dim": D_S,
            "teacher_dim": D_T,
            "embed_dim": 4,
            "queue_size": 7,
            "update": "before",
        },
        None,
    ),  # fmt: skip
    (
        "rrd_kd",
        "rrd_kd",
        {"student_dim": D_S, "teacher_dim": D_T, "embed_dim": 4, "queue_size": 9},
        None,
    ),
    ("refilled_triplet", "refilled", {"margin": 1.0}, "embedding"),
    ("refilled_tuple", "refilled", {"margin": 1.0, "form": "tuple"}, "embedding"),
    ("refilled_global", "refilled", {}, "classifier"),
    ("refilled_local", "refilled", {"centres": "local"}, "classifier"),
]


def build_case(kind: str, kwargs: dict[str, Any], stage: str | None) -> Method:
    """The method of a case, identical in every process (seeded, same setup data)."""
    with seeded(4):
        method = build_method(kind, **kwargs).double()
    if method.needs_setup:
        cache = teacher_cache()
        method.setup(SetupData(cache.features, cache.logits, cache.labels))
    if stage is not None:
        method.set_stage(stage)
    if hasattr(method, "rrd"):  # a few teacher keys already in the queue: a non-zero loss
        with seeded(5):
            method.rrd.queue.enqueue(torch.randn(5, method.rrd.queue.keys.shape[1]).double())
    return method


def step_batch() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The global batch of part (a): images, labels, index, teacher features and logits."""
    data, cache = image_set(), teacher_cache()
    index = torch.randperm(N, generator=torch.Generator().manual_seed(2))[:GLOBAL_BATCH]
    x = (data.images[index].double() / 255 - 0.5) / 0.25  # (B, 1, H, W)
    return x, data.labels[index], index, cache.features[index], cache.logits[index]


def step(
    model: nn.Module, method: Method, x, y, index, t_feat, t_logits, gather=None
) -> tuple[dict[str, Tensor], StepInputs]:
    """One loss evaluation and backward pass (``gather`` turns local inputs into global ones)."""
    features, logits = model(x)
    inputs = StepInputs(features, logits, y, t_feat, t_logits, index)
    if gather is not None:
        inputs = gather(inputs)
    terms = method.loss_terms(inputs)
    terms["loss"].backward()
    return {k: v.detach() for k, v in terms.items()}, inputs


def grads(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


FIT_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "rkd": ("rkd", {}),
    "rrd": ("rrd", {"student_dim": D_S, "teacher_dim": D_T, "embed_dim": 4, "queue_size": 12}),
}


def fit_case(name: str, rank: int, world: int, out: Path) -> tuple[nn.Module, Method, list]:
    """A short training run: 2 epochs of 4 global batches of 8, sharded over ``world`` ranks."""
    kind, kwargs = FIT_CASES[name]
    model = tiny_net()
    with seeded(4):
        method = build_method(kind, **kwargs).double()
    data = image_set()
    loader = TensorLoader(data, 8, drop_last=True, seed=7, rank=rank, world_size=world)
    evaluation = TensorLoader.for_evaluation(data, 10, rank=rank, world_size=world)
    config = TrainConfig(
        epochs=2, lr=0.1, device="cpu", progress=False, seed=0, schedule="constant",
        checkpoint_dir=str(out / f"ckpt_{name}_r{rank}"),
        history_csv=str(out / f"history_{name}_r{rank}.csv"),
    )  # fmt: skip
    with warnings.catch_warnings():  # the cache holds un-augmented views: fine for this test
        warnings.filterwarnings("ignore", message="the teacher's outputs come from a TeacherCache")
        history = fit(
            model, method, loader, config, teacher=teacher_cache(), eval_loader=evaluation
        )
    return model, method, history


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(entry, out_dir: str | Path, world: int = WORLD) -> None:
    """Run ``entry(rank, world, port, out_dir)`` in ``world`` spawned processes (the launcher of
    every distributed test; ``entry`` must be importable, e.g. :func:`worker`)."""
    mp.spawn(entry, args=(world, free_port(), str(out_dir)), nprocs=world, join=True)


def join_group(rank: int, world: int, port: int) -> torch.device:
    """Join a gloo process group as ``torchrun`` would set it up (one thread per process)."""
    from relkd_tutorial.training import distributed

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    device = distributed.init_distributed()
    assert device.type == "cpu" and distributed.get_world_size() == world
    return device


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Entry point of each spawned process (``torch.multiprocessing.spawn`` passes ``rank``)."""
    from relkd_tutorial.training import distributed

    device = join_group(rank, world, port)
    out = Path(out_dir)
    try:
        # The bare gather with uneven shards (3 and 2 rows): value and gradient.
        rows = 3 - rank
        x = torch.full((rows, 2), float(rank + 1), dtype=torch.float64, requires_grad=True)
        gathered = distributed.all_gather(x)
        weights = torch.arange(10.0, dtype=torch.float64).view(5, 2)
        (gathered * weights).sum().backward()
        torch.save({"gathered": gathered.detach(), "grad": x.grad}, out / f"gather_r{rank}.pt")

        # (a) every method: one step on this rank's half of the global batch.
        x, y, index, t_feat, t_logits = step_batch()
        lo, hi = rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world
        results = {}
        for name, kind, kwargs, stage in METHOD_CASES:
            model = distributed.wrap_student(tiny_net(), device)
            method = build_case(kind, kwargs, stage)
            distributed.broadcast_module_state(method)
            terms, inputs = step(
                model, method, x[lo:hi], y[lo:hi], index[lo:hi], t_feat[lo:hi],
                t_logits[lo:hi], gather=distributed.gather_step_inputs,
            )  # fmt: skip
            distributed.average_gradients(p for p in method.parameters() if p.requires_grad)
            method.after_step(inputs)
            results[name] = {
                "terms": terms,
                "student": grads(model.module),
                "method": grads(method),
                "buffers": {k: v.clone() for k, v in method.state_dict().items()},
            }
        torch.save(results, out / f"step_r{rank}.pt")

        # (b, c) short training runs through fit.
        for name in FIT_CASES:
            model, method, history = fit_case(name, rank, world, out)
            for record in history:
                record.pop("seconds")
            torch.save(
                {"model": model.state_dict(), "method": method.state_dict(), "history": history},
                out / f"fit_{name}_r{rank}.pt",
            )
    finally:
        distributed.cleanup()


# ---------------------------------------------------------------------------------------------
# Ranks that build their parts with different seeds (tests/test_distributed_seed.py)
# ---------------------------------------------------------------------------------------------


def seeded_parts(seed_offset: int) -> tuple[nn.Module, Method, nn.Module]:
    """Student, RRD (a random frozen head, a random learnable head, random initial keys) and a
    live teacher module, each built under a seed shifted by ``seed_offset`` (the rank)."""
    with seeded(10 + seed_offset):
        student = TinyNet().double()
    with seeded(20 + seed_offset):
        method = build_method(
            "rrd", student_dim=D_S, teacher_dim=D_S, embed_dim=4, queue_size=12
        ).double()
    with seeded(30 + seed_offset):
        teacher = TinyNet().double()
    return student, method, teacher


def seeded_fit(seed_offset: int, rank: int, world: int) -> dict[str, Any]:
    """Two epochs of ``fit`` on parts seeded by ``seed_offset``; their final states."""
    student, method, teacher = seeded_parts(seed_offset)
    loader = TensorLoader(image_set(), 8, drop_last=True, seed=7, rank=rank, world_size=world)
    config = TrainConfig(
        epochs=2, lr=0.1, device="cpu", progress=False, seed=0, schedule="constant"
    )
    history = fit(student, method, loader, config, teacher=teacher)
    return {
        "model": student.state_dict(),
        "method": method.state_dict(),
        "teacher": teacher.state_dict(),
        "loss": [r["loss"] for r in history],
    }


def seeds_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Each rank builds student, method and teacher with *its own* seed, then trains: ``fit``
    must broadcast rank 0's copies (and refuse ``sync_batchnorm`` on the CPU)."""
    from relkd_tutorial.training import distributed

    join_group(rank, world, port)
    try:
        result = seeded_fit(rank, rank, world)
        student, method, teacher = seeded_parts(rank)
        loader = TensorLoader(image_set(), 8, drop_last=True, rank=rank, world_size=world)
        config = TrainConfig(epochs=1, device="cpu", progress=False, sync_batchnorm=True)
        try:
            fit(student, method, loader, config, teacher=teacher)
            result["sync_batchnorm_error"] = ""
        except ValueError as err:
            result["sync_batchnorm_error"] = str(err)
        torch.save(result, Path(out_dir) / f"seeds_r{rank}.pt")
    finally:
        distributed.cleanup()
