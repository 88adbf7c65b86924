"""The benchmark's comparisons, their multiple-comparison correction and the verdict sentences.

Pure functions of the rows of ``runs.csv``. Every comparison is a paired difference by seed
(:func:`relkd_tutorial.stats.paired_difference`) in one **family**, Holm-corrected per setting
and metric at :data:`~.settings.ALPHA`: ``"control"`` (:data:`~.settings.CONTROLS`), ``"kd"``,
``"ce"``, ``"mission"`` (GRKD against its rivals), ``"pseudo"`` (logit methods against the
pseudo-label control), ``"ablation"`` (each variant against its default). A difference is
claimed only when its interval excludes 0 *and* its Holm p is at most the level; the verdict
paragraphs are generated from the entries (``docs/benchmark.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from ..stats import claim, describe_corrected, format_p, holm_adjust, mean_std, paired_difference
from .search_space import ABLATION_SEEDS
from .settings import (
    ALPHA,
    CONTROL_WEIGHTS,
    CONTROLS,
    DIFF_METRICS,
    FASHION_SETTINGS,
    HEADLINE_BASELINE,
    METRIC_LABELS,
    MISSION_METHOD,
    MISSION_RIVALS,
    NEEDS_SHARED_CLASSES,
    PERCENT,
    PSEUDO_LABEL_CONTROL,
    _method_order,
    _ordered_settings,
    _scale,
    ablation_variants,
    describe_params,
    label,
    params_tag,
    pm,
)

FAMILIES: tuple[str, ...] = ("control", "kd", "ce", "mission", "pseudo")
CONFIDENCE = 0.95


def _unit(metric: str) -> tuple[str, int]:
    return ("points", 2) if metric in PERCENT else ("in tau", 3)


def family_pairs(family: str, methods: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(method, baseline)`` pairs of a family among the ``methods`` present."""
    present = sorted(set(methods), key=_method_order)
    if family == "control":
        return [(m, CONTROLS[m]) for m in present if m in CONTROLS and CONTROLS[m] in present]
    if family in ("kd", "ce"):
        return [(m, family) for m in present if m != family] if family in present else []
    if family == "mission":
        if MISSION_METHOD not in present:
            return []
        return [(MISSION_METHOD, r) for r in MISSION_RIVALS if r in present]
    if family == "pseudo":
        if PSEUDO_LABEL_CONTROL not in present:
            return []
        logit = [m for m in present if m in NEEDS_SHARED_CLASSES and m != PSEUDO_LABEL_CONTROL]
        return [(m, PSEUDO_LABEL_CONTROL) for m in logit]
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def _paired(
    a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]], metric: str, confidence: float
):
    seeds = sorted(set(a) & set(b))
    pairs = [(a[s][metric], b[s][metric]) for s in seeds]
    pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        return None
    k = _scale(metric)
    return paired_difference([k * x for x, _ in pairs], [k * y for _, y in pairs], confidence)


