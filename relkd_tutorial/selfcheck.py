"""Self-check of the training loop on a device: every method, every precision mode, a few steps.

    timeout 600 python -m relkd_tutorial.selfcheck --device cuda --json selfcheck.json
    timeout 600 python -m relkd_tutorial.selfcheck --device cuda --epoch-cifar --json epoch.json
    python -m relkd_tutorial.selfcheck --tiny                 # CPU: small nets, well under a minute

For every method and mode of :data:`MODES` (``benchmarks/README.md`` "GPU self-check" has the
table of knobs and tolerances): every loss term on one fixed batch on the device, as the loop runs
it, against the same weights, images and method state in float64 on the CPU (``|device - float64|
<= atol + rtol |float64|``; TF32 off in the fp32 modes; a stateful method stepped once first,
REFILLED in both stages), then ``fit`` for 2 epochs of ``--steps`` batches with finite terms,
images/s on the second epoch and peak CUDA memory. A mode the device cannot run is a ``skipped``
row; a row that raises an ``error`` row; exit status 1 if a row failed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import time
from collections import namedtuple
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from . import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    ImageSet,
    Method,
    SetupData,
    StepInputs,
    TensorLoader,
    TrainConfig,
    available_methods,
    build_method,
    build_model,
    fit,
    resolve_device,
    seeded,
)
from .teacher import run_model
from .training.progress import RESERVED_KEYS  # the history columns that are not loss terms

QUIET = {"progress": False, "handle_signals": False}  # in every self-check run's TrainConfig


#: A precision / layout mode: the TrainConfig fields it sets (``KNOBS``) and its tolerance.
Mode = namedtuple(
    "Mode", "name amp channels_last compile rtol atol", defaults=("off", False, False, 1e-4, 1e-5)
)
KNOBS = ("amp", "channels_last", "compile")

MODES: tuple[Mode, ...] = (
    Mode("fp32"),
    Mode("bf16", amp="bf16", rtol=5e-2, atol=5e-3),
    Mode("fp16", amp="fp16", rtol=1e-2, atol=1e-3),
    Mode("channels_last", channels_last=True),
    Mode("compile", compile=True),
)

#: Nets and inputs of a run (teacher, student: build_model names; square images; batch size).
Size = namedtuple("Size", "teacher student num_classes image_size batch_size")
CIFAR = Size("resnet32x4", "resnet8x4", 100, 32, 128)
TINY = Size("teacher_cnn", "student_cnn_s", 10, 16, 16)


def random_cifar_images(n: int, num_classes: int, image_size: int = 32, seed: int = 0) -> ImageSet:
    """``n`` random ``(3, H, W)`` uint8 images in the CIFAR format, classes balanced."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=gen)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]  # (N,)
    names = [f"class_{c}" for c in range(num_classes)]
    return ImageSet(images, labels, names, "random_cifar", CIFAR100_MEAN, CIFAR100_STD)


def method_for(name: str, student: nn.Module, teacher: nn.Module, n_train: int) -> Method:
    """``build_method(name)`` with the feature widths (and a queue no longer than the data)."""
    if name in ("rrd", "rrd_kd"):
        dims = {"student_dim": student.feature_dim, "teacher_dim": teacher.feature_dim}
        return build_method(name, **dims, queue_size=min(4096, n_train))
    return build_method(name)


