"""The benchmark: every method on the same teacher, data, schedule and seeds, with honest statistics.

    python -m relkd_tutorial.bench                        # the main job (cpu preset, powered)
    python -m relkd_tutorial.bench --preset quick         # smaller sizes
    python -m relkd_tutorial.bench --preset large         # longer schedules (tune with --tune first)
    python -m relkd_tutorial.bench --tune                 # choose the recipes (:mod:`.tune`)
    python -m relkd_tutorial.bench --ablation grkd --out results/grkd-ablation  # GRKD's choices
    RELKD_FAST=1 python -m relkd_tutorial.bench           # fast mode (CI, a few minutes)
    python -m relkd_tutorial.bench --settings cross-task  # one setting (see --help)

Seed ``s`` fixes the labelled subset, the student's initialisation, the batch order and any
learnable head, so runs of two methods with the same seed are paired. Every method runs at its
recipe from ``--recipes`` (:mod:`.recipes`; a method without one at its paper defaults), and the
tuned methods also at their paper defaults on the first ``Setting.default_seeds`` seeds
(:mod:`.tuned`). The splits and the teacher's outputs are cached (:mod:`.workspace`); runs train
in ``--jobs`` worker processes (:mod:`.parallel`); every finished run is appended to
``<out>/runs.csv`` at once, so the same command again resumes; the report is rebuilt from it at
the end of every invocation. The settings, presets and measures: ``docs/benchmark.md``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..fastmode import fast_mode
from ..training import resolve_device
from . import report, tune, verdict
from .full import describe_full_plan, run_full
from .parallel import default_jobs, run_in_workers
from .recipes import Recipes, load_recipes
from .runner import Job, Progress, _clock, ablation_jobs, arm_params, final_jobs, run_settings
from .search_space import ABLATION_SEEDS, ablation_seeds
from .settings import (
    ABLATION_SETTING,
    ABLATIONS,
    ALL_SETTINGS,
    DEFAULT_SETTINGS,
    METHODS,
    PRESETS,
    Setting,
    _parse_list,
    default_settings,
)
from .store import ResultStore, read_meta, read_runs, record_invocation
from .workspace import prepare_workspaces

# --- Command line ---


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m relkd_tutorial.bench",
        description=(
            "Benchmark CE, KD, RKD, RRD, RRD+KD, REFILLED, GRKD, GRKD+KD and two ranking losses on "
            "the same teacher, data, schedule and seeds; writes runs.csv, summary.csv, "
            "differences.csv, results.md and PNG plots to --out, and resumes from them."
        ),
    )
    parser.add_argument(
        "--settings",
        default=None,
        help=f"comma-separated, from {list(ALL_SETTINGS)} or 'all' (default: "
        f"{','.join(DEFAULT_SETTINGS)}; 'cross-task' is opt-in, 'full' needs a GPU)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="sizes: 'cpu' (the main job, the 9,000-image pool), 'quick' (a 3,000-image pool, "
        "fewer seeds) or 'large' (longer schedules; tune its recipes with --tune first); "
        "default: cpu on a CPU, large on a GPU. Fast mode overrides all (docs/benchmark.md).",
    )
    parser.add_argument("--methods", default="all", help=f"comma-separated from {list(METHODS)}")
    parser.add_argument("--ablation", choices=sorted(ABLATIONS), default=None,
                        help="run this method's ablation (every variant on every seed) instead "
                        f"of the comparison; default setting: {ABLATION_SETTING}")  # fmt: skip
    parser.add_argument("--seeds", default=None, help="comma-separated ints (default: per setting)")
    parser.add_argument("--out", default=None, help="results folder (default runs/bench[-fast])")
    fast = parser.add_mutually_exclusive_group()
    fast.add_argument("--fast", dest="fast", action="store_true", default=None,
                      help="fast mode (default: on when RELKD_FAST=1 or CI=true)")  # fmt: skip
    fast.add_argument("--no-fast", dest="fast", action="store_false")
    parser.add_argument("--epochs", type=int, default=None, help="override every setting's epochs")
    parser.add_argument("--pool-per-class", type=int, default=None,
                        help="shrink the training pool to this many images per class")  # fmt: skip
    parser.add_argument("--labelled-per-class", type=int, default=None,
                        help="override n, the labelled images per class")  # fmt: skip
    parser.add_argument("--student", default=None, help="student architecture (student_cnn_s)")
    parser.add_argument("--teacher", default=None,
                        help="teacher_cnn weights to use instead of the shipped teacher")  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: 1 on a CPU, torch's own on a GPU)")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs trained at once, in worker processes with --threads threads "
                        "each (default: the usable cores on a CPU, 1 on a GPU)")  # fmt: skip
    parser.add_argument("--recipes", default=None, metavar="PATH",
                        help="the tuned recipes every method runs at (default: the shipped "
                        "relkd_tutorial/bench/recipes.json; 'none': paper defaults); with --tune, "
                        "the file it writes (the same; <out>/recipes.json in fast mode)")  # fmt: skip
    parser.add_argument("--no-defaults", action="store_true",
                        help="skip the paper-default runs of the tuned methods (the 'out of the "
                        "box' table); the tuned runs alone")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild tables and plots from --out without training")  # fmt: skip
    parser.add_argument("--plan", action="store_true", help="print the runs and exit")
    parser.add_argument("--no-plots", action="store_true")
    # full (CIFAR-100) options, see relkd_tutorial.bench.full
    parser.add_argument("--pairs", default=None, help="full: teacher->student pairs")
    parser.add_argument("--teacher-checkpoint", action="append", default=[],
                        help="full: NAME=PATH of a trained CIFAR teacher (repeatable)")  # fmt: skip
    parser.add_argument("--data-root", default=None, help="full: folder with cifar-100-python/")
    parser.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    tune.add_arguments(parser)
    return parser


def default_preset(device: torch.device | str) -> str:
    """``"cpu"`` on a CPU (or Apple MPS), ``"large"`` on a CUDA GPU."""
    return "large" if torch.device(device).type == "cuda" else "cpu"


def default_threads(device: torch.device | str, threads: int | None) -> int | None:
    """Torch threads to set: ``threads`` if given, else 1 on a CPU, else ``None`` (leave as is)."""
    cpu = torch.device(device).type == "cpu"
    return threads if threads is not None else 1 if cpu else None


def configure(
    args: argparse.Namespace, device: torch.device | str = "cpu"
) -> tuple[bool, dict[str, Setting], list[str]]:
    """``(fast, settings to run, methods)`` from the parsed arguments: the preset (default
    :func:`default_preset`) picks the sizes, fast mode overrides it, explicit flags both."""
    fast = fast_mode() if args.fast is None else bool(args.fast)
    preset = args.preset or default_preset(device)
    ablation = args.ablation
    if ablation and args.seeds is not None:
        raise SystemExit(
            f"--seeds does not apply to --ablation: an ablation chooses defaults, so it runs on "
            f"the selection seeds {list(ABLATION_SEEDS)} (as many as the setting has evaluation "
            "seeds) on the validation split, never on an evaluation seed"
        )
    if args.settings is not None:
        names = _parse_list(args.settings, ALL_SETTINGS, "settings")
    else:
        names = [ABLATION_SETTING] if ablation else list(DEFAULT_SETTINGS)
    methods = _parse_list(args.methods, METHODS, "methods")
    base = default_settings(fast, preset)
    settings: dict[str, Setting] = {}
    for name in (n for n in names if n != "full"):  # full's options: bench.full
        s = base[name]
        flags = ["epochs", "pool_per_class", "student"]
        flags += ["labelled_per_class"] if s.labelled_per_class is not None else []
        changes = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
        if args.seeds is not None:
            changes["seeds"] = tuple(int(x) for x in args.seeds.split(",") if x.strip())
            if not changes["seeds"]:
                raise SystemExit("--seeds needs at least one seed")
        if ablation:  # its own seeds (selection; like tune.tune_setting): cached, shown, recorded
            changes.update(seeds=ablation_seeds(s.seeds), default_seeds=0)
        s = settings[name] = replace(s, **changes)
        labelled, pool = s.labelled_per_class, s.pool_per_class
        if labelled is not None and pool is not None and labelled > pool:
            raise SystemExit(
                f"{name}: {labelled} labelled images per class do not fit in a pool of {pool} "
                "per class; lower --labelled-per-class"
            )
    return fast, settings, methods


def recipes_for(args: argparse.Namespace) -> Recipes | None:
    """The recipes the runs use: ``--recipes`` (default :data:`~.recipes.RECIPES_FILE`);
    ``None`` (paper defaults) for ``--recipes none`` and for an ablation."""
    path = args.recipes
    if args.ablation or (path or "").lower() == "none":
        return None
    try:
        return load_recipes(path)
    except (OSError, ValueError) as err:
        raise SystemExit(f"--recipes: {err}") from err


def earlier_ablation(out_dir: Path, method: str) -> str | None:
    """Why ``method``'s ablation may not run into ``out_dir`` (``None``: it may): its ``runs.csv``
    holds ablation runs of another split (an earlier protocol scored the ablation on the test
    split with evaluation seeds), which the report would pair with the new ones."""
    ablated = verdict.select(read_runs(out_dir / "runs.csv"), phase="ablation", method=method)
    old = [r for r in ablated if r["eval_split"] != "val"]
    if not old:
        return None
    return (
        f"{out_dir / 'runs.csv'} holds {len(old)} {method} ablation runs scored on the "
        f"{'/'.join(sorted({r['eval_split'] for r in old}))} split (an earlier protocol); the "
        "ablation now scores on the validation split with the selection seeds, and the two must "
        "not be mixed in one report: move that folder away or choose another --out"
    )


def plan_lines(
    settings: dict[str, Setting],
    methods: Sequence[str],
    recipes: Recipes | None,
    defaults: bool,
    out_dir: Path,
    jobs: int,
    ablation: str | None = None,
) -> list[str]:
    """``--plan``'s lines: per setting its runs (by arm, or ``ablation``'s variants and seeds)
    and their time, estimated from the ``ok`` rows already in ``<out>/runs.csv`` (this machine
    only; those runs count as done)."""
    rows = [r for r in read_runs(out_dir / "runs.csv") if r["status"] == "ok"]
    done, runs_csv = {r["key"] for r in rows}, out_dir / "runs.csv"
    lines, seconds, every, known = [], 0.0, 0.0, True
    for name, s in settings.items():
        mine = [r for r in rows if r["setting"] == name]
        spec = mine[-1]["spec"] if mine else ""  # the latest spec of the setting there
        lines.append(f"{name}: {s}")
        if ablation:
            planned = ablation_jobs(s, ablation)
            seeds = sorted({j.seed for j in planned})
            lines.append(
                f"  up to {len(planned)} training runs ({ablation} ablation): "
                f"{len(planned) // len(seeds)} variants x {len(seeds)} selection seeds {seeds}, "
                "scored on the validation split"
            )
            times = [r["seconds"] for r in mine if r["method"] == ablation]
            if times:
                each, todo = sum(times) / len(times), sum(j.key(spec) not in done for j in planned)
                lines.append(
                    f"time, from the {len(times)} {ablation} runs in {runs_csv} (this "
                    f"machine): about {len(planned) * each / 60:.0f} CPU-minutes "
                    f"({len(planned) * each / 60 / jobs:.0f} minutes with {jobs} job(s)), "
                    f"about {todo * each / 60:.0f} of them still to train"
                )
            continue
        arms = {m: arm_params(s, m, recipes, defaults) for m in methods}
        text = f"  up to {len(final_jobs(s, methods, None, recipes, defaults))} training runs"
        if recipes is not None:
            tuned = [m for m in methods if recipes.get(name, m) is not None]
            extra = sum(len(a[1][1]) for a in arms.values() if len(a) > 1)
            beside = f"{extra} at the paper defaults (first {s.default_seeds} seeds)"
            text += (
                f": {len(methods)} methods x {len(s.seeds)} seeds at their recipes ({len(tuned)} "
                f"tuned, {len(methods) - len(tuned)} not tuned: at their defaults), "
                + (beside if extra else "no paper-default runs beside them")
            )
        lines.append(text)
        known = known and bool(mine)
        for m, a in arms.items() if mine else ():
            times = [r["seconds"] for r in mine if r["method"] == m] or [r["seconds"] for r in mine]
            each = sum(times) / len(times)
            for params, arm_seeds in a:
                keys = [Job(name, "final", m, params, x).key(spec) for x in arm_seeds]
                seconds += sum(k not in done for k in keys) * each
                every += len(keys) * each
    if ablation and (reason := earlier_ablation(out_dir, ablation)):
        lines.append(f"note: this command will stop: {reason}")
    if known and every and not ablation:
        lines.append(
            f"time, from the seconds per run in {runs_csv} (this machine): about "
            f"{every / 60:.0f} CPU-minutes for the whole plan ({every / 60 / jobs:.0f} minutes "
            f"with {jobs} job(s)), about {seconds / 60:.0f} of them still to train"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """The ``relkd-bench`` / ``python -m relkd_tutorial.bench`` command."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if (threads := default_threads(device, args.threads)) is not None:
        torch.set_num_threads(threads)
    if args.tune and args.settings is None:
        args.settings = ",".join(tune.TUNE_SETTINGS)
    fast, settings, methods = configure(args, device)
    command = " ".join(["python -m relkd_tutorial.bench", *map(shlex.quote, argv or sys.argv[1:])])
    jobs = args.jobs = default_jobs(device) if args.jobs is None else args.jobs
    if args.tune:
        return tune.main_tune(args, settings, methods, fast, device, command)
    if jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {jobs}")
    preset = args.preset or default_preset(device)
    out_dir = Path(args.out or ("runs/bench-fast" if fast else "runs/bench"))
    want_full = args.settings is not None and "full" in _parse_list(
        args.settings, ALL_SETTINGS, "settings"
    )
    mode = "fast mode" if fast else f"default mode, {preset} preset"

    recipes = recipes_for(args)
    defaults = not args.no_defaults
    if args.plan:
        lines = plan_lines(settings, methods, recipes, defaults, out_dir, jobs, args.ablation)
        print(f"{mode}, {torch.get_num_threads()} torch thread(s), {jobs} job(s)")
        print("\n".join(lines))
        if want_full:
            print(describe_full_plan(args))
        return 0

    store = ResultStore(out_dir)
    if args.report_only:
        report.write_report(out_dir, plots=not args.no_plots)
        print(report.stdout_summary(store.rows(), meta=read_meta(out_dir)))
        return 0
    if args.ablation and (reason := earlier_ablation(out_dir, args.ablation)):
        raise SystemExit(f"--ablation {args.ablation}: {reason}")

    started = time.time()
    tic = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"relkd_tutorial benchmark, {mode}: settings {', '.join(settings) or '-'}"
        f"{' + full' if want_full else ''}; methods {', '.join(methods)}; device {device}, "
        f"{torch.get_num_threads()} threads, {jobs} jobs; results in {out_dir}/",
        flush=True,
    )
    workspaces, refs = prepare_workspaces(settings.values(), out_dir, device, args.teacher)
    if args.ablation:
        methods = [args.ablation]
        total = sum(len(ablation_jobs(ws.setting, args.ablation)) for ws in workspaces)
    else:
        total = sum(
            len(final_jobs(ws.setting, methods, ws, recipes, defaults)) for ws in workspaces
        )
    specs = {ws.spec for ws in workspaces}
    done_before = sum(
        1
        for r in store.rows()
        if r["spec"] in specs
        and r["status"] != "n/a"
        and r["method"] in methods
        and (r["phase"] == "ablation") == bool(args.ablation)
    )
    progress = Progress(total=total, done=min(done_before, total))
    if done_before:
        print(
            f"resuming: {done_before} of these runs are already in {store.runs_path}; skipped",
            flush=True,
        )
    for ws in workspaces:
        s = ws.setting
        arms = f"tuned recipes of {recipes.path}" if recipes is not None else "paper defaults"
        if recipes is not None and defaults and s.default_seeds:
            arms += f", paper defaults on the first {s.default_seeds} seeds"
        labelled = "all" if s.labelled_per_class is None else s.labelled_per_class
        print(f"-- {s.name}: {len(ws.train_set(s.seeds[0]))} training images ({labelled} labelled "
              f"per class), {s.epochs} epochs, seeds {list(s.seeds)}, "
              f"{f'the {args.ablation} ablation' if args.ablation else arms}", flush=True)  # fmt: skip
    workers = min(jobs, max(0, total - progress.done))
    threads = torch.get_num_threads()
    executor = functools.partial(run_in_workers, refs=refs, workers=workers, threads=threads)
    try:
        run_settings(workspaces, methods, store, progress, executor if workers > 1 else None,
                     args.ablation, recipes, defaults)  # fmt: skip
        if want_full:
            specs |= set(run_full(args, store, device, progress))
    except KeyboardInterrupt as err:  # Ctrl-C, or TrainingInterrupted from fit (SIGINT/SIGTERM)
        print(
            f"\nstopped: the {progress.trained} runs finished by this invocation are kept in "
            f"{store.runs_path} (the runs in progress are lost); run the same command again to "
            "resume where it stopped",
            file=sys.stderr,
            flush=True,
        )
        return int(getattr(err, "exit_code", 130))
    wall = time.perf_counter() - tic
    record_invocation(
        out_dir,
        {
            "command": command,
            "mode": "fast" if fast else "default",
            "preset": None if fast else preset,
            "settings": {name: asdict(s) for name, s in settings.items()},
            "methods": methods,
            "ablation": args.ablation,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "jobs": workers,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_seconds": round(wall, 1),
            "runs_trained": progress.trained,
            "teacher_cache_seconds": round(sum(ws.cache_seconds for ws in workspaces), 1),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "defaults_arm": defaults and recipes is not None,
            # the recipes of the settings that ran under them (one without a recipe as {})
            **(
                {}
                if recipes is None
                else {"recipes": recipes.to_json(list(settings)), "recipes_file": recipes.path}
            ),
        },
    )
    report.write_report(out_dir, plots=not args.no_plots)
    print(report.stdout_summary(store.rows(), specs=specs, meta=read_meta(out_dir)))
    print(
        f"{progress.trained} runs trained in {_clock(wall)}; tables, plots and meta.json in {out_dir}/",
        flush=True,
    )
    return 0