def _correct(entries: list[dict[str, Any]], alpha: float) -> None:
    """Holm within each (setting, family, metric) group of ``entries``, in place."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["setting"], e["family"], e["metric"]), []).append(e)
    for group in groups.values():
        adjusted = holm_adjust([e["p"] for e in group])
        size = sum(not math.isnan(e["p"]) for e in group)
        for e, p_holm in zip(group, adjusted, strict=True):
            diff, (a_label, b_label) = e.pop("_diff"), e.pop("_labels")
            e["p_holm"] = p_holm
            e["family_size"] = size
            e["claim"] = claim(diff, p_holm, alpha)
            e["within_noise"] = e["claim"] == "within noise"
            unit, digits = _unit(e["metric"])
            what = METRIC_LABELS[e["metric"]].replace(" %", "")
            e["sentence"] = f"[{what}] " + describe_corrected(
                a_label, b_label, diff, p_holm, size, unit, digits, alpha
            )


#: A verdict is fragile when its Holm-adjusted p-value lies within this factor of the level on
#: either side (choice: p-values of replicated runs scatter by about that much,
#: ``results/README.md``), so a verdict in that band is one perturbation away from the other side.
FRAGILE_FACTOR = 5.0


def fragile_band(alpha: float = ALPHA, factor: float = FRAGILE_FACTOR) -> tuple[float, float]:
    """The Holm p-values ``(low, high)`` between which a verdict is fragile."""
    return alpha / factor, alpha * factor


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["setting"], e["family"], e["method"], e["baseline"], e["metric"], e.get("params"))


def mark_fragile(
    entries: list[dict[str, Any]],
    second: Sequence[dict[str, Any]] | None = None,
    second_name: str = "the second run set",
    alpha: float = ALPHA,
    factor: float = FRAGILE_FACTOR,
) -> list[dict[str, Any]]:
    """Mark each entry fragile, in place (``e["fragile"]`` says why; ``""``: firm): its Holm p is
    inside :func:`fragile_band`, or ``second`` (a second run set's entries) has another verdict;
    its ``sentence`` then says "fragile". Returns ``entries``."""
    low, high = fragile_band(alpha, factor)
    other = {_key(e): e for e in second or ()}
    for e in entries:
        why = []
        if e["n"] >= 2 and low < e["p_holm"] < high:
            why.append(f"Holm p within a factor of {factor:g} of {alpha:g}")
        twin = other.get(_key(e))
        if twin is not None and twin["claim"] != e["claim"]:
            why.append(f"{twin['claim']} in {second_name} (Holm p {format_p(twin['p_holm'])})")
        e["fragile"] = "; ".join(why)
        if why:
            unit, digits = _unit(e["metric"])
            f = f"{{:+.{digits}f}}"
            what = METRIC_LABELS[e["metric"]].replace(" %", "")
            e["sentence"] = (
                f"[{what}] {label(e['method'])} vs {label(e['baseline'])}: "
                f"{f.format(e['mean'])} {unit} ({100 * CONFIDENCE:g}% CI {f.format(e['low'])} to "
                f"{f.format(e['high'])}, {e['n']} paired seeds; Holm p {format_p(e['p_holm'])} "
                f"over {e['family_size']}): fragile, claimed neither way ({e['fragile']}; "
                f"this run set alone: {e['claim']})."
            )
    return entries


def _add(
    out: list[dict[str, Any]],
    a: dict[int, dict[str, Any]],
    b: dict[int, dict[str, Any]],
    labels: tuple[str, str],
    metrics: Sequence[str],
    confidence: float,
    setting: str,
    family: str,
    **extra: Any,
) -> None:
    """Append to ``out`` an entry per metric: ``a`` minus ``b`` (``{seed: row}`` each) paired by
    seed; ``labels`` name the two sides in the sentence :func:`_correct` writes."""
    for metric in metrics:
        d = _paired(a, b, metric, confidence)
        if d is not None:
            out.append({"setting": setting, "family": family, **extra, "metric": metric,
                        "mean": d.mean, "std": d.std, "n": d.n, "low": d.low, "high": d.high,
                        "interval_excludes_zero": not d.within_noise, "p": d.p_value, "_diff": d,
                        "_labels": labels})  # fmt: skip


def comparisons(
    rows: Sequence[dict[str, Any]],
    families: Sequence[str] = FAMILIES,
    metrics: Sequence[str] = DIFF_METRICS,
    confidence: float = 0.95,
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """Every comparison of every family, per setting and metric, over the final runs (seeds where
    both finished; accuracy in points): ``setting``, ``family``, ``method``, ``baseline``,
    ``metric``, ``mean``, ``std``, ``n``, ``low``, ``high``, ``p``, ``p_holm``, ``family_size``,
    ``claim``, ``within_noise``, ``sentence``."""
    out: list[dict[str, Any]] = []
    finals = [r for r in rows if r["phase"] == "final" and r["status"] == "ok"]
    for setting in _ordered_settings(finals):
        by_method: dict[str, dict[int, dict[str, Any]]] = {}
        for r in finals:
            if r["setting"] == setting:
                by_method.setdefault(r["method"], {})[r["seed"]] = r
        for family in families:
            for method, baseline in family_pairs(family, by_method):
                if (
                    family == "control"
                    and method in CONTROL_WEIGHTS
                    and setting not in FASHION_SETTINGS
                ):
                    continue  # the CIFAR setting keeps the published weights: not a control there
                _add(out, by_method[method], by_method[baseline], (label(method), label(baseline)),
                     metrics, confidence, setting, family, method=method, baseline=baseline)  # fmt: skip
    _correct(out, alpha)
    return out


def ablation_comparisons(
    rows: Sequence[dict[str, Any]],
    method: str,
    metrics: Sequence[str] = ("acc", "kendall_tau"),
    confidence: float = 0.95,
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """Each variant of ``method``'s ablation minus its default, paired by seed (family
    ``"ablation"``; entries also hold ``variant``, ``choice``, ``params``). A setting whose rows
    were scored on two splits (an earlier protocol mixed in) is refused."""
    out: list[dict[str, Any]] = []
    runs = [
        r
        for r in rows
        if r["phase"] == "ablation" and r["method"] == method and r["status"] == "ok"
    ]
    variants = ablation_variants(method)
    default_tag = params_tag(variants[0].params)
    for setting in _ordered_settings(runs):
        splits = {r["eval_split"] for r in runs if r["setting"] == setting}
        if len(splits) > 1:
            raise ValueError(f"the {method} ablation's {setting} runs are scored on the splits "
                             f"{sorted(splits)}: an earlier protocol's runs are mixed in")  # fmt: skip
        by_tag: dict[str, dict[int, dict[str, Any]]] = {}
        for r in runs:
            if r["setting"] == setting:
                by_tag.setdefault(r["params"], {})[r["seed"]] = r
        if default_tag not in by_tag:
            continue
        for v in variants[1:]:
            tag = params_tag(v.params)
            if tag not in by_tag:
                continue
            _add(out, by_tag[tag], by_tag[default_tag], (v.name, "the default"), metrics,
                 confidence, setting, "ablation", method=method, baseline=method, variant=v.name,
                 choice=v.choice, params=tag)  # fmt: skip
    _correct(out, alpha)
    return out


# --- Sentences and tables ---


def _short(e: dict[str, Any]) -> str:
    """``+0.61 points, 95% CI +0.20 to +1.02, Holm p 0.031`` (the numbers of one entry)."""
    unit, digits = _unit(e["metric"])
    f = f"{{:+.{digits}f}}"
    if e["n"] < 2:
        return f"{f.format(e['mean'])} {unit}, one seed"
    return (
        f"{f.format(e['mean'])} {unit}, CI {f.format(e['low'])} to {f.format(e['high'])}, "
        f"Holm p {format_p(e['p_holm'])}"
    )


def _grouped(entries: Sequence[dict[str, Any]], name: Any) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"beats": [], "trails": [], "within noise": [], "fragile": []}
    for e in entries:
        if e.get("fragile"):  # :func:`mark_fragile`: never a firm "beats" / "trails"
            groups["fragile"].append(
                f"{name(e)} ({_short(e)}; {e['fragile']}; alone: {e['claim']})"
            )
        else:
            groups[e["claim"]].append(f"{name(e)} ({_short(e)})")
    return groups


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "; ".join(items[:-1]) + "; and " + items[-1]


def _seeds_text(entries: Sequence[dict[str, Any]]) -> str:
    ns = sorted({e["n"] for e in entries})
    return " or ".join(str(n) for n in ns)


def _family_sentence(
    entries: Sequence[dict[str, Any]], name: Any, phrases: tuple[str, str], confidence: float
) -> str:
    """``phrases``: the heads of the "beats" and "trails" lists (e.g. "beat KD", "trail KD")."""
    g = _grouped(entries, name)
    size = max(e["family_size"] for e in entries)
    parts = []
    if g["beats"]:
        parts.append(f"{phrases[0]}: {_join(g['beats'])}")
    if g["trails"]:
        parts.append(f"{phrases[1]}: {_join(g['trails'])}")
    if g["within noise"]:
        parts.append(f"within noise: {_join(g['within noise'])}")
    if g["fragile"]:
        parts.append(f"fragile, claimed neither way: {_join(g['fragile'])}")
    head = (
        f"{size} comparisons, {_seeds_text(entries)} paired seeds, {100 * confidence:g}% paired "
        f"t intervals, Holm-corrected"
    )
    return f"{head}. " + ". ".join(p[0].upper() + p[1:] for p in parts) + "."


def verdict_paragraph(
    entries: Sequence[dict[str, Any]],
    setting: str,
    metric: str = "acc",
    alpha: float = ALPHA,
    confidence: float = 0.95,
) -> str:
    """The verdict of one setting from :func:`comparisons`' entries (no typed number): a sentence
    per family (KD, the controls, the question, the pseudo-label control, where they ran)."""
    chosen = [e for e in entries if e["setting"] == setting and e["metric"] == metric]
    what = METRIC_LABELS[metric].replace(" %", "")
    low, high = fragile_band(alpha)
    fragile = (
        f" and it is not fragile: its Holm p is not between {low:g} and {high:g}, and a second "
        "run set of the same runs, where there is one, gives the same verdict"
        if any("fragile" in e for e in chosen)
        else ""
    )
    out = [
        f"**Verdict ({what}, {setting}; a difference is claimed only where its Holm-adjusted "
        f"p-value is at most {alpha:g}{fragile}).**"
    ]
    kd, who, pl = label(HEADLINE_BASELINE), label(MISSION_METHOD), label(PSEUDO_LABEL_CONTROL)
    method, baseline = (lambda e: label(e["method"])), (lambda e: label(e["baseline"]))
    families = (  # family, the head before its sentence, how an entry is named, the phrases
        (HEADLINE_BASELINE, lambda _: f"Against {kd}: ", method, (f"beat {kd}", f"trail {kd}")),
        ("control", lambda _: "Against each method's one-thing-different control: ",
         lambda e: f"{method(e)} vs {baseline(e)}", ("beat their control", "trail their control")),
        ("mission", lambda es: f"The question, {who} against {', '.join(map(baseline, es))}: ",
         baseline, (f"{who} beats", f"{who} trails")),
        ("pseudo", lambda _: f"Against the {pl} control (CE on the teacher's top class over the "
         "unlabelled images: the teacher's labels without its dark knowledge): ", method,
         (f"beat {pl}", f"trail {pl}")),
    )  # fmt: skip
    for family, head, name, phrases in families:
        these = [e for e in chosen if e["family"] == family]
        if these:
            out.append(head(these) + _family_sentence(these, name, phrases, confidence))
    return " ".join(out)


#: The protocol's precision target (``docs/benchmark.md``): a method-vs-KD 95% interval no wider
#: than this many points either side, in the headline setting's top-1.
TARGET_HALF_WIDTH = 1.0


def precision_sentence(
    entries: Sequence[dict[str, Any]],
    setting: str,
    family: str = HEADLINE_BASELINE,
    metric: str = "acc",
    target: float = TARGET_HALF_WIDTH,
) -> str:
    """How wide the family's 95% intervals are (half width ``(high - low) / 2``): the narrowest,
    the widest, which meet ``target``. ``""`` when the family has no interval."""
    chosen = [e for e in entries if e["setting"] == setting and e["family"] == family
              and e["metric"] == metric and e["n"] >= 2]  # fmt: skip
    if not chosen:
        return ""
    unit, digits = _unit(metric)
    half = {e["method"]: (e["high"] - e["low"]) / 2 for e in chosen}
    lo = min(half, key=half.__getitem__)
    hi = max(half, key=half.__getitem__)
    met = [m for m in half if half[m] <= target]
    missed = [m for m in half if half[m] > target]
    f = f"{{:.{digits}f}}"
    text = (
        f"Precision (against {label(family)}, {_seeds_text(chosen)} paired seeds): the 95% "
        f"intervals' half widths run from {f.format(half[lo])} {unit} ({label(lo)}) to "
        f"{f.format(half[hi])} {unit} ({label(hi)}); {len(met)} of {len(half)} are within "
        f"the target of ±{target:g} {unit}"
    )
    if missed and met:
        text += f" (wider: {', '.join(label(m) for m in missed)})"
    return text + "."


def ablation_protocol(rows: Sequence[dict[str, Any]], method: str, setting: str) -> str:
    """How ``method``'s ablation in ``setting`` was scored: split and seeds, read from its rows."""
    runs = [r for r in rows if (r["phase"], r["method"], r["setting"]) == ("ablation", method, setting)]  # fmt: skip
    seeds = sorted({r["seed"] for r in runs})
    splits, listed = "/".join(sorted({r["eval_split"] for r in runs})), ", ".join(map(str, seeds))
    if splits == "val" and set(seeds) <= set(ABLATION_SEEDS):
        how = (f"on the validation split with the selection seeds {listed} (never an evaluation "
               "seed): it chooses the defaults, so, like the tuning, it never reads the test set")  # fmt: skip
    else:
        how = (f"on the {splits} split with the seeds {listed}: an earlier protocol (the ablation "
               "now scores on the validation split with the selection seeds)")  # fmt: skip
    return f"Scored {how}. Each variant is paired with the default on the same seeds."


