"""Loss speed and memory benchmark: forward + backward time and peak memory of every loss.

Usage (from the repository root):

    python benchmarks/losses.py --threads 2            # the full tables (about 15 min, 2 cores)
    python benchmarks/losses.py --threads 2 --quick    # the target sizes and a few small ones
    python benchmarks/losses.py --only grkd --only rrd # cases whose name contains a word
    python benchmarks/losses.py --check-memory         # verify the memory method

Prints two Markdown tables (losses on ``(B, C)`` logits, losses on ``(B, D)`` features) and the
status of the speed/memory targets of the loss library.

Method.
- *Time* = median over repeats of one forward + backward (``loss.backward()``) after one warm-up
  call; repeats fill about ``--budget`` seconds (at least 5, at most 2000). Input checks (the
  NaN scan) are switched off, so the math is timed. The teacher side is built once per case and
  is not timed where the method lets it be precomputed (RRD's queue, REFILLED's centres).
- *Peak memory* = the extra resident memory (RSS) one forward + backward needs beyond what is
  resident before it: inputs, queues and centres excluded; autograd buffers, saved tensors,
  temporaries and gradients included. Each (loss, size) runs in a fresh Python subprocess, so one
  case's allocations cannot hide in another's. The worker makes its warm-up call, resets the
  kernel's high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), reads ``VmRSS``,
  runs one forward + backward and reads ``VmHWM``: peak = ``VmHWM - VmRSS``. For RSS to follow the
  tensors, glibc must hand freed blocks back to the OS: the subprocess runs with
  ``MALLOC_MMAP_THRESHOLD_=65536`` (every block above 64 KiB is its own ``mmap``, unmapped on
  free; a fixed threshold also turns off glibc's adaptive threshold, which would otherwise keep
  freed warm-up blocks on the heap and hide the measured call's reuse of them) and
  ``MALLOC_TRIM_THRESHOLD_=65536``. PyTorch's CPU allocator does not cache blocks itself.
  Those settings make every medium-sized allocation a fresh ``mmap`` with page faults, which
  would slow chunked kernels down, so time and memory are measured in two separate subprocesses
  and only the memory one runs with them.
  ``--check-memory`` measures a known 256 MiB allocation this way. Without ``clear_refs`` the
  worker falls back to ``ru_maxrss`` after minus ``VmRSS`` before (correct only if the warm-up
  peak was lower). On CUDA it uses ``torch.cuda.max_memory_allocated`` instead.
- The reference patterns are written here, not in the package: the common RKD-angle code (a
  ``(B, B, D)`` difference tensor, normalised, a ``(B, B, D) x (B, D, B)`` batched matmul to
  ``(B, B, B)``, then ``smooth_l1``) and the direct GRKD (a ``(B, C, C)`` masked softplus).

Adding a loss: append one ``Case`` to the list in ``_cases``. ``kind`` picks the sizes
(``"logits"``: ``B x C``; ``"features"``: ``B x D``) and the inputs the worker builds (logits
``3 * N(0, 1)``; features ``relu(N(0, 1))``, like pooled post-ReLU activations; the student
tensor requires grad). ``make(batch, width, device)`` builds whatever else the loss needs (a
queue, labels, centres, heads) and returns ``loss(student, teacher) -> scalar``; ``stateless(fn)``
wraps a pure loss function. An optional ``note(batch, width)`` labels the row (e.g. the number of
triplets mined).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

LossFn = Callable[[Tensor, Tensor], Tensor]
Make = Callable[[int, int, torch.device], LossFn]

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


# --------------------------------------------------------------------------------------------
# Reference patterns (what most public code does)
# --------------------------------------------------------------------------------------------


def reference_rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """The common RKD angle loss: (B, B, D) differences and a (B, B, B) batched matmul."""

    def cosines(x: Tensor) -> Tensor:
        diff = x.unsqueeze(0) - x.unsqueeze(1)  # (B, B, D)
        unit = F.normalize(diff, p=2, dim=2)  # (B, B, D)
        return torch.bmm(unit, unit.transpose(1, 2)).view(-1)  # (B, B, B) -> (B^3,)

    with torch.no_grad():
        target = cosines(teacher)
    return F.smooth_l1_loss(cosines(student), target)


def reference_grkd_dense(student: Tensor, teacher: Tensor) -> Tensor:
    """The direct GRKD: a (B, C, C) masked softplus (uniform weights, all pairs, tau = 1)."""
    pref = teacher[:, :, None] > teacher[:, None, :]  # (B, C, C)
    gaps = student[:, :, None] - student[:, None, :]  # (B, C, C)
    per_pair = F.softplus(-gaps) * pref  # (B, C, C)
    count = pref.sum(dim=(1, 2)).clamp_min(1)  # (B,)
    return (per_pair.sum(dim=(1, 2)) / count).mean()


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One loss to benchmark (see the module docstring)."""

    name: str
    kind: str  # "logits" (B x C) or "features" (B x D)
    make: Make
    max_elements: int | None = None  # skip sizes whose B * C^2 (logits) or B^2 * D exceed this
    note: Callable[[int, int], str] | None = None


