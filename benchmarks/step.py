"""One tiny-student SGD step under the benchmark's per-step choices: layout, input checks, compile.

    python benchmarks/step.py [--method kd] [--batch-size 128] [--rounds 15] [--steps 10]
                              [--threads 1] [--compile] [--only WORD ...] [--ops]

What one step is: the benchmark's training step for ``student_cnn_s`` on a fixed batch of the
shipped Fashion-MNIST subset (``TensorLoader``, no augmentation), the method's loss against the
shipped teacher's outputs for that batch (precomputed, as the benchmark's ``TeacherCache`` does),
``zero_grad``, ``backward`` and an SGD + Nesterov update, built from the loop's own pieces
(``student_forward``, ``make_step_inputs``, ``Method.loss_terms``).

Variants (each its own student, same seed, own optimizer):

- ``contiguous, checks on``: what the benchmark did before (the baseline, ratio 1.00);
- ``channels_last``: ``TrainConfig(channels_last=True)``: the student's weights and its input
  batch in ``torch.channels_last`` memory format;
- ``checks off``: :func:`relkd_tutorial.set_input_checks` ``(False)`` during the step (the
  NaN/Inf scans of the loss inputs and the cache index range check);
- ``bf16 autocast``: ``TrainConfig(amp="bf16")``: the student's forward under CPU autocast in
  bfloat16 (the losses stay float32, :func:`make_step_inputs`);
- ``compile`` (with ``--compile``): ``torch.compile`` of the student's forward, in both layouts;
  its warm-up (the first, compiling, steps) is timed separately and printed.

``--ops`` prints ``torch.profiler``'s per-operator table (self CPU time) of ``--steps`` steps of
each variant instead of the timing table.

Timing: one warm-up round, then ``--rounds`` rounds; in each round every variant runs
``--steps`` steps back to back, the variants in a rotating order (interleaved, so a change in the
machine's load hits all of them alike). The table reports the median over rounds of the time per
step, images per second, and the ratio of the baseline's median to the variant's (``> 1`` is
faster). The load average is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from relkd_tutorial import input_checks  # noqa: E402
from relkd_tutorial.data import TensorLoader, load_fashion_mnist  # noqa: E402
from relkd_tutorial.methods import build_method  # noqa: E402
from relkd_tutorial.models import build_model  # noqa: E402
from relkd_tutorial.pretrained import load_shipped_teacher  # noqa: E402
from relkd_tutorial.teacher import teacher_outputs  # noqa: E402
from relkd_tutorial.training.steps import make_step_inputs, student_forward  # noqa: E402


@dataclass(frozen=True)
class Variant:
    name: str
    channels_last: bool = False
    checks: bool = True
    compile: bool = False
    bf16: bool = False


VARIANTS = (
    Variant("contiguous, checks on (before)"),
    Variant("channels_last, checks on", channels_last=True),
    Variant("contiguous, checks off", checks=False),
    Variant("channels_last, checks off", channels_last=True, checks=False),
    Variant("channels_last, checks on, bf16 autocast", channels_last=True, bf16=True),
)
COMPILED = (
    Variant("compile, contiguous, checks on", compile=True),
    Variant("compile, channels_last, checks off", channels_last=True, checks=False, compile=True),
)


def make_step(variant: Variant, method_name: str, batch, t_feat, t_logits) -> Callable[[], None]:
    """A closure running one training step of ``variant`` on the fixed ``batch``."""
    student = build_model("student_cnn_s", 10, 1, seed=0)
    fmt = torch.channels_last if variant.channels_last else torch.preserve_format
    student.to(memory_format=fmt).train()
    forward = torch.compile(student) if variant.compile else student
    kwargs: dict = {}
    if method_name in ("rrd", "rrd_kd"):  # as the benchmark sizes them (a 3,000-image pool)
        kwargs = dict(student_dim=student.feature_dim, teacher_dim=t_feat.shape[1], queue_size=3000)
    elif method_name == "refilled":
        kwargs = dict(num_classes=10)
    method = build_method(method_name, **kwargs)
    params = list(student.parameters()) + list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def step() -> None:
        with input_checks(variant.checks):
            features, logits = student_forward(
                forward,
                batch.x,
                channels_last=variant.channels_last,
                autocast_dtype=torch.bfloat16 if variant.bf16 else None,
            )
            inputs = make_step_inputs(features, logits, batch, t_feat, t_logits)
            terms = method.loss_terms(inputs)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            method.after_step(inputs)

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="kd")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variants")
    parser.add_argument("--only", action="append", default=[], help="keep variants naming WORD")
    parser.add_argument("--ops", action="store_true",
                        help="print torch.profiler's per-operator table of each variant instead")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train, _ = load_fashion_mnist("subset")
    batch = next(iter(TensorLoader(train, args.batch_size, augment=False, seed=0)))
    teacher = load_shipped_teacher("cpu")
    with torch.no_grad():
        t_feat, t_logits = teacher_outputs(teacher, batch)
    variants = list(VARIANTS) + (list(COMPILED) if args.compile else [])
    if args.only:
        variants = [v for v in variants if any(w in v.name for w in args.only)]

    load_start = os.getloadavg()
    steps: dict[str, Callable[[], None]] = {}
    for v in variants:
        steps[v.name] = make_step(v, args.method, batch, t_feat, t_logits)
        tic = time.perf_counter()
        for _ in range(3 if v.compile else 1):
            steps[v.name]()  # warm-up (compiles)
        if v.compile:
            print(f"{v.name}: warm-up (3 steps, compiling) {time.perf_counter() - tic:.1f} s")
    if args.ops:  # where one step's time goes, operator by operator
        from torch.profiler import ProfilerActivity, profile

        for v in variants:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    steps[v.name]()
            print(f"\n{v.name}: {args.steps} steps\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        return 0
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.rounds + 1):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            tic = time.perf_counter()
            for _ in range(args.steps):
                steps[v.name]()
            if r > 0:  # round 0 is a warm-up
                times[v.name].append((time.perf_counter() - tic) / args.steps)
    load_end = os.getloadavg()

    base = statistics.median(times[variants[0].name])
    print(
        f"\nOne {args.method} step of student_cnn_s, batch {args.batch_size}, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, {platform.machine()}; "
        f"median of {args.rounds} interleaved rounds x {args.steps} steps; load average "
        f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end\n"
    )
    print("| variant | ms / step | images / s | x before |")
    print("|---|---:|---:|---:|")
    for v in variants:
        med = statistics.median(times[v.name])
        print(f"| {v.name} | {1000 * med:.2f} | {args.batch_size / med:,.0f} | {base / med:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