def ablation_paragraph(
    entries: Sequence[dict[str, Any]], setting: str, alpha: float = ALPHA, confidence: float = 0.95
) -> str:
    """Which choices matter, in top-1 and in Kendall tau, from :func:`ablation_comparisons`."""
    chosen = [e for e in entries if e["setting"] == setting]
    if not chosen:
        return ""
    out = [
        f"**Which choices matter ({setting}; each variant against the default, a difference is "
        f"claimed only where its Holm-adjusted p-value is at most {alpha:g}).**"
    ]
    for metric in ("acc", "kendall_tau"):
        these = [e for e in chosen if e["metric"] == metric]
        if these:
            what = METRIC_LABELS[metric].replace(" %", "")
            out.append(
                f"In {what}: "
                + _family_sentence(
                    these,
                    lambda e: e["variant"],
                    ("above the default", "below the default"),
                    confidence,
                )  # fmt: skip
            )
    scale = [e for e in chosen if e["choice"].endswith("(scale)")]
    if scale:
        how = "multiplied" if "sum" in scale[0]["variant"] else "divided"
        out.append(
            f"'{scale[0]['variant']}' is the default with its weight {how} by the number of "
            "pairs (identical losses up to that factor), so its row measures the loss weight, "
            "not a different loss."
        )
    return " ".join(out)


