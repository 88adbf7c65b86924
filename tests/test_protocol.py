"""The benchmark's protocol: Holm, p-values, controls, the GRKD ablation plan, generated verdicts.

No training here (the plan, the pairing and the sentences are pure functions of settings and
rows); ``tests/test_bench.py`` runs the benchmark itself.
"""

from __future__ import annotations

import csv
import math
import re
import types
from pathlib import Path

import pytest
import torch

from relkd_tutorial.bench import cli, report, runner, verdict
from relkd_tutorial.bench import search_space as space
from relkd_tutorial.bench import settings as bs
from relkd_tutorial.bench import store as bench_store
from relkd_tutorial.losses.grkd import grkd_loss
from relkd_tutorial.methods import build_method
from relkd_tutorial.methods.logit_relation import RKD_CONVENTIONS
from relkd_tutorial.stats import (
    claim,
    describe_corrected,
    holm_adjust,
    paired_difference,
    paired_t_p_value,
    t_cdf,
    t_quantile,
    t_two_sided_p,
)

# ---------------------------------------------------------------------------------------------
# p-values and Holm-Bonferroni
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df", [1, 2, 4, 7, 30])
def test_two_sided_p_inverts_the_t_quantile(df: int) -> None:
    for p in (0.5, 0.1, 0.05, 0.01, 1e-4):
        t = t_quantile(1 - p / 2, df)
        assert t_two_sided_p(t, df) == pytest.approx(p, rel=1e-8)
        assert t_two_sided_p(-t, df) == pytest.approx(p, rel=1e-8)
        assert t_two_sided_p(t, df) == pytest.approx(2 * (1 - t_cdf(t, df)), rel=1e-6)
    # Cauchy (df = 1): P(|T| >= 1) = 1/2 exactly
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, rel=1e-12)
    assert t_two_sided_p(math.inf, 3) == 0.0 and t_two_sided_p(0.0, 3) == pytest.approx(1.0)


def test_paired_p_value_on_the_hand_computed_example() -> None:
    # d = (2, 3, 4): t = 3 / (1 / sqrt 3) = 5.196..., df 2; P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    diff = paired_difference([82.0, 83.0, 85.0], [80.0, 80.0, 81.0])
    t = 3.0 * math.sqrt(3.0)
    assert diff.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-10)
    # the p-value and the interval agree: p < 0.05 exactly when the 95% interval excludes 0
    for a, b in [([1.0, 2.0, 2.5], [0.0, 0.5, 2.6]), ([3.0, 1.0, 4.0, 1.0], [2.0, 1.5, 2.0, 0.0])]:
        d = paired_difference(a, b)
        assert (d.p_value < 0.05) == (not d.within_noise)
    assert math.isnan(paired_t_p_value(1.0, math.nan, 1))
    assert paired_t_p_value(2.0, 0.0, 5) == 0.0 and paired_t_p_value(0.0, 0.0, 5) == 1.0


