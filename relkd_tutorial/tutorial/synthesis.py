"""The project's question told once: the tuned verdict first, then every line of evidence.

Notebooks 05 and 06, and the chapters that quote a benchmark verdict, read the committed main job
through :func:`.committed.committed_benchmark` and say what it found here, so one comparison has
the same numbers and the same word everywhere (every number and verdict word computed):
:func:`question_sentence` (GRKD against its rivals in one setting), :func:`synthesis_table` and
:func:`synthesis_sentence` (every line of evidence), :func:`benchmark_claim` (one comparison in
the benchmark's own family) and :func:`pruning_sentence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..bench.settings import (
    METHOD_LABELS,
    MISSION_METHOD,
    MISSION_RIVALS,
    PSEUDO_LABEL_CONTROL,
    describe_params,
)
from ..bench.tuned import tuned_methods
from ..bench.verdict import ablation_comparisons, comparisons, markdown_table, select, stated
from .committed import (
    _CLAIM_VERB,
    Benchmark,
    CommittedSetting,
    _interval,
    _one,
    committed_benchmark,
)
from .prose import Sentence, say

#: What each family of :func:`~relkd_tutorial.bench.verdict.comparisons` compares (for sentences).
FAMILY_WORDS: dict[str, str] = {
    "control": "each method against its one-thing-different control",
    "kd": "every method against KD",
    "ce": "every method against CE",
    "mission": "GRKD against RKD, RRD, REFILLED and DIST",
    "pseudo": "every logit method against the pseudo-label control",
}


def _pick(entries: Sequence[dict[str, Any]], setting: str, family: str, method: str,
          baseline: str, metric: str = "acc") -> dict[str, Any] | None:  # fmt: skip
    return next((e for e in entries if (e["setting"], e["family"], e["method"], e["baseline"],
                 e["metric"]) == (setting, family, method, baseline, metric)), None)  # fmt: skip


def benchmark_claim(
    method: str,
    baseline: str,
    family: str = "control",
    setting: str = "transfer",
    metric: str = "acc",
    results_dir: str | Path | None = None,
) -> Sentence:
    """One comparison as the benchmark states it, naming its family, its size, the arm and an
    earlier protocol, so a reader sees why it can differ from a chapter's own comparison of the
    same runs (fewer methods in its family, the paper defaults)."""
    if family not in FAMILY_WORDS:
        raise ValueError(f"family must be one of {list(FAMILY_WORDS)}, got {family!r}")
    bench = committed_benchmark(results_dir, settings=(setting,))
    e = _pick(bench.entries, setting, family, method, baseline, metric)
    if e is None:
        return say(
            "The benchmark's committed runs have no comparison of {a} with {b} in {setting} yet "
            "(notebook 06 lists what is committed).",
            a=METHOD_LABELS.get(method, method), b=METHOD_LABELS.get(baseline, baseline),
            setting=setting,
        )  # fmt: skip
    # in the tuned arm KD runs at its recipe while X + KD keeps KD's default part (the tuning
    # tunes only the added term), so "X + KD minus KD" there differs in more than the term
    kd_tuned = (
        family == "control" and baseline == "kd" and "kd" in tuned_methods(bench.recipes, setting)
    )
    return say(
        "In the benchmark's own family (notebook 06: {words}, Holm over {m}, {n} paired seeds, "
        "{arm}{earlier}): {one}.{caveat}",
        words=FAMILY_WORDS[family], m=e["family_size"], n=e["n"], one=_one(e),
        arm="each method at its tuned recipe" if bench.recipes else "every method at its paper "
        "defaults", earlier="; runs of an earlier protocol" if bench.earlier else "",
        caveat=say(" There KD runs at its tuned recipe while {a} keeps KD's default part and "
                   "tunes only its own term, so the two differ in more than that term; the "
                   "paper-default runs isolate it.", a=METHOD_LABELS.get(method, method))
        if kd_tuned else "",
    )  # fmt: skip


def _split(c: CommittedSetting) -> str:
    splits = sorted({str(r.get("eval_split") or "test") for r in c.finished})
    return " and ".join(splits) or "test"


def question_sentence(bench: Benchmark, setting: str = "transfer") -> Sentence:
    """The project's question in one setting as the benchmark answers it (tuned arm, Holm over
    the family of GRKD against RKD, RRD, REFILLED and DIST; fragile where the report says so)."""
    c = bench.tuned.get(setting)
    if c is None or not c.present:
        return c.describe() if c is not None else Sentence(f"No {setting} runs are committed.")
    mission = select(bench.entries, setting=setting, family="mission", metric="acc")
    if not mission:
        return say("The committed {s} runs hold no GRKD and rival to compare.", s=setting)
    recipe = bench.recipes.run_params(setting, MISSION_METHOD) if bench.recipes else {}
    how = (
        say("tuned against tuned, {g} at {r}", g=METHOD_LABELS[MISSION_METHOD],
            r=describe_params(recipe) if recipe else "its paper defaults, which its tuning chose")
        if tuned_methods(bench.recipes, setting) else Sentence("every method at its paper defaults")
    )  # fmt: skip
    return say(
        "**The question in {setting}**, {how} ({n} paired seeds, {split} split; Holm over the {m} "
        "comparisons of the family{earlier}): {items}.",
        setting=setting, how=how, n=max(e["n"] for e in mission), split=_split(c), m=len(mission),
        earlier="; runs of an earlier protocol" if c.earlier else "",
        items="; ".join(_one(e) for e in mission),
    )  # fmt: skip


def _short_cell(e: dict[str, Any] | None) -> str:
    return "not run" if e is None else f"{_interval(e, 2)} {stated(e)}"


def _ablation(ablation: CommittedSetting | None) -> tuple[str, list[dict], list[dict]] | None:
    """The GRKD ablation's line of evidence, ``(label, top-1 comparisons, those claimed either
    way)``; ``None``: not committed."""
    if ablation is None or not ablation.present:
        return None
    early = ", earlier protocol" if ablation.earlier else ""
    acc = select(ablation_comparisons(ablation.finished, MISSION_METHOD), metric="acc")
    moved = [e for e in acc if stated(e) != "within noise"]
    return f"GRKD ablation ({_split(ablation)} split{early})", acc, moved


def _lines(bench: Benchmark, student: CommittedSetting | None
           ) -> list[tuple[str, list[dict[str, Any]], str]]:  # fmt: skip
    """The main job's lines of evidence: ``(label, entries, setting)``, the headline first."""
    present = [name for name in ("transfer", "low-data") if name in bench.present]
    out = []
    for name in present:
        arm = "tuned" if tuned_methods(bench.recipes, name) else "paper defaults"
        early = ", earlier protocol" if bench.tuned[name].earlier else ""
        out.append((f"{arm}, {name}{early}", bench.entries, name))
    for name in filter(bench.arms, present):
        out.append((f"paper defaults, {name}", bench.default_entries, name))
    if bench.second and "transfer" in bench.present:
        out.append((f"tuned, transfer, {bench.second}", bench.second_entries, "transfer"))
    if student is not None and student.present:
        early = ", earlier protocol" if student.earlier else ""
        out.append((f"second student: {student.name}{early}", comparisons(student.finished),
                    "transfer"))  # fmt: skip
    return out


