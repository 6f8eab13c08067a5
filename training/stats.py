"""The statistics of an architecture comparison, written out with NumPy and `math` only.

The course's method is: many random splits, one run per architecture on each, then compare the runs
split by split. That makes every comparison *paired*, so the tests here are the paired t-test and the
Wilcoxon signed-rank test on the per-split differences, with Holm's correction because comparing
five architectures means ten tests at once. SciPy is not a runtime dependency; the tests check these
functions against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CONFIDENCE = 0.95
ALPHA = 0.05
_EXACT_WILCOXON_MAX_N = 50  # as SciPy: exact null distribution up to this many non-zero differences
_PERMUTATION_MAX_N = 13  # with ties or zeros: enumerate all 2**n sign flips up to this size


@dataclass(frozen=True)
class Summary:
    """Mean, spread and a t-based confidence interval of one architecture's accuracies."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN with one value
    ci_low: float
    ci_high: float
    min: float
    max: float


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of `a` and `b` over the same splits: mean of a − b and two p-values."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float  # min(W+, W−), as SciPy reports it
    wilcoxon_pvalue: float


def summarize(
    values: npt.ArrayLike,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Summary:
    """Summarise a sample; the interval is mean ± t(n−1) · s/√n (NaN when n < 2), cut to `bounds`:
    with two splits t is 12.7, and an accuracy's interval would reach past 100%."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("cannot summarise an empty sample")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    half = _ci_half_width(std, x.size, confidence)
    low, high = max(mean - half, bounds[0]), min(mean + half, bounds[1])
    return Summary(int(x.size), mean, std, low, high, float(x.min()), float(x.max()))


def paired_test(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedTest:
    """Compare two paired samples (same splits, same order): the difference a − b."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or len(a) != len(b) or d.size == 0:
        raise ValueError("paired samples must be two non-empty sequences of the same length")
    s = summarize(d, confidence)
    t, p_t = paired_t_test(d)
    w, p_w = wilcoxon_signed_rank(d)
    return PairedTest(s.n, s.mean, s.ci_low, s.ci_high, t, p_t, w, p_w)


def paired_t_test(d: npt.ArrayLike) -> tuple[float, float]:
    """Two-sided one-sample t-test that the mean of the differences `d` is zero: (t, p)."""
    x = np.asarray(d, dtype=np.float64)
    n = x.size
    if n < 2:
        return math.nan, math.nan
    mean, std = float(x.mean()), float(x.std(ddof=1))
    if std == 0.0:
        # Identical differences: no evidence of a difference if they are all zero, certainty otherwise.
        return (math.nan, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (std / math.sqrt(n))
    return t, student_t_sf_two_sided(abs(t), n - 1)


def wilcoxon_signed_rank(d: npt.ArrayLike) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of the differences `d`: (min(W+, W−), p).

    Zeros are dropped (Wilcoxon's own rule) and tied magnitudes get average ranks. The p-value is
    exact when it can be: the exact null distribution with no ties or zeros (n ≤ 50), all 2**n sign
    flips when there are ties or zeros (n ≤ 13), the tie-corrected normal approximation otherwise —
    the same choices as `scipy.stats.wilcoxon`'s default.
    """
    x = np.asarray(d, dtype=np.float64)
    n_total = x.size
    nonzero = x[x != 0.0]
    n = nonzero.size
    if n == 0:
        return 0.0, 1.0
    ranks, tie_sizes = _average_ranks(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    r_minus = float(ranks[nonzero < 0].sum())
    statistic = min(r_plus, r_minus)
    has_ties = bool(np.any(tie_sizes > 1))
    has_zeros = n < n_total
    if not (has_ties or has_zeros) and n_total <= _EXACT_WILCOXON_MAX_N:
        p = _wilcoxon_exact_p(r_plus, n)
    elif (has_ties or has_zeros) and n_total <= _PERMUTATION_MAX_N:
        p = _wilcoxon_permutation_p(ranks, r_plus)
    else:
        mean = n * (n + 1) / 4.0
        variance = (n * (n + 1) * (2 * n + 1) - float(np.sum(tie_sizes**3 - tie_sizes)) / 2.0) / 24.0
        z = (r_plus - mean) / math.sqrt(variance)
        p = math.erfc(abs(z) / math.sqrt(2.0))
    return statistic, min(1.0, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, kept monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def student_t_sf_two_sided(t: float, df: float) -> float:
    """P(|T| ≥ t) for Student's t with `df` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t (q in (0, 1)), by bisection on the exact CDF."""
    if not 0.0 < q < 1.0:
        raise ValueError("q must be in (0, 1)")
    if q == 0.5:
        return 0.0
    tail = 1.0 - q if q > 0.5 else q  # one-sided tail probability
    low, high = 0.0, 1.0
    while student_t_sf_two_sided(high, df) / 2.0 > tail:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if student_t_sf_two_sided(mid, df) / 2.0 > tail:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    value = (low + high) / 2.0
    return value if q > 0.5 else -value


def _ci_half_width(std: float, n: int, confidence: float) -> float:
    if n < 2 or math.isnan(std):
        return math.nan
    return student_t_ppf(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n with ties sharing their average rank, and the size of each tie group."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    sizes = []
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        sizes.append(end - start + 1)
        start = end + 1
    return ranks, np.asarray(sizes, dtype=np.float64)


def _wilcoxon_exact_p(r_plus: float, n: int) -> float:
    """Two-sided p from the exact null distribution of W+ (ranks 1..n, each sign equally likely)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    for rank in range(1, n + 1):  # add rank `rank` to every subset sum: counts[s] += counts[s - rank]
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    probabilities = counts / counts.sum()
    cdf_upper = float(probabilities[: math.ceil(r_plus) + 1].sum())  # P(W+ ≤ ceil(r))
    sf_lower = float(probabilities[math.floor(r_plus) :].sum())  # P(W+ ≥ floor(r))
    return 2.0 * min(cdf_upper, sf_lower)


def _wilcoxon_permutation_p(ranks: np.ndarray, r_plus: float) -> float:
    """Two-sided p over all 2**n sign assignments of the (average) ranks."""
    n = ranks.size
    signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # every subset of "positive" ranks
    null = signs @ ranks
    eps = 1e-12 * max(1.0, abs(r_plus))
    less = float(np.mean(null <= r_plus + eps))
    greater = float(np.mean(null >= r_plus - eps))
    return 2.0 * min(less, greater)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def verdict(name_a: str, name_b: str, mean_diff: float, adjusted_p: float, alpha: float = ALPHA) -> str:
    """One plain sentence on a paired comparison, decided by the Holm-adjusted p-value.

    `mean_diff` is the mean of a − b in accuracy (0..1); the sentence gives it in percentage points.
    """
    if math.isnan(adjusted_p):
        return f"{name_a} vs {name_b}: not enough paired splits to tell (need at least 2)"
    if adjusted_p >= alpha:
        return f"{name_a} is not distinguishable from {name_b} at these settings"
    better, worse = (name_a, name_b) if mean_diff > 0 else (name_b, name_a)
    return f"{better} is better than {worse} by {abs(mean_diff) * 100:.2f} points"
