"""Small-sample statistics for the benchmark: Student's t quantiles and paired differences.

A benchmark row is a handful of seeds (3 to 5), so a difference between two methods is only
meaningful next to its uncertainty. We compare methods *paired by seed*: seed ``s`` fixes the
labelled subset, the student's initialisation and the batch order for every method, so the
difference ``d_s = a_s - b_s`` removes what the seed does to both (an easy subset, a lucky init)
and keeps what the method does. With ``n`` seeds,

    d_bar = (1/n) sum_s d_s,    s_d = sqrt( sum_s (d_s - d_bar)^2 / (n - 1) ),
    95% CI = d_bar -+ t_{0.975, n-1} * s_d / sqrt(n),

the paired t interval (e.g. Wasserman, *All of Statistics*, 2004, Sec. 10.1; any introductory
text). ``t_{p, nu}`` is the ``p`` quantile of Student's t with ``nu`` degrees of freedom; for
``n = 3`` seeds it is 4.303, not the normal 1.96, which is why three seeds rarely separate two
methods a point apart.

No SciPy (not a dependency of the package): :func:`t_cdf` evaluates the t distribution through the
regularized incomplete beta function, computed with its continued fraction (DLMF 8.17.22) by the
modified Lentz method, and :func:`t_quantile` inverts it by bisection. The tests check both
against closed forms (``nu = 1`` is the Cauchy distribution, ``nu = 2`` has an algebraic
quantile) and against the printed table of the NIST/SEMATECH e-Handbook of Statistical Methods,
Sec. 1.3.6.7.2 ("Critical values of the Student's t distribution"), reproduced in
:data:`T_975_TABLE`.

Several comparisons at once. A report that compares nine methods with KD at 95% each expects
about one interval in twenty to exclude 0 by chance alone, so a family of comparisons is judged
with Holm's step-down correction (Holm 1979, "A simple sequentially rejective multiple test
procedure", *Scandinavian Journal of Statistics* 6(2)): :func:`paired_t_p_value` gives each
comparison's two-sided p-value and :func:`holm_adjust` the adjusted p-values, which control the
probability of *any* false claim in the family at the chosen level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def _check_df(df: float) -> float:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not (df > 0):
        raise ValueError(f"df (degrees of freedom) must be a positive number, got {df!r}")
    return float(df)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (DLMF 8.17.22), by the modified Lentz method.

    ``I_x(a, b) = x^a (1 - x)^b / (a B(a, b)) * 1 / (1 + d_1 / (1 + d_2 / (1 + ...)))`` with
    ``d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))`` and
    ``d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))``. This returns the fraction
    ``1 / (1 + d_1 / (1 + ...))``; it converges fast for ``x < (a + 1) / (a + b + 2)``.
    """
    tiny = 1e-300
    f = 1.0  # value of the fraction so far, Lentz: f = C / D products
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)  # 1 + d_1
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):
        # even step d_{2m}
        num = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= d * c
        # odd step d_{2m+1}
        num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        f *= step
        if abs(step - 1.0) < 1e-15:
            return f
    raise ArithmeticError(f"the incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b) = B(x; a, b) / B(a, b)`` for ``a, b > 0`` and ``x`` in ``[0, 1]``.

    Uses the continued fraction where it converges fast and the symmetry
    ``I_x(a, b) = 1 - I_{1-x}(b, a)`` elsewhere.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    For ``t >= 0``: ``1 - I_{df / (df + t^2)}(df / 2, 1 / 2) / 2``; symmetric for ``t < 0``.
    """
    df = _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_cdf`` inverted).

    Bisection on ``t_cdf`` (monotone) to about 1e-12 relative; exact symmetry
    ``t_{1-p} = -t_p``. E.g. ``t_quantile(0.975, 4) = 2.776...`` (five seeds).
    """
    df = _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # bracket: the quantile grows without bound as p -> 1
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


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
    """``a - b`` paired by seed: mean, sample std, ``n``, and the two-sided CI at ``confidence``.

    ``low``/``high`` are NaN when ``n < 2`` (one pair has no spread, hence no interval).
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
        if self.n < 2 or math.isnan(self.low):
            return True
        return self.low <= 0.0 <= self.high


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` degrees of freedom.

    ``= I_{df / (df + t^2)}(df / 2, 1 / 2)`` (the same incomplete beta as :func:`t_cdf`, without
    the ``1 - ...`` that would lose the digits of a small p-value).
    """
    df = _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def paired_t_p_value(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of the paired t test of ``mean = 0``: ``t = mean / (std / sqrt(n))``.

    ``n - 1`` degrees of freedom. NaN for ``n < 2`` (no spread, no test). With ``std = 0`` every
    pair differs by the same amount: p is 0 if that amount is not 0, else 1.
    """
    if n < 2 or math.isnan(mean) or math.isnan(std):
        return math.nan
    if std == 0.0:
        return 0.0 if mean != 0.0 else 1.0
    return t_two_sided_p(mean / (std / math.sqrt(n)), n - 1)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of one family of comparisons, in the input's order.

    Definition (Holm 1979): sort the ``m`` p-values, ``p_(1) <= ... <= p_(m)``; the step-down test
    at level ``alpha`` rejects ``H_(1), ..., H_(i-1)`` where ``i`` is the first index with
    ``p_(i) > alpha / (m - i + 1)``. The adjusted p-value of ``H_(i)`` is the smallest ``alpha`` at
    which it is rejected,

        p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)),

    so "``p~ <= alpha``" is the test at level ``alpha`` for every ``alpha`` at once. NaN entries
    (a comparison without a test, e.g. one seed) stay NaN and are not counted in ``m``. Ties in
    the p-values get the same adjusted value whatever their order.
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


def describe_difference(
    a: str, b: str, diff: PairedDifference, unit: str = "points", digits: int = 2
) -> str:
    """One plain sentence for ``a - b``, saying "within noise" when the interval contains 0.

    Examples (``unit="points"``)::

        grkd beats ce by 3.10 points (95% CI +1.20 to +5.00, 5 paired seeds).
        kd trails ce by 0.80 points (95% CI -1.40 to -0.20, 5 paired seeds).
        rkd vs ce: +0.30 points (95% CI -0.90 to +1.50, 3 paired seeds): within noise; the
        data do not separate them.
    """
    f = f"{{:+.{digits}f}}"
    g = f"{{:.{digits}f}}"
    pct = f"{100 * diff.confidence:g}%"
    if diff.n < 2:
        return (
            f"{a} vs {b}: {f.format(diff.mean)} {unit} from a single seed; no interval, so no "
            "claim either way."
        )
    interval = f"({pct} CI {f.format(diff.low)} to {f.format(diff.high)}, {diff.n} paired seeds)"
    if diff.within_noise:
        return (
            f"{a} vs {b}: {f.format(diff.mean)} {unit} {interval}: within noise; the data do not "
            "separate them."
        )
    verb = "beats" if diff.mean > 0 else "trails"
    return f"{a} {verb} {b} by {g.format(abs(diff.mean))} {unit} {interval}."


def format_p(p: float) -> str:
    """A p-value in two significant digits (``"0.031"``, ``"0.5"``), ``"< 0.001"`` below 0.001."""
    if math.isnan(p):
        return "n/a"
    if p < 1e-3:
        return "< 0.001"
    return f"{p:.2g}"


def claim(diff: PairedDifference, p_adjusted: float, alpha: float = 0.05) -> str:
    """``"beats"``, ``"trails"`` or ``"within noise"`` for ``a - b`` judged within a family.

    A claim needs both: the interval excludes 0 *and* the family's adjusted p-value is at most
    ``alpha`` (for ``confidence = 1 - alpha`` the first follows from the second, since an adjusted
    p-value is never below the unadjusted one).
    """
    if diff.within_noise or math.isnan(p_adjusted) or p_adjusted > alpha:
        return "within noise"
    return "beats" if diff.mean > 0 else "trails"


def describe_corrected(
    a: str,
    b: str,
    diff: PairedDifference,
    p_adjusted: float,
    family_size: int,
    unit: str = "points",
    digits: int = 2,
    alpha: float = 0.05,
) -> str:
    """One sentence for ``a - b`` as one of ``family_size`` comparisons, Holm-corrected.

    Like :func:`describe_difference`, plus the adjusted p-value (:func:`holm_adjust`); "within
    noise" when the interval contains 0 or the adjusted p-value exceeds ``alpha``. Examples::

        GRKD beats CE by 3.10 points (95% CI +1.20 to +5.00, 8 paired seeds; Holm p 0.004 over 9).
        RKD vs KD: -0.60 points (95% CI -1.10 to -0.10, 8 paired seeds; p 0.03, Holm p 0.21
        over 9): within noise after the correction for 9 comparisons.
    """
    f = f"{{:+.{digits}f}}"
    g = f"{{:.{digits}f}}"
    if diff.n < 2:
        return describe_difference(a, b, diff, unit=unit, digits=digits)
    pct = f"{100 * diff.confidence:g}%"
    interval = f"{pct} CI {f.format(diff.low)} to {f.format(diff.high)}, {diff.n} paired seeds"
    holm = f"Holm p {format_p(p_adjusted)} over {family_size}"
    verdict = claim(diff, p_adjusted, alpha)
    if verdict != "within noise":
        return f"{a} {verdict} {b} by {g.format(abs(diff.mean))} {unit} ({interval}; {holm})."
    if diff.within_noise:
        return (
            f"{a} vs {b}: {f.format(diff.mean)} {unit} ({interval}; {holm}): within noise; the "
            "data do not separate them."
        )
    return (
        f"{a} vs {b}: {f.format(diff.mean)} {unit} ({interval}; p {format_p(diff.p_value)}, "
        f"{holm}): within noise after the correction for {family_size} comparisons."
    )
