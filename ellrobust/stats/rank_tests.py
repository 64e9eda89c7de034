"""Paired tests and intervals on continuous paired differences: the exact sign test, Wilcoxon's
signed-rank test, and the Hodges–Lehmann and median intervals (ties and zeros handled as the ε*
comparisons need)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, norm, rankdata

from ellrobust.stats.decisions import CONFIDENCE, z_value
from ellrobust.stats.inference import mcnemar_exact

#: Largest number of pairs for which the signed-rank test and the Hodges–Lehmann interval use the exact
#: null distribution of the signed-rank statistic (scipy's own limit for its exact test); beyond it the
#: normal approximation, whose interval rank already equals the exact one at n = 30, 40 and 50.
EXACT_MAX_N = 50


def _differences(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=float)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ValueError(f"paired differences must be a non-empty 1-D array of finite values, got shape {d.shape}")
    return d


def sign_test(d: np.ndarray) -> float:
    """Two-sided exact sign test of paired differences ``d``: binomial(n, 1/2) on the signs, zeros dropped.

    This is the exact McNemar test on the counts of positive and negative differences (1.0 when every
    difference is 0), so it is computed by :func:`ellrobust.stats.inference.mcnemar_exact`.
    """
    d = _differences(d)
    return mcnemar_exact(int((d > 0).sum()), int((d < 0).sum()))


def signed_rank_cdf(n: int) -> np.ndarray:
    """P(T+ ≤ t), t = 0 … n(n+1)/2, of the signed-rank statistic of n untied non-zero differences under H0.

    The number of subsets of the ranks {1, …, n} with sum t, counted by adding one rank at a time; the
    counts stay below 2**53 for n ≤ 50, so they are exact in float64.
    """
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank]
    return np.cumsum(counts) / 2.0**n


def signed_rank_test(d: np.ndarray) -> tuple[float, bool]:
    """Two-sided Wilcoxon signed-rank test of paired differences ``d``: (p-value, exact).

    Zeros are dropped (Wilcoxon's rule, scipy's ``zero_method="wilcox"``) and the non-zero |d| ranked,
    ties at their average rank. With at most :data:`EXACT_MAX_N` non-zero differences and no ties among
    |d| the p-value is exact: 2 min(P(T+ ≤ t), P(T+ ≥ t)), capped at 1. Otherwise the normal
    approximation with the tie-corrected variance (n(n+1)(2n+1) − Σ(t³ − t)/2) / 24 and no continuity
    correction, as scipy's ``method="asymptotic"``. (scipy's exact method keeps the untied distribution
    when |d| ties, rounding the statistic; the normal approximation with tie correction is used instead.)
    1.0 when every difference is 0.
    """
    d = _differences(d)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return 1.0, True
    ranks = rankdata(np.abs(d))
    t_plus = float(ranks[d > 0].sum())
    _, ties = np.unique(np.abs(d), return_counts=True)
    if n <= EXACT_MAX_N and (ties == 1).all():
        cdf = signed_rank_cdf(n)
        t = round(t_plus)
        top = n * (n + 1) // 2
        return min(1.0, 2 * min(cdf[t], cdf[top - t])), True  # P(T+ ≥ t) = P(T+ ≤ top − t) by symmetry
    variance = (n * (n + 1) * (2 * n + 1) - (ties**3 - ties).sum() / 2) / 24
    z = (t_plus - n * (n + 1) / 4) / math.sqrt(variance)
    return float(2 * norm.sf(abs(z))), False


def _walsh_order_statistics(d: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The Walsh averages (d_i + d_j) / 2, i ≤ j, at the given 1-based ranks, without storing all n(n+1)/2.

    With d sorted, row i's averages rise with j, so how many are ≤ t is found per row by a vectorised
    binary search. Each order statistic is the smallest t with at least ``rank`` averages ≤ t, found by
    bisection over the float64 values themselves, mapped to uint64 in the same order: at most 64 steps,
    ending on an actual Walsh average, ties included. Memory O(len(ranks) · n), where sorting all the
    averages would take n(n+1)/2 floats (400 MB at n = 10 000).
    """
    d = np.sort(d)
    n = d.size
    rows = np.arange(n)

    def at_most(t: np.ndarray) -> np.ndarray:  # per t, the number of Walsh averages ≤ t
        lo = np.broadcast_to(rows, (t.size, n)).copy()
        hi = np.full((t.size, n), n)
        for _ in range(n.bit_length() + 1):
            mid = (lo + hi) // 2
            below = (lo < hi) & ((d + d[np.minimum(mid, n - 1)]) / 2 <= t[:, None])
            hi = np.where((lo < hi) & ~below, mid, hi)
            lo = np.where(below, mid + 1, lo)
        return (lo - rows).sum(axis=1)

    sign = np.uint64(1 << 63)

    def key(x: np.ndarray) -> np.ndarray:  # float64 → uint64 in the same order (unsigned: no overflow)
        bits = np.asarray(x, dtype=np.float64).view(np.uint64)
        return np.where(bits & sign, ~bits, bits | sign)

    def value(k: np.ndarray) -> np.ndarray:
        return np.where(k & sign, k & ~sign, ~k).view(np.float64)

    low = np.full(ranks.size, key(d[0]) - np.uint64(1))  # fewer than `rank` averages ≤ value(low)
    high = np.full(ranks.size, key(d[-1]))  # at least `rank` averages ≤ value(high)
    while (high - low > 1).any():
        mid = low + (high - low) // np.uint64(2)
        enough = at_most(value(mid)) >= ranks
        high = np.where(enough, mid, high)
        low = np.where(enough, low, mid)
    return value(high)


