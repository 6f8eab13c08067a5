"""The experiment's statistics against SciPy (the reference, a dev dependency only) and hand-made values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from training import stats


def _sample(seed: int, n: int, shift: float = 0.3, decimals: int | None = None) -> np.ndarray:
    values = np.random.default_rng(seed).normal(shift, 1.0, n)
    return np.round(values, decimals) if decimals is not None else values


@pytest.mark.parametrize("n", [2, 3, 10, 31])
def test_summary_matches_scipy_mean_std_and_t_interval(n: int) -> None:
    x = 0.95 + 0.01 * _sample(n, n)
    s = stats.summarize(x)
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert s.n == n
    assert s.mean == pytest.approx(x.mean(), abs=1e-15)
    assert s.std == pytest.approx(x.std(ddof=1), rel=1e-12)
    assert (s.ci_low, s.ci_high) == (pytest.approx(low, rel=1e-11), pytest.approx(high, rel=1e-11))
    assert (s.min, s.max) == (x.min(), x.max())


def test_an_interval_is_cut_to_the_bounds_its_values_live_in() -> None:
    s = stats.summarize([0.99, 0.95], bounds=(0.0, 1.0))  # two splits: t(1) = 12.7
    low, high = scipy.stats.t.interval(0.95, 1, loc=0.97, scale=scipy.stats.sem([0.99, 0.95]))
    assert (s.ci_low, s.ci_high) == (pytest.approx(low), 1.0) and high > 1.0
    assert math.isnan(stats.summarize([0.9], bounds=(0.0, 1.0)).ci_high)


def test_summary_of_one_value_has_no_spread_or_interval() -> None:
    s = stats.summarize([0.9])
    assert s.mean == 0.9 and s.min == 0.9 and s.max == 0.9
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 99, 1000])
def test_student_t_quantile_and_tail_match_scipy(df: int) -> None:
    assert stats.student_t_ppf(0.975, df) == pytest.approx(scipy.stats.t.ppf(0.975, df), rel=1e-10)
    assert stats.student_t_ppf(0.1, df) == pytest.approx(scipy.stats.t.ppf(0.1, df), rel=1e-10)
    for t in (0.01, 0.7, 2.1, 5.0, 40.0):
        expected = 2 * scipy.stats.t.sf(t, df)
        assert stats.student_t_sf_two_sided(t, df) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n", [2, 5, 10, 100])
def test_paired_test_matches_scipy_ttest_rel_and_its_interval(n: int) -> None:
    a = 0.97 + 0.004 * _sample(100 + n, n, 0.0)
    b = a - 0.002 - 0.003 * _sample(200 + n, n, 0.0)
    result = stats.paired_test(a, b)
    reference = scipy.stats.ttest_rel(a, b)
    interval = reference.confidence_interval(0.95)
    assert result.n == n
    assert result.mean_diff == pytest.approx(np.mean(a - b), rel=1e-12)
    assert result.t_statistic == pytest.approx(reference.statistic, rel=1e-10)
    assert result.t_pvalue == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.ci_low == pytest.approx(interval.low, rel=1e-10)
    assert result.ci_high == pytest.approx(interval.high, rel=1e-10)


def test_paired_t_test_of_identical_differences_is_decided_without_dividing_by_zero() -> None:
    assert stats.paired_t_test([0.0, 0.0, 0.0])[1] == 1.0
    t, p = stats.paired_t_test([0.01, 0.01, 0.01])
    assert p == 0.0 and t == math.inf


@pytest.mark.parametrize(
    ("n", "decimals", "method"),
    [
        (6, None, "exact"),
        (10, None, "exact"),
        (20, None, "exact"),
        (50, None, "exact"),
        (8, 1, "permutation with ties"),
        (13, 0, "permutation with zeros"),
        (14, 1, "normal, ties"),
        (30, 0, "normal, zeros and ties"),
        (51, None, "normal"),
        (200, 2, "normal, ties"),
    ],
)
def test_wilcoxon_matches_scipy_default(n: int, decimals: int | None, method: str) -> None:
    d = _sample(n * 7 + (decimals or 0), n, 0.3, decimals)
    statistic, p = stats.wilcoxon_signed_rank(d)
    reference = scipy.stats.wilcoxon(d)
    assert statistic == pytest.approx(reference.statistic), method
    assert p == pytest.approx(reference.pvalue, rel=1e-9), method


def test_wilcoxon_exact_p_for_a_known_small_case() -> None:
    # All 5 differences positive: W− = 0, and only 1 of the 2**5 sign patterns is as extreme each way.
    assert stats.wilcoxon_signed_rank([1, 2, 3, 4, 5]) == (0.0, pytest.approx(2 / 32))
    assert stats.wilcoxon_signed_rank([0.0, 0.0]) == (0.0, 1.0)


def test_holm_adjusts_step_down_keeps_order_and_skips_nan() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = stats.holm([0.5, math.nan, 0.4])
    assert adjusted[0] == pytest.approx(0.8) and adjusted[2] == pytest.approx(0.8)
    assert math.isnan(adjusted[1])
    assert stats.holm([0.6, 0.9]) == [1.0, 1.0]


def test_verdicts_say_plainly_which_is_better_or_that_they_cannot_be_told_apart() -> None:
    assert (
        stats.verdict("mlp:10,10", "mlp:10", 0.0002, 0.8)
        == "mlp:10,10 is not distinguishable from mlp:10 at these settings"
    )
    assert stats.verdict("mlp:1", "mlp:800", -0.6, 1e-6) == "mlp:800 is better than mlp:1 by 60.00 points"
    assert "not enough" in stats.verdict("a", "b", 0.1, math.nan)
