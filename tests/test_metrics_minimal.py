"""The statistics of minimal budgets ε* against scipy, brute force, hand data and small seeded simulations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm, wilcoxon

from ellrobust.stats.inference import wilson_interval
from ellrobust.stats.minimal_budgets import (
    fixed_budget_eps,
    images_needed,
    paired_eps_test,
    robust_curve,
    robust_curve_interval,
    worst_case_eps,
)
from ellrobust.stats.rank_tests import (
    EXACT_MAX_N,
    hodges_lehmann,
    median_interval,
    sign_test,
    signed_rank_cdf,
    signed_rank_test,
)


def _walsh(d: np.ndarray) -> np.ndarray:
    """Every Walsh average (d_i + d_j) / 2, i ≤ j, sorted: the brute force the selection must match."""
    return np.sort([(d[i] + d[j]) / 2 for i in range(d.size) for j in range(i, d.size)])


# ---------------------------------------------------------------- tests against scipy


def test_sign_test_is_the_exact_binomial_on_the_signs():
    rng = np.random.default_rng(1)
    for n in (1, 7, 30, 200):
        d = np.round(rng.normal(0.2, 1, n), 1)  # rounding makes zeros, which the test drops
        pos, neg = int((d > 0).sum()), int((d < 0).sum())
        expected = binomtest(pos, pos + neg, 0.5).pvalue if pos + neg else 1.0
        assert sign_test(d) == pytest.approx(expected, rel=1e-12)
    assert sign_test(np.zeros(5)) == 1.0


WILCOXON_CASES = {
    "exact, continuous": (np.random.default_rng(2).normal(0.4, 1, 20), "exact"),
    "exact, zeros dropped": (np.r_[0.0, 0.0, 0.0, np.random.default_rng(3).normal(0.5, 1, 17)], "exact"),
    "exact at the limit": (np.random.default_rng(4).normal(0.3, 1, EXACT_MAX_N), "exact"),
    "approx past the limit": (np.random.default_rng(5).normal(0.3, 1, EXACT_MAX_N + 1), "asymptotic"),
    "approx, ties in |d|": (np.round(np.random.default_rng(6).normal(0.3, 1, 25), 1), "asymptotic"),
    "approx, ties and zeros": (np.round(np.random.default_rng(7).normal(0.1, 0.3, 300), 1), "asymptotic"),
}


@pytest.mark.parametrize(("d", "method"), WILCOXON_CASES.values(), ids=WILCOXON_CASES.keys())
def test_signed_rank_matches_scipy(d, method):
    p, exact = signed_rank_test(d)
    assert exact == (method == "exact")
    assert p == pytest.approx(wilcoxon(d, zero_method="wilcox", method=method).pvalue, rel=1e-10)


def test_signed_rank_null_distribution_by_enumeration():
    for n in range(1, 13):
        ranks = np.arange(1, n + 1)
        sums = [int(ranks[list(signs)].sum()) for signs in itertools.product((False, True), repeat=n)]
        counts = np.bincount(sums, minlength=n * (n + 1) // 2 + 1)
        np.testing.assert_allclose(signed_rank_cdf(n), np.cumsum(counts) / 2**n, rtol=1e-15)
    assert signed_rank_test(np.zeros(4)) == (1.0, True)


# ---------------------------------------------------------------- Hodges–Lehmann and the median of d


@pytest.mark.parametrize("n", [1, 2, 6, 19, 50, 51, 140])
def test_hodges_lehmann_is_the_median_of_the_walsh_averages(n):
    rng = np.random.default_rng(n)
    d = np.round(rng.normal(0.01, 0.02, n), 3)  # rounded: tied and zero differences, as a bisection gives
    walsh = _walsh(d)
    estimate, low, high, exact = hodges_lehmann(d)
    assert estimate == np.median(walsh)
    assert exact == (n <= EXACT_MAX_N)
    if n <= 5:
        assert (low, high) == (-np.inf, np.inf)  # no finite interval reaches 95 %
        return
    k = _rank(n) if exact else _normal_rank(n)
    assert (low, high) == (walsh[k - 1], walsh[walsh.size - k])  # symmetric order statistics
    assert low <= estimate <= high


def _rank(n: int) -> int:
    """k of the exact 95 % interval: k − 1 is the largest t with P(T+ <= t) <= 2.5 %."""
    return int(np.count_nonzero(signed_rank_cdf(n) <= 0.025))


def _normal_rank(n: int) -> int:
    """k of the normal approximation the docstring states: ⌊n(n+1)/4 − z σ⌋ + 1."""
    return math.floor(n * (n + 1) / 4 - norm.ppf(0.975) * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)) + 1


def test_the_normal_rank_is_the_exact_one_near_the_limit():
    # The normal rank takes over past EXACT_MAX_N; where both can be computed they agree.
    for n in (30, 40, EXACT_MAX_N):
        assert _normal_rank(n) == _rank(n)


def test_hodges_lehmann_interval_is_the_signed_rank_test_inverted():
    rng = np.random.default_rng(12)
    for shift in np.linspace(-1.2, 1.2, 41):  # continuous d: no zeros, no ties
        d = rng.normal(shift, 1, 20)
        _, low, high, _ = hodges_lehmann(d)
        assert (not low <= 0 <= high) == (signed_rank_test(d)[0] <= 0.05)


@pytest.mark.parametrize("n", [15, 60])  # the exact and the normal ranks
def test_hodges_lehmann_interval_covers_the_shift_at_95_percent(n):
    rng = np.random.default_rng(100 + n)
    shift = 0.3
    hits = 0
    for _ in range(400):
        low, high = hodges_lehmann(shift + rng.standard_t(5, n))[1:3]
        hits += low <= shift <= high
    assert 0.92 <= hits / 400 <= 0.98


def test_median_interval_is_the_order_statistic_interval_and_agrees_with_the_sign_test():
    rng = np.random.default_rng(9)
    d = rng.normal(size=25)
    median, low, high = median_interval(d)
    k = 8  # P(Bin(25, 1/2) <= 7) = 0.0216 <= 0.025 < P(Bin(25, 1/2) <= 8) = 0.0539
    assert (median, low, high) == (np.median(d), np.sort(d)[k - 1], np.sort(d)[25 - k])
    assert median_interval(d[:5])[1:] == (-np.inf, np.inf)
    for shift in np.linspace(-1, 1, 41):  # continuous d, no zeros: 0 outside the interval iff p < 0.05
        x = rng.normal(shift, 1, 20)
        _, lo, hi = median_interval(x)
        assert (not lo <= 0 <= hi) == (sign_test(x) < 0.05)


# ---------------------------------------------------------------- censoring and the paired comparison

EPS_MAX = 1.0
# image:        0    1    2    3    4    5    6
A = np.array([0.375, 1.0, 1.0, 0.0, 0.5, 1.0, 0.25])
CA = np.array([0, 1, 1, 0, 0, 1, 0], bool)
B = np.array([0.125, 1.0, 0.5, 0.0, 0.75, 1.0, 0.25])
CB = np.array([0, 1, 0, 0, 0, 0, 0], bool)
# (binary fractions, so equal |d| are equal floats)
# d:          +0.25, tie (both censored), +0.5 (A censored: a lower bound, sign known), tie (both misclassified
# clean), −0.25, tie (A censored against B broken exactly at eps_max), tie (equal)


def test_censoring_rules_and_counts():
    cmp = paired_eps_test(A, CA, B, CB, eps_max=EPS_MAX)
    assert (cmp.n, cmp.n_zero, cmp.n_a_larger, cmp.n_b_larger) == (7, 4, 2, 1)
    assert (cmp.n_censored_a, cmp.n_censored_b) == (3, 1)
    assert cmp.sign_p == pytest.approx(binomtest(2, 3, 0.5).pvalue) and cmp.p_value == cmp.sign_p
    d = np.array([0.25, 0, 0.5, 0, -0.25, 0, 0])
    np.testing.assert_array_equal(A - B, d)
    assert (cmp.wilcoxon_p, cmp.wilcoxon_exact) == (signed_rank_test(d)[0], False)  # |d| tie: normal
    assert cmp.wilcoxon_p == pytest.approx(wilcoxon(d, zero_method="wilcox", method="asymptotic").pvalue)
    assert cmp.wilcoxon_note.startswith("2 of 7 pairs have one model censored")
    assert cmp.hl_estimate == np.median(_walsh(d))
    assert (cmp.median_difference, cmp.median_low, cmp.median_high) == median_interval(A - B)
    assert (cmp.median_a, cmp.median_b, cmp.median_a_is_bound, cmp.median_b_is_bound) == (0.5, 0.5, False, False)
    # a censored ε* counts as eps_max whatever was recorded
    assert paired_eps_test(np.where(CA, 7.0, A), CA, B, CB, eps_max=EPS_MAX) == cmp
    # A and B swapped: the same test, mirrored
    swapped = paired_eps_test(B, CB, A, CA, eps_max=EPS_MAX)
    assert (swapped.n_a_larger, swapped.n_b_larger, swapped.sign_p) == (1, 2, cmp.sign_p)
    assert swapped.hl_estimate == pytest.approx(-cmp.hl_estimate)
    assert paired_eps_test(B, CB, B, CB, eps_max=EPS_MAX).wilcoxon_note == ""


def test_both_censored_is_a_tie_and_one_censored_keeps_its_sign():
    both = paired_eps_test([1.0, 1.0], [True, True], [1.0, 1.0], [True, True], eps_max=1.0)
    assert (both.n_zero, both.n_a_larger, both.n_b_larger, both.p_value, both.wilcoxon_p) == (2, 0, 0, 1.0, 1.0)
    one = paired_eps_test([1.0] * 8, [True] * 8, [0.3] * 8, [False] * 8, eps_max=1.0)
    assert (one.n_a_larger, one.n_b_larger) == (8, 0) and one.p_value == pytest.approx(2 / 2**8)
    clean_miss = paired_eps_test([0.0, 0.0], [False, False], [0.3, 0.0], [False, False], eps_max=1.0)
    assert (clean_miss.n, clean_miss.n_zero, clean_miss.n_b_larger) == (2, 1, 1)  # ε* = 0 stays in


def test_median_is_flagged_as_a_bound_once_half_is_censored():
    def flags(censored: list[bool]) -> bool:
        eps = np.where(censored, 1.0, 0.5)
        return paired_eps_test(eps, censored, eps, censored, eps_max=1.0).median_a_is_bound

    assert not flags([True, True, True, False, False, False, False])  # 3 of 7: the middle value is observed
    assert flags([True, True, True, True, False, False, False])  # 4 of 7: the middle value is censored
    assert flags([True, True, False, False])  # 2 of 4: the upper of the two middle values is censored
    assert not flags([True, False, False, False])


# ---------------------------------------------------------------- the robust curve and the worst case


def test_robust_curve_is_the_fraction_with_eps_star_above_eps():
    eps = np.array([0.0, 0.1, 0.3, 0.5, 0.5])  # a misclassified image, three broken, one censored
    censored = np.array([False, False, False, False, True])
    grid = np.array([0.0, 0.1, 0.2, 0.5])
    curve = robust_curve(eps, censored, grid, eps_max=0.5)
    np.testing.assert_array_equal(curve, [0.8, 0.6, 0.6, 0.2])  # at 0: the clean accuracy
    bands = robust_curve_interval(eps, censored, grid, eps_max=0.5)
    np.testing.assert_array_equal(bands.robust, curve)
    for k, lo, hi in zip((4, 3, 3, 1), bands.low, bands.high, strict=True):
        assert (lo, hi) == wilson_interval(k, 5)
    with pytest.raises(ValueError, match="eps_max") as error:
        robust_curve(eps, censored, [0.2, 0.6], eps_max=0.5)
    assert "\n" not in str(error.value)


def test_worst_case_takes_the_minimum_and_censoring_only_when_all_are_censored():
    eps_max = 1.0
    pgd = np.array([0.2, 1.0, 1.0, 0.0])
    fmn = np.array([0.1, 0.6, 1.0, 0.0])
    fab = np.array([0.3, 1.0, 1.0, 0.0])
    eps, censored = worst_case_eps(
        pgd,
        fmn,
        fab,
        censored=[[False, True, True, False], [False, False, True, False], [False, True, True, False]],
        eps_max=eps_max,
    )
    np.testing.assert_array_equal(eps, [0.1, 0.6, 1.0, 0.0])
    np.testing.assert_array_equal(censored, [False, False, True, False])
    # broken exactly at eps_max by one method: the minimum over the methods that broke it, not censored
    eps, censored = worst_case_eps([1.0], [1.0], censored=[[True], [False]], eps_max=eps_max)
    assert (eps[0], censored[0]) == (1.0, False)


def test_fixed_budget_bound_is_the_smallest_grid_budget_that_broke_the_image():
    grid = [0.1, 0.2, 0.4, 0.8]
    broken = np.array(  # one line per image here, one per budget for the function (transposed)
        [
            [True, False, False, False],
            [False, True, False, False],  # broken at 0.2, not at 0.4: the bound stays 0.2
            [False, False, False, False],
            [False, False, False, True],  # broken only above eps_max: censored
        ]
    )
    eps, censored = fixed_budget_eps(broken.T, grid, eps_max=0.5)
    np.testing.assert_array_equal(eps, [0.1, 0.2, 0.5, 0.5])
    np.testing.assert_array_equal(censored, [False, False, True, True])
    combined, all_censored = worst_case_eps(
        eps, np.array([0.3, 0.3, 0.3, 0.5]), censored=[censored, [False, False, False, True]], eps_max=0.5
    )
    np.testing.assert_array_equal(combined, [0.1, 0.2, 0.3, 0.5])
    np.testing.assert_array_equal(all_censored, [False, False, False, True])
    with pytest.raises(ValueError, match="len\\(eps_grid\\)"):
        fixed_budget_eps(broken.T[:2], grid, eps_max=0.5)


# ---------------------------------------------------------------- images needed


def _simulated(n: int, shift: float, seed: int) -> tuple[np.ndarray, ...]:
    """ε* of a baseline B and of A, more robust by ``shift`` on average, censored at 0.1; flags at ε = 0.03."""
    rng = np.random.default_rng(seed)
    b = rng.gamma(2.0, 0.015, n)
    a = b + rng.normal(shift, 0.01, n)
    a, b = np.clip(a, 0, None), np.clip(b, 0, None)
    ca, cb = a > 0.1, b > 0.1
    a, b = np.minimum(a, 0.1), np.minimum(b, 0.1)
    return a, ca, b, cb, a > 0.03, b > 0.03


def test_images_needed_is_deterministic_and_finds_a_strong_effect():
    a, ca, b, cb, ra, rb = _simulated(400, 0.01, seed=10)
    kwargs = {"eps_max": 0.1, "sizes": (80, 10, 20, 40, 160), "repeats": 200}
    first = images_needed(a, ca, b, cb, ra, rb, seed=3, **kwargs)
    assert first == images_needed(a, ca, b, cb, ra, rb, seed=3, **kwargs)
    assert first.sizes == (10, 20, 40, 80, 160)
    assert first.sign_power[-1] >= first.sign_power[0] and first.mcnemar_power[-1] >= first.mcnemar_power[0]
    assert first.sign_needed is not None and first.sign_power[first.sizes.index(first.sign_needed)] >= 0.8
    assert all(p < 0.8 for m, p in zip(first.sizes, first.sign_power, strict=True) if m < first.sign_needed)
    # on ε* the sign test uses every image; McNemar at one ε only those the ε separates
    assert first.mcnemar_needed is None or first.mcnemar_needed >= first.sign_needed
    none = images_needed(*_simulated(400, 0.0, seed=11), seed=3, **kwargs)
    assert none.sign_needed is None and max(none.sign_power) < 0.3  # no effect: power near α


# ---------------------------------------------------------------- bad input


BAD = {
    "lengths differ": ([0.1, 0.2], [False, False], [0.1], [False]),
    "negative ε*": ([-0.1, 0.2], [False, False], [0.1, 0.2], [False, False]),
    "NaN": ([np.nan, 0.2], [False, False], [0.1, 0.2], [False, False]),
    "above eps_max, not censored": ([0.1, 2.0], [False, False], [0.1, 0.2], [False, False]),
    "censored not boolean": ([0.1, 0.2], [0, 2], [0.1, 0.2], [False, False]),
    "flags of another length": ([0.1, 0.2], [False], [0.1, 0.2], [False, False]),
    "no images": ([], [], [], []),
}


@pytest.mark.parametrize("arrays", BAD.values(), ids=BAD.keys())
def test_bad_input_is_refused_in_one_line(arrays):
    calls = [
        lambda: paired_eps_test(*arrays, eps_max=1.0),
        lambda: images_needed(
            *arrays, [True] * len(arrays[0]), [True] * len(arrays[0]), eps_max=1.0, sizes=[1], seed=0
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError) as error:
            call()
        assert "\n" not in str(error.value)


def test_other_bad_arguments():
    eps, censored = np.array([0.1, 0.2]), np.array([False, False])
    for eps_max in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="eps_max"):
            paired_eps_test(eps, censored, eps, censored, eps_max=eps_max)
    for bad_eps, bad_censored, grid in [
        ([np.nan, 0.1], censored, [0.0]),
        ([-0.1, 0.1], censored, [0.0]),
        (eps, censored[:1], [0.0]),
        (eps, censored, [np.nan]),
    ]:
        with pytest.raises(ValueError):
            robust_curve(bad_eps, bad_censored, grid, eps_max=1.0)
    for test in (sign_test, signed_rank_test, hodges_lehmann, median_interval):
        for d in ([], [0.1, np.nan], [[0.1]]):
            with pytest.raises(ValueError, match="paired differences"):
                test(np.array(d))
    with pytest.raises(ValueError, match="sizes"):
        images_needed(eps, censored, eps, censored, censored, censored, eps_max=1.0, sizes=[3], seed=0)
    with pytest.raises(ValueError, match="one flag per image"):
        images_needed(eps, censored, eps, censored, censored[:1], censored, eps_max=1.0, sizes=[1], seed=0)
    with pytest.raises(ValueError, match="one censored array"):
        worst_case_eps(eps, eps, censored=[censored], eps_max=1.0)
    with pytest.raises(ValueError, match="differ in length"):
        worst_case_eps(eps, eps[:1], censored=[censored, censored[:1]], eps_max=1.0)


def test_robust_curve_counts_an_eps_star_at_the_budget_up_to_float32_rounding_as_broken():
    budget = 8 / 255
    measured = np.float64(np.float32(0.5) + np.float32(budget)) - np.float64(np.float32(0.5))  # a clamped float32 step
    eps_star = np.array([measured, budget * (1 + 1e-3), 0.0])
    curve = robust_curve(eps_star, np.zeros(3, dtype=bool), np.array([budget]), eps_max=1.0)
    assert measured != budget and curve.tolist() == [1 / 3]  # rounding: broken; 0.1 % above: robust
