"""The tuning: each method's recipe chosen on the validation split with Optuna (``--tune``).

    python -m relkd_tutorial.bench --tune --settings transfer,low-data --trials 12 --jobs 2
    python -m relkd_tutorial.bench --tune --prune --recipes runs/tune/recipes-pruned.json

One Optuna study per setting and method (TPE, each knob independently, ``constant_liar``): a trial
trains once per selection seed (:data:`~.search_space.SELECTION_SEEDS`) and scores the mean
validation top-1 (the test split is never read); every method gets ``--trials`` trials, the first
its default; a tie goes to the earlier trial, a diverged run scores 0. A best value near an
extendable bound grows that bound (:func:`extra_trials` more trials, at most
:data:`~.search_space.MAX_EXTENSIONS` times). ``--prune``: Hyperband on the per-epoch validation
top-1. Storage: a journal file or ``--storage`` URL, shared by ``--jobs`` workers and machines;
the same command resumes. Why TPE, and the rest: ``docs/benchmark.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..data import TensorLoader
from ..training import fit
from ..training.checkpoint import _atomic_write
from .parallel import spawn_pool
from .recipes import FORMAT, RECIPES_FILE
from .runner import _clock, applicable, run_parts
from .search_space import MAX_EXTENSIONS, SELECTION_SEEDS, Knob, method_space, round4
from .settings import Setting, describe_params, label
from .store import cpu_info, git_commit
from .workspace import Workspace, WorkspaceRef, load, prepare_workspaces


def extra_trials(trials: int) -> int:
    """Trials added to a study each time one of its ranges grows."""
    return max(2, trials // 3)


# --- Storage and studies ---


def open_storage(where: str | Path) -> Any:
    """A database URL (``"sqlite:///t.db"``, ``"postgresql://..."``) or a journal file path."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    text = str(where)
    if "://" in text:
        return optuna.storages.RDBStorage(text, heartbeat_interval=60, grace_period=180)
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(text))


def study_name(ws: Workspace, method: str, prune: bool, seeds: Sequence[int]) -> str:
    """The study of ``method`` on ``ws``'s configuration; another space, teacher, size or
    pruning is another study (never mixed)."""
    space = {k: [v.low, v.high, v.log] for k, v in (method_space(method) or {}).items()}
    tag = hashlib.sha1(json.dumps(space, sort_keys=True).encode()).hexdigest()[:6]
    pruning = "hyperband" if prune else "full"
    seed_text = "-".join(map(str, seeds))
    return f"relkd|{ws.setting.name}|{ws.spec}|{method}|seeds{seed_text}|{pruning}|space{tag}"


