"""The processes of the distributed ``wrap_classifier`` test (``tests/test_wrap_distributed.py``).

Launched with :func:`_dist_worker.launch`. Two runs through ``fit`` with a sharded
``TensorLoader``, saved per rank:

- ``vit``: a wrapped tiny torchvision ViT student (LayerNorm only, no dropout: each sample is
  normalised on its own, so two processes must give the one-process result) distilled with RKD
  (relational: its loss needs the gathered global batch) from a wrapped ViT teacher;
- ``bn``: a wrapped MobileNetV3-small (BatchNorm) distilled with KD from a wrapped ResNet-18:
  per-rank BN statistics differ from one process by design, but DDP keeps the ranks' parameters
  identical.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.models as tvm
from _dist_worker import join_group
from torchvision.models.vision_transformer import VisionTransformer

from relkd_tutorial import (
    ImageSet,
    TensorLoader,
    TrainConfig,
    build_method,
    fit,
    seeded,
    wrap_classifier,
)

N, CLASSES, SIDE = 32, 4, 32


def _to_float64(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0].double(),)  # the loader yields float32 images


def tiny_vit(seed: int):
    """A float64 tiny ViT (so that two processes match one to 1e-9), wrapped."""
    with seeded(seed):
        vit = VisionTransformer(
            image_size=SIDE, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16,
            mlp_dim=32, num_classes=CLASSES,
        ).double()  # fmt: skip
    vit.register_forward_pre_hook(_to_float64)
    return wrap_classifier(vit)


def images() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (N, 3, SIDE, SIDE), dtype=torch.uint8, generator=g)
    labels = torch.arange(N) % CLASSES
    return ImageSet(pixels, labels, [f"c{k}" for k in range(CLASSES)], "tiny", (0.5,) * 3,
                    (0.25,) * 3)  # fmt: skip


def run(case: str, rank: int, world: int) -> tuple[torch.nn.Module, list]:
    """Two epochs of 4 global batches of 8, sharded over ``world`` ranks."""
    if case == "vit":
        student, teacher, method = tiny_vit(1), tiny_vit(2), build_method("rkd")
    else:
        with seeded(3):
            student = wrap_classifier(tvm.mobilenet_v3_small(num_classes=CLASSES))
            teacher = wrap_classifier(tvm.resnet18(num_classes=CLASSES))
        method = build_method("kd")
    loader = TensorLoader(images(), 8, drop_last=True, seed=7, rank=rank, world_size=world)
    config = TrainConfig(epochs=2, lr=0.05, device="cpu", progress=False, seed=0)
    history = fit(student, method, loader, config, teacher=teacher)
    for record in history:
        record.pop("seconds")
    return student, history


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from relkd_tutorial.training import distributed

    join_group(rank, world, port)
    try:
        for case in ("vit", "bn"):
            student, history = run(case, rank, world)
            torch.save(
                {"params": dict(student.named_parameters()), "history": history},
                Path(out_dir) / f"{case}_r{rank}.pt",
            )
    finally:
        distributed.cleanup()
