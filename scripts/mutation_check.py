"""A repeatable mutation check: inject one small realistic bug at a time, run the tests that
should catch it, count the mutants they kill.

    python scripts/mutation_check.py            # every mutant; exit 1 if any survives
    python scripts/mutation_check.py --list     # the table, nothing run
    python scripts/mutation_check.py --only kd_missing_t2 --only sgd_weight_decay_ignored

Each mutant is ``(name, kind, old, new, tests)``: ``old`` is an exact code snippet that must occur
exactly once in ``relkd_tutorial/**/*.py`` (searched across the whole package, not by file, so
the table keeps working when code moves between modules), ``new`` its replacement, ``tests`` the
few test files / node ids that should fail. The package and the tests are copied once to a
temporary directory; for each mutant the one file is rewritten, the tests run there with
``python -m pytest -x -q -p no:cacheprovider`` (``PYTHONPATH`` = the copy, no bytecode cache),
and the file restored. A test run that fails (or times out) kills the mutant. Before the mutants,
the same tests run once on the unmutated copy (``--no-baseline`` skips it): a selection that
already fails would "kill" everything.

``mutmut`` would do the same with generated mutants, but far too slowly for a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "relkd_tutorial"


@dataclass(frozen=True)
class Mutant:
    name: str
    kind: str
    old: str
    new: str
    tests: tuple[str, ...]


KNOBS_TRAIN = "tests/test_knobs_train.py"
KNOBS_METHODS = "tests/test_knobs_methods.py"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ loss math
    Mutant("kd_missing_t2", "loss", "return kl * temp**2", "return kl", ("tests/test_kd.py",)),
    Mutant(
        "kd_teacher_temperature_missing", "loss",
        "log_p = F.log_softmax(t.detach().to(dtype) / temp, dim=1)",
        "log_p = F.log_softmax(t.detach().to(dtype), dim=1)",
        ("tests/test_kd.py",),
    ),
    Mutant(
        "kd_mean_over_b_times_c", "loss",
        'reduction="sum", log_target=True) / z.shape[0]',
        'reduction="mean", log_target=True)',
        ("tests/test_kd.py",),
    ),
    Mutant(
        "kd_sign_flip", "loss", "kl = F.kl_div(log_q, log_p,", "kl = -F.kl_div(log_q, log_p,",
        ("tests/test_kd.py",),
    ),
    Mutant(
        "kd_teacher_detach_removed", "loss",
        "log_p = F.log_softmax(t.detach().to(dtype) / temp, dim=1)",
        "log_p = F.log_softmax(t.to(dtype) / temp, dim=1)",
        ("tests/test_kd.py",),
    ),
    Mutant(
        "rkd_distance_sum_not_mean", "loss",
        'F.smooth_l1_loss(psi_s, psi_t, reduction="mean", beta=1.0)',
        'F.smooth_l1_loss(psi_s, psi_t, reduction="sum", beta=1.0)',
        ("tests/test_rkd.py",),
    ),
    Mutant(
        "rkd_distance_l2_not_huber", "loss",
        'F.smooth_l1_loss(psi_s, psi_t, reduction="mean", beta=1.0)',
        'F.mse_loss(psi_s, psi_t, reduction="mean")',
        ("tests/test_rkd.py",),
    ),
    Mutant("rkd_angle_sum_not_mean", "loss", "return total * scale", "return total",
           ("tests/test_rkd.py",)),  # fmt: skip
    Mutant(
        "grkd_temperature_multiplies", "loss",
        "v = z.to(dtype) / temp  # (B, C)\n"
        "        v = v - v.mean(dim=1, keepdim=True)  # exact (shift invariance); keeps P(v) well "
        "scaled\n        t = t.detach()",
        "v = z.to(dtype) * temp  # (B, C)\n"
        "        v = v - v.mean(dim=1, keepdim=True)  # exact (shift invariance); keeps P(v) well "
        "scaled\n        t = t.detach()",
        ("tests/test_grkd.py",),
    ),
    Mutant(
        "grkd_sum_not_mean_over_pairs", "loss",
        "numerator / n_pairs.clamp_min(1).to(dtype)", "numerator",
        ("tests/test_grkd.py",),
    ),
    Mutant(
        "grkd_sign_flip", "loss",
        "numerator = numerator - (targets.to(dtype) * v).sum(dim=1) - tied",
        "numerator = numerator + (targets.to(dtype) * v).sum(dim=1) - tied",
        ("tests/test_grkd.py",),
    ),
    Mutant(
        "soft_rank_not_mean_over_pairs", "loss",
        "return per_sample.mean() / (c * (c - 1) / 2)", "return per_sample.mean()",
        ("tests/test_ranking.py",),
    ),
    Mutant(
        "soft_rank_teacher_temperature_ignored", "loss",
        "soft_wins(t.detach().to(dtype) / teacher_temp)", "soft_wins(t.detach().to(dtype))",
        ("tests/test_ranking.py",),
    ),
    Mutant(
        "listwise_mean_not_sum_over_positions", "loss",
        "per_sample = (tail_lse[:, :k] - v[:, :k]).sum(dim=1)",
        "per_sample = (tail_lse[:, :k] - v[:, :k]).mean(dim=1)",
        ("tests/test_ranking.py",),
    ),
    Mutant(
        "rrd_student_uses_teacher_temperature", "loss",
        "cosine_similarity_matrix(student_emb.to(dtype), keys) / tau_s",
        "cosine_similarity_matrix(student_emb.to(dtype), keys) / tau_t",
        ("tests/test_rrd.py",),
    ),
    Mutant(
        "rrd_sign_flip", "loss",
        "return -(log_p_t.exp() * log_p_s).sum(dim=1).mean()",
        "return (log_p_t.exp() * log_p_s).sum(dim=1).mean()",
        ("tests/test_rrd.py",),
    ),
    Mutant(
        "rrd_sum_not_mean_over_batch", "loss",
        "return -(log_p_t.exp() * log_p_s).sum(dim=1).mean()",
        "return -(log_p_t.exp() * log_p_s).sum()",
        ("tests/test_rrd.py",),
    ),
    Mutant(
        "refilled_triplet_half_dropped", "loss",
        "return 0.5 * binary_kl.mean()", "return binary_kl.mean()",
        ("tests/test_refilled.py",),
    ),
    Mutant(
        "refilled_tau1_ignored", "loss",
        "gap_s = (d_s.take(an) - d_s.take(ap)) / tau1", "gap_s = (d_s.take(an) - d_s.take(ap))",
        ("tests/test_refilled.py",),
    ),
    Mutant(
        "refilled_stage2_student_temperature_missing", "loss",
        "log_p_s = _masked_log_softmax(z / tau2, valid)",
        "log_p_s = _masked_log_softmax(z, valid)",
        ("tests/test_refilled.py",),
    ),
    Mutant(
        "supervised_ce_counts_unlabelled", "loss",
        "ce = F.cross_entropy(z, targets, ignore_index=-1)",
        "ce = F.cross_entropy(z, targets.clamp_min(0))",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "dist_inter_missing_tau2", "loss",
        "return temp**2 * _one_minus_pearson(y_s, y_t)", "return _one_minus_pearson(y_s, y_t)",
        ("tests/test_dist.py",),
    ),
    Mutant(
        "dist_teacher_temperature_missing", "loss",
        "y_t = F.softmax(t.detach().to(dtype) / temp, dim=1)  # (B, C) teacher",
        "y_t = F.softmax(t.detach().to(dtype), dim=1)  # (B, C) teacher",
        ("tests/test_dist.py",),
    ),
    Mutant(
        "dist_intra_not_transposed", "loss",
        "_one_minus_pearson(y_s.T, y_t.T)", "_one_minus_pearson(y_s, y_t)",
        ("tests/test_dist.py",),
    ),
    Mutant(
        "dist_pearson_not_centred", "loss",
        "a_c = a - a.mean(dim=1, keepdim=True)  # (R, K)", "a_c = a  # (R, K)",
        ("tests/test_dist.py",),
    ),
    Mutant(
        "gradient_norms_in_eval_mode", "loss",
        "student.train()\n    method.train()\n    try:",
        "student.eval()\n    method.train()\n    try:",
        ("tests/test_diagnostics.py",),
    ),
    # ------------------------------------------------------------------ method weights, defaults
    Mutant(
        "kd_default_temperature", "method",
        "kd_weight: float = 0.9, temperature: float = 4.0", "kd_weight: float = 0.9, "
        "temperature: float = 2.0", (KNOBS_METHODS,),
    ),  # fmt: skip
    Mutant(
        "kd_default_weights_swapped", "method",
        "ce_weight: float = 0.1, kd_weight: float = 0.9", "ce_weight: float = 0.9, "
        "kd_weight: float = 0.1", (KNOBS_METHODS,),
    ),  # fmt: skip
    Mutant(
        "kd_weight_dropped", "method",
        'self._logit_terms(inputs, ("kd", self.kd_weight, kd))',
        'self._logit_terms(inputs, ("kd", 1.0, kd))',
        (KNOBS_METHODS,),
    ),
    Mutant(
        "rkd_cifar_weights_swapped", "method",
        '{"cifar": (1.0, 25.0, 50.0)', '{"cifar": (1.0, 50.0, 25.0)', (KNOBS_METHODS,),
    ),
    Mutant(
        "rkd_explicit_weight_ignored", "method",
        "g if g is not None else d if d is not None else b",
        "d if d is not None else b",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "dist_beta_dropped", "method",
        '("dist_inter", self.beta, inter)', '("dist_inter", 1.0, inter)',
        (KNOBS_METHODS,),
    ),
    Mutant(
        "dist_default_gamma", "method",
        "beta: float = 1.0,\n        gamma: float = 1.0,",
        "beta: float = 1.0,\n        gamma: float = 2.0,",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "loss_method_weight_dropped", "method",
        "(self.term, weight, self.loss)",
        "(self.term, 1.0, self.loss)",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "grkd_default_temperature", "method",
        "temperature: float = 1.0,\n    top_k: int | None = None,\n    weighting",
        "temperature: float = 2.0,\n    top_k: int | None = None,\n    weighting",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "grkd_kd_temperature_ignored", "method",
        '"kd", self.kd_weight, lambda: kd_loss(z, t, self.kd_temperature))',
        '"kd", self.kd_weight, lambda: kd_loss(z, t, 4.0))',
        (KNOBS_METHODS,),
    ),
    Mutant(
        "loss_method_weights_swapped", "method",
        "ce_weight, weight, *options = bound", "weight, ce_weight, *options = bound",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "rrd_default_temperatures_swapped", "method",
        "tau_s: float = 0.04,\n        tau_t: float = 0.10,\n        ce_weight: float = 1.0,\n"
        "        rrd_weight: float = 1.0,\n        update",
        "tau_s: float = 0.10,\n        tau_t: float = 0.04,\n        ce_weight: float = 1.0,\n"
        "        rrd_weight: float = 1.0,\n        update",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "rrd_weight_dropped", "method",
        'terms["rrd"] = self.rrd_weight * self.rrd(', 'terms["rrd"] = self.rrd(', (KNOBS_METHODS,),
    ),
    Mutant(
        "rrd_kd_weight_dropped", "method", 'kd = ("kd", self.kd_weight, lambda',
        'kd = ("kd", 1.0, lambda',
        (KNOBS_METHODS,),
    ),
    Mutant(
        "rrd_kd_default_kd_temperature", "method",
        "*args: Any, kd_weight: float = 1.0, kd_temperature: float = 4.0,",
        "*args: Any, kd_weight: float = 1.0, kd_temperature: float = 2.0,",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "refilled_lambda1_dropped", "method",
        'with_total({"relation": self.lambda1 * l1})', 'with_total({"relation": l1})',
        (KNOBS_METHODS,),
    ),
    Mutant(
        "refilled_stage2_ce_weight_dropped", "method",
        '{"ce": self.ce_weight * ce, "local_kl"', '{"ce": ce, "local_kl"', (KNOBS_METHODS,),
    ),
    Mutant(
        "refilled_lambda2_dropped", "method",
        '"local_kl": self.lambda2 * kl}', '"local_kl": kl}', (KNOBS_METHODS,),
    ),
    Mutant(
        "refilled_default_lambda1", "method",
        "lambda1: float = 1000.0,", "lambda1: float = 100.0,", (KNOBS_METHODS,),
    ),
    Mutant(
        "refilled_default_stage1_fraction", "method",
        "        stage1_fraction: float = 0.3,\n        form",
        "        stage1_fraction: float = 0.5,\n        form",
        (KNOBS_METHODS,),
    ),
    Mutant(
        "refilled_restrict_to_batch_ignored", "method",
        "columns = present if restrict_to_batch else has_centre", "columns = present",
        (KNOBS_METHODS,),
    ),
    # ------------------------------------------------------------------ optimizer
    Mutant(
        "sgd_weight_decay_ignored", "optimizer",
        "nesterov=config.nesterov,\n            weight_decay=config.weight_decay,\n",
        "nesterov=config.nesterov,\n",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "adamw_weight_decay_ignored", "optimizer",
        "torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)",
        "torch.optim.AdamW(params, lr=config.lr)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "nesterov_ignored", "optimizer", "nesterov=config.nesterov,", "nesterov=False,",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "momentum_ignored", "optimizer", "momentum=config.momentum,", "momentum=0.9,",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "grad_clip_skipped", "optimizer",
        "torch.nn.utils.clip_grad_norm_(params, config.grad_clip)", "pass", (KNOBS_TRAIN,),
    ),
    Mutant(
        "grad_clip_student_only", "optimizer",
        "torch.nn.utils.clip_grad_norm_(params, config.grad_clip)",
        "torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)",
        (KNOBS_TRAIN,),
    ),
    # ------------------------------------------------------------------ loop knobs
    Mutant(
        "lr_schedule_not_stepped", "loop",
        "                scheduler.step()\n                if eval_loader", "                if eval_loader",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "cosine_off_by_one", "loop",
        "math.cos(math.pi * epoch / stage_epochs)", "math.cos(math.pi * (epoch + 1) / stage_epochs)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "warmup_ignored", "loop",
        "return factor * min(1.0, (epoch + 1) / (config.warmup_epochs + 1))", "return factor",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "step_milestone_exclusive", "loop",
        "sum(epoch >= m * stage_epochs for m in config.milestones)",
        "sum(epoch > m * stage_epochs for m in config.milestones)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "epochs_ignored", "loop",
        "stage_plan(method.stages(), config.epochs)", "stage_plan(method.stages(), 10)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "amp_ignored", "loop",
        "dtype = _autocast_dtype(config.amp, device)\n        ckpt_path",
        "dtype = None\n        ckpt_path",
        (f"{KNOBS_TRAIN}::test_amp_bf16_runs_the_forward_under_autocast_and_the_loss_in_float32",),
    ),
    Mutant(
        "channels_last_ignored", "loop",
        "memory_format = torch.channels_last if config.channels_last else torch.preserve_format",
        "memory_format = torch.preserve_format",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "compile_ignored", "loop",
        "if config.compile:\n            model = torch.compile(model)",
        "if False:\n            model = torch.compile(model)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "seed_ignored", "loop", "seed_everything(config.seed + rank)", "seed_everything(rank)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "device_ignored", "loop",
        "device = resolve_device(config.device)\n", 'device = resolve_device("auto")\n',
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "resume_ignored", "loop",
        "resume_state = _resume_state(config, ckpt_path)", "resume_state = None",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "history_csv_ignored", "loop",
        "if self.config.history_csv is not None and self.rank == 0:", "if False:", (KNOBS_TRAIN,),
    ),
    Mutant(
        "progress_ignored", "loop",
        "self.rank == 0 and _progress_enabled(self.config.progress)",
        "self.rank == 0 and _progress_enabled(True)",
        (KNOBS_TRAIN,),
    ),
    Mutant(
        "log_every_ignored", "loop",
        "if run.show and meter.steps % config.log_every == 0:", "if run.show:", (KNOBS_TRAIN,),
    ),
    Mutant(
        "handle_signals_ignored", "loop",
        "signals = StopSignals(config.handle_signals,", "signals = StopSignals(True,", (KNOBS_TRAIN,),
    ),
    Mutant(
        "train_acc_counts_unlabelled", "loop",
        "self.labelled += keep.sum()",
        "self.labelled += keep.numel()",
        ("tests/test_train.py::test_unlabelled_samples_are_skipped",),
    ),
    # ------------------------------------------------------------------ resume and RNG
    Mutant(
        "rng_after_skipped_steps_not_restored", "resume",
        "set_rng_state(resume.rng)  #", "pass  #", ("tests/test_resume_rng.py",),
    ),
    Mutant(
        "epoch_start_rng_not_restored", "resume",
        "set_rng_state(resume.epoch_rng)  #", "pass  #", ("tests/test_resume_rng.py",),
    ),
    Mutant(
        "python_rng_not_restored", "resume",
        "random.setstate((version, tuple(internal), gauss))", "pass",
        ("tests/test_resume_rng.py",),
    ),
    # ------------------------------------------------------------------ distributed
    Mutant(
        "method_not_broadcast_from_rank0", "distributed",
        "broadcast_module_state(self.method)  #", "pass  #", ("tests/test_distributed_seed.py",),
    ),
    Mutant(
        "teacher_not_broadcast_from_rank0", "distributed",
        "broadcast_module_state(teacher)  #", "pass  #", ("tests/test_distributed_seed.py",),
    ),
    Mutant(
        "sync_batchnorm_ignored", "distributed",
        "sync_batchnorm=config.sync_batchnorm)", "sync_batchnorm=False)",
        ("tests/test_distributed_seed.py",),
    ),
    # ------------------------------------------------------------------ benchmark helpers
    Mutant(
        "peak_memory_in_kib", "bench",
        "memory.mib = (peak - start) / 2**20",
        "memory.mib = (peak - start) / 2**10",
        ("tests/test_bench.py::test_peak_memory_is_measured_on_cpu",),
    ),
    Mutant(
        "ablation_seeds_ignored", "bench",
        "for seed in ablation_seeds(setting.seeds)",
        "for seed in setting.seeds",
        ("tests/test_protocol.py::test_ablation_jobs_cover_every_variant_on_the_selection_seeds",),
    ),
    Mutant(
        "ablation_scored_on_test", "bench",
        'SELECTION_PHASES: tuple[str, ...] = ("ablation",)',
        "SELECTION_PHASES: tuple[str, ...] = ()",
        ("tests/test_protocol.py::test_a_tiny_ablation_run_builds_every_variant_and_reports_it",),
    ),
    Mutant(
        "ablation_on_evaluation_seeds", "bench",
        "return ABLATION_SEEDS[: len(seeds)]", "return tuple(seeds[:8])",
        ("tests/test_protocol.py::test_ablation_seeds_are_selection_seeds_and_never_evaluation_seeds",),
    ),
    Mutant(
        "precision_target_ignored", "report",
        "met = [m for m in half if half[m] <= target]",
        "met = [m for m in half if half[m] <= TARGET_HALF_WIDTH]",
        ("tests/test_protocol.py::test_the_precision_sentence_counts_the_intervals_within_the_target",),
    ),
    Mutant(
        "plateau_window_off_by_one", "report",
        "per_seed.append(h[-1][\"eval_acc\"] - h[n - 1 - k][\"eval_acc\"])",
        "per_seed.append(h[-1][\"eval_acc\"] - h[n - k][\"eval_acc\"])",
        ("tests/test_protocol.py::test_the_plateau_sentence_reports_the_gain_over_the_last_fifth",),
    ),
]  # fmt: skip


def locate(root: Path, snippet: str) -> Path:
    """The one file of the package under ``root`` that holds ``snippet``, exactly once."""
    hits = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        n = path.read_text().count(snippet)
        hits += [path] * n
    if len(hits) != 1:
        where = ", ".join(str(p.relative_to(root)) for p in hits) or "nowhere"
        raise SystemExit(
            f"mutation_check: the snippet {snippet!r} occurs {len(hits)} times in "
            f"{PACKAGE}/**/*.py ({where}); it must occur exactly once - update the table"
        )
    return hits[0]


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in (PACKAGE, "tests", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for name in ("data", "notebooks", "results"):  # read-only inputs: a link is enough
        if (ROOT / name).exists():
            (dest / name).symlink_to(ROOT / name)


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, float, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),
        "PYTHONDONTWRITEBYTECODE": "1",  # a same-size edit must never meet a stale .pyc
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    tic = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - tic, "timeout"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return proc.returncode, time.perf_counter() - tic, lines[-1] if lines else proc.stderr[-200:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this mutant (repeatable)")  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run of the selected tests on the unmutated code")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run")
    args = parser.parse_args(argv)

    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; see --list")
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    files = {m.name: locate(ROOT, m.old) for m in chosen}  # every snippet found exactly once

    if args.list:
        for m in chosen:
            print(f"{m.name:<44} {m.kind:<12} {files[m.name].relative_to(ROOT)}  "
                  f"tests: {' '.join(m.tests)}")  # fmt: skip
        print(f"{len(chosen)} mutants")
        return 0

    with tempfile.TemporaryDirectory(prefix="relkd-mutants-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        if not args.no_baseline:
            selection = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, seconds, tail = run_tests(copy, selection, args.timeout * 2)
            print(f"baseline (unmutated, {len(selection)} selections): {tail} [{seconds:.0f} s]")
            if code != 0:
                print("mutation_check: the selected tests fail without any mutant; fix that first")
                return 2
        results = []
        for m in chosen:
            target = copy / files[m.name].relative_to(ROOT)
            original = target.read_text()
            target.write_text(original.replace(m.old, m.new, 1))
            try:
                code, seconds, tail = run_tests(copy, m.tests, args.timeout)
            finally:
                target.write_text(original)
            killed = code != 0 and code != 5  # 5: no test collected (a broken selection)
            if code == 5:
                tail = "no test collected: fix the selection"
            results.append((m, killed, seconds, tail))
            status = "killed" if killed else "SURVIVED"
            print(f"{status:<9} {m.name:<44} {seconds:6.1f} s  {tail[:70]}", flush=True)

    killed = sum(k for _, k, _, _ in results)
    print()
    print("| mutant | kind | file | result | seconds |")
    print("|---|---|---|---|---:|")
    for m, k, seconds, _ in results:
        where = files[m.name].relative_to(ROOT)
        print(
            f"| {m.name} | {m.kind} | {where} | {'killed' if k else 'SURVIVED'} | {seconds:.0f} |"
        )
    print()
    print(f"mutation score: {killed}/{len(results)} killed ({100 * killed / len(results):.0f}%)")
    survivors = [m.name for m, k, _, _ in results if not k]
    if survivors:
        print("survivors: " + ", ".join(survivors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