def _load_study(storage: Any, ws: Workspace, method: str, prune: bool, trials: int) -> Any:
    """The study of ``method`` on ``ws`` (:func:`study_name`), created if new."""
    import optuna

    name = study_name(ws, method, prune, SELECTION_SEEDS)
    steps = ws.setting.epochs * len(SELECTION_SEEDS)  # Hyperband's resource: epochs of all seeds
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=max(2, trials // 3), multivariate=False, constant_liar=True
    )
    pruner = (
        optuna.pruners.HyperbandPruner(min_resource=1, max_resource=steps, reduction_factor=3)
        if prune
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def prepare_study(study: Any, knobs: dict[str, Knob]) -> None:
    """Record the starting ranges and enqueue the default trial, once per study."""
    if "space_0" not in study.user_attrs:
        study.set_user_attr("space_0", {k: [v.low, v.high] for k, v in knobs.items()})
    if not study.trials:
        study.enqueue_trial({k: v.default for k, v in knobs.items()}, skip_if_exists=True)


def _current_round(study: Any, method: str, trials: int) -> tuple[int, dict[str, Knob], int]:
    """``(r, knobs, target)``: the study's round (how many times its ranges grew), its knobs at
    that round's ranges and the trials it gets by then."""
    r = next(r for r in itertools.count() if f"space_{r + 1}" not in study.user_attrs)
    ranges = study.user_attrs.get(f"space_{r}", {})
    knobs = {
        k: replace(v, low=ranges[k][0], high=ranges[k][1]) if k in ranges else v
        for k, v in (method_space(method) or {}).items()
    }
    return r, knobs, trials + r * extra_trials(trials)


def _states(*names: str) -> tuple:
    from optuna.trial import TrialState

    return tuple(getattr(TrialState, n) for n in names)


def _count(study: Any, *states: str) -> int:
    return len(study.get_trials(deepcopy=False, states=_states(*states)))


def _fail_dead_trials(storage: Any, study: Any) -> None:
    """Mark failed the running trials of this host whose worker process is gone (killed)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=_states("RUNNING")):
        if t.user_attrs.get("host") != socket.gethostname() or "pid" not in t.user_attrs:
            continue
        try:
            os.kill(int(t.user_attrs["pid"]), 0)
        except ProcessLookupError:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_state_values(trial_id, _states("FAIL")[0])
        except PermissionError:
            pass


# --- A trial: one run per selection seed, scored on the validation split ---


def validation_run(
    ws: Workspace,
    method: str,
    params: dict[str, float],
    seed: int,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> float:
    """Train ``method`` with ``params`` at ``seed`` on the setting's training set; its top-1 on
    the validation split after the last epoch (``on_epoch`` sees each epoch's record, whose
    ``eval_acc`` is the validation top-1). 0 if the run diverges."""
    student, m, loader, config, cache = run_parts(ws, method, params, seed)
    val = TensorLoader.for_evaluation(
        ws.val, 1000, device=ws.device, channels_last=ws.channels_last
    )
    try:
        history = fit(student, m, loader, config, teacher=cache, eval_loader=val, on_epoch=on_epoch)
    except FloatingPointError:
        return 0.0
    return float(history[-1]["eval_acc"])


def _sample(trial: Any, knobs: dict[str, Knob]) -> dict[str, float]:
    """The trial's knobs, rounded to 4 significant digits (what runs is what the recipe says)."""
    return {k: round4(trial.suggest_float(k, v.low, v.high, log=v.log)) for k, v in knobs.items()}


def make_objective(
    ws: Workspace,
    method: str,
    knobs: dict[str, Knob],
    r: int,
    target: int,
    log: Callable[[str], None],
) -> Callable[[Any], float]:
    """Optuna's objective: the sampled params' mean validation top-1 over the selection seeds."""
    import optuna

    started = time.perf_counter()

    def objective(trial: Any) -> float:
        tic = time.perf_counter()

        def progress(text: str) -> None:
            now = time.perf_counter()
            log(f"[{trial.number + 1:>3}/{target}] {ws.setting.name} tune {label(method)} "
                f"({describe_params(params)}): {text}  {now - tic:.1f} s  (elapsed "
                f"{_clock(now - started)})")  # fmt: skip

        for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "round": r}.items():
            trial.set_user_attr(key, value)
        params = _sample(trial, knobs)
        trial.set_user_attr("params", params)
        scores = []
        for i, seed in enumerate(SELECTION_SEEDS):

            def report(record: dict[str, Any], i: int = i, seed: int = seed) -> None:
                trial.report(
                    float(record["eval_acc"]), i * ws.setting.epochs + int(record["epoch"])
                )
                if trial.should_prune():
                    raise optuna.TrialPruned(f"seed {seed} epoch {record['epoch']}")

            try:
                scores.append(validation_run(ws, method, params, seed, report))
            except optuna.TrialPruned as err:
                progress(f"pruned at {err}")
                raise
        value = sum(scores) / len(scores)
        trial.set_user_attr("diverged", any(s == 0.0 for s in scores))
        progress(f"val acc {100 * value:.2f}% (mean of {len(scores)} seeds)")
        return value

    return objective


# --- A study: trials up to the budget, edges extended; the workers ---


def selected_trials(study: Any, target: int) -> list[Any]:
    """The first ``target`` finished (complete or pruned) trials: what the budget bought (extra
    trials of concurrent workers are left out, so every method is chosen from as many)."""
    done = study.get_trials(deepcopy=False, states=_states("COMPLETE", "PRUNED"))
    return sorted(done, key=lambda t: t.number)[:target]


def best_trial(trials: Sequence[Any]) -> Any | None:
    """The complete trial with the highest score; a tie goes to the earlier one (the default)."""
    complete = [t for t in trials if t.state in _states("COMPLETE") and t.value is not None]
    return max(complete, key=lambda t: (t.value, -t.number), default=None)


def edges(best: Any, knobs: dict[str, Knob]) -> dict[str, str]:
    """``{knob: "low" | "high"}`` for the best trial's values near a bound of their range."""
    params = {} if best is None else best.user_attrs.get("params", best.params)
    sides = {k: knob.at_edge(params[k]) for k, knob in knobs.items() if k in params}
    return {k: side for k, side in sides.items() if side is not None}


