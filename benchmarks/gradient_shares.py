"""How loud is each method's distillation term? Gradient norms of every weighted term at initialisation.

    python benchmarks/gradient_shares.py [--seeds 5] [--setting transfer] [--threads 1]

For every benchmark method at the benchmark's own constructor arguments (``bench.runner.
method_kwargs``: the paper defaults, the combinations' control weights, RRD's sizes), plus GRKD
with the mean over class pairs (the ablation's ``reduction="mean"``; the benchmark's default sums
them), and for each seed: the
setting's training set for that seed, the student initialised with that seed, the first batch
(128 images) of the benchmark's loader for that seed, and the shipped teacher's outputs, as the
first training step of a run sees them. For each weighted term the script prints the L2 norm of
its gradient w.r.t. the student's parameters (:func:`relkd_tutorial.training.term_gradient_norms`),
its mean and sample standard deviation over the seeds, its share of its method's summed norms,
and its ratio to KD's ``kd`` term and to plain CE's ``ce`` term on the same seed (mean over
seeds). REFILLED is measured in each of its stages (set up with the teacher's global class
centres, as the benchmark does). RRD's queue is empty at the first step, so its term would have
no gradient there; it is measured with the queue filled by the teacher's embeddings of the
following batches, as after the first ``K / B`` steps of training.

The last lines give the GRKD weight at which its term's gradient at initialisation equals KD's
(the norm is linear in the weight), for the mean and for the sum over pairs. This is what
``docs/grkd.md`` ("How loud is the GRKD term?") refers to.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relkd_tutorial import build_method, build_model, seeded  # noqa: E402
from relkd_tutorial.bench.runner import method_kwargs  # noqa: E402
from relkd_tutorial.bench.settings import METHOD_LABELS, METHODS, default_settings  # noqa: E402
from relkd_tutorial.bench.workspace import build_workspace  # noqa: E402
from relkd_tutorial.data import TensorLoader  # noqa: E402
from relkd_tutorial.methods import SetupData  # noqa: E402
from relkd_tutorial.training import gradient_shares, term_gradient_norms  # noqa: E402
from relkd_tutorial.tutorial.loss_scale import fill_rrd_queue  # noqa: E402

#: (row label, benchmark method, overrides of its benchmark arguments)
VARIANTS: list[tuple[str, str, dict]] = [
    *((METHOD_LABELS[m], m, {}) for m in METHODS),
    ("GRKD, mean over pairs", "grkd", {"reduction": "mean"}),
]


def measure(setting_name: str, seeds: list[int]) -> dict[tuple[str, str], list[float]]:
    """``{(row label, term): [norm per seed]}`` (each label of a multi-stage method per stage)."""
    setting = default_settings(fast=False, preset="cpu")[setting_name]
    with tempfile.TemporaryDirectory() as tmp:
        ws = build_workspace(setting, Path(tmp), torch.device("cpu"), log=lambda _: None)
    out: dict[tuple[str, str], list[float]] = {}
    for seed in seeds:
        train = ws.train_set(seed)
        cache = ws.teacher_cache(train)
        batches = list(TensorLoader(train, setting.batch_size, augment=False, seed=seed))
        batch = batches[0]
        for label, name, overrides in VARIANTS:
            kwargs = method_kwargs(name, overrides, ws, len(train))
            with seeded(seed):
                method = build_method(name, **kwargs)
            if method.needs_setup:
                method.setup(SetupData(cache.features, cache.logits, cache.labels))
            if hasattr(method, "rrd"):  # RRD's queue starts empty: fill it as training would
                fill_rrd_queue(method, batches[1:], cache)
                label = f"{label} (full queue)"
            stages = [s.name for s in method.stages()]
            for stage in stages:
                method.set_stage(stage)
                student = build_model(setting.student, ws.num_classes, 1, seed=seed)
                row = label if len(stages) == 1 else f"{label} ({stage})"
                for term, norm in term_gradient_norms(method, student, batch, cache).items():
                    out.setdefault((row, term), []).append(norm)
    return out


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else float("nan")


def report(norms: dict[tuple[str, str], list[float]]) -> str:
    """The Markdown table and the GRKD weights that match KD's term."""
    kd = norms[(METHOD_LABELS["kd"], "kd")]
    ce = norms[(METHOD_LABELS["ce"], "ce")]
    rows = sorted({r for r, _ in norms}, key=[r for r, _ in norms].index)
    lines = [
        "| method | term | gradient norm (mean ± sd) | share of the method's norms | / KD's kd | / CE's ce |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        terms = [t for r, t in norms if r == row]
        per_seed = [gradient_shares({t: norms[(row, t)][i] for t in terms}) for i in range(len(kd))]
        for term in terms:
            xs = norms[(row, term)]
            share = _mean([s[term] for s in per_seed])
            to_kd = _mean([x / k for x, k in zip(xs, kd, strict=True)])
            to_ce = _mean([x / c for x, c in zip(xs, ce, strict=True)])
            lines.append(
                f"| {row} | {term} | {_mean(xs):.4g} ± {_sd(xs):.2g} | {share:.3f} | "
                f"{to_kd:.3g} | {to_ce:.3g} |"
            )
    mean_term = norms[("GRKD, mean over pairs", "grkd")]
    sum_term = norms[(METHOD_LABELS["grkd"], "grkd")]  # the benchmark's default sums over pairs
    w_mean = [k / g for k, g in zip(kd, mean_term, strict=True)]
    w_sum = [k / g for k, g in zip(kd, sum_term, strict=True)]
    ratio = [s / m for s, m in zip(sum_term, mean_term, strict=True)]
    lines += [
        "",
        f"GRKD sum / mean gradient norm: {_mean(ratio):.4g} (sd {_sd(ratio):.2g})",
        f"grkd_weight at which GRKD (mean over pairs) matches KD's kd term: "
        f"{_mean(w_mean):.3g} (sd {_sd(w_mean):.2g}, range {min(w_mean):.3g}-{max(w_mean):.3g})",
        f"grkd_weight at which GRKD (sum over pairs) matches KD's kd term: "
        f"{_mean(w_sum):.3g} (sd {_sd(w_sum):.2g}, range {min(w_sum):.3g}-{max(w_sum):.3g})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--setting", default="transfer", help="a Fashion-MNIST setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    norms = measure(args.setting, list(range(args.seeds)))
    print(
        f"Gradient norms at initialisation, setting {args.setting} (cpu preset), "
        f"seeds 0-{args.seeds - 1}, first batch of each seed's loader, torch {torch.__version__}"
    )
    print()
    print(report(norms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
