"""Small pieces the method chapters (01, 02) share when they report the benchmark's runs.

The numbers come from :mod:`relkd_tutorial.tutorial.runs` (the benchmark's shared runs and their
tables); this module only turns them into the words of a result sentence, so the chapters'
``say(...)`` templates stay short and every number in them is computed:

- :func:`protocol_sentence`: what the runs are (setting, pool, labels, student, schedule, seeds);
- :func:`difference_phrase`: one paired difference with its 95% interval and the benchmark's
  claim ("beats", "trails", "within noise"; ``docs/benchmark.md``, Statistics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..bench.settings import PERCENT
from .prose import Sentence, say
from .runs import Runs


def protocol_sentence(runs: Runs) -> Sentence:
    """One sentence: the setting, pool, labels, student, epochs, batch, learning rate and seeds."""
    s = runs.setting
    rows = [r for r in runs if r.get("status") == "ok"]
    if not rows:
        raise ValueError("no finished run to describe")
    n_train = int(rows[0]["n_train"])
    n_labelled = int(rows[0]["n_labelled"])
    seeds = list(s.seeds)
    seed_text = (
        f"{seeds[0]}–{seeds[-1]}"
        if seeds == list(range(seeds[0], seeds[-1] + 1))
        else (", ".join(map(str, seeds)))
    )
    return say(
        "The benchmark's `{name}` setting ({src}): a pool of {n_train:,} training images of which "
        "{n_labelled:,} keep their label ({per} per class), `{student}` students trained for "
        "{epochs} epochs with batches of {batch} (SGD with Nesterov momentum, learning rate "
        "{lr:g} with cosine decay), {n_seeds} paired seeds ({seed_text}), evaluated on the "
        "test split.",
        name=s.name, src=", ".join(_short(p) for p in runs.sources if runs.sources[p]) or "none",
        n_train=n_train, n_labelled=n_labelled, per=s.labelled_per_class, student=s.student,
        epochs=s.epochs, batch=s.batch_size, lr=s.lr, n_seeds=len(seeds), seed_text=seed_text,
    )  # fmt: skip


def _short(path: str) -> str:
    return "the committed results" if "cache" not in path else "the local cache"


def difference_phrase(diff: Mapping[str, Any]) -> str:
    """``"+5.32 points (95% paired interval −1.20 to +11.84, 8 seeds): beats"``-like text.

    ``diff`` is a row of :func:`~relkd_tutorial.tutorial.runs.paired_table`. Accuracies are in
    percentage points (two decimals), other metrics in their own units (three decimals). The
    claim is the benchmark's (``claim``: Holm-corrected within its family) or, without one,
    "within noise" when the interval covers zero.
    """
    metric = diff.get("metric", "acc")
    digits = 2 if metric in PERCENT else 3
    unit = " points" if metric in PERCENT else ""
    mean, low, high, n = float(diff["mean"]), float(diff["low"]), float(diff["high"]), diff["n"]
    if not math.isfinite(mean):
        raise ValueError("the difference has no finite mean")
    claim = diff.get("claim") or ("within noise" if diff.get("within_noise", True) else
                                  ("beats" if mean > 0 else "trails"))  # fmt: skip
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:+.{digits}f}{unit} (one seed: no interval)"
    return (
        f"{mean:+.{digits}f}{unit} (95% paired interval {low:+.{digits}f} to {high:+.{digits}f}, "
        f"{n} seeds): {claim}"
    )
