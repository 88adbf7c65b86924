"""``bench.recipes``: the tuned recipes file is read, checked and put in the run key's one form.

Every refusal names what is wrong; a recipe equal to the defaults has the default run's key; the
shipped file is package data, parses, and tunes nothing until a tuning is committed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from relkd_tutorial.bench import recipes as rc
from relkd_tutorial.bench.settings import METHODS, params_tag

REPO = Path(__file__).resolve().parents[1]

GOOD = {
    "format": 1,
    "invocation": {"command": "python -m relkd_tutorial.bench --tune", "trials": 24},
    "settings": {
        "transfer": {
            "grkd": {
                "params": {"grkd_weight": 12.3, "temperature": 2.0},
                "space": {"grkd_weight": [0.1, 100.0], "temperature": [0.5, 8.0]},
                "selection_score": 0.812,
                "trials": 24,
                "extended": {"grkd_weight": [[0.1, 100.0], [0.1, 1000.0]]},
                "at_edge": [],
            },
            "kd": {"params": {"kd_weight": 0.9, "temperature": 4}, "at_edge": ["kd_weight"]},
        },
        "low-data": {},
    },
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "recipes.json"
    path.write_text(json.dumps(data))
    return path


def test_the_shipped_file_is_package_data_and_tunes_nothing_yet() -> None:
    assert rc.RECIPES_FILE == REPO / "relkd_tutorial" / "bench" / "recipes.json"
    assert 'bench/recipes.json"' in (REPO / "pyproject.toml").read_text()
    shipped = rc.load_recipes()
    assert isinstance(shipped.settings, dict)
    for methods in shipped.settings.values():  # whatever a committed tuning holds, it is valid
        assert set(methods) <= set(METHODS)


def _params(r: rc.Recipes) -> dict:
    """``setting -> method -> params`` as written."""
    return {s: {m: dict(x.params) for m, x in ms.items()} for s, ms in r.settings.items()}


def test_a_good_file_gives_setting_method_params_and_the_flags(tmp_path: Path) -> None:
    r = rc.load_recipes(_write(tmp_path, GOOD))
    assert _params(r) == {
        "transfer": {"grkd": {"grkd_weight": 12.3, "temperature": 2.0},
                     "kd": {"kd_weight": 0.9, "temperature": 4}},
        "low-data": {},
    }  # fmt: skip
    g = r.get("transfer", "grkd")
    assert g.space == {"grkd_weight": (0.1, 100.0), "temperature": (0.5, 8.0)}
    assert g.extended == {"grkd_weight": ((0.1, 100.0), (0.1, 1000.0))}
    assert g.at_edge == () and g.selection_score == 0.812 and g.trials == 24
    assert r.get("transfer", "kd").at_edge == ("kd_weight",)
    assert r.get("low-data", "grkd") is None and r.get("standard", "grkd") is None
    assert r.invocation["trials"] == 24
    # the file's form round-trips; settings may be restricted (absent ones come back empty)
    again = rc.parse_recipes(r.to_json())
    assert _params(again) == _params(r) and again.get("transfer", "grkd") == g
    assert rc.parse_recipes(r.to_json(["transfer", "standard"])).settings["standard"] == {}


def test_a_recipe_equal_to_the_defaults_has_the_default_runs_key(tmp_path: Path) -> None:
    r = rc.load_recipes(_write(tmp_path, GOOD))
    # KD chose its defaults (temperature written as an int): the run is the default run
    assert (
        r.run_params("transfer", "kd") == {} and params_tag(r.run_params("transfer", "kd")) == "{}"
    )
    # GRKD's temperature 2 differs from its default 1; the weight too
    assert r.run_params("transfer", "grkd") == {"grkd_weight": 12.3, "temperature": 2.0}
    assert r.run_params("low-data", "grkd") == {}  # not tuned there: the defaults
    assert rc.canonical_params("grkd", {"temperature": 1}) == {}
    assert rc.canonical_params("grkd", {"temperature": 2}) == {"temperature": 2.0}
    # the combinations' CE and KD weights are KD's in the benchmark, and RKD's are the paper's
    assert rc.canonical_params("grkd_kd", {"ce_weight": 0.1, "kd_weight": 0.9}) == {}
    assert rc.canonical_params("rkd", {"distance_weight": 25.0, "angle_weight": 50}) == {}
    assert rc.canonical_params("rkd", {"distance_weight": 2.5}) == {"distance_weight": 2.5}
    # an int-typed knob stays an int; strings and booleans compare as themselves
    assert rc.canonical_params("grkd", {"top_k": 5.0}) == {"top_k": 5}
    assert rc.canonical_params("grkd", {"reduction": "mean"}) == {"reduction": "mean"}
    assert rc.canonical_params("grkd", {"reduction": "sum"}) == {}  # the benchmark's default
    # the benchmark runs REFILLED with global centres (PAPER_DEFAULTS), not the constructor's True
    assert rc.canonical_params("refilled", {"restrict_to_batch": False}) == {}
    assert rc.canonical_params("refilled", {"restrict_to_batch": True}) == {
        "restrict_to_batch": True
    }


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(format=2), "format 2 is not supported"),
        (lambda d: d.pop("format"), "format None is not supported"),
        (lambda d: d.update(settings=[]), "'settings' must be an object"),
        (lambda d: d["settings"].update(nowhere={}), "unknown setting 'nowhere'"),
        (lambda d: d["settings"]["transfer"].update(fitnet={"params": {}}), "unknown method 'fitnet'"),
        (lambda d: d["settings"]["transfer"]["grkd"]["params"].update(alpha=1.0),
         "unknown parameter 'alpha'; grkd takes"),
        (lambda d: d["settings"]["transfer"]["grkd"]["params"].update(temperature=math.inf),
         "temperature = inf is not a finite number"),
        (lambda d: d["settings"]["transfer"]["grkd"]["params"].update(temperature=None),
         "temperature = None is not a finite number"),
        (lambda d: d["settings"]["transfer"]["grkd"]["space"].update(temperature=[8.0, 0.5]),
         "range of temperature must be \\[low, high\\]"),
        (lambda d: d["settings"]["transfer"]["grkd"]["space"].update(temperature=[0.5, math.nan]),
         "range of temperature"),
        (lambda d: d["settings"]["transfer"]["grkd"]["params"].update(temperature=9.0),
         "temperature = 9.0 lies outside its range"),
        (lambda d: d["settings"]["transfer"]["grkd"]["params"].update(grkd_weight=2000.0),
         "grkd_weight = 2000.0 lies outside its range \\[0.1, 1000.0\\]"),
        (lambda d: d["settings"]["transfer"]["grkd"].update(at_edge=["tau"]), "at_edge must list"),
        (lambda d: d["settings"]["transfer"]["grkd"].update(selection_score=math.nan),
         "selection_score = nan"),
        (lambda d: d["settings"]["transfer"]["grkd"].update(trials=-1), "trials = -1"),
        (lambda d: d["settings"]["transfer"]["grkd"].pop("params"), "needs an object with a 'params'"),
        (lambda d: d["settings"]["transfer"].update(rrd={"params": {"queue_size": 10}}),
         "'queue_size' is set by the benchmark"),
        (lambda d: d["settings"]["transfer"]["kd"].update(space={"ce_weight": [0.0, 1.0]}),
         "'ce_weight' has a range but no chosen value"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_what_is_wrong(tmp_path: Path, edit, message: str) -> None:
    data = copy.deepcopy(GOOD)
    edit(data)
    with pytest.raises(ValueError, match=message):
        rc.load_recipes(_write(tmp_path, data))


def test_a_missing_or_broken_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no recipes file"):
        rc.load_recipes(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{format: 1")
    with pytest.raises(ValueError, match="not valid JSON"):
        rc.load_recipes(tmp_path / "bad.json")


def test_the_recipes_a_folder_used_come_from_its_meta_json() -> None:
    assert rc.recipes_of_meta(None) is None
    assert rc.recipes_of_meta({"invocations": [{"command": "old run"}]}) is None
    first = copy.deepcopy(GOOD)
    later = {"format": 1, "settings": {"transfer": {"rkd": {"params": {"distance_weight": 5.0}}}}}
    meta = {"invocations": [{"recipes": first}, {"command": "no recipes"}, {"recipes": later}]}
    r = rc.recipes_of_meta(meta)
    # the later invocation's transfer replaces the earlier one; low-data stays, run untuned
    assert _params(r) == {"transfer": {"rkd": {"distance_weight": 5.0}}, "low-data": {}}