BASELINE = {"logits": "kd", "features": "ref: rkd_angle (B,B,D)+bmm"}
TITLE = {"logits": "Losses on logits, B x C", "features": "Losses on features, B x D"}
REFILLED_CLASSES = 10  # stage-1 labels: B samples spread evenly over 10 classes
REFILLED_TEACHER_WIDTH = 256  # stage 2: D_T of the teacher features and centres


def stateless(fn: LossFn) -> Make:
    """``make`` for a pure loss function."""
    return lambda batch, width, device: fn


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _labels(batch: int, classes: int, device: torch.device) -> Tensor:
    return (torch.arange(batch) % classes).to(device)  # (B,) balanced classes


def _unit_rows(n: int, width: int, seed: int, device: torch.device) -> Tensor:
    return F.normalize(torch.randn(n, width, generator=_gen(seed)), dim=1).to(device)  # (n, w)


def _rrd(queue_size: int) -> Make:
    """``rrd_loss`` on embeddings of width D against a full queue of K unit keys."""
    from relkd_tutorial.losses import rrd_loss

    def make(batch: int, width: int, device: torch.device) -> LossFn:
        queue = _unit_rows(queue_size, width, 7, device)  # (K, D)
        return lambda s, t: rrd_loss(s, t, queue, 0.04, 0.10)

    return make


def _rrd_module(batch: int, width: int, device: torch.device) -> LossFn:
    """``RRDLoss``: both heads (D -> 128), a full queue of K = 16384, student head trained."""
    from relkd_tutorial.losses import RRDLoss

    criterion = RRDLoss(width, width, embed_dim=128, queue_size=16384).to(device)
    for start in range(0, 16384, 4096):  # fill the queue once
        criterion.update_queue(torch.randn(4096, width, generator=_gen(start)).relu().to(device))
    return lambda s, t: criterion(s, t)


def _refilled_stage1(form: str) -> Make:
    """REFILLED stage 1 (mining on the student + the loss), labels spread over 10 classes."""
    from relkd_tutorial.losses import refilled_embedding_loss

    def make(batch: int, width: int, device: torch.device) -> LossFn:
        y = _labels(batch, REFILLED_CLASSES, device)
        return lambda s, t: refilled_embedding_loss(s, t, y, 0.2, 4.0, form)

    return make


def _refilled_triplets(batch: int, width: int) -> str:
    """How many semi-hard triplets the worker's student features hold (they set the cost)."""
    from relkd_tutorial.losses import mine_triplets

    s = torch.randn(batch, width, generator=_gen(0)).relu()  # the worker's student, seed 0
    a, p, _ = mine_triplets(s, _labels(batch, REFILLED_CLASSES, s.device), 0.2)
    return f"{a.numel()} triplets, {torch.unique(a * batch + p).numel()} tuples"


def _refilled_stage2(batch: int, classes: int, device: torch.device) -> LossFn:
    """REFILLED stage 2's KL (global centres given; the teacher logits are not used)."""
    from relkd_tutorial.losses import refilled_classifier_kl

    y = _labels(batch, classes, device)
    f_t = torch.randn(batch, REFILLED_TEACHER_WIDTH, generator=_gen(3)).relu().to(device)
    centres = _unit_rows(classes, REFILLED_TEACHER_WIDTH, 4, device)  # (C, D_T)
    return lambda z, t: refilled_classifier_kl(z, f_t, y, centres, 2.0)


