"""Small-sample statistics for the benchmark: Student's t quantiles and paired differences.

A benchmark row is a handful of seeds, so methods are compared *paired by seed* (seed ``s`` fixes
the labelled subset, the initialisation and the batch order for every method): with
``d_s = a_s - b_s`` over ``n`` seeds,

    d_bar = (1/n) sum_s d_s,    s_d = sqrt( sum_s (d_s - d_bar)^2 / (n - 1) ),
    95% CI = d_bar -+ t_{0.975, n-1} * s_d / sqrt(n),

the paired t interval (e.g. Wasserman, *All of Statistics*, 2004, Sec. 10.1); for ``n = 3``
``t = 4.303``, not 1.96. The t distribution itself is SciPy's (``scipy.special.stdtr`` and its
inverse ``stdtrit``); the tests hold it to closed forms and the NIST/SEMATECH e-Handbook table
(Sec. 1.3.6.7.2). A family of comparisons is judged with Holm's step-down correction
(Holm 1979, *Scandinavian Journal of Statistics* 6(2)): :func:`holm_adjust`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import special


def _check_df(df: float) -> float:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not (df > 0):
        raise ValueError(f"df (degrees of freedom) must be a positive number, got {df!r}")
    return float(df)


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom, as ``2 F(-|t|)`` (the lower
    tail directly, without the ``1 - ...`` that would lose the digits of a small p-value).
    """
    return float(2.0 * special.stdtr(_check_df(df), -abs(t)))  # NaN for a NaN t, 0 for |t| = inf


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    return float(special.stdtr(_check_df(df), t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (:func:`t_cdf` inverted)."""
    df = _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    return float(special.stdtrit(df, p))


def _finite(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name} holds a NaN or infinite value: {out}")
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, sample standard deviation (n - 1 in the denominator), n)``; std is NaN for n < 2."""
    xs = _finite(values, "values")
    n = len(xs)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)), n


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` paired by seed: mean, sample std, ``n``, and the two-sided CI at ``confidence``
    (``low``/``high`` NaN when ``n < 2``).
    """

    mean: float
    std: float
    n: int
    low: float
    high: float
    confidence: float

    @property
    def p_value(self) -> float:
        """Two-sided paired t p-value of ``mean = 0`` (:func:`paired_t_p_value`); NaN for n < 2."""
        return paired_t_p_value(self.mean, self.std, self.n)

    @property
    def within_noise(self) -> bool:
        """True if the interval contains 0 (or there is no interval): no claim either way."""
        return self.n < 2 or math.isnan(self.low) or self.low <= 0.0 <= self.high


def paired_t_p_value(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of the paired t test of ``mean = 0``, ``t = mean / (std / sqrt(n))``,
    ``n - 1`` degrees of freedom; NaN for ``n < 2``; with ``std = 0``: 0 if ``mean != 0``, else 1.
    """
    if n < 2 or math.isnan(mean) or math.isnan(std):
        return math.nan
    if std == 0.0:
        return 0.0 if mean != 0.0 else 1.0
    return t_two_sided_p(mean / (std / math.sqrt(n)), n - 1)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of one family of comparisons, in the input's order.

    With the ``m`` p-values sorted, ``p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))`` (Holm 1979):
    "``p~ <= alpha``" is the step-down test at level ``alpha``, for every ``alpha`` at once. NaN
    entries stay NaN and are not counted in ``m``; tied p-values get the same adjusted value.
    """
    ps = [float(p) for p in p_values]
    if any(not (math.isnan(p) or 0.0 <= p <= 1.0) for p in ps):
        raise ValueError(f"p-values must lie in [0, 1] (or be NaN), got {ps}")
    finite = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    m = len(finite)
    out = [math.nan] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(finite):  # rank = j - 1
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Paired t interval of ``mean(a - b)``; ``a[s]`` and ``b[s]`` come from the same seed ``s``.

    ``d_bar -+ t_{(1 + confidence)/2, n-1} * s_d / sqrt(n)`` (see the module docstring).
    """
    xa, xb = _finite(a, "a"), _finite(b, "b")
    if len(xa) != len(xb):
        raise ValueError(f"a and b must pair up seed by seed, got {len(xa)} and {len(xb)} values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean, std, n = mean_std([x - y for x, y in zip(xa, xb, strict=True)])
    if n < 2:
        return PairedDifference(mean, std, n, math.nan, math.nan, confidence)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return PairedDifference(mean, std, n, mean - half, mean + half, confidence)


def format_p(p: float) -> str:
    """A p-value in two significant digits (``"0.031"``, ``"0.5"``), ``"< 0.001"`` below 0.001."""
    if math.isnan(p):
        return "n/a"
    if p < 1e-3:
        return "< 0.001"
    return f"{p:.2g}"


def claim(diff: PairedDifference, p_adjusted: float, alpha: float = 0.05) -> str:
    """``"beats"``, ``"trails"`` or ``"within noise"`` for ``a - b`` in a family: a claim needs the
    interval to exclude 0 *and* the adjusted p-value to be at most ``alpha``.
    """
    if diff.within_noise or math.isnan(p_adjusted) or p_adjusted > alpha:
        return "within noise"
    return "beats" if diff.mean > 0 else "trails"


def describe_corrected(
    a: str,
    b: str,
    diff: PairedDifference,
    p_adjusted: float | None = None,
    family_size: int | None = None,
    unit: str = "points",
    digits: int = 2,
    alpha: float = 0.05,
) -> str:
    """One sentence for ``a - b`` as one of ``family_size`` Holm-corrected comparisons, "within
    noise" if the interval contains 0 or the adjusted p-value exceeds ``alpha``, e.g. ``GRKD beats
    CE by 3.10 points (95% CI +1.20 to +5.00, 8 paired seeds; Holm p 0.004 over 9).``
    ``p_adjusted=None`` (default): no family, the interval alone decides (``... 5 paired seeds).``).
    """
    f = f"{{:+.{digits}f}}"
    mean = f"{f.format(diff.mean)} {unit}"
    if diff.n < 2:
        return f"{a} vs {b}: {mean} from a single seed; no interval, so no claim either way."
    pct = f"{100 * diff.confidence:g}%"
    interval = f"{pct} CI {f.format(diff.low)} to {f.format(diff.high)}, {diff.n} paired seeds"
    holm = "" if p_adjusted is None else f"; Holm p {format_p(p_adjusted)} over {family_size}"
    verdict = claim(diff, 0.0 if p_adjusted is None else p_adjusted, alpha)
    if verdict != "within noise":
        return f"{a} {verdict} {b} by {abs(diff.mean):.{digits}f} {unit} ({interval}{holm})."
    if diff.within_noise:
        return (
            f"{a} vs {b}: {mean} ({interval}{holm}): within noise; the data do not separate them."
        )
    return (
        f"{a} vs {b}: {mean} ({interval}; p {format_p(diff.p_value)},{holm[1:]}): within noise "
        f"after the correction for {family_size} comparisons."
    )
