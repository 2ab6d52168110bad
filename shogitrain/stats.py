"""Small-sample statistics over seeds: Student-t intervals and the paired t-test, in pure Python.

``t_cdf`` goes through the regularized incomplete beta function (evaluated by its continued
fraction), ``t_quantile`` inverts it by bisection; both are checked against tabulated values in
tests/test_stats.py. ``mean_interval`` is what `compare` draws and tabulates for a group of seeds:
a t-interval from 3 seeds on, the min–max range for 2, the value alone for 1.
``paired_difference`` compares two groups seed by seed (same seed = same data order).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

LEVEL = 0.95  # confidence level of every interval; p < 1 − LEVEL is "resolved"
MIN_SEEDS_FOR_T = 3  # fewer seeds: the band is the min–max range


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method (converges for x < (a+1)/(a+b+2))."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 1000):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for term in (even, odd):
            d = 1.0 + term * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + term / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return fraction


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"incomplete beta needs a, b > 0 and 0 ≤ x ≤ 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` > 0 degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = p (0 < p < 1), by bisection on :func:`t_cdf`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its band: ``kind`` is 't' (t-interval), 'min-max' or 'single'."""

    mean: float
    low: float
    high: float
    n: int
    kind: str
    half_width: float | None = None  # 't' only

    def as_dict(self) -> dict:
        return asdict(self)


def mean_interval(values, level: float = LEVEL) -> Interval:
    """The mean of ``values`` (one per seed) with a ``level`` t-interval, or min–max below 3 values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Interval(mean, mean, mean, 1, "single")
    if n < MIN_SEEDS_FOR_T:
        return Interval(mean, min(values), max(values), n, "min-max")
    half = t_quantile(0.5 + level / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, "t", half)


@dataclass(frozen=True)
class PairedDifference:
    """``treatment − baseline`` paired by seed: mean, t-interval, t statistic, two-sided p."""

    n: int
    mean: float
    low: float | None
    high: float | None
    t: float | None
    df: int | None
    p: float | None
    resolved: bool  # the interval excludes 0 (p < 1 − level); never with fewer than 2 pairs

    def as_dict(self) -> dict:
        return asdict(self)


def paired_difference(treatment, baseline, level: float = LEVEL) -> PairedDifference:
    """Paired t-test of ``treatment[i] − baseline[i]`` (the i-th seed of each); needs ≥ 2 pairs to test."""
    if len(treatment) != len(baseline) or not treatment:
        raise ValueError(f"paired samples need the same non-zero length, got {len(treatment)} and {len(baseline)}")
    diffs = [float(a) - float(b) for a, b in zip(treatment, baseline)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return PairedDifference(n, mean, None, None, None, None, None, False)
    se = statistics.stdev(diffs) / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    if se == 0.0:  # every seed gave the same difference
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / se
    p = t_two_sided_p(t, n - 1)
    return PairedDifference(n, mean, mean - half, mean + half, t, n - 1, p, p < 1.0 - level)
