"""The chapters' result phrases (:mod:`relkd_tutorial.tutorial.runs`) follow the numbers."""

from __future__ import annotations

import math

import pytest

from relkd_tutorial.bench.settings import default_settings
from relkd_tutorial.tutorial.prose import find_typed_results
from relkd_tutorial.tutorial.runs import Runs, difference_phrase, protocol_sentence


def _diff(mean: float, low: float, high: float, metric: str = "acc", **extra) -> dict:
    d = {"metric": metric, "mean": mean, "low": low, "high": high, "n": 8}
    d.update(extra)
    return d


def test_difference_phrase_reports_the_values_and_the_claim() -> None:
    text = difference_phrase(_diff(1.234, 0.5, 2.0, claim="beats"))
    assert text == "+1.23 points (95% paired interval +0.50 to +2.00, 8 seeds): beats"
    assert difference_phrase(
        _diff(0.01234, -0.01, 0.03, metric="dist_corr", claim="within noise")
    ) == ("+0.012 (95% paired interval -0.010 to +0.030, 8 seeds): within noise")


def test_difference_phrase_without_a_claim_reads_the_interval() -> None:
    assert difference_phrase(_diff(-2.0, -3.0, -1.0, within_noise=False)).endswith("trails")
    assert difference_phrase(_diff(2.0, 1.0, 3.0, within_noise=False)).endswith("beats")
    assert difference_phrase(_diff(2.0, -1.0, 3.0, within_noise=True)).endswith("within noise")
    one = difference_phrase(_diff(2.0, math.nan, math.nan))
    assert "no interval" in one and "95%" not in one
    with pytest.raises(ValueError, match="finite"):
        difference_phrase(_diff(math.nan, 0.0, 1.0))


def test_protocol_sentence_describes_the_setting_of_the_runs() -> None:
    setting = default_settings(True, "cpu")["transfer"]
    rows = [{"status": "ok", "n_train": "1500", "n_labelled": "200"}]
    runs = Runs(rows, setting, "abc", {"/x/.cache/bench-fast/runs.csv": 1}, 0)
    text = protocol_sentence(runs)
    assert "1,500 training images" in text and "200 keep their label" in text
    assert f"{setting.epochs} epochs" in text and f"{len(setting.seeds)} paired seeds" in text
    assert "the local cache" in text and not find_typed_results(text.replace("0.05", ""))
    with pytest.raises(ValueError, match="no finished run"):
        protocol_sentence(Runs([{"status": "n/a"}], setting, "abc", {}, 0))
