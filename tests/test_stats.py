"""shogitrain.stats against tabulated t quantiles, closed forms and intervals computed by hand."""

import math

import pytest

from shogitrain.stats import (mean_interval, paired_difference, regularized_incomplete_beta, t_cdf,
                              t_quantile, t_two_sided_p)


@pytest.mark.parametrize("p, df, tabulated", [
    (0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 29, 2.045230),
    (0.975, 1000, 1.962339), (0.995, 3, 5.840909), (0.95, 10, 1.812461), (0.9995, 5, 6.868827),
])
def test_t_quantiles_match_the_tables(p, df, tabulated):
    assert t_quantile(p, df) == pytest.approx(tabulated, abs=5e-7)
    assert t_quantile(1 - p, df) == pytest.approx(-tabulated, abs=5e-7)


@pytest.mark.parametrize("t", [-40.0, -3.0, -0.5, 0.0, 0.7, 2.0, 5.0, 100.0])
def test_t_cdf_closed_forms(t):
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2·sqrt(2 + t²)).
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)


def test_incomplete_beta_closed_forms():
    for x in (0.0, 0.1, 0.37, 0.5, 0.93, 1.0):
        assert regularized_incomplete_beta(1, 1, x) == pytest.approx(x, abs=1e-14)
        assert regularized_incomplete_beta(3, 1, x) == pytest.approx(x ** 3, abs=1e-14)
        assert regularized_incomplete_beta(1, 4, x) == pytest.approx(1 - (1 - x) ** 4, abs=1e-14)
    # symmetry I_x(a, b) = 1 − I_{1−x}(b, a), across the switch of the continued fraction
    assert regularized_incomplete_beta(2.5, 0.5, 0.8) == pytest.approx(1 - regularized_incomplete_beta(0.5, 2.5, 0.2))
    with pytest.raises(ValueError):
        regularized_incomplete_beta(0, 1, 0.5)


def test_two_sided_p_at_tabulated_critical_values():
    assert t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-6)
    assert t_two_sided_p(4.604095, 4) == pytest.approx(0.01, abs=1e-6)
    assert t_two_sided_p(2.045230, 29) == pytest.approx(0.05, abs=1e-6)
    assert t_two_sided_p(0.0, 7) == 1.0 and t_two_sided_p(math.inf, 7) == 0.0


def test_mean_interval_by_hand():
    # 5 seeds: mean 3.332, squared deviations sum to 4.28e-3, s² = 1.07e-3, half-width t_{.975,4}·s/√5.
    interval = mean_interval([3.30, 3.35, 3.32, 3.38, 3.31])
    assert interval.kind == "t" and interval.n == 5
    assert interval.mean == pytest.approx(3.332)
    assert interval.half_width == pytest.approx(2.776445 * math.sqrt(1.07e-3 / 5), rel=1e-6)
    assert interval.half_width == pytest.approx(0.040616, abs=1e-6)
    assert (interval.low, interval.high) == pytest.approx((3.332 - 0.040616, 3.332 + 0.040616), abs=1e-6)
    # 3 seeds 1, 2, 3: s = 1, half-width 4.302653/√3
    assert mean_interval([1, 2, 3]).half_width == pytest.approx(2.484138, abs=1e-6)
    two = mean_interval([0.4, 0.1])  # fewer than 3 seeds: the range
    assert (two.kind, two.mean, two.low, two.high, two.half_width) == ("min-max", pytest.approx(0.25), 0.1, 0.4, None)
    one = mean_interval([0.7])
    assert (one.kind, one.low, one.high) == ("single", 0.7, 0.7)


def test_paired_difference_by_hand():
    # differences 1, 2, 3: mean 2, s = 1, se = 1/√3, t = 2√3 = 3.4641 on 2 df;
    # df = 2 closed form: p = 1 − |t| / sqrt(2 + t²) = 1 − 3.4641/√14 = 0.074180 → not resolved
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert (d.n, d.df, d.mean) == (3, 2, pytest.approx(2.0))
    assert d.t == pytest.approx(2 * math.sqrt(3))
    assert d.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-12)
    assert d.p == pytest.approx(0.074180, abs=1e-6)
    assert (d.low, d.high) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-6)
    assert not d.resolved and d.low < 0 < d.high

    # 2 pairs, differences 0.1 and 0.3: mean 0.2, s = 0.1414, se = 0.1, t = 2 on 1 df;
    # Cauchy: p = 1 − (2/π)·atan(2) = 0.295167; CI 0.2 ± 12.706205·0.1
    d = paired_difference([1.1, 2.3], [1.0, 2.0])
    assert d.t == pytest.approx(2.0) and d.p == pytest.approx(1 - 2 / math.pi * math.atan(2), abs=1e-12)
    assert (d.low, d.high) == pytest.approx((0.2 - 1.2706205, 0.2 + 1.2706205), abs=1e-6)

    # differences −0.5, −0.4, −0.6, −0.5: mean −0.5, s = 0.08165, se = 0.040825, t = −12.247 on 3 df:
    # the interval −0.5 ± 3.182446·0.040825 excludes 0 → resolved
    d = paired_difference([1.5, 1.6, 1.4, 1.5], [2.0, 2.0, 2.0, 2.0])
    assert d.t == pytest.approx(-0.5 / (math.sqrt(0.02 / 3) / 2))
    assert d.high == pytest.approx(-0.5 + 3.182446 * math.sqrt(0.02 / 3) / 2, abs=1e-6)
    assert d.resolved and d.p < 0.05 and d.high < 0


def test_paired_difference_edge_cases():
    same = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # no difference at all
    assert (same.mean, same.t, same.p, same.resolved) == (0.0, 0.0, 1.0, False)
    constant = paired_difference([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # every seed 0.5 apart
    assert constant.p == 0.0 and constant.resolved and constant.low == constant.high == pytest.approx(0.5)
    single = paired_difference([2.0], [1.5])  # one pair: a difference, no test
    assert (single.mean, single.p, single.low, single.resolved) == (0.5, None, None, False)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