def _cases() -> list[Case]:
    from relkd_tutorial.losses import (
        grkd_loss,
        kd_loss,
        listwise_rank_loss,
        rkd_angle_loss,
        rkd_distance_loss,
        soft_pairwise_rank_loss,
    )

    return [
        # (B, C) logits; the first is the baseline of the "x KD" column
        Case("kd", "logits", stateless(kd_loss)),
        Case("grkd", "logits", stateless(grkd_loss)),
        Case("grkd top_k=5", "logits", stateless(lambda s, t: grkd_loss(s, t, top_k=5))),
        Case(
            "grkd prob_gap", "logits", stateless(lambda s, t: grkd_loss(s, t, weighting="prob_gap"))
        ),
        Case("ref: grkd dense (B,C,C)", "logits", stateless(reference_grkd_dense), 256 * 10**6),
        Case("rank_soft", "logits", stateless(soft_pairwise_rank_loss)),
        Case("rank_listwise", "logits", stateless(listwise_rank_loss)),
        Case("refilled stage 2 (KL)", "logits", _refilled_stage2),
        # (B, D) features; the first is the baseline of the "x ref" column
        Case("ref: rkd_angle (B,B,D)+bmm", "features", stateless(reference_rkd_angle)),
        Case("rkd_angle", "features", stateless(rkd_angle_loss)),
        Case("rkd_distance", "features", stateless(rkd_distance_loss)),
        Case("rrd K=4096", "features", _rrd(4096)),
        Case("rrd K=16384", "features", _rrd(16384)),
        Case("rrd module (heads 128) K=16384", "features", _rrd_module),
        Case(
            "refilled stage 1 triplet",
            "features",
            _refilled_stage1("triplet"),
            None,
            _refilled_triplets,
        ),
        Case(
            "refilled stage 1 tuple",
            "features",
            _refilled_stage1("tuple"),
            None,
            _refilled_triplets,
        ),
    ]


FULL_SIZES = {
    "logits": [(b, c) for c in (10, 100, 1000) for b in (64, 128, 256, 512)],
    "features": [(b, d) for d in (64, 256) for b in (64, 128, 256, 512)],
}
QUICK_SIZES = {
    "logits": [(64, 10), (256, 100), (256, 1000)],
    "features": [(64, 64), (256, 256)],
}


def _too_big(case: Case, batch: int, width: int) -> bool:
    if case.max_elements is None:
        return False
    n = batch * width * width if case.kind == "logits" else batch * batch * width
    return n > case.max_elements