def _holm_naive(ps: list[float], alpha: float) -> set[int]:
    """Holm's step-down test as written (Holm 1979): reject while p_(i) <= alpha / (m - i + 1)."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    rejected: set[int] = set()
    for rank, i in enumerate(order, start=1):
        if ps[i] > alpha / (m - rank + 1):
            break
        rejected.add(i)
    return rejected


def test_holm_on_a_hand_computed_example() -> None:
    # p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005, 0.01, 0.03, 0.04, multiplied by
    # 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running maximum 0.02, 0.03, 0.06, 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1, a single comparison is unadjusted, NaN stays out of the family
    assert holm_adjust([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([0.02]) == pytest.approx([0.02])
    out = holm_adjust([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="p-values"):
        holm_adjust([1.5])


def test_holm_agrees_with_the_naive_step_down_procedure() -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(300):
        m = 1 + trial % 9
        ps = (torch.rand(m, generator=gen) ** 3).tolist()
        if trial % 7 == 0:
            ps[0] = ps[-1]  # ties
        adjusted = holm_adjust(ps)
        assert all(a >= p - 1e-15 for a, p in zip(adjusted, ps, strict=True))
        for alpha in (0.01, 0.05, 0.1, 0.25):
            mine = {i for i, a in enumerate(adjusted) if a <= alpha}
            assert mine == _holm_naive(ps, alpha), (ps, alpha)
        # the adjusted p-value is the smallest level at which the step-down test rejects
        for i, a in enumerate(adjusted):
            if a < 1.0:
                assert i in _holm_naive(ps, a * (1 + 1e-9)) and i not in _holm_naive(ps, a * 0.999)


def test_corrected_sentences_need_the_holm_p_value() -> None:
    d = paired_difference([1.0, 2.0, 2.5, 1.5], [0.0, 0.5, 0.7, 0.9])  # interval excludes 0
    assert not d.within_noise and d.p_value < 0.05
    assert claim(d, d.p_value) == "beats" and claim(d, 0.2) == "within noise"
    alone = describe_corrected("GRKD", "KD", d, d.p_value, 1)
    assert alone.startswith("GRKD beats KD by ") and "Holm p" in alone
    nine = describe_corrected("GRKD", "KD", d, min(1.0, 9 * d.p_value), 9)
    assert "within noise after the correction for 9 comparisons" in nine
    noisy = paired_difference([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])
    assert "within noise" in describe_corrected("A", "B", noisy, 1.0, 3)


# ---------------------------------------------------------------------------------------------
# Controls: the combinations carry KD's weights, each term alone CE's
# ---------------------------------------------------------------------------------------------


def _fake_ws(num_classes: int = 10) -> types.SimpleNamespace:
    cache = types.SimpleNamespace(features=torch.zeros(1, 64))
    return types.SimpleNamespace(
        setting=bs.default_settings(fast=True)["transfer"],
        num_classes=num_classes,
        test=None,
        teacher_cache=lambda _data: cache,
    )


def _built(method: str, params: dict | None = None):
    return build_method(method, **runner.method_kwargs(method, params or {}, _fake_ws(), 1000))


def test_combinations_get_kds_weights_plus_their_term() -> None:
    kd = _built("kd")
    for combo, term in (("grkd_kd", "grkd_weight"), ("rrd_kd", "rrd_weight")):
        m = _built(combo)
        assert (m.ce_weight, m.kd_weight) == (kd.ce_weight, kd.kd_weight) == (0.1, 0.9), combo
        assert m.kd_temperature == kd.temperature == 4.0
        assert getattr(m, term) == 1.0
        assert bs.CONTROLS[combo] == "kd"
        # the table the report prints says the same
        shown = bs.PAPER_DEFAULTS[combo][0]
        assert (shown["ce_weight"], shown["kd_weight"]) == (0.1, 0.9)
    # a recipe's (or trial's) override still wins over the control weights
    assert _built("grkd_kd", {"grkd_weight": 3.0}).grkd_weight == 3.0
    assert _built("grkd_kd", {"kd_weight": 0.5}).kd_weight == 0.5


def test_each_relational_term_alone_has_ces_weight_and_ce_as_control() -> None:
    for method in ("rkd", "rrd", "grkd", "rank_soft", "rank_listwise", "refilled", "dist"):
        assert _built(method).ce_weight == 1.0, method
        assert bs.CONTROLS[method] == "ce", method
    assert bs.CONTROLS["kd"] == "ce"
    assert set(bs.CONTROLS) == set(bs.METHODS) - {"ce"}
    assert set(bs.CONTROL_DIFFERS) == set(bs.CONTROLS)


#: The benchmark's REFILLED recipe beyond the papers (docs/refilled.md, "In the benchmark").
REFILLED_BENCH = {"restrict_to_batch": False, "stage1_labels": "teacher", "stage1_fraction": 0.3}


def test_paper_defaults_are_what_runs_and_equal_the_constructor_defaults() -> None:
    import inspect

    from relkd_tutorial.methods.registry import _registry

    for method in bs.METHODS:
        params = bs.PAPER_DEFAULTS[method][0]
        signature = inspect.signature(_registry()[method]).parameters
        for key, value in params.items():
            assert key in signature, f"{method}: {key} is not a constructor argument"
            if method == "refilled" and key in REFILLED_BENCH:
                assert value == REFILLED_BENCH[key], key
                continue
            if method in ("grkd", "grkd_kd") and key == "reduction":
                # the benchmark runs GRKD at the published summary's sum over pairs (docs/grkd.md)
                assert value == "sum" and signature[key].default == "mean"
                continue
            default = bs.CONTROL_WEIGHTS.get(method, {}).get(key, signature[key].default)
            if default is None and method == "rkd":  # the "cifar" convention's weights
                default = dict(zip(("ce_weight", "distance_weight", "angle_weight"),
                                   RKD_CONVENTIONS["cifar"], strict=True))[key]  # fmt: skip
            assert value == default, (method, key)
    # REFILLED runs with the benchmark's recipe (not the constructor's), and a trial's override
    # passes through
    plain = build_method("refilled")
    assert plain.restrict_to_batch is True and plain.stage1_labels == "labelled"
    refilled = _built("refilled")
    assert refilled.restrict_to_batch is False and refilled.stage1_labels == "teacher"
    assert [s.fraction for s in refilled.stages()] == pytest.approx([0.3, 0.7])
    tuned = _built("refilled", {"stage1_fraction": 0.5, "stage1_labels": "labelled"})
    assert [s.fraction for s in tuned.stages()] == pytest.approx([0.5, 0.5])
    assert tuned.stage1_labels == "labelled"


def _rows(values: dict[str, list[float]], setting: str = "transfer", tau: dict | None = None):
    """Synthetic final rows: ``values[method][seed]`` is the top-1 (a fraction)."""
    rows = []
    for method, accs in values.items():
        for seed, acc in enumerate(accs):
            t = (tau or {}).get(method, [0.5] * len(accs))[seed]
            row = {c: "" for c in bench_store.RUN_COLUMNS}
            row.update(key=f"{setting}|{method}|{seed}", setting=setting, spec="s", phase="final",
                       method=method, params="{}", seed=seed, status="ok", eval_split="test",
                       n_train=9000, n_labelled=500, epochs=5)  # fmt: skip
            row.update({c: 0.5 for c in bench_store.NUMERIC_COLUMNS})
            row.update(acc=acc, kendall_tau=t, acc_tops=acc, acc_footwear=acc)
            rows.append(row)
    return rows


def _synthetic(seed: int, shift: dict[str, float] | None = None, n: int = 8):
    gen = torch.Generator().manual_seed(seed)
    base = {m: 0.70 + 0.01 * i for i, m in enumerate(bs.METHODS)}
    base.update(shift or {})
    seed_effect = (0.01 * torch.randn(n, generator=gen)).tolist()
    return {
        m: [mu + e + 0.002 * float(torch.randn(1, generator=gen)) for e in seed_effect]
        for m, mu in base.items()
    }


def test_the_report_pairs_each_method_with_its_control() -> None:
    entries = verdict.comparisons(_rows(_synthetic(0)), metrics=("acc",))
    control = {(e["method"], e["baseline"]) for e in entries if e["family"] == "control"}
    assert control == {
        ("pseudo_label", "ce"), ("kd", "ce"), ("rkd", "ce"), ("rrd", "ce"), ("rrd_kd", "kd"), ("refilled", "ce"),
        ("grkd", "ce"), ("grkd_kd", "kd"), ("rank_soft", "ce"), ("rank_listwise", "ce"),
        ("dist", "ce"),
    }  # fmt: skip
    headline = [e for e in entries if e["family"] == "kd"]
    assert {e["method"] for e in headline} == set(bs.METHODS) - {"kd"}
    assert all(e["baseline"] == "kd" and e["family_size"] == len(bs.METHODS) - 1 for e in headline)
    mission = {(e["method"], e["baseline"]) for e in entries if e["family"] == "mission"}
    assert mission == {("grkd", "rkd"), ("grkd", "rrd"), ("grkd", "refilled"), ("grkd", "dist")}
    # Holm is applied within each family: the adjusted p-values are holm_adjust of the raw ones
    for family in verdict.FAMILIES:
        group = [e for e in entries if e["family"] == family]
        assert [e["p_holm"] for e in group] == pytest.approx(holm_adjust([e["p"] for e in group]))


def test_the_pseudo_family_is_every_logit_method_against_the_pseudo_label_control() -> None:
    logit = set(bs.NEEDS_SHARED_CLASSES) - {bs.PSEUDO_LABEL_CONTROL}
    assert {"kd", "rrd_kd", "grkd", "grkd_kd", "rank_soft", "rank_listwise"} <= logit
    assert not logit & {"ce", "rkd", "rrd", "refilled"}  # they never read the teacher's logits
    pairs = verdict.family_pairs("pseudo", bs.METHODS)
    assert set(pairs) == {(m, "pseudo_label") for m in logit}
    assert verdict.family_pairs("pseudo", set(bs.METHODS) - {"pseudo_label"}) == []
    entries = verdict.comparisons(_rows(_synthetic(0)), metrics=("acc",))
    family = [e for e in entries if e["family"] == "pseudo"]
    assert {e["method"] for e in family} == logit
    assert all(e["family_size"] == len(logit) for e in family)
    assert [e["p_holm"] for e in family] == pytest.approx(holm_adjust([e["p"] for e in family]))


def _pseudo_sentence(text: str) -> str:
    return text.split("Against the Pseudo-label control")[1]


def test_the_pseudo_sentence_follows_the_numbers() -> None:
    level = {m: 0.80 for m in bs.METHODS}
    ahead = _synthetic(1, {**level, "kd": 0.85, "grkd": 0.75})  # KD 5 points above, GRKD below
    text, entries = _verdict(ahead)
    sentence = _pseudo_sentence(text)
    beat, trail = sentence.split("Trail Pseudo-label: ")
    assert "Beat Pseudo-label: KD (+" in beat and "GRKD" not in beat
    assert trail.startswith("GRKD (-")
    found = set(_NUMBER.findall(sentence.replace("top-1", "top-one")))
    assert found <= _allowed_numbers(entries)
    same = _pseudo_sentence(_verdict(_synthetic(1, level))[0])
    assert "Beat" not in same and "Trail" not in same and "Within noise: " in same
    # without the control (low-data, standard) there is no such sentence
    rows = {m: v for m, v in _synthetic(1, level).items() if m != "pseudo_label"}
    assert "Pseudo-label" not in _verdict(rows)[0]


# ---------------------------------------------------------------------------------------------
# Generated sentences: they follow the numbers, and carry no number of their own
# ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _allowed_numbers(entries, alpha=bs.ALPHA, confidence=0.95) -> set[str]:
    allowed = {f"{alpha:g}", f"{100 * confidence:g}"}
    for e in entries:
        digits = 2 if e["metric"] in bs.PERCENT else 3
        for k in ("mean", "low", "high"):
            allowed.add(f"{e[k]:+.{digits}f}")
        allowed |= {str(e["n"]), str(e["family_size"])}
        from relkd_tutorial.stats import format_p

        allowed.add(format_p(e["p_holm"]).replace("< ", ""))
    return allowed


def _verdict(values) -> tuple[str, list[dict]]:
    entries = verdict.comparisons(_rows(values), metrics=("acc",))
    return verdict.verdict_paragraph(entries, "transfer"), entries


def test_verdict_paragraph_numbers_all_come_from_the_data() -> None:
    for seed in range(3):
        text, entries = _verdict(_synthetic(seed))
        found = _NUMBER.findall(text.replace("top-1", "top-one"))  # the metric's name
        assert found, text
        allowed = _allowed_numbers(entries)
        assert set(found) <= allowed, set(found) - allowed


def test_verdict_sentences_change_when_the_numbers_change(tmp_path: Path) -> None:
    # two runs.csv files: GRKD well above KD in one, tied with KD in the other
    strong = _synthetic(1, {"grkd": 0.80})
    tied = _synthetic(1, {"grkd": 0.70 + 0.01 * bs.METHODS.index("kd")})  # KD's mean
    texts = []
    for name, values in (("strong", strong), ("tied", tied)):
        out = tmp_path / name
        store = bench_store.ResultStore(out)
        for row in _rows(values):
            store.append(row)
        report.write_report(out, plots=False)
        texts.append((out / "results.md").read_text())
    verdicts = [
        next(line for line in t.splitlines() if line.startswith("**Verdict")) for t in texts
    ]
    assert verdicts[0] != verdicts[1]
    against_kd = [v.split("Against each method's")[0] for v in verdicts]
    beat = against_kd[0].split("Beat KD:")[1].split("Trail KD:")[0]
    assert "GRKD (+" in beat
    assert "GRKD (" in against_kd[1].split("Within noise:")[1]
    assert "GRKD (" not in against_kd[1].split("Within noise:")[0]
    # the CSV carries the same verdicts
    with open(tmp_path / "strong" / "differences.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["family"] == "kd" and r["metric"] == "acc"]
    assert {r["method"]: r["claim"] for r in rows}["grkd"] == "beats"


def test_holm_turns_a_lone_borderline_difference_into_within_noise() -> None:
    # RKD is a little above KD with spread: p under 0.05 alone, not as the best of nine (the
    # others tie with KD: mean difference 0)
    kd = [0.75, 0.77, 0.76, 0.74, 0.75, 0.78, 0.76, 0.75]
    wobble = [0.01, -0.01, 0.02, -0.02, 0.01, -0.01, 0.02, -0.02]
    values = {m: [v + w for v, w in zip(kd, wobble, strict=True)] for m in bs.METHODS}
    values["kd"] = kd
    values["rkd"] = [v + d for v, d in zip(kd, [0.012, 0.002, 0.01, 0.0, 0.008, -0.002, 0.009,
                                                0.003], strict=True)]  # fmt: skip
    entries = verdict.comparisons(_rows(values), metrics=("acc",))
    rkd = next(e for e in entries if e["family"] == "kd" and e["method"] == "rkd")
    assert rkd["p"] < 0.05 < rkd["p_holm"] and rkd["interval_excludes_zero"]
    assert rkd["claim"] == "within noise"
    assert "within noise after the correction" in rkd["sentence"]


# ---------------------------------------------------------------------------------------------
# The GRKD ablation
# ---------------------------------------------------------------------------------------------

EXPECTED_VARIANTS = [
    {},
    {"top_k": 5},
    {"top_k": 3},
    {"weighting": "prob_gap"},
    {"temperature": 0.5},
    {"temperature": 2.0},
    {"temperature": 4.0},
    {"reduction": "mean"},
]


def _grkd_options(m) -> dict:
    loss = m.loss
    return {
        "top_k": loss.top_k,
        "weighting": loss.weighting,
        "temperature": loss.temperature,
        "reduction": loss.reduction,
        "grkd_weight": m.grkd_weight,
        "ce_weight": m.ce_weight,
    }


def test_the_grkd_ablation_plan_is_the_issue_list() -> None:
    variants = bs.ablation_variants("grkd")
    assert [v.params for v in variants] == EXPECTED_VARIANTS
    assert len({v.name for v in variants}) == len(variants)
    assert bs.ABLATION_SETTING == "transfer"
    with pytest.raises(ValueError, match="no ablation"):
        bs.ablation_variants("kd")


def test_every_variant_reaches_the_method_and_changes_exactly_one_choice() -> None:
    default = _grkd_options(_built("grkd", {}))
    assert default == {"top_k": None, "weighting": "uniform", "temperature": 1.0,
                       "reduction": "sum", "grkd_weight": 1.0, "ce_weight": 1.0}  # fmt: skip
    for v in bs.ablation_variants("grkd")[1:]:
        got = _grkd_options(_built("grkd", v.params))
        changed = {k for k in got if got[k] != default[k]}
        assert changed == set(v.params), (v.name, changed)
        for k, value in v.params.items():
            assert got[k] == value


def _evaluation_seeds() -> set[int]:
    """Every seed any preset (or fast mode) evaluates on, in any setting, and the full setting's."""
    seeds = {0, 1, 2}  # full (CIFAR-100): bench/full.py
    for fast in (True, False):
        for preset in bs.PRESETS:
            for s in bs.default_settings(fast, preset).values():
                seeds |= set(s.seeds)
    return seeds