def _claim_cell(e: dict[str, Any] | None) -> str:
    if e is None:
        return ""
    return f"fragile ({e['fragile']}; alone: {e['claim']})" if e.get("fragile") else e["claim"]


def _cell(e: dict[str, Any] | None, one_seed: str = " (1 seed)", fragile: bool = False) -> str:
    """``+0.61 [+0.20, +1.02] *``: an entry's difference, interval and mark (``*``: claimed;
    with ``fragile``, `` (fragile)`` where :func:`mark_fragile` said so)."""
    if e is None:
        return ""
    f = f"{{:+.{_unit(e['metric'])[1]}f}}"
    if e["n"] < 2:
        return f.format(e["mean"]) + one_seed
    mark = " (fragile)" if fragile and e.get("fragile") else "" if e["within_noise"] else " *"
    return f"{f.format(e['mean'])} [{f.format(e['low'])}, {f.format(e['high'])}]{mark}"


def column_stats(rows: Sequence[dict[str, Any]], metric: str, k: float = 1.0) -> tuple:
    """``(mean, std, n)`` of ``k * row[metric]`` over the rows where it is not NaN."""
    values = [k * r[metric] for r in rows if not math.isnan(r[metric])]
    return mean_std(values) if values else (math.nan, math.nan, 0)