def skip_reason(mode: Mode, device: torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` (``None``: it can)."""
    if mode.amp == "fp16" and device.type != "cuda":
        return f"fp16 autocast with a GradScaler needs CUDA (TrainConfig refuses it on {device})"
    if mode.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU does not support bf16"
    if mode.amp == "bf16" and device.type not in ("cuda", "cpu"):
        return f"bf16 autocast is not checked on {device.type}"
    return _compile_probe(device.type) if mode.compile else None


@functools.cache
def _compile_probe(device_type: str) -> str | None:
    """Compile and run a two-op function (once per device type); a failure is the skip reason."""
    try:
        torch.compile(lambda t: torch.relu(t) * 2.0)(torch.ones(4, device=device_type))
    except Exception as exc:  # no C++ compiler, no Triton, an unsupported platform, ...
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return f"torch.compile unavailable: {type(exc).__name__}: {first}"
    return None


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _outputs(model: nn.Module, x: Tensor, mode: Mode | None) -> tuple[Tensor, Tensor]:
    """``(features, logits)`` as the loop has them (``mode=None``: float64, no autocast)."""
    if mode is None:
        return model(x)
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode.amp]
    f, z = run_model(model, x, "model", channels_last=mode.channels_last, autocast_dtype=dtype)
    return f.float(), z.float()


def _terms(
    student: nn.Module, teacher: nn.Module, method: Method, x: Tensor, y: Tensor, mode: Mode | None
) -> dict[str, float]:
    """Every loss term of ``method`` on one batch, per stage (``"stage:term"`` if several)."""
    with torch.no_grad():
        t_feat, t_logits = _outputs(teacher, x, mode)
    if method.needs_setup:
        method.setup(SetupData(t_feat, t_logits, y))
    features, logits = _outputs(student, x, mode)
    index = torch.arange(len(y), device=y.device)  # (B,)
    inputs = StepInputs(features, logits, y, t_feat, t_logits, index)
    method.after_step(inputs)  # a stateful method's state is not empty (RRD's queue)
    out: dict[str, float] = {}
    stages = method.stages()
    for stage in stages:
        method.set_stage(stage.name)
        prefix = f"{stage.name}:" if len(stages) > 1 else ""
        out.update({prefix + k: float(v.detach()) for k, v in method.loss_terms(inputs).items()})
    return out


def reference_terms(student: nn.Module, teacher: nn.Module, method: Method, batch: Any) -> dict:
    """The check's reference: every loss term on copies of the modules in float64 on the CPU."""
    s, t, m = (copy.deepcopy(module).cpu().double() for module in (student, teacher, method))
    return _terms(s, t.eval(), m, batch.x.cpu().double(), batch.y.cpu(), None)


def loss_check(
    student: nn.Module, teacher: nn.Module, method: Method, batch: Any, mode: Mode, ref: dict
) -> dict[str, Any]:
    """Every loss term on ``batch``'s device in ``mode`` (on copies) against ``ref``, from
    :func:`reference_terms`. Returns the terms, the worst error over tolerance and ``ok``."""
    layout = torch.channels_last if mode.channels_last else torch.preserve_format
    student_d = copy.deepcopy(student).to(batch.x.device, memory_format=layout)
    teacher_d = copy.deepcopy(teacher).to(batch.x.device, memory_format=layout).eval()
    method_d = copy.deepcopy(method).to(batch.x.device)
    forward = torch.compile(student_d) if mode.compile else student_d
    with _tf32(mode.amp != "off"):  # fp32 modes: no TF32 in the comparison
        got = _terms(forward, teacher_d, method_d, batch.x, batch.y, mode)
    terms, worst = {}, 0.0
    for name, r in ref.items():
        d = got.get(name, math.nan)
        err, tol = abs(d - r), mode.atol + mode.rtol * abs(r)
        worst = max(worst, err / tol if math.isfinite(err) else math.inf)
        terms[name] = {"device": d, "float64": r, "abs_err": err, "tol": tol}
    return {"terms": terms, "err_over_tol": worst, "ok": worst <= 1.0 and set(got) == set(ref)}


def _peak_mib(device: torch.device, reset: bool = False) -> float | None:
    """Peak CUDA memory since the last reset in MiB (``None`` off CUDA); ``reset``: reset it."""
    if device.type != "cuda":
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def check_row(
    name: str, mode: Mode, size: Size, device: torch.device, data: ImageSet, steps: int, refs: dict
) -> dict[str, Any]:
    """One row: the loss check, then 2 epochs of ``steps`` batches with ``fit``. ``refs`` caches
    each method's float64 reference (the same weights, batch and method state in every mode)."""
    row: dict[str, Any] = {"method": name, "mode": mode.name, "rtol": mode.rtol, "atol": mode.atol}
    reason = skip_reason(mode, device)
    if reason is not None:
        return {**row, "status": "skipped", "reason": reason}
    teacher = build_model(size.teacher, size.num_classes, 3, seed=0).to(device).eval()
    student = build_model(size.student, size.num_classes, 3, seed=1)
    with seeded(2):
        method = method_for(name, student, teacher, len(data))
    plain = TensorLoader(data, size.batch_size, shuffle=False, augment=False, device=device)
    try:
        batch = next(iter(plain))
        if name not in refs:
            refs[name] = reference_terms(student, teacher, method, batch)
        check = loss_check(student, teacher, method, batch, mode, refs[name])
        loader = TensorLoader(
            data, size.batch_size, crop_padding=size.image_size // 8, drop_last=True,
            device=device, channels_last=mode.channels_last,
        )  # fmt: skip
        knobs = {k: getattr(mode, k) for k in KNOBS}
        config = TrainConfig(
            epochs=2, lr=0.01, schedule="constant", device=str(device), **knobs, **QUIET
        )
        _peak_mib(device, reset=True)
        history = fit(student, method, loader, config, teacher=teacher, setup_loader=plain)
        peak = _peak_mib(device)
    except Exception as exc:  # a row that raises is reported, never dropped
        return {**row, "status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    terms = (v for r in history for k, v in r.items() if k not in RESERVED_KEYS)  # loss terms
    finite = all(math.isfinite(v) for v in terms)
    row.update(check, status="ok" if check["ok"] and finite else "FAIL")
    row.update(train_terms_finite=finite, peak_mib=peak)
    row["images_per_s"] = steps * size.batch_size / history[-1]["seconds"]
    return row


def run_selfcheck(
    device: str | torch.device = "cpu",
    *,
    tiny: bool | None = None,
    methods: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    steps: int = 3,
) -> dict[str, Any]:
    """Every method x mode on ``device``; ``tiny=None``: tiny nets on a CPU, CIFAR nets elsewhere."""
    device = resolve_device(device)
    size = TINY if (device.type == "cpu" if tiny is None else tiny) else CIFAR
    unknown = set(modes or ()) - {m.name for m in MODES}
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {[m.name for m in MODES]}")
    chosen = [m for m in MODES if modes is None or m.name in modes]
    names = list(methods) if methods is not None else available_methods()
    data = random_cifar_images(steps * size.batch_size, size.num_classes, size.image_size)
    refs: dict[str, dict[str, float]] = {}
    rows = [check_row(n, m, size, device, data, steps, refs) for n in names for m in chosen]
    report = {"environment": environment(device), "size": size._asdict(), "steps": steps}
    return {**report, "rows": rows}


def cifar_epoch(
    device: str | torch.device = "cuda",
    *,
    images: int = 50_000,
    batch_size: int = 128,
    amp: str = "off",
    channels_last: bool = False,
) -> dict[str, Any]:
    """One CIFAR-100-shaped epoch of ``resnet32x4 -> resnet8x4`` KD on random data via ``fit``."""
    device = resolve_device(device)
    data = random_cifar_images(images, 100, 32)
    knobs = {"amp": amp, "channels_last": channels_last}
    loader = TensorLoader(
        data, batch_size, crop_padding=4, device=device, channels_last=channels_last
    )
    teacher = build_model("resnet32x4", 100, 3, seed=0)
    student = build_model("resnet8x4", 100, 3, seed=1)
    config = TrainConfig(epochs=1, device=str(device), **knobs, **QUIET)
    _peak_mib(device, reset=True)
    tic = time.perf_counter()
    history = fit(student, build_method("kd"), loader, config, teacher=teacher)
    seconds = time.perf_counter() - tic
    epoch = {"images": images, "batch_size": batch_size, **knobs, "seconds": seconds}
    epoch.update(images_per_s=images / seconds, peak_mib=_peak_mib(device))
    return {"environment": environment(device), "epoch": {**epoch, "loss": history[-1]["loss"]}}


def environment(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    env = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return env


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(report: dict[str, Any]) -> str:
    """The rows as a Markdown table (one per method x mode), with the tolerances."""
    lines = [
        "| method | mode | check | err/tol | loss | rtol | atol | images/s | peak MiB | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        head = f"| {r['method']} | {r['mode']} | {r['status']} |"
        tols = f"{r['rtol']:g} | {r['atol']:g}"
        if r["status"] in ("skipped", "error"):
            lines.append(f"{head} | | {tols} | | | {r['reason']} |")
            continue
        loss = next((t["device"] for k, t in r["terms"].items() if k.endswith("loss")), None)
        note = "" if r["train_terms_finite"] else "non-finite training loss"
        lines.append(
            f"{head} {r['err_over_tol']:.3g} | {_fmt(loss, '.4g')} | {tols} | "
            f"{r['images_per_s']:,.0f} | {_fmt(r['peak_mib'], ',.0f')} | {note} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto, ...")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="small nets and inputs (default on CPU)")
    size.add_argument("--cifar", action="store_true", help="the CIFAR nets (default off the CPU)")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method")
    parser.add_argument("--modes", nargs="+", default=None, help="default: every mode")
    parser.add_argument("--steps", type=int, default=3, help="batches per epoch (2 epochs)")
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--epoch-cifar", action="store_true", help="one CIFAR-100-shaped epoch")
    parser.add_argument("--epoch-images", type=int, default=50_000)
    parser.add_argument("--epoch-batch", type=int, default=128)
    parser.add_argument("--epoch-amp", default="off", choices=("off", "bf16", "fp16"))
    parser.add_argument("--epoch-channels-last", action="store_true")
    args = parser.parse_args(argv)
    if args.epoch_cifar:
        report = cifar_epoch(
            args.device, images=args.epoch_images, batch_size=args.epoch_batch,
            amp=args.epoch_amp, channels_last=args.epoch_channels_last,
        )  # fmt: skip
        e = report["epoch"]
        print(f"one epoch of resnet32x4 -> resnet8x4 KD on {report['environment']}")
        print(f"{e['images']:,} images, batch {e['batch_size']}, amp={e['amp']}, channels_last="
              f"{e['channels_last']}: {e['seconds']:.1f} s, {e['images_per_s']:,.0f} images/s, "
              f"peak MiB {_fmt(e['peak_mib'], ',.0f')}, loss {e['loss']:.4g}")  # fmt: skip
        failed = not math.isfinite(e["loss"])
    else:
        tiny = True if args.tiny else (False if args.cifar else None)
        report = run_selfcheck(
            args.device, tiny=tiny, methods=args.methods, modes=args.modes, steps=args.steps
        )
        print(f"selfcheck on {report['environment']}, nets {report['size']}")
        print(format_table(report))
        failed = any(r["status"] in ("FAIL", "error") for r in report["rows"])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