def tune_study(study: Any, ws: Workspace, method: str, trials: int, log: Callable) -> bool:
    """Run this worker's share of one study; returns whether it ran a trial or grew a range."""
    did = False
    while True:
        r, knobs, target = _current_round(study, method, trials)
        objective = make_objective(ws, method, knobs, r, target, log)
        while _count(study, "COMPLETE", "PRUNED", "RUNNING") < target:
            study.optimize(objective, n_trials=1, catch=())
            did = True
        if _count(study, "RUNNING"):  # another worker's trial: it decides the edges when done
            return did
        sides = edges(best_trial(selected_trials(study, target)), knobs)
        done = [e for i in range(1, r + 1) for e in study.user_attrs.get(f"extended_{i}", [])]
        grow = [
            [k, side]
            for k, side in sorted(sides.items())
            if knobs[k].extendable and done.count([k, side]) < MAX_EXTENSIONS
        ]
        if not grow:
            return did
        grown = dict(knobs)
        for k, side in grow:
            grown[k] = grown[k].extend(side)
            log(f"{ws.setting.name} {method}: {k} chosen near its {side} bound; range -> "
                f"[{grown[k].low:g}, {grown[k].high:g}], {extra_trials(trials)} more trials")  # fmt: skip
        study.set_user_attr(f"extended_{r + 1}", grow)
        study.set_user_attr(f"space_{r + 1}", {k: [v.low, v.high] for k, v in grown.items()})
        did = True


@dataclass(frozen=True)
class TuneJob:
    """What a worker process needs: the workspaces, the methods, the budget, the storage."""

    refs: tuple[WorkspaceRef, ...]
    methods: tuple[str, ...]
    trials: int
    storage: str
    prune: bool
    threads: int


def _work(job: TuneJob, workspaces: Sequence[Workspace] | None = None) -> None:
    """A worker: every study in turn, again until a pass neither trains nor grows a range."""
    if workspaces is None:  # a worker process: load the workspaces its parent prepared
        torch.set_num_threads(job.threads)
        workspaces = [load(ref) for ref in job.refs]
    storage = open_storage(job.storage)
    while True:
        did = False
        for ws in workspaces:
            for method in tunable(job.methods, ws):  # not where it cannot run (n/a there)
                study = _load_study(storage, ws, method, job.prune, job.trials)
                _fail_dead_trials(storage, study)
                did |= tune_study(study, ws, method, job.trials, print)
        if not did:
            return


def add_arguments(parser: Any) -> None:
    """The tuning's options of ``python -m relkd_tutorial.bench`` (see :mod:`.cli`)."""
    g = parser.add_argument_group("tuning (--tune; relkd_tutorial.bench.tune)")
    g.add_argument("--tune", action="store_true",
                   help="choose each method's recipe on the validation split (Optuna) and write "
                   "--recipes; --jobs worker processes share the studies")  # fmt: skip
    g.add_argument("--trials", type=int, default=12, help="trials per method and setting (12)")
    g.add_argument("--storage", default=None,
                   help="Optuna storage: a database URL or a journal file (default "
                   "<out>/tuning.journal); rerun to resume, share it to add workers")  # fmt: skip
    g.add_argument("--prune", action="store_true",
                   help="stop weak trials early (Hyperband on the per-epoch validation top-1)")  # fmt: skip


# --- The recipes: one entry per setting and method, from the storage ---


def recipe_entry(study: Any, method: str, trials: int) -> dict[str, Any] | None:
    """A study's recipe: the chosen params, the ranges, the score, the extensions, the edges."""
    r, knobs, target = _current_round(study, method, trials)
    chosen = selected_trials(study, target)
    best = best_trial(chosen)
    if best is None:
        return None
    spaces = [study.user_attrs[f"space_{i}"] for i in range(r + 1)]  # a repeat is dropped:
    history = {k: [x for x, _ in itertools.groupby(s[k] for s in spaces)] for k in knobs}
    default = [t for t in chosen if t.number == 0 and t.value is not None]
    return {
        "params": dict(best.user_attrs.get("params", best.params)),
        "space": {k: [v.low, v.high] for k, v in knobs.items()},
        "selection_score": round(float(best.value), 6),
        "default_score": round(float(default[0].value), 6) if default else None,
        "trials": len(chosen),
        "pruned": sum(1 for t in chosen if t.state.name == "PRUNED"),
        "trial_seconds": round(sum(t.duration.total_seconds() for t in chosen if t.duration), 1),
        "extended": {k: v for k, v in history.items() if len(v) > 1},
        "at_edge": sorted(edges(best, knobs)),
    }


def write_recipes(path: str | Path, settings: dict[str, dict[str, Any]], invocation: dict) -> Path:
    """Write the recipe file (format :data:`FORMAT`), small and readable."""
    path = Path(path)
    doc = {"format": FORMAT, "invocation": invocation, "settings": settings}
    text = json.dumps(doc, indent=1)
    # a list of numbers on one line: [0.1, 100.0]
    text = re.sub(
        r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text
    )
    _atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))
    return path