def _find(entries: Sequence[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    for e in entries:
        if all(e.get(k) == v for k, v in keys.items()):
            return e
    return None


def family_table(
    entries: Sequence[dict[str, Any]], setting: str, family: str, differs: dict[str, str]
) -> str:
    """A Markdown table of one family: top-1 and Kendall tau differences, p and Holm p."""
    chosen = [e for e in entries if e["setting"] == setting and e["family"] == family]
    pairs = []
    for e in chosen:
        if (e["method"], e["baseline"]) not in pairs:
            pairs.append((e["method"], e["baseline"]))
    if not pairs:
        return ""
    lines = [
        "| method | baseline | differs in | Δ top-1 (95% CI) | p | Holm p | Δ Kendall tau (95% CI) "
        "| Holm p | top-1 verdict |",
        "|" + "---|" * 9,
    ]
    for method, baseline in pairs:
        acc = _find(chosen, method=method, baseline=baseline, metric="acc")
        tau = _find(chosen, method=method, baseline=baseline, metric="kendall_tau")
        lines.append(
            "| "
            + " | ".join(
                [
                    label(method),
                    label(baseline),
                    differs.get(method, "") if family == "control" else "",
                    _cell(acc),
                    format_p(acc["p"]) if acc else "",
                    format_p(acc["p_holm"]) if acc else "",
                    _cell(tau),
                    format_p(tau["p_holm"]) if tau else "",
                    _claim_cell(acc),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def ablation_table(
    rows: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]], method: str, setting: str
) -> str:
    """The ablation's Markdown table: each variant, its kwargs, its means and its differences."""
    lines = [
        "| variant | choice | kwargs | seeds | top-1 % | Δ top-1 vs default (95% CI) | Holm p "
        "| Kendall tau | Δ tau vs default (95% CI) | Holm p |",
        "|" + "---|" * 10,
    ]
    runs = [
        r
        for r in rows
        if r["phase"] == "ablation"
        and r["method"] == method
        and r["setting"] == setting
        and r["status"] == "ok"
    ]
    for v in ablation_variants(method):
        tag = params_tag(v.params)
        these = [r for r in runs if r["params"] == tag]
        if not these:
            continue
        cells = []
        for metric, k, digits in (("acc", 100.0, 2), ("kendall_tau", 1.0, 3)):
            text = pm(*column_stats(these, metric, k)[:2], digits)
            e = _find(entries, setting=setting, params=tag, metric=metric)
            cells += [text, _cell(e) if e else "—", format_p(e["p_holm"]) if e else "—"]
        lines.append(
            f"| {v.name} | {v.choice} | `{describe_params(v.params)}` | {len(these)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)