def synthesis_table(bench: Benchmark, ablation: CommittedSetting | None = None,
                    student: CommittedSetting | None = None) -> Sentence:  # fmt: skip
    """Every line of evidence on the project's question in one Markdown table: a row per line
    (both arms, the second run set, the second student, the GRKD ablation), a column per rival
    (GRKD minus it, top-1 points, 95% interval, the verdict after Holm in that line) and one for
    the pseudo-label control or the ablation's variants."""
    header = ["evidence", "seeds", *(f"vs {METHOD_LABELS[r]}" for r in MISSION_RIVALS), "other"]
    body = []
    for label, entries, setting in _lines(bench, student):
        mine = [_pick(entries, setting, "mission", MISSION_METHOD, r) for r in MISSION_RIVALS]
        pseudo = _pick(entries, setting, "pseudo", MISSION_METHOD, PSEUDO_LABEL_CONTROL)
        n = max((e["n"] for e in mine if e), default=0)
        other = f"vs {METHOD_LABELS[PSEUDO_LABEL_CONTROL]}: {_short_cell(pseudo)}" if pseudo else ""
        body.append([label, str(n), *(_short_cell(e) for e in mine), other])
    if abl := _ablation(ablation):  # the variants claimed either way, the rest counted
        name, acc, moved = abl
        rest = len(acc) - len(moved)
        cells = [f"{e['variant']} {_short_cell(e)}" for e in moved]
        cell = "; ".join(cells + ([f"{rest} other variants within noise"] if rest else []))
        n = max((e["n"] for e in acc), default=0)
        body.append([name, str(n), *("" for _ in MISSION_RIVALS), cell])
    if not body:
        raise ValueError("no line of evidence is committed")
    return Sentence(markdown_table(" | ".join(header), body))