# --- The command ---


def tunable(methods: Sequence[str], ws: Workspace) -> list[str]:
    """The methods with something to tune (CE has nothing) that can run in ``ws``'s setting."""
    return [m for m in methods if method_space(m) and applicable(m, ws) is None]


#: The settings ``--tune`` tunes by default (the main job's tuned comparison reads them).
TUNE_SETTINGS: tuple[str, ...] = ("transfer", "low-data")


def tune_setting(setting: Setting) -> Setting:
    """The setting a tuning trains in: the main job's, with the selection seeds as its seeds
    (seeds are not part of the fingerprint, so the runs' configuration is the main job's)."""
    return replace(setting, seeds=SELECTION_SEEDS, curves=False)


def main_tune(
    args: Any,
    settings: dict[str, Setting],
    methods: Sequence[str],
    fast: bool,
    device: torch.device,
    command: str,
) -> int:
    """``--tune`` of :func:`~.cli.main` (after its ``configure``): tune every method on every
    setting (``--jobs`` workers), then write the recipes."""
    if args.trials < 1:
        raise SystemExit(f"--trials must be >= 1, got {args.trials}")
    out_dir = Path(args.out or ("runs/tune-fast" if fast else "runs/tune"))
    settings = {n: tune_setting(s) for n, s in settings.items()}
    if args.plan:
        for name, s in settings.items():
            print(f"{name}: {s}")
            print(f"  {args.trials} trials per method x {len(SELECTION_SEEDS)} selection seeds "
                  f"(+ {extra_trials(args.trials)} per range that grows)")  # fmt: skip
        return 0
    workspaces, refs = prepare_workspaces(settings.values(), out_dir, device, args.teacher)
    storage_url = args.storage or str(out_dir / "tuning.journal")
    recipes = Path(args.recipes) if args.recipes else (
        out_dir / "recipes.json" if fast else RECIPES_FILE
    )  # fmt: skip
    jobs = max(1, args.jobs or 1)
    wanted = [m for m in methods if any(tunable([m], ws) for ws in workspaces)]
    storage, done = open_storage(storage_url), 0
    for ws in workspaces:  # create the studies and enqueue the defaults before any worker runs
        for method in tunable(wanted, ws):
            study = _load_study(storage, ws, method, args.prune, args.trials)
            prepare_study(study, method_space(method) or {})
            done += _count(study, "COMPLETE", "PRUNED")
    names = ", ".join(ws.setting.name for ws in workspaces)
    print(
        f"{done} trials already in the storage (kept); tuning {', '.join(wanted)} on {names}: "
        f"{args.trials} trials each, selection seeds {list(SELECTION_SEEDS)} on the validation "
        f"split, pruning {'on' if args.prune else 'off'}, {jobs} worker(s); storage {storage_url}",
        flush=True,
    )
    tic = time.perf_counter()
    job = TuneJob(
        refs, tuple(wanted), args.trials, storage_url, args.prune, torch.get_num_threads()
    )
    try:
        if jobs == 1:
            _work(job, workspaces)
        else:
            with spawn_pool(jobs) as pool:
                for future in [pool.submit(_work, job) for _ in range(jobs)]:
                    future.result()
    except KeyboardInterrupt:
        print("\nstopped: the finished trials are kept in the storage (those in progress are "
              "marked failed); run the same command again to resume", file=sys.stderr)  # fmt: skip
        return 130
    entries: dict[str, dict[str, Any]] = {}
    for ws in workspaces:
        for method in tunable(wanted, ws):
            study = _load_study(storage, ws, method, args.prune, args.trials)
            if (entry := recipe_entry(study, method, args.trials)) is not None:
                entries.setdefault(ws.setting.name, {})[method] = entry
    cpu = cpu_info()
    invocation = {
        "command": command,
        "trials": args.trials,
        "selection_seeds": list(SELECTION_SEEDS),
        "pruning": bool(args.prune),
        "git_commit": git_commit(),
        "seconds": round(time.perf_counter() - tic, 1),
        "cpu": cpu["cpu_model"],
        "cpu_capability": cpu["cpu_capability"],
        "workers": jobs,
        "storage": storage_url,
    }
    write_recipes(recipes, entries, invocation)
    for setting, per_method in entries.items():
        for method, e in per_method.items():
            flag = f"  AT EDGE: {', '.join(e['at_edge'])}" if e["at_edge"] else ""
            print(f"{setting} {method}: {describe_params(e['params'])}, validation "
                  f"{100 * e['selection_score']:.2f}% over {e['trials']} trials{flag}")  # fmt: skip
    print(f"recipes written to {recipes}", flush=True)
    return 0
