"""The tuning (``--tune``): search space, selection seeds, storage, resume, workers, edges, pruning.

The storage tests replace the training (``tune.validation_run``) by a cheap function of the
params; one test runs the real objective end to end in fast mode.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
import torch

from relkd_tutorial.bench import cli, tune
from relkd_tutorial.bench import search_space as space
from relkd_tutorial.bench.settings import PAPER_DEFAULTS, PRESETS, Setting, default_settings
from relkd_tutorial.data import ImageSet, TensorLoader
from relkd_tutorial.methods import build_method
from relkd_tutorial.models import build_model
from relkd_tutorial.training import TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from diff_recipes import diff_recipes  # noqa: E402  (scripts/, repository tooling)

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# The search space and the selection seeds
# ---------------------------------------------------------------------------------------------


def test_selection_seeds_are_never_evaluation_seeds() -> None:
    assert len(space.SELECTION_SEEDS) >= 3
    for fast in (True, False):
        for preset in PRESETS:
            for name, s in default_settings(fast, preset).items():
                assert not set(s.seeds) & set(space.SELECTION_SEEDS), (fast, preset, name)
                assert tune.tune_setting(s).seeds == space.SELECTION_SEEDS
                # the same configuration (fingerprint) as the main job's runs
                assert tune.tune_setting(s).fingerprint("t") == s.fingerprint("t")


def test_every_weight_spans_a_tenth_to_a_hundred_times_its_default() -> None:
    assert space.method_space("ce") == {}
    for method in PAPER_DEFAULTS:
        knobs = space.method_space(method)
        if not knobs:
            continue
        for name, knob in knobs.items():
            scale = space.SEARCH_SPACE[method][name]
            if scale is space.WEIGHT:
                assert knob.log and knob.low <= 0.1 * knob.default * 1.0001
                assert knob.high >= 100 * knob.default * 0.9999
            if scale is space.TEMPERATURE:
                assert knob.log and knob.low < knob.default < knob.high
        # every temperature of the paper defaults is searched (the combinations' KD part is not)
        for name in PAPER_DEFAULTS[method][0]:
            if name == "temperature" or name.startswith("tau"):
                assert name in knobs, (method, name)
    grkd = space.method_space("grkd")["grkd_weight"]
    assert grkd.low <= 45 * grkd.default <= grkd.high  # the sum over the 45 class pairs


def test_a_knob_the_constructor_does_not_take_is_dropped_and_an_unknown_method_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = dict(space.SEARCH_SPACE)
    table["grkd"] = {**table["grkd"], "no_such_argument": space.WEIGHT}
    table["not_benchmarked"] = {"w": space.WEIGHT}
    monkeypatch.setattr(space, "SEARCH_SPACE", table)
    assert set(space.method_space("grkd")) == {"grkd_weight", "temperature"}
    assert space.method_space("not_benchmarked") is None
    # the default comes from PAPER_DEFAULTS at run time
    monkeypatch.setitem(PAPER_DEFAULTS, "grkd", ({"grkd_weight": 45.0, "temperature": 1.0}, "x"))
    assert space.method_space("grkd")["grkd_weight"].low == pytest.approx(4.5)


def test_edges_and_extension() -> None:
    knob = space.Knob("w", 1.0, 0.1, 100.0)
    assert knob.at_edge(0.14) == "low" and knob.at_edge(0.16) is None
    assert knob.at_edge(70.0) == "high" and knob.at_edge(60.0) is None
    assert knob.extend("high").high == 1000.0 and knob.extend("low").low == pytest.approx(0.01)
    frac = space.method_space("refilled")["stage1_fraction"]
    assert not frac.log and frac.at_edge(0.12) == "low" and frac.at_edge(0.5) is None
    with pytest.raises(ValueError, match="fixed"):
        frac.extend("high")
    with pytest.raises(ValueError, match="side"):
        knob.extend("up")


# ---------------------------------------------------------------------------------------------
# Studies in a storage, with a cheap objective
# ---------------------------------------------------------------------------------------------


def _fake_ws(epochs: int = 2) -> SimpleNamespace:
    return SimpleNamespace(
        setting=Setting("transfer", 20, True, epochs=epochs), spec="fake0000", val=None
    )


def _fake_run(ws, method, params, seed, on_epoch=None) -> float:  # noqa: ANN001
    """A score peaked at grkd_weight = 3 (interior), a little noise from the seed."""
    score = 0.8 - 0.05 * math.log10(params["grkd_weight"] / 3.0) ** 2 + 1e-4 * (seed % 7)
    for epoch in range(1, ws.setting.epochs + 1):
        if on_epoch is not None:
            on_epoch({"epoch": epoch, "eval_acc": score * epoch / ws.setting.epochs})
    return score


def _study(storage, ws, trials: int, prune: bool = False):  # noqa: ANN001, ANN202
    study = tune._load_study(storage, ws, "grkd", prune, trials)
    assert study.study_name == tune.study_name(ws, "grkd", prune, space.SELECTION_SEEDS)
    tune.prepare_study(study, space.method_space("grkd"))
    return study


def test_an_interrupted_tuning_resumes_without_redoing_a_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tune, "MAX_EXTENSIONS", 0)
    storage = tune.open_storage(tmp_path / "t.journal")
    ws, calls = _fake_ws(), []

    def interrupted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        if len(calls) == 2 * len(space.SELECTION_SEEDS):  # trials 1 and 2 done
            raise KeyboardInterrupt
        calls.append(a[2])
        return _fake_run(*a, **k)

    monkeypatch.setattr(tune, "validation_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune.tune_study(_study(storage, ws, 5), ws, "grkd", 5, lambda s: None)
    study = _study(tune.open_storage(tmp_path / "t.journal"), ws, 5)
    assert tune._count(study, "COMPLETE") == 2 and tune._count(study, "FAIL") == 1
    before = [t.user_attrs["params"] for t in study.trials if t.state.name == "COMPLETE"]
    assert before[0] == {"grkd_weight": 1.0, "temperature": 1.0}  # the default comes first

    calls.clear()
    monkeypatch.setattr(tune, "validation_run", lambda *a, **k: calls.append(a[2]) or _fake_run(*a, **k))  # fmt: skip
    tune.tune_study(study, ws, "grkd", 5, lambda s: None)
    assert tune._count(study, "COMPLETE") == 5  # the budget, not more
    assert len(calls) == 3 * len(space.SELECTION_SEEDS)  # only the 3 missing trials ran
    entry = tune.recipe_entry(study, "grkd", 5)
    assert entry["trials"] == 5 and entry["default_score"] is not None
    # a rerun after the budget is spent trains nothing
    calls.clear()
    assert not tune.tune_study(study, ws, "grkd", 5, lambda s: None) and not calls


WORKER = """
import sys, time
from relkd_tutorial.bench import tune
from relkd_tutorial.bench import search_space as space
sys.path.insert(0, {tests!r})
import test_tune as t
tune.MAX_EXTENSIONS = 0
def slow(*a, **k):
    time.sleep(0.3)
    return t._fake_run(*a, **k)