def synthesis_sentence(bench: Benchmark, ablation: CommittedSetting | None = None,
                       student: CommittedSetting | None = None) -> Sentence:  # fmt: skip
    """The generated verdict of :func:`synthesis_table`: the headline's verdict per rival, how
    many other lines agree with it, the pseudo-label control and what the ablation moves."""
    lines = _lines(bench, student)
    if not lines:
        raise ValueError("no main-job line of evidence is committed")
    head_label, head, setting = lines[0]
    rivals = [e for e in (_pick(head, setting, "mission", MISSION_METHOD, r) for r in MISSION_RIVALS)
              if e]  # fmt: skip
    parts = [say("**Across the evidence.** The benchmark's answer is its first line ({h}): "
                 "{items}.", h=head_label, items="; ".join(
                     f"against {METHOD_LABELS[e['baseline']]}, {stated(e)}" for e in rivals))]  # fmt: skip
    agree = []
    for e in rivals:
        theirs = [(label, x) for label, ent, s in lines[1:]
                  if (x := _pick(ent, s, "mission", MISSION_METHOD, e["baseline"])) is not None]  # fmt: skip
        differ = [f"{label}: {stated(x)}" for label, x in theirs if stated(x) != stated(e)]
        agree.append(say("{b} {k} of {m}{d}", b=METHOD_LABELS[e["baseline"]],
                         k=len(theirs) - len(differ), m=len(theirs),
                         d=f" (otherwise {'; '.join(differ)})" if differ else ""))  # fmt: skip
    if lines[1:]:
        parts.append(say("The other lines that give the same verdict, rival by rival: {a}.",
                         a="; ".join(agree)))  # fmt: skip
    pseudo = _pick(head, setting, "pseudo", MISSION_METHOD, PSEUDO_LABEL_CONTROL)
    if pseudo is not None:
        meaning = {
            "beats": "so GRKD gives the student more than the teacher's top class on the pool",
            "trails": "so the teacher's hard labels on the pool give the student more than "
            "GRKD's preferences",
            "within noise": "so these runs cannot tell GRKD's preferences from the teacher's hard "
            "labels on the pool",
            "fragile": "a verdict that does not survive a perturbation either way",
        }[stated(pseudo)]
        parts.append(say("In the first line GRKD {c} the pseudo-label control (CE on the teacher's top class over the "
                         "unlabelled images; {v} points), {m}.", c=_CLAIM_VERB[stated(pseudo)],
                         v=_interval(pseudo, 2), m=meaning))  # fmt: skip
    if abl := _ablation(ablation):
        _, acc, moved = abl
        scale = next((e for e in acc if e["choice"].endswith("(scale)")), None)
        text = say("Of GRKD's own choices (the ablation's {k} variants), those that move top-1 "
                   "beyond noise: {n}{w}.", k=len(acc), n=len(moved),
                   w=": " + ", ".join(f"{e['variant']} ({stated(e)})" for e in moved)
                   if moved else "")  # fmt: skip
        if scale is not None:
            moves = stated(scale) in ("beats", "trails")
            text = say(
                "{t} '{v}' is the same loss at another weight ({c}, {d} points): {m}.", t=text,
                v=scale["variant"], c=stated(scale), d=_interval(scale, 2),
                m="the loss scale alone moves GRKD's top-1, so a comparison at one weight compares "
                "weights as much as losses (which is why every method's weight is tuned)" if moves
                else "at this precision the loss scale alone does not separate from noise",
            )  # fmt: skip
        parts.append(text)
    return Sentence(" ".join(parts))


def pruning_sentence(recipes: Mapping[str, Any], pruned: Mapping[str, Any],
                     factor: float = 3.0) -> Sentence:  # fmt: skip
    """Whether pruning changed the tuning's choices: the chosen values of two recipe files more
    than ``factor`` apart (as ``scripts/diff_recipes.py`` flags them), and the trials stopped early."""
    differ, knobs, cut, trials = [], 0, 0, 0
    for setting, methods in sorted(recipes.get("settings", {}).items()):
        for method, a in sorted(methods.items()):
            b = pruned.get("settings", {}).get(setting, {}).get(method)
            if b is None:
                continue
            cut, trials = cut + int(b.get("pruned", 0)), trials + int(b.get("trials", 0))
            for k in sorted(set(a["params"]) & set(b["params"])):
                x, y = a["params"][k], b["params"][k]
                if isinstance(x, (bool, str)) or isinstance(y, (bool, str)):
                    continue
                knobs += 1
                if min(x, y) <= 0 or max(x, y) / min(x, y) > factor:
                    differ.append(f"{METHOD_LABELS.get(method, method)} {k} ({setting})")
    if not knobs:
        raise ValueError("the two recipe files share no tuned value")
    return say(
        "With pruning (the same budget, weak trials stopped after an epoch or two), {c} of the "
        "{t} trials were stopped early, and {k} of the {n} chosen values differ by more than a "
        "factor {f:g} from the unpruned choice{w}.", c=cut, t=trials, k=len(differ), n=knobs,
        f=factor, w=": " + ", ".join(differ) if differ else "",
    )  # fmt: skip