# --------------------------------------------------------------------------------------------
# Worker: one case, one size, in a fresh process
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure_peak(step: Callable[[], None], device: torch.device) -> float:
    """Extra peak memory (MiB) of one call of ``step`` beyond what is resident before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    reset = _reset_peak()
    base = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM") if reset else None
    if peak is None:  # no clear_refs: the process's lifetime peak (an upper bound)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return (peak - (base or 0)) / 1024


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.check_memory:  # a known allocation: 256 MiB of float32, written to
        step = lambda: torch.ones(64 * 2**20, device=device).sum().item()  # noqa: E731
        step()
        print(json.dumps({"peak_mib": _measure_peak(step, device)}))
        return
    from relkd_tutorial import set_input_checks

    set_input_checks(False)  # time the math, not the NaN scan
    case = {c.name: c for c in _cases()}[args.case]
    g = _gen(0)
    b, w = args.batch, args.width
    if case.kind == "logits":
        student, teacher = 3 * torch.randn(b, w, generator=g), 3 * torch.randn(b, w, generator=g)
    else:
        student, teacher = torch.randn(b, w, generator=g).relu(), torch.randn(b, w, generator=g)
        teacher = teacher.relu()
    student = student.to(device).requires_grad_(True)
    teacher = teacher.to(device)
    loss_fn = case.make(b, w, device)

    def step() -> None:
        student.grad = None
        loss_fn(student, teacher).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (lazy initialisation, thread pools)
    if args.measure == "memory":
        print(json.dumps({"peak_mib": _measure_peak(step, device)}))
        return
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 2000 and (len(times) < 5 or time.perf_counter() - start < args.budget):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    note = case.note(b, w) if case.note is not None else ""
    print(json.dumps({"ms": 1e3 * statistics.median(times), "n": len(times), "note": note}))


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

Result = dict[str, float | str]


def _run(args: argparse.Namespace, extra: list[str], memory: bool) -> Result:
    """One worker subprocess; ``memory`` runs it under the glibc settings of the memory method."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *extra]
    cmd += ["--threads", str(args.threads), "--device", args.device, "--budget", str(args.budget)]
    cmd += ["--measure", "memory" if memory else "time"]
    path = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=path, **(MALLOC_ENV if memory else {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_case(args: argparse.Namespace, extra: list[str]) -> Result:
    """Time (default malloc) and peak memory (mmap-per-block malloc), in two fresh processes."""
    timed = _run(args, extra, memory=False)
    if "error" in timed:
        return timed
    memory = _run(args, extra, memory=True)
    return {**timed, "peak_mib": memory.get("peak_mib", float("nan"))}


def _selected(cases: list[Case], only: list[str]) -> list[Case]:
    """Cases whose name contains one of ``only`` (all if empty), plus each kind's baseline."""
    if not only:
        return cases
    chosen = [c for c in cases if any(word in c.name for word in only)]
    kinds = {c.kind for c in chosen}
    return [c for c in cases if c in chosen or (c.kind in kinds and c.name == BASELINE[c.kind])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="target sizes and a few small ones")
    parser.add_argument("--only", action="append", default=[], help="run cases containing this")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per case")
    parser.add_argument("--check-memory", action="store_true", help="verify the memory method")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    if args.check_memory:
        got = _run(args, ["--check-memory"], memory=True)
        print(f"a known allocation of 256 MiB measured as {got.get('peak_mib', got)} MiB")
        return

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    cases = _selected(_cases(), args.only)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{args.threads} threads, device {args.device}, python {platform.python_version()}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"command: python benchmarks/losses.py {shown}".rstrip())
    results: dict[tuple[str, int, int], Result] = {}
    for kind in ("logits", "features"):
        kind_cases = [c for c in cases if c.kind == kind]
        if kind_cases:
            _table(args, kind, kind_cases, sizes[kind], results)
    end = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"\nload average at end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    _report_targets(results)


def _table(
    args: argparse.Namespace,
    kind: str,
    cases: list[Case],
    sizes: list[tuple[int, int]],
    results: dict[tuple[str, int, int], Result],
) -> None:
    width_name = "C" if kind == "logits" else "D"
    base = BASELINE[kind]
    ratio_name = "x KD" if kind == "logits" else "x ref"
    print(f"\n{TITLE[kind]} (time ratio to `{base}` at the same size)\n")
    print(f"| loss | B | {width_name} | fwd+bwd ms | {ratio_name} | peak MiB | repeats | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for case in cases:
        for b, w in sizes:
            row = f"| {case.name} | {b} | {w} |"
            if _too_big(case, b, w):
                print(f"{row} skipped (too large) | | | | |", flush=True)
                continue
            r = _measure_case(args, ["--case", case.name, "--batch", str(b), "--width", str(w)])
            results[(case.name, b, w)] = r
            if "error" in r:
                print(f"{row} error: {r['error']} | | | | |", flush=True)
                continue
            ref = results.get((base, b, w), {})
            ratio = f"{float(r['ms']) / float(ref['ms']):.2f}" if "ms" in ref else ""
            print(
                f"{row} {float(r['ms']):.3f} | {ratio} | {float(r['peak_mib']):.1f} | "
                f"{int(r['n'])} | {r.get('note', '')} |",
                flush=True,
            )


def _report_targets(results: dict[tuple[str, int, int], Result]) -> None:
    def get(name: str, b: int, w: int) -> Result | None:
        r = results.get((name, b, w))
        return r if r is not None and "error" not in r else None

    lines = []
    ours, ref = get("rkd_angle", 256, 256), get(BASELINE["features"], 256, 256)
    if ours and ref:
        speedup = float(ref["ms"]) / float(ours["ms"])
        lines.append(
            f"- RKD angle, B=256 D=256: {speedup:.1f}x faster than the (B,B,D)+bmm pattern "
            f"({float(ours['ms']):.1f} vs {float(ref['ms']):.1f} ms; peak "
            f"{float(ours['peak_mib']):.1f} vs {float(ref['peak_mib']):.1f} MiB; target >= 5x, "
            f"no (B,B,D) tensor): {'MET' if speedup >= 5 else 'NOT MET'}"
        )
    grkd, kd = get("grkd", 256, 100), get("kd", 256, 100)
    if grkd and kd:
        ratio = float(grkd["ms"]) / float(kd["ms"])
        lines.append(
            f"- GRKD all pairs, C=100 B=256: {ratio:.1f}x Hinton KD's time "
            f"({float(grkd['ms']):.3f} vs {float(kd['ms']):.3f} ms; target <= 8x): "
            f"{'MET' if ratio <= 8 else 'NOT MET'}"
        )
    big = get("grkd", 256, 1000)
    if big:
        ok = float(big["ms"]) < 1500 and float(big["peak_mib"]) < 1024
        lines.append(
            f"- GRKD all pairs, C=1000 B=256: {float(big['ms']):.1f} ms, "
            f"{float(big['peak_mib']):.1f} MiB peak (targets < 1500 ms and < 1024 MiB): "
            f"{'MET' if ok else 'NOT MET'}"
        )
    if lines:
        print("\nTargets:")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