tune.validation_run = slow
storage = tune.open_storage({journal!r})
ws = t._fake_ws()
tune.tune_study(t._study(storage, ws, 8), ws, "grkd", 8, print)
"""


def test_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    journal = str(tmp_path / "shared.journal")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), journal=journal))
    procs = [
        subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    study = _study(tune.open_storage(journal), _fake_ws(), 8)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert 8 <= len(done) <= 9  # the budget (a worker may finish one trial more)
    assert len({t.user_attrs["pid"] for t in done}) == 2  # both workers trained trials
    assert len({t.number for t in done}) == len(done)
    assert tune.recipe_entry(study, "grkd", 8)["trials"] == 8  # chosen from the budget only


def test_a_value_at_the_edge_grows_its_range_then_is_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tune, "validation_run", _fake_run)
    # every trial at the top of each range (the score rises with the weight up there)
    monkeypatch.setattr(tune, "_sample", lambda trial, knobs: {k: v.high for k, v in knobs.items()})
    monkeypatch.setattr(tune, "validation_run", lambda ws, m, p, s, on_epoch=None: p["grkd_weight"])
    storage = tune.open_storage(tmp_path / "e.journal")
    ws = _fake_ws()
    study = _study(storage, ws, 3)
    tune.tune_study(study, ws, "grkd", 3, lambda s: None)
    entry = tune.recipe_entry(study, "grkd", 3)
    assert entry["extended"]["grkd_weight"] == [[0.1, 100.0], [0.1, 1000.0], [0.1, 10000.0]]
    assert entry["space"]["grkd_weight"] == [0.1, 10000.0]
    assert entry["trials"] == 3 + 2 * tune.extra_trials(3)
    assert entry["at_edge"] == ["grkd_weight", "temperature"]  # capped: still at the edge
    assert entry["params"]["grkd_weight"] == 10000.0


def test_an_interior_choice_is_not_extended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tune, "validation_run", _fake_run)
    mid = {"grkd_weight": 3.0, "temperature": 1.0}
    monkeypatch.setattr(tune, "_sample", lambda trial, knobs: dict(mid))
    storage = tune.open_storage(tmp_path / "i.journal")
    ws = _fake_ws()
    study = _study(storage, ws, 3)
    tune.tune_study(study, ws, "grkd", 3, lambda s: None)
    entry = tune.recipe_entry(study, "grkd", 3)
    assert entry["extended"] == {} and entry["at_edge"] == [] and entry["trials"] == 3


@pytest.mark.parametrize("prune", [False, True])
def test_pruning_stops_weak_trials_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prune: bool
) -> None:
    monkeypatch.setattr(tune, "MAX_EXTENSIONS", 0)
    weights = iter([3.0, 0.11, 90.0, 0.12, 80.0, 0.13, 70.0, 0.14])
    monkeypatch.setattr(tune, "_sample", lambda trial, knobs: {"grkd_weight": next(weights), "temperature": 1.0})  # fmt: skip
    monkeypatch.setattr(tune, "validation_run", _fake_run)
    ws = _fake_ws(epochs=3)
    study = _study(tune.open_storage(tmp_path / "p.journal"), ws, 8, prune=prune)
    tune.tune_study(study, ws, "grkd", 8, lambda s: None)
    pruned = tune._count(study, "PRUNED")
    assert (pruned > 0) == prune
    assert tune._count(study, "COMPLETE", "PRUNED") == 8
    assert tune.recipe_entry(study, "grkd", 8)["pruned"] == pruned


def test_a_running_trial_whose_worker_died_is_marked_failed(tmp_path: Path) -> None:
    import socket

    storage = tune.open_storage(tmp_path / "d.journal")
    study = _study(storage, _fake_ws(), 3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    for pid in (int(dead.stdout), os.getpid()):
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", pid)
    tune._fail_dead_trials(storage, study)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING"]


def test_diff_recipes_flags_a_changed_choice() -> None:
    def doc(w: float) -> dict:
        entry = {"params": {"grkd_weight": w}, "selection_score": 0.8, "trials": 4}
        return {"settings": {"transfer": {"grkd": entry}}}

    assert not any("DIFFERS" in line for line in diff_recipes(doc(3.0), doc(4.0)))
    assert any("DIFFERS" in line for line in diff_recipes(doc(3.0), doc(40.0)))


# ---------------------------------------------------------------------------------------------
# The real objective: fit's per-epoch hook, the validation split, the command end to end
# ---------------------------------------------------------------------------------------------


def test_fit_calls_on_epoch_after_every_epoch_and_stops_on_its_exception() -> None:
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(64) % 10,
                    [str(i) for i in range(10)], "toy", (0.5,), (0.25,))  # fmt: skip
    loader = TensorLoader(data, 32, seed=0)
    records: list[dict] = []
    fit(build_model("student_cnn_s", 10, 1, seed=0), build_method("ce"), loader,
        TrainConfig(epochs=3, progress=False, seed=0), eval_loader=loader,
        on_epoch=records.append)  # fmt: skip
    assert [r["epoch"] for r in records] == [1, 2, 3] and all("eval_acc" in r for r in records)

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        fit(build_model("student_cnn_s", 10, 1, seed=0), build_method("ce"), loader,
            TrainConfig(epochs=3, progress=False, seed=0), on_epoch=stop)  # fmt: skip


def test_tuning_end_to_end_in_fast_mode_scores_the_validation_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recipes = tmp_path / "recipes.json"
    argv = ["--tune", "--fast", "--settings", "transfer", "--methods", "ce,grkd", "--trials", "2",
            "--epochs", "1", "--jobs", "1", "--out", str(tmp_path), "--recipes", str(recipes)]  # fmt: skip
    assert cli.main(argv) == 0
    doc = json.loads(recipes.read_text())
    assert doc["format"] == 1 and doc["invocation"]["selection_seeds"] == [1000, 1001, 1002]
    assert doc["invocation"]["trials"] == 2 and doc["invocation"]["pruning"] is False
    assert doc["invocation"]["cpu_capability"]
    assert list(doc["settings"]) == ["transfer"] and list(doc["settings"]["transfer"]) == ["grkd"]
    entry = doc["settings"]["transfer"]["grkd"]
    # the budget, plus the extension trials when the (unseeded) search chose a value at an edge
    assert (entry["trials"] == 2) == (not entry["extended"]) and entry["trials"] >= 2
    assert 0 < entry["selection_score"] <= 1
    for k, (low, high) in entry["space"].items():
        assert low <= entry["params"][k] <= high
    out = capsys.readouterr().out
    assert "transfer tune GRKD" in out and "val acc" in out
    # resume: the same command trains nothing more and writes the same choice
    assert cli.main(argv) == 0
    again = json.loads(recipes.read_text())["settings"]["transfer"]["grkd"]
    assert again["params"] == entry["params"] and again["trials"] == entry["trials"]

    # the score is the validation split's: changing val changes it, changing test does not
    from relkd_tutorial.bench.workspace import build_workspace

    s = tune.tune_setting(dataclasses.replace(default_settings(True)["transfer"], epochs=1))
    ws = build_workspace(s, tmp_path, torch.device("cpu"))
    base = tune.validation_run(ws, "ce", {}, 1000)
    shuffled = ws.test.labels[torch.randperm(len(ws.test.labels))]
    ws.test = dataclasses.replace(ws.test, labels=shuffled)
    assert tune.validation_run(ws, "ce", {}, 1000) == base
    ws.val = dataclasses.replace(ws.val, labels=(ws.val.labels + 1) % 10)
    assert tune.validation_run(ws, "ce", {}, 1000) != base


def test_the_package_ships_the_recipes_and_depends_on_optuna() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("optuna") for d in project["project"]["dependencies"])
    globs = project["tool"]["setuptools"]["package-data"]["relkd_tutorial"]
    assert "bench/recipes.json" in globs
    assert tune.RECIPES_FILE == ROOT / "relkd_tutorial" / "bench" / "recipes.json"


def test_tune_parser_and_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--tune", "--fast", "--plan", "--trials", "5"]) == 0
    out = capsys.readouterr().out
    assert "transfer" in out and "low-data" in out and "5 trials per method" in out
    assert "standard" not in out  # the tuned settings by default: transfer and low-data
    with pytest.raises(SystemExit, match="trials"):
        tune.main_tune(SimpleNamespace(trials=0), {}, [], True, "cpu", "")


def test_a_method_that_cannot_run_in_a_setting_is_not_tuned_there(tmp_path: Path) -> None:
    """The pseudo-label control is CE exactly without unlabelled images: low-data gets no study
    for it (its trials would be wasted) and no recipe, and the worker trains nothing."""
    recipes = tmp_path / "recipes.json"
    argv = ["--tune", "--fast", "--settings", "low-data", "--methods", "ce,pseudo_label",
            "--trials", "1", "--epochs", "1", "--jobs", "1", "--out", str(tmp_path),
            "--recipes", str(recipes)]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads(recipes.read_text())["settings"] == {}
    import optuna

    from relkd_tutorial.bench.tune import open_storage

    assert optuna.get_all_study_summaries(open_storage(tmp_path / "tuning.journal")) == []