def test_ablation_seeds_are_selection_seeds_and_never_evaluation_seeds() -> None:
    assert space.ABLATION_SEEDS == tuple(range(1000, 1008))  # from the selection seeds' base
    assert space.ABLATION_SEEDS[0] == space.SELECTION_SEEDS[0]
    assert not set(space.ABLATION_SEEDS) & _evaluation_seeds()
    for fast in (True, False):
        for preset in bs.PRESETS:
            for name, s in bs.default_settings(fast, preset).items():
                seeds = {j.seed for j in runner.ablation_jobs(s, "grkd")}
                assert seeds and not seeds & _evaluation_seeds(), (fast, preset, name)
                assert seeds <= set(space.ABLATION_SEEDS)


def test_ablation_runs_score_the_validation_split_and_the_comparison_the_test_set() -> None:
    assert set(runner.SELECTION_PHASES) == {"ablation"}
    assert "final" not in runner.SELECTION_PHASES


def test_ablation_jobs_cover_every_variant_on_the_selection_seeds() -> None:
    setting = bs.default_settings(fast=False)["transfer"]
    jobs = runner.ablation_jobs(setting, "grkd")
    assert len(jobs) == len(EXPECTED_VARIANTS) * 8
    assert all(j.phase == "ablation" and j.method == "grkd" for j in jobs)
    assert len(setting.seeds) > len(space.ABLATION_SEEDS) == 8  # 8 (the main job has 16)
    for params in EXPECTED_VARIANTS:
        seeds = sorted(j.seed for j in jobs if j.params == params)
        assert seeds == list(space.ABLATION_SEEDS), params  # every variant pairs with the default
    fast = runner.ablation_jobs(bs.default_settings(fast=True)["transfer"], "grkd")
    assert sorted({j.seed for j in fast}) == list(space.ABLATION_SEEDS[:2])  # fast mode: two
    tags = {bs.params_tag(j.params) for j in jobs}
    assert len(tags) == len(EXPECTED_VARIANTS)  # each variant is told apart in runs.csv
    keys = {j.key("spec") for j in jobs}
    assert len(keys) == len(jobs)
    assert not keys & {runner.Job("transfer", "final", "grkd", {}, s).key("spec")
                       for s in setting.seeds}  # fmt: skip


