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
    CONTROL_DIFFERS,
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

#: A verdict is fragile when its Holm-adjusted p-value lies within this factor of the level on
#: either side (choice: p-values of replicated runs scatter by about that much,
#: ``results/README.md``), so a verdict in that band is one perturbation away from the other side.
FRAGILE_FACTOR = 5.0
#: The Holm p-values ``(low, high)`` between which a verdict is fragile.
FRAGILE_BAND = (ALPHA / FRAGILE_FACTOR, ALPHA * FRAGILE_FACTOR)

#: The protocol's precision target (``docs/benchmark.md``): a method-vs-KD 95% interval no wider
#: than this many points either side, in the headline setting's top-1.
TARGET_HALF_WIDTH = 1.0


# --- Rows and cells shared by the report's modules ---


def finished(
    rows: Iterable[dict[str, Any]],
    setting: str | None = None,
    phase: str = "final",
    method: str | None = None,
) -> list[dict[str, Any]]:
    """The finished runs (``status`` ok) of ``phase``, of ``setting`` and ``method`` if given."""
    given = {k: v for k, v in (("setting", setting), ("method", method)) if v is not None}
    return select(rows, phase=phase, status="ok", **given)


def by_seed(rows: Iterable[dict[str, Any]], key: str) -> dict[Any, dict[int, dict[str, Any]]]:
    """``{row[key]: {seed: row}}``."""
    out: dict[Any, dict[int, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r[key], {})[r["seed"]] = r
    return out


def paragraphs(*texts: str) -> list[str]:
    """A report's lines: each non-empty text, then a blank line."""
    return [line for text in texts if text for line in (text, "")]


def markdown_table(header: str, rows: Iterable[Iterable[str]]) -> str:
    """A Markdown table: ``header`` (its cells joined by `` | ``), its rule, a line per row."""
    rule = "|" + "---|" * (header.count(" | ") + 1)
    return "\n".join([f"| {header} |", rule, *("| " + " | ".join(r) + " |" for r in rows)])


def _unit(metric: str) -> tuple[str, int]:
    return ("points", 2) if metric in PERCENT else ("in tau", 3)


def _what(metric: str) -> str:
    return METRIC_LABELS[metric].replace(" %", "")


def _signed(e: dict[str, Any], key: str = "mean") -> str:
    """``e[key]`` with its sign, in the digits of the entry's metric."""
    return f"{e[key]:+.{_unit(e['metric'])[1]}f}"


def _p(e: dict[str, Any] | None, key: str = "p_holm", missing: str = "") -> str:
    return missing if e is None else format_p(e[key])


def stated(e: dict[str, Any]) -> str:
    """The entry's verdict as the report states it: ``"fragile"`` where :func:`mark_fragile`
    marked it, else its claim."""
    return "fragile" if e.get("fragile") else e["claim"]


# --- Comparisons ---


def family_pairs(family: str, methods: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(method, baseline)`` pairs of a family among the ``methods`` present."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    present = sorted(set(methods), key=_method_order)
    candidates = {
        "control": [(m, CONTROLS.get(m)) for m in present],
        "kd": [(m, "kd") for m in present],
        "ce": [(m, "ce") for m in present],
        "mission": [(MISSION_METHOD, r) for r in MISSION_RIVALS],
        "pseudo": [(m, PSEUDO_LABEL_CONTROL) for m in present if m in NEEDS_SHARED_CLASSES],
    }[family]
    return [(m, b) for m, b in candidates if m != b and m in present and b in present]


def add_paired(
    out: list[dict[str, Any]],
    a: dict[int, dict[str, Any]],
    b: dict[int, dict[str, Any]],
    labels: tuple[str, str],
    metrics: Sequence[str],
    **keys: Any,
) -> None:
    """Append to ``out`` an entry per metric (``keys`` first): ``a`` minus ``b`` (``{seed: row}``
    each) paired by seed; ``labels`` name the two sides in :func:`holm_correct`'s sentence."""
    seeds = sorted(set(a) & set(b))
    for metric in metrics:
        pairs = [(a[s][metric], b[s][metric]) for s in seeds]
        pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
        if not pairs:
            continue
        k = _scale(metric)
        d = paired_difference([k * x for x, _ in pairs], [k * y for _, y in pairs], CONFIDENCE)
        out.append({**keys, "metric": metric, "mean": d.mean, "std": d.std, "n": d.n,
                    "low": d.low, "high": d.high, "interval_excludes_zero": not d.within_noise,
                    "p": d.p_value, "_diff": d, "_labels": labels})  # fmt: skip


def holm_correct(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm within each (setting, family, metric) group of ``entries``, in place; returns them."""
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
            e["claim"] = claim(diff, p_holm, ALPHA)
            e["within_noise"] = e["claim"] == "within noise"
            unit, digits = _unit(e["metric"])
            e["sentence"] = f"[{_what(e['metric'])}] " + describe_corrected(
                a_label, b_label, diff, p_holm, size, unit, digits, ALPHA
            )
    return entries


def comparisons(
    rows: Sequence[dict[str, Any]],
    families: Sequence[str] = FAMILIES,
    metrics: Sequence[str] = DIFF_METRICS,
) -> list[dict[str, Any]]:
    """Every comparison of every family, per setting and metric, over the final runs (seeds where
    both finished; accuracy in points): ``setting``, ``family``, ``method``, ``baseline``,
    ``metric``, ``mean``, ``std``, ``n``, ``low``, ``high``, ``p``, ``p_holm``, ``family_size``,
    ``claim``, ``within_noise``, ``sentence``."""
    out: list[dict[str, Any]] = []
    finals = finished(rows)
    for setting in _ordered_settings(finals):
        by_method = by_seed(finished(finals, setting), "method")
        for family in families:
            for method, baseline in family_pairs(family, by_method):
                published = setting not in FASHION_SETTINGS  # CIFAR keeps the published weights,
                if family == "control" and method in CONTROL_WEIGHTS and published:
                    continue  # so its combinations' control differs in more than one thing
                labels = (label(method), label(baseline))
                add_paired(out, by_method[method], by_method[baseline], labels, metrics,
                           setting=setting, family=family, method=method,
                           baseline=baseline)  # fmt: skip
    return holm_correct(out)


def ablation_comparisons(rows: Sequence[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Each variant of ``method``'s ablation minus its default, paired by seed (family
    ``"ablation"``, top-1 and Kendall tau; entries also hold ``variant``, ``choice``, ``params``).
    A setting whose rows were scored on two splits (an earlier protocol mixed in) is refused."""
    out: list[dict[str, Any]] = []
    runs = finished(rows, phase="ablation", method=method)
    variants = ablation_variants(method)
    default_tag = params_tag(variants[0].params)
    for setting in _ordered_settings(runs):
        splits = {r["eval_split"] for r in runs if r["setting"] == setting}
        if len(splits) > 1:
            raise ValueError(f"the {method} ablation's {setting} runs are scored on the splits "
                             f"{sorted(splits)}: an earlier protocol's runs are mixed in")  # fmt: skip
        by_tag = by_seed(finished(runs, setting, "ablation"), "params")
        if default_tag not in by_tag:
            continue
        for v in variants[1:]:
            tag = params_tag(v.params)
            if tag in by_tag:
                add_paired(out, by_tag[tag], by_tag[default_tag], (v.name, "the default"),
                           ("acc", "kendall_tau"), setting=setting, family="ablation",
                           method=method, baseline=method, variant=v.name, choice=v.choice,
                           params=tag)  # fmt: skip
    return holm_correct(out)


def _key(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["setting"], e["family"], e["method"], e["baseline"], e["metric"], e.get("params"))


def mark_fragile(
    entries: list[dict[str, Any]],
    second: Sequence[dict[str, Any]] | None = None,
    second_name: str = "the second run set",
) -> list[dict[str, Any]]:
    """Mark each entry fragile, in place (``e["fragile"]`` says why; ``""``: firm): its Holm p is
    inside :data:`FRAGILE_BAND`, or ``second`` (a second run set's entries) has another verdict;
    its ``sentence`` then says "fragile". Returns ``entries``."""
    low, high = FRAGILE_BAND
    other = {_key(e): e for e in second or ()}
    for e in entries:
        why = []
        if e["n"] >= 2 and low < e["p_holm"] < high:
            why.append(f"Holm p within a factor of {FRAGILE_FACTOR:g} of {ALPHA:g}")
        twin = other.get(_key(e))
        if twin is not None and twin["claim"] != e["claim"]:
            why.append(f"{twin['claim']} in {second_name} (Holm p {_p(twin)})")
        e["fragile"] = "; ".join(why)
        if why:
            e["sentence"] = (
                f"[{_what(e['metric'])}] {label(e['method'])} vs {label(e['baseline'])}: "
                f"{_signed(e)} {_unit(e['metric'])[0]} ({100 * CONFIDENCE:g}% CI "
                f"{_signed(e, 'low')} to {_signed(e, 'high')}, {e['n']} paired seeds; Holm p "
                f"{_p(e)} over {e['family_size']}): fragile, claimed neither way ({e['fragile']}; "
                f"this run set alone: {e['claim']})."
            )
    return entries


# --- Sentences and tables ---


def _short(e: dict[str, Any]) -> str:
    """``+0.61 points, CI +0.20 to +1.02, Holm p 0.031`` (the numbers of one entry)."""
    head = f"{_signed(e)} {_unit(e['metric'])[0]}"
    if e["n"] < 2:
        return f"{head}, one seed"
    return f"{head}, CI {_signed(e, 'low')} to {_signed(e, 'high')}, Holm p {_p(e)}"


def join_items(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "; ".join(items[:-1]) + "; and " + items[-1]


def _seeds_text(entries: Sequence[dict[str, Any]]) -> str:
    return " or ".join(str(n) for n in sorted({e["n"] for e in entries}))


def family_clauses(entries: Sequence[dict[str, Any]], name: Any, phrases: tuple[str, str]) -> str:
    """The family's size and seeds, then its entries (``name(e)`` and their numbers) grouped by
    verdict; ``phrases``: the heads of the "beats" and "trails" groups (e.g. "beat KD")."""
    heads = {"beats": phrases[0], "trails": phrases[1], "within noise": "within noise"}
    fragile = "fragile, claimed neither way"  # :func:`mark_fragile`: never a firm verdict
    groups: dict[str, list[str]] = {h: [] for h in [*heads.values(), fragile]}
    for e in entries:
        if e.get("fragile"):
            groups[fragile].append(f"{name(e)} ({_short(e)}; {e['fragile']}; alone: {e['claim']})")
        else:
            groups[heads[e["claim"]]].append(f"{name(e)} ({_short(e)})")
    parts = [f"{h[0].upper()}{h[1:]}: {join_items(items)}" for h, items in groups.items() if items]
    size = max(e["family_size"] for e in entries)
    return (
        f"{size} comparisons, {_seeds_text(entries)} paired seeds, {100 * CONFIDENCE:g}% paired "
        "t intervals, Holm-corrected. " + ". ".join(parts) + "."
    )


def verdict_paragraph(entries: Sequence[dict[str, Any]], setting: str) -> str:
    """The top-1 verdict of one setting from :func:`comparisons`' entries (no typed number): a
    sentence per family (KD, the controls, the question, the pseudo-label control) that ran."""
    chosen = select(entries, setting=setting, metric="acc")
    low, high = FRAGILE_BAND
    fragile = (
        f" and it is not fragile: its Holm p is not between {low:g} and {high:g}, and a second "
        "run set of the same runs, where there is one, gives the same verdict"
        if any("fragile" in e for e in chosen)
        else ""
    )
    out = [
        f"**Verdict ({_what('acc')}, {setting}; a difference is claimed only where its "
        f"Holm-adjusted p-value is at most {ALPHA:g}{fragile}).**"
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
            out.append(head(these) + family_clauses(these, name, phrases))
    return " ".join(out)


def precision_sentence(
    entries: Sequence[dict[str, Any]], setting: str, target: float = TARGET_HALF_WIDTH
) -> str:
    """How wide the 95% top-1 intervals against KD are (half width ``(high - low) / 2``): the
    narrowest, the widest, which meet ``target``. ``""`` when the family has no interval."""
    family = HEADLINE_BASELINE
    chosen = [
        e for e in select(entries, setting=setting, family=family, metric="acc") if e["n"] > 1
    ]
    if not chosen:
        return ""
    unit, digits = _unit("acc")
    half = {e["method"]: (e["high"] - e["low"]) / 2 for e in chosen}
    lo = min(half, key=half.__getitem__)
    hi = max(half, key=half.__getitem__)
    met = [m for m in half if half[m] <= target]
    missed = [m for m in half if half[m] > target]
    text = (
        f"Precision (against {label(family)}, {_seeds_text(chosen)} paired seeds): the 95% "
        f"intervals' half widths run from {half[lo]:.{digits}f} {unit} ({label(lo)}) to "
        f"{half[hi]:.{digits}f} {unit} ({label(hi)}); {len(met)} of {len(half)} are within "
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


def ablation_paragraph(entries: Sequence[dict[str, Any]], setting: str) -> str:
    """Which choices matter, in top-1 and in Kendall tau, from :func:`ablation_comparisons`."""
    chosen = select(entries, setting=setting)
    if not chosen:
        return ""
    out = [
        f"**Which choices matter ({setting}; each variant against the default, a difference is "
        f"claimed only where its Holm-adjusted p-value is at most {ALPHA:g}).**"
    ]
    for metric in ("acc", "kendall_tau"):
        these = [e for e in chosen if e["metric"] == metric]
        if these:
            phrases = ("above the default", "below the default")
            out.append(
                f"In {_what(metric)}: " + family_clauses(these, lambda e: e["variant"], phrases)
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


def interval_cell(
    e: dict[str, Any] | None, one_seed: str = " (1 seed)", fragile: bool = False
) -> str:
    """``+0.61 [+0.20, +1.02] *``: an entry's difference, interval and mark (``*``: claimed;
    with ``fragile``, `` (fragile)`` where :func:`mark_fragile` said so)."""
    if e is None:
        return ""
    if e["n"] < 2:
        return _signed(e) + one_seed
    mark = " (fragile)" if fragile and e.get("fragile") else "" if e["within_noise"] else " *"
    return f"{_signed(e)} [{_signed(e, 'low')}, {_signed(e, 'high')}]{mark}"


def column_stats(rows: Sequence[dict[str, Any]], metric: str, k: float = 1.0) -> tuple:
    """``(mean, std, n)`` of ``k * row[metric]`` over the rows where it is not NaN."""
    values = [k * r[metric] for r in rows if not math.isnan(r[metric])]
    return mean_std(values) if values else (math.nan, math.nan, 0)


def select(entries: Iterable[dict[str, Any]], **keys: Any) -> list[dict[str, Any]]:
    """The entries whose ``keys`` have the given values."""
    return [e for e in entries if all(e.get(k) == v for k, v in keys.items())]


def find_entry(entries: Iterable[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    return next(iter(select(entries, **keys)), None)


def family_table(entries: Sequence[dict[str, Any]], setting: str, family: str) -> str:
    """A Markdown table of one family: top-1 and Kendall tau differences, p and Holm p (the
    controls' with what differs, :data:`~.settings.CONTROL_DIFFERS`)."""
    chosen = select(entries, setting=setting, family=family)
    pairs = dict.fromkeys((e["method"], e["baseline"]) for e in chosen)
    if not pairs:
        return ""
    header = (
        "method | baseline | differs in | Δ top-1 (95% CI) | p | Holm p | Δ Kendall tau (95% CI) "
        "| Holm p | top-1 verdict"
    )
    rows = []
    for method, baseline in pairs:
        acc = find_entry(chosen, method=method, baseline=baseline, metric="acc")
        tau = find_entry(chosen, method=method, baseline=baseline, metric="kendall_tau")
        verdict = "" if acc is None else acc["claim"]
        if acc is not None and acc.get("fragile"):
            verdict = f"fragile ({acc['fragile']}; alone: {acc['claim']})"
        differs = CONTROL_DIFFERS.get(method, "") if family == "control" else ""
        rows.append([label(method), label(baseline), differs, interval_cell(acc), _p(acc, "p"),
                     _p(acc), interval_cell(tau), _p(tau), verdict])  # fmt: skip
    return markdown_table(header, rows)


def ablation_table(
    rows: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]], method: str, setting: str
) -> str:
    """The ablation's Markdown table: each variant, its kwargs, its means and its differences."""
    header = (
        "variant | choice | kwargs | seeds | top-1 % | Δ top-1 vs default (95% CI) | Holm p "
        "| Kendall tau | Δ tau vs default (95% CI) | Holm p"
    )
    runs = finished(rows, setting, "ablation", method)
    lines = []
    for v in ablation_variants(method):
        tag = params_tag(v.params)
        these = [r for r in runs if r["params"] == tag]
        if not these:
            continue
        cells = [v.name, v.choice, f"`{describe_params(v.params)}`", str(len(these))]
        for metric, k, digits in (("acc", 100.0, 2), ("kendall_tau", 1.0, 3)):
            e = find_entry(entries, setting=setting, params=tag, metric=metric)
            cells += [pm(*column_stats(these, metric, k)[:2], digits),
                      interval_cell(e) if e else "—", _p(e, missing="—")]  # fmt: skip
        lines.append(cells)
    return markdown_table(header, lines)
