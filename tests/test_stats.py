"""The statistics against the worked examples of the papers that define them, and against hand computation.

Published values are quoted to the decimals printed in the source, so each is checked to half a unit in
its last printed place.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from ellrobust.stats.inference import (
    _tango_score,
    detectable_difference,
    holm_adjust,
    mean_interval,
    paired_bootstrap_interval,
    paired_comparison,
    paired_difference_interval,
    required_n,
    wilson_interval,
)

Z95 = float(norm.ppf(0.975))


# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction), 4 decimals.
NEWCOMBE_1998A_TABLE_I = [
    (81, 263, 0.2553, 0.3662),  # Table I, 81/263
    (15, 148, 0.0624, 0.1605),  # Table I, 15/148
    (0, 20, 0.0000, 0.1611),  # Table I, 0/20
    (1, 29, 0.0061, 0.1718),  # Table I, 1/29
    (29, 29, 0.8830, 1.0000),  # Table I, 29/29
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE_1998A_TABLE_I)
def test_wilson_matches_newcombe_table_i(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 8)
    assert lo == 0.0 and hi == pytest.approx(Z95**2 / (8 + Z95**2))  # closed form at 0 successes
    lo99, hi99 = wilson_interval(3, 10, confidence=0.99)
    lo95, hi95 = wilson_interval(3, 10)
    assert lo99 < lo95 < 0.3 < hi95 < hi99


# Tango's score interval for p1 - p2 = (b - c) / N from paired counts (a, b, c, d): a both right,
# b condition 1 only, c condition 2 only, d neither. Published limits, as printed (3 or 4 decimals);
# transcribed with their sources in the published-example tests of the R package ratesci
# (petelaud/ratesci, tests/testthat/test3.R), which reproduces each of them.
TANGO_PUBLISHED = [
    ((4, 9, 3, 16), 0.95, (-0.027, 0.390), 5e-4),  # Tango (1998) Stat Med 17:891, worked example
    ((43, 0, 1, 0), 0.90, (-0.096, 0.037), 5e-4),  # Tango (1998), example with an off-diagonal zero cell
    ((53, 16, 8, 9), 0.95, (-0.020, 0.207), 5e-4),  # Agresti & Min (2005) Stat Med 24:729, score interval
    ((1, 1, 7, 12), 0.95, (-0.517, -0.026), 5e-4),  # Fagerland, Lydersen & Laake (2014) Stat Med 33:2850, Tango
]


@pytest.mark.parametrize(("cells", "confidence", "published", "tol"), TANGO_PUBLISHED)
def test_paired_interval_matches_published_tango_examples(cells, confidence, published, tol):
    both, a_only, b_only, neither = cells
    lo, hi = paired_difference_interval(a_only, b_only, both + a_only + b_only + neither, confidence)
    assert lo == pytest.approx(published[0], abs=tol)
    assert hi == pytest.approx(published[1], abs=tol)


def test_zero_discordant_pairs_give_a_proper_interval():
    # No image on which the models disagree: the Wald interval collapses to (0, 0); the score interval
    # solves n |d| = z^2 (1 - |d|), i.e. +-z^2 / (n + z^2).
    lo, hi = paired_difference_interval(0, 0, 100)
    assert hi == pytest.approx(Z95**2 / (100 + Z95**2), rel=1e-9)
    assert lo == pytest.approx(-hi, rel=1e-12)
    assert 0.0369 < hi < 0.0371
    # Newcombe RG (1998) Stat Med 17:2635, Table III, (e, f, g, h) = (54, 0, 0, 0): -0.0664 to 0.0664.
    # That row is his method 10; with every pair concordant and all 54 successes both methods reduce to the
    # Wilson limit z^2 / (n + z^2), so Tango's interval must print the same figures.
    lo, hi = paired_difference_interval(0, 0, 54)
    assert (lo, hi) == pytest.approx((-0.0664, 0.0664), abs=5e-5)


def test_paired_interval_is_the_inverted_score_test_and_well_behaved():
    z = float(norm.ppf(0.95))
    for n in range(1, 13):
        for a_only in range(n + 1):
            for b_only in range(n + 1 - a_only):
                estimate = (a_only - b_only) / n
                lo, hi = paired_difference_interval(a_only, b_only, n, confidence=0.90)
                assert -1.0 <= lo < hi <= 1.0
                assert lo <= estimate <= hi
                assert (lo < estimate or estimate == -1) and (estimate < hi or estimate == 1)
                if lo > -1:
                    assert _tango_score(lo, a_only, b_only, n) == pytest.approx(z, abs=1e-7)
                if hi < 1:
                    assert _tango_score(hi, a_only, b_only, n) == pytest.approx(-z, abs=1e-7)
                swapped = paired_difference_interval(b_only, a_only, n, confidence=0.90)
                assert swapped == pytest.approx((-hi, -lo), abs=1e-10)


def test_paired_interval_edges():
    assert paired_difference_interval(0, 0, 0) == (-1.0, 1.0)
    assert paired_difference_interval(5, 0, 5)[1] == 1.0
    assert paired_difference_interval(0, 5, 5)[0] == -1.0
    with pytest.raises(ValueError):
        paired_difference_interval(3, 3, 5)


def test_paired_comparison_reports_the_score_interval():
    # 20 images: 9 both right, 6 only A, 2 only B, 3 neither.
    a = np.array([1] * 9 + [1] * 6 + [0] * 2 + [0] * 3, bool)
    b = np.array([1] * 9 + [0] * 6 + [1] * 2 + [0] * 3, bool)
    cmp = paired_comparison(a, b)
    assert (cmp.n, cmp.a_only, cmp.b_only) == (20, 6, 2)
    assert cmp.difference == pytest.approx(a.mean() - b.mean())
    assert (cmp.ci_low, cmp.ci_high) == paired_difference_interval(6, 2, 20)
    assert cmp.p_value == pytest.approx(2 * (1 + 8 + 28) / 2**8)  # exact McNemar, 2 of 8 discordant
    same = paired_comparison(a, a)
    assert same.difference == 0 and same.ci_low < 0 < same.ci_high and same.p_value == 1.0
    with pytest.raises(ValueError):
        paired_comparison(a, b[:-1])


def _holm_by_hand(p: list[float]) -> list[float]:
    """Adjusted p_i = min(1, max over j ranked at or before i of (m - rank_j) p_j), straight from Holm (1979)."""
    m = len(p)
    rank = sorted(range(m), key=lambda i: p[i])
    position = {i: r for r, i in enumerate(rank)}
    out = []
    for i in range(m):
        worst = 0.0
        for j in range(m):
            if position[j] <= position[i]:
                worst = max(worst, (m - position[j]) * p[j])
        out.append(min(1.0, worst))
    return out


def test_holm_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    for size in (1, 2, 5, 17):
        p = list(rng.uniform(0, 0.2, size))
        assert holm_adjust(p) == pytest.approx(_holm_by_hand(p), abs=1e-15)
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.6, 0.9]) == pytest.approx([1.0, 1.0, 1.0])


def test_holm_rejects_exactly_what_the_step_down_procedure_rejects():
    p = [0.001, 0.011, 0.012, 0.02, 0.04, 0.3]
    adjusted = holm_adjust(p)
    for alpha in (0.01, 0.05, 0.1):
        rejected = set()
        for k, i in enumerate(sorted(range(len(p)), key=lambda i: p[i])):
            if p[i] > alpha / (len(p) - k):
                break
            rejected.add(i)
        assert {i for i, a in enumerate(adjusted) if a <= alpha} == rejected


def test_holm_leaves_nan_out_of_the_family():
    adjusted = holm_adjust([0.01, math.nan, 0.04, 0.03])
    assert math.isnan(adjusted[1])
    assert np.delete(adjusted, 1) == pytest.approx(holm_adjust([0.01, 0.04, 0.03]))
    assert np.isnan(holm_adjust([math.nan, math.nan])).all()
    assert holm_adjust([]).shape == (0,)


def test_required_n_against_hand_computation():
    # psi = 0.2, delta = 0.1, alpha = 0.05, power = 0.8: z = 1.959964, z_power = 0.841621;
    # [1.959964 * sqrt(0.2) + 0.841621 * sqrt(0.19)]^2 / 0.01 = (0.876523 + 0.366855)^2 / 0.01 = 154.60 -> 155.
    assert required_n(0.1, 0.2) == 155
    assert required_n(-0.1, 0.2) == 155
    assert required_n(0.0, 0.2) is None
    assert required_n(0.3, 0.2) is None
    assert required_n(0.05, 0.2) > required_n(0.1, 0.2) > required_n(0.2, 0.2)


def test_required_n_delivers_the_power_it_promises():
    # Simulate McNemar's (normal) test at the required n: p(A only) = 0.15, p(B only) = 0.05.
    n = required_n(0.1, 0.2)
    counts = np.random.default_rng(0).multinomial(n, [0.15, 0.05, 0.8], size=20000)
    z = (counts[:, 0] - counts[:, 1]) / np.sqrt(np.maximum(counts[:, 0] + counts[:, 1], 1))
    assert 0.77 < float((np.abs(z) > Z95).mean()) < 0.87


def test_detectable_difference_inverts_required_n():
    for psi, n in ((0.2, 155), (0.1, 1000), (0.5, 60)):
        delta = detectable_difference(psi, n)
        assert 0 < delta <= psi
        assert required_n(delta, psi) in (n, n + 1)
        assert required_n(0.99 * delta, psi) > n
    assert detectable_difference(0.2, 155) == pytest.approx(0.1, abs=1e-3)
    assert detectable_difference(0.2, 10_000) < detectable_difference(0.2, 1000)


def test_detectable_difference_without_discordance():
    # Models that agree on every image: the alternative delta needs discordance >= delta, so psi = delta and
    # n delta = [z + z_power sqrt(1 - delta)]^2. At n = 1000, iterating by hand from delta = 7.85e-3:
    # (1.959964 + 0.841621 * 0.996077)^2 / 1000 = 2.798283^2 / 1000 = 7.8304e-3.
    delta = detectable_difference(0.0, 1000)
    assert delta == pytest.approx(7.8304e-3, abs=2e-7)
    assert required_n(delta, delta) in (1000, 1001)
    # Too little disagreement observed to matter: the same answer as none observed.
    assert detectable_difference(0.002, 1000) == pytest.approx(delta)
    assert detectable_difference(0.0, 3) == math.inf
    assert detectable_difference(0.0, 0) == math.inf


def test_mean_interval_against_hand_computation():
    # 1, 2, 3, 4: mean 2.5, sd sqrt(5/3) = 1.290994, se 0.645497, t(0.975, 3) = 3.182446, half 2.054260.
    mean, lo, hi = mean_interval([1, 2, 3, 4])
    assert mean == 2.5
    assert (lo, hi) == pytest.approx((0.445740, 4.554260), abs=1e-6)
    one = mean_interval(np.array([0.7]))
    assert one[0] == 0.7 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError):
        mean_interval([])


def test_bootstrap_is_deterministic_and_resamples_images():
    x = np.random.default_rng(1).normal(size=30)
    seen = []

    def statistic(indices):
        seen.append(indices)
        return float(x[indices].mean())

    first = paired_bootstrap_interval(statistic, 30, seed=7, resamples=300)
    assert all(i.shape == (30,) and i.dtype.kind == "i" and i.min() >= 0 and i.max() < 30 for i in seen)
    # once per resample, and once on all images in order (the centre of the interval's t part)
    assert len(seen) == 301 and len({i.tobytes() for i in seen}) == 301
    assert sum(np.array_equal(i, np.arange(30)) for i in seen) == 1
    assert paired_bootstrap_interval(statistic, 30, seed=7, resamples=300) == first
    assert paired_bootstrap_interval(statistic, 30, seed=8, resamples=300) != first
    with pytest.raises(ValueError):
        paired_bootstrap_interval(statistic, 0, seed=7)


def test_bootstrap_interval_covers_and_agrees_with_the_t_interval():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(100):
        x = rng.normal(1.0, 2.0, size=40)
        lo, hi = paired_bootstrap_interval(lambda i, x=x: float(x[i].mean()), 40, seed=trial, resamples=400)
        covered += lo <= 1.0 <= hi
    assert 85 <= covered <= 100
    big = rng.normal(size=2000)
    boot = paired_bootstrap_interval(lambda i: float(big[i].mean()), 2000, seed=0, resamples=2000)
    _, lo, hi = mean_interval(big)
    assert boot == pytest.approx((lo, hi), abs=0.01)