def _interval_rank(n: int, confidence: float) -> int:
    """k, the rank of the Walsh average that ends the Hodges–Lehmann interval of n differences (0: none)."""
    z = z_value(confidence)
    tail = (1 - confidence) / 2
    if n <= EXACT_MAX_N:
        return int(np.count_nonzero(signed_rank_cdf(n) <= tail))
    return max(0, math.floor(n * (n + 1) / 4 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)) + 1)


def hodges_lehmann_side(d: np.ndarray, confidence: float = CONFIDENCE) -> int:
    """Which side of 0 the Hodges–Lehmann interval of :func:`hodges_lehmann` lies on: +1, -1, or 0 (covers 0).

    Exactly that interval's answer without computing its ends, in O(n log n): the lower end, the Walsh
    average of rank k, is above 0 exactly when fewer than k Walsh averages are ≤ 0, and the upper end
    below 0 exactly when fewer than k are ≥ 0. The sign of (d_i + d_j) / 2 is that of d_i + d_j, which
    floating-point addition keeps, so the counts are exact: per i, the j ≥ i with d_j ≤ −d_i (a sorted
    search). For simulations that decide thousands of runs, where the ends themselves are not needed.
    """
    d = np.sort(_differences(d))
    n = d.size
    k = _interval_rank(n, confidence)
    if k < 1:
        return 0
    rows = np.arange(n)
    at_most_zero = np.maximum(np.searchsorted(d, -d, side="right") - rows, 0).sum()
    at_least_zero = np.maximum(n - np.maximum(np.searchsorted(d, -d, side="left"), rows), 0).sum()
    if at_most_zero < k:
        return 1
    if at_least_zero < k:
        return -1
    return 0


def hodges_lehmann(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, bool]:
    """Hodges–Lehmann estimate of the centre of paired differences ``d``, and its interval: (est, low, high, exact).

    The estimate is the median of the n(n+1)/2 Walsh averages (d_i + d_j) / 2, i ≤ j, over all n pairs
    (zeros included: they are observed differences). The interval is the signed-rank test inverted
    (Tukey): the Walsh averages of ranks k and M + 1 − k, M = n(n+1)/2, with k − 1 the largest t for
    which P(T+ ≤ t) ≤ (1 − confidence)/2, so it covers the centre with at least the stated confidence
    when d is continuous and symmetric about it. The distribution of T+ is exact for n ≤
    :data:`EXACT_MAX_N` and normal beyond: k = ⌊n(n+1)/4 − z σ⌋ + 1, σ² = n(n+1)(2n+1)/24, without a
    continuity correction, which gives the exact k at n = 30, 40 and 50 (the correction lands one below:
    T+ has lighter tails than the normal). Where no k ≥ 1 exists (n ≤ 5 at 95 %) no finite interval
    reaches the level, and it is (−inf, inf).

    Chosen over a paired bootstrap: it is distribution-free and deterministic (no seed); it is the
    signed-rank test inverted, so with no zero or tied d it excludes 0 exactly when the exact test has
    p ≤ 1 − confidence; and its coverage holds at small n, where percentile intervals of a bootstrapped
    median are unreliable (the resampled medians take only a few distinct values).
    """
    d = _differences(d)
    n = d.size
    total = n * (n + 1) // 2
    k = _interval_rank(n, confidence)
    middle = [(total + 1) // 2, total // 2 + 1]
    ranks = np.array(middle + ([k, total + 1 - k] if k >= 1 else []))
    found = _walsh_order_statistics(d, ranks)
    estimate = float((found[0] + found[1]) / 2) + 0.0  # + 0.0: a zero is 0.0, never -0.0
    low, high = (float(found[2]) + 0.0, float(found[3]) + 0.0) if k >= 1 else (-math.inf, math.inf)
    return estimate, low, high, n <= EXACT_MAX_N


def median_interval(d: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Median of ``d`` and its exact distribution-free interval from order statistics: (median, low, high).

    The interval (d_(k), d_(n+1−k)) with k − 1 the largest j for which P(Binomial(n, 1/2) ≤ j) ≤
    (1 − confidence)/2 covers the population median with at least the stated confidence for continuous d
    (the sign test inverted). (−inf, inf) where no k ≥ 1 exists (n ≤ 5 at 95 %).
    """
    z_value(confidence)
    d = np.sort(_differences(d))
    n = d.size
    k = int(np.count_nonzero(binom.cdf(np.arange(n + 1), n, 0.5) <= (1 - confidence) / 2))
    if k < 1:
        return float(np.median(d)), -math.inf, math.inf
    return float(np.median(d)), float(d[k - 1]), float(d[n - k])