def test_the_ablation_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["--ablation", "grkd", "--no-fast"])
    _, settings, _ = cli.configure(args, "cpu")
    assert list(settings) == ["transfer"]
    threads = torch.get_num_threads()
    try:
        assert cli.main(["--ablation", "grkd", "--no-fast", "--plan", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    n = len(EXPECTED_VARIANTS) * len(space.ABLATION_SEEDS)
    assert f"up to {n} training runs (grkd ablation)" in out
    assert f"8 selection seeds {list(space.ABLATION_SEEDS)}, scored on the validation split" in out
    assert cli.recipes_for(args) is None  # the paper defaults, not the tuned recipe
    assert args.teacher is None  # the main job's teacher (settings.BENCH_TEACHER)
    main = bs.default_settings(fast=False)["transfer"]
    assert settings["transfer"].fingerprint("t") == main.fingerprint("t")  # the main job's sizes
    assert settings["transfer"].seeds == space.ABLATION_SEEDS  # what is cached, shown, recorded
    with pytest.raises(SystemExit, match="--seeds does not apply to --ablation"):
        cli.configure(cli.build_parser().parse_args(["--ablation", "grkd", "--seeds", "0,1"]))


def test_the_ablation_default_is_the_main_jobs_grkd_at_paper_defaults() -> None:
    from relkd_tutorial.bench.recipes import load_recipes

    setting = bs.default_settings(fast=False)["transfer"]
    paper = runner.arm_params(setting, "grkd", load_recipes())[-1][0]  # the paper-default arm
    assert paper == {} == bs.ablation_variants("grkd")[0].params
    default = runner.method_kwargs("grkd", bs.ablation_variants("grkd")[0].params, None, 0)
    assert default == runner.method_kwargs("grkd", paper, None, 0) == bs.PAPER_DEFAULTS["grkd"][0]
    assert default["reduction"] == "sum"
    assert runner.method_kwargs("grkd", {"reduction": "mean"}, None, 0)["reduction"] == "mean"


def test_an_earlier_test_split_ablation_is_refused_not_mixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "grkd-ablation"
    store = bench_store.ResultStore(old)
    for r in _ablation_rows({}, split="test", seeds=range(8)):
        store.append(r)
    argv = ["--fast", "--ablation", "grkd", "--out", str(old), "--jobs", "1", "--device", "cpu"]
    threads = torch.get_num_threads()
    try:
        assert cli.main([*argv, "--plan"]) == 0
        assert f"note: this command will stop: {old / 'runs.csv'} holds 64 grkd ablation runs " \
            "scored on the test split" in capsys.readouterr().out  # fmt: skip
        with pytest.raises(SystemExit, match="runs scored on the test split") as err:
            cli.main(argv)
    finally:
        torch.set_num_threads(threads)
    assert str(old / "runs.csv") in str(err.value)
    assert len(store.rows()) == 64  # nothing trained, nothing appended
    mixed = _ablation_rows({}, split="test", seeds=range(8)) + _ablation_rows({})
    with pytest.raises(ValueError, match="earlier protocol"):
        verdict.ablation_comparisons(mixed, "grkd")


def test_sum_over_all_pairs_is_the_mean_times_the_pair_count() -> None:
    # why the "sum" variant is a scale effect: on all classes with uniform weights and untied
    # teacher logits, |P_i| = C (C - 1) / 2 for every sample
    gen = torch.Generator().manual_seed(0)
    z, t = torch.randn(16, 10, generator=gen), torch.randn(16, 10, generator=gen)
    mean = grkd_loss(z, t, reduction="mean")
    assert grkd_loss(z, t, reduction="sum") == pytest.approx(45 * float(mean), rel=1e-6)
    # not with a top-k group: 9 + 8 + 7 pairs for k = 3
    m3 = grkd_loss(z, t, top_k=3, reduction="mean")
    assert grkd_loss(z, t, top_k=3, reduction="sum") == pytest.approx(24 * float(m3), rel=1e-6)


def _ablation_rows(shift: dict[str, float], split: str = "val", seeds=space.ABLATION_SEEDS):
    gen = torch.Generator().manual_seed(3)
    seed_effect = (0.01 * torch.randn(len(seeds), generator=gen)).tolist()
    rows = []
    for v in bs.ablation_variants("grkd"):
        tag = bs.params_tag(v.params)
        for seed, e in zip(seeds, seed_effect, strict=True):
            acc = 0.75 + shift.get(v.name, 0.0) + e + 0.002 * float(torch.randn(1, generator=gen))
            row = {c: "" for c in bench_store.RUN_COLUMNS}
            row.update(key=f"a|{tag}|{split}|{seed}", setting="transfer", spec="s",
                       phase="ablation", method="grkd", params=tag, seed=seed, status="ok",
                       eval_split=split, n_train=9000, n_labelled=500, epochs=5)  # fmt: skip
            row.update({c: 0.5 for c in bench_store.NUMERIC_COLUMNS})
            row.update(acc=acc, kendall_tau=0.6 + shift.get(v.name, 0.0) + e)
            rows.append(row)
    return rows


def test_ablation_report_table_and_sentences_follow_the_numbers() -> None:
    worse = _ablation_rows({"top-3 group": -0.05})
    same = _ablation_rows({})
    entries = verdict.ablation_comparisons(worse, "grkd")
    acc = [e for e in entries if e["metric"] == "acc"]
    assert len(acc) == len(EXPECTED_VARIANTS) - 1 and all(e["family_size"] == 7 for e in acc)
    top3 = next(e for e in acc if e["variant"] == "top-3 group")
    assert top3["claim"] == "trails" and top3["mean"] == pytest.approx(-5.0, abs=0.5)
    assert [e["p_holm"] for e in acc] == pytest.approx(holm_adjust([e["p"] for e in acc]))
    texts = [report.markdown_report(r) for r in (worse, same)]
    assert all("## GRKD ablation (transfer)" in t for t in texts)
    scored = "Scored on the validation split with the selection seeds 1000, 1001, 1002, 1003"
    assert all(scored in t and "paired with the default on the same seeds" in t for t in texts)
    earlier = report.markdown_report(_ablation_rows({}, split="test", seeds=range(8)))
    assert "Scored on the test split with the seeds 0, 1, 2" in earlier
    assert "an earlier protocol" in earlier and scored not in earlier
    assert all("| top-5 group | group | `top_k=5` | 8 |" in t for t in texts)
    paragraphs = [next(x for x in t.splitlines() if x.startswith("**Which choices")) for t in texts]
    assert "Below the default: top-3 group" in paragraphs[0]
    assert "Below the default" not in paragraphs[1]
    assert "mean over pairs" in paragraphs[0] and "divided by the number of pairs" in paragraphs[0]
    allowed = _allowed_numbers(entries)
    text = paragraphs[0].replace("top-1", "top-one")
    for v in bs.ablation_variants("grkd"):  # the variants' names are labels, not results
        text = text.replace(v.name, "<variant>")
    assert set(_NUMBER.findall(text)) <= allowed, set(_NUMBER.findall(text)) - allowed
    # the main comparison's tables ignore ablation rows
    assert report.summarize_runs(worse) == []


def test_ablation_rows_are_not_mixed_with_the_final_comparison() -> None:
    rows = _rows(_synthetic(0)) + _ablation_rows({"tau 4": 0.02})
    summary = report.summarize_runs(rows)
    grkd = next(e for e in summary if e["method"] == "grkd")
    assert grkd["n"] == 8 and grkd["params"] == "{}"
    entries = verdict.comparisons(rows, metrics=("acc",))
    assert all(e["family"] != "ablation" for e in entries)
    assert len(report.ablation_entries(rows)) == 2 * (len(EXPECTED_VARIANTS) - 1)


def test_families_are_the_documented_ones() -> None:
    assert verdict.FAMILIES == ("control", "kd", "ce", "mission", "pseudo")
    with pytest.raises(ValueError, match="family"):
        verdict.family_pairs("everything", bs.METHODS)


def test_a_tiny_ablation_run_builds_every_variant_and_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from relkd_tutorial.models import build_model

    teacher = tmp_path / "teacher.pt"
    torch.save(build_model("teacher_cnn", 10, 1, seed=0).state_dict(), teacher)
    out = tmp_path / "ablation"
    built: list[dict] = []
    real_build = runner.build_method

    def recording_build(name, **kwargs):
        built.append({"name": name, **kwargs})
        return real_build(name, **kwargs)

    monkeypatch.setattr(runner, "build_method", recording_build)
    scored: list[int] = []  # the size of the split each run is scored on
    real_evaluate = runner.evaluate_student

    def recording_evaluate(student, data, ws, *args):
        scored.append(len(data))
        assert data is ws.val  # never the test set
        return real_evaluate(student, data, ws, *args)

    monkeypatch.setattr(runner, "evaluate_student", recording_evaluate)
    argv = [
        "--fast", "--ablation", "grkd", "--epochs", "1", "--pool-per-class", "6",
        "--labelled-per-class", "3", "--teacher", str(teacher), "--out", str(out), "--no-plots",
        "--jobs", "1",  # in this process, where the recording build_method is patched in
    ]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert [b["name"] for b in built] == ["grkd"] * (2 * len(EXPECTED_VARIANTS))
    for params in EXPECTED_VARIANTS:
        hits = [b for b in built if all(b.get(k) == v for k, v in params.items())]
        assert len(hits) >= 2, params  # both seeds got the variant's kwargs
    rows = bench_store.read_runs(out / "runs.csv")
    assert {r["phase"] for r in rows} == {"ablation"}
    assert {r["eval_split"] for r in rows} == {"val"} and len(scored) == len(rows)
    assert sorted({r["seed"] for r in rows}) == list(space.ABLATION_SEEDS[:2])  # fast: two
    assert not {r["seed"] for r in rows} & _evaluation_seeds()
    assert sorted({r["params"] for r in rows}) == sorted(
        bs.params_tag(p) for p in EXPECTED_VARIANTS
    )
    text = (out / "results.md").read_text()
    assert "## GRKD ablation (transfer)" in text and "**Which choices matter" in text
    assert "Scored on the validation split with the selection seeds 1000, 1001 (" in text
    assert (out / "ablation.csv").exists()
    meta = (out / "meta.json").read_text()
    assert '"ablation": "grkd"' in meta


def test_the_cifar_setting_has_no_kd_control_for_the_combinations() -> None:
    # full (CIFAR-100) trains the combinations at the published 1 / 1 / 1 weights
    entries = verdict.comparisons(_rows(_synthetic(0), setting="full"), metrics=("acc",))
    control = {(e["method"], e["baseline"]) for e in entries if e["family"] == "control"}
    assert ("grkd_kd", "kd") not in control and ("rrd_kd", "kd") not in control
    assert ("grkd", "ce") in control


def test_the_control_weights_are_part_of_every_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # rows trained with the old 1 / 1 / 1 combinations are never resumed as the new protocol's
    s = bs.default_settings(fast=False)["transfer"]
    before = s.fingerprint("T")
    monkeypatch.setattr(bs, "CONTROL_WEIGHTS", {"grkd_kd": {"ce_weight": 1.0, "kd_weight": 1.0}})
    assert s.fingerprint("T") != before


# ---------------------------------------------------------------------------------------------
# The learning-curve sentence of a setting with curves (standard): generated from histories
# ---------------------------------------------------------------------------------------------


def _curves(rows, gain_per_epoch: dict[str, float], epochs: int = 10) -> dict:
    """Histories with a test top-1 rising linearly by ``gain_per_epoch[method]`` per epoch."""
    out = {}
    for r in rows:
        g = gain_per_epoch[r["method"]]
        out[r["key"]] = [{"epoch": e, "stage": "", "eval_acc": 0.5 + g * e} for e in range(epochs)]
    return out


def test_the_plateau_sentence_reports_the_gain_over_the_last_fifth() -> None:
    rows = _rows({"ce": [0.7, 0.71], "kd": [0.8, 0.79], "grkd": [0.75, 0.76]}, setting="standard")
    hist = _curves(rows, {"ce": 0.001, "kd": 0.004, "grkd": 0.002})
    text = report.plateau_sentence(rows, hist, "standard")
    # 10 epochs: the last 2 (k = round(0.2 * 10)); gains 2 x 0.1 = +0.20, +0.80 and +0.40 points
    assert "the last 2 of its 10 epochs" in text
    assert "+0.20 points (CE) to +0.80 points (KD)" in text
    assert "+0.40" not in text  # GRKD is neither end; CE is an end, so no separate CE clause
    # it follows the numbers: a flat KD curve moves the top end
    flat = _curves(rows, {"ce": 0.001, "kd": 0.0, "grkd": 0.002})
    assert "+0.40 points (GRKD)" in report.plateau_sentence(rows, flat, "standard")
    # a setting without per-epoch test accuracy gets no sentence; the report includes it otherwise
    assert report.plateau_sentence(rows, {}, "standard") == ""
    assert text in report.markdown_report(rows, None, hist)
    assert "Learning curves (" not in report.markdown_report(rows, None, None)


def test_the_plateau_sentence_uses_a_multi_stage_methods_last_stage() -> None:
    rows = _rows({"refilled": [0.7, 0.7]}, setting="standard")
    hist = {
        r["key"]: [{"stage": "1", "eval_acc": 0.1 * e} for e in range(10)]
        + [{"stage": "2", "eval_acc": 0.6 + 0.01 * e} for e in range(5)]
        for r in rows
    }
    # stage 2 has 5 epochs: k = 1, gain = 0.01 -> +1.00 point (stage 1's +20 is not counted)
    text = report.plateau_sentence(rows, hist, "standard")
    assert "the last 1 of its 5 epochs" in text and "+1.00 points (REFILLED)" in text


def test_the_precision_sentence_counts_the_intervals_within_the_target() -> None:
    entries = verdict.comparisons(_rows(_synthetic(0)), metrics=("acc",))
    kd = [e for e in entries if e["family"] == "kd" and e["setting"] == "transfer"]
    half = {e["method"]: (e["high"] - e["low"]) / 2 for e in kd}
    narrow = min(half, key=half.__getitem__)
    wide = max(half, key=half.__getitem__)
    text = verdict.precision_sentence(entries, "transfer")
    assert f"from {half[narrow]:.2f} points ({bs.METHOD_LABELS[narrow]})" in text
    assert f"to {half[wide]:.2f} points ({bs.METHOD_LABELS[wide]})" in text
    assert "8 paired seeds" in text
    # the count follows the target: between the narrowest and the widest, some are in, some out
    mid = sorted(half.values())[4]
    n_in = sum(h <= mid for h in half.values())
    text = verdict.precision_sentence(entries, "transfer", target=mid)
    n = len(half)  # every method but KD
    assert f"{n_in} of {n} are within the target" in text and "(wider: " in text
    assert f"{n} of {n}" in verdict.precision_sentence(entries, "transfer", target=half[wide])
    assert f"0 of {n}" in verdict.precision_sentence(entries, "transfer", target=half[narrow] / 2)
    assert verdict.precision_sentence(entries, "low-data") == ""  # no such setting: no sentence
    assert verdict.precision_sentence(entries, "transfer") in report.markdown_report(
        _rows(_synthetic(0))
    )
