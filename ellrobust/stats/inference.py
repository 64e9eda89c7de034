"""Statistics a reviewer accepts: intervals, paired tests, multiplicity and power.

Both models see exactly the same images, so every comparison here is paired: per image, each model is
right or wrong, and only the discordant images (one right, the other wrong) carry information about the
difference. The pieces:

* a single accuracy gets a Wilson score interval (Wilson 1927; Newcombe 1998, Stat Med 17:857), which
  never leaves [0, 1] and never collapses to zero width at 0 or n successes;
* a difference of paired accuracies gets Tango's score interval (Tango 1998, Stat Med 17:891): the
  score test of the difference is inverted, with the nuisance parameter at its restricted maximum
  likelihood estimate. It stays inside [-1, 1] and is never zero-width, not even when the models
  disagree on no image at all (where a Wald interval degenerates to a point);
* the exact McNemar test uses the discordant counts only; Holm's step-down procedure adjusts a family
  of its p-values;
* power: the smallest difference a run of n images could detect, and the n needed for a given
  difference (Connor 1987, Biometrics 43:207, after Miettinen), at the level the caller names (the
  rows use Holm's first-step level α/m of their family); the exact power of the exact test at a
  level checks that normal approximation;
* per-image continuous metrics get Student-t intervals, and statistics without a closed-form variance
  (mCE) a paired bootstrap over resampled images, never narrower than its small-sample t-interval.

Everything here is a pure function of numbers (numpy and scipy only); the default level, α, power and
the normal quantiles are those of :mod:`ellrobust.stats.decisions`, which every judgement shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom, binomtest
from scipy.stats import t as student_t

from ellrobust.stats.decisions import ALPHA, CONFIDENCE, POWER, power_quantiles, z_value


@dataclass(frozen=True)
class PairedComparison:
    """Accuracy of A minus accuracy of B, its score confidence interval, and McNemar's exact p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    a_only: int  # examples A gets right and B wrong
    b_only: int  # examples B gets right and A wrong


def accuracy(correct: np.ndarray) -> float:
    """Fraction of ones in a 0/1 (or boolean) vector; 0.0 for an empty one."""
    correct = np.asarray(correct, dtype=float)
    return float(correct.mean()) if correct.size else 0.0


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` examples."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("inf")


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``successes`` out of ``n``.

    Computed by scipy (``binomtest(...).proportion_ci(method="wilson")``) for whole successes. A
    fractional count (a mean of per-image fractions, such as corruption accuracy averaged over
    severities) gets the same closed-form score interval at its rate ``successes / n``. With ``n = 0``
    nothing is known, and the interval is the whole range (0.0, 1.0).
    """
    z = z_value(confidence)
    if n == 0:
        return 0.0, 1.0
    whole = round(successes)
    if abs(successes - whole) < 1e-6:
        ci = binomtest(int(whole), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
        return float(ci.low), float(ci.high)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _tango_score(delta: float, a_only: int, b_only: int, n: int) -> float:
    """Tango's score statistic for H0: p_A - p_B = ``delta`` (decreasing in ``delta``).

    In Tango's notation ``a_only`` is x12 and ``b_only`` x21, so p_A - p_B = p12 - p21. Under H0 the
    discordant probabilities are tied by p12 = p21 + delta, and p21 is replaced by its restricted maximum
    likelihood estimate, Tango's closed form: the non-negative root of 2n p^2 + B p + C = 0 with
    B = -x12 - x21 + (2n - x12 + x21) delta and C = -x21 delta (1 - delta).
    """
    b = -a_only - b_only + (2 * n - a_only + b_only) * delta
    c = -b_only * delta * (1 - delta)
    p21 = (math.sqrt(max(b * b - 8 * n * c, 0.0)) - b) / (4 * n)
    # Var(x12 - x21) / n under H0; zero only at delta = +-1, where the bound keeps the ratio finite.
    variance = max(2 * p21 + delta * (1 - delta), 1e-300)
    return (a_only - b_only - n * delta) / math.sqrt(n * variance)


def paired_difference_interval(a_only: int, b_only: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Tango's (1998) score interval for p_A - p_B from paired correctness on ``n`` images.

    Only the discordant counts matter: ``a_only`` images A gets right and B wrong, ``b_only`` the other
    way round; the point estimate is (a_only - b_only) / n. The limits are the two values of the
    difference at which Tango's score statistic equals -z and +z, found by bracketed root finding
    (the statistic is monotone in the difference, and zero at the point estimate).

    The interval lies in [-1, 1] and, for n > 0, always has positive width: with no discordant image
    it is +-z^2 / (n + z^2), e.g. about +-0.037 at n = 100. With ``n = 0`` it is (-1.0, 1.0).

    scipy has no paired-proportion score interval, hence this implementation.
    """
    z = z_value(confidence)
    if min(a_only, b_only) < 0 or a_only + b_only > n:
        raise ValueError(f"discordant counts {a_only} + {b_only} must be non-negative and at most n = {n}")
    if n == 0:
        return -1.0, 1.0
    estimate = (a_only - b_only) / n

    def score(delta: float) -> float:
        return _tango_score(delta, a_only, b_only, n)

    low = -1.0 if estimate == -1 else brentq(lambda d: score(d) - z, -1.0, estimate, xtol=1e-14)
    high = 1.0 if estimate == 1 else brentq(lambda d: score(d) + z, estimate, 1.0, xtol=1e-14)
    return float(low), float(high)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(binomtest(min(a_only, b_only), n, 0.5).pvalue)


def paired_comparison(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> PairedComparison:
    """Compare two per-example correctness vectors over the same examples (Tango interval, exact McNemar)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in length: {a.shape} vs {b.shape}")
    n = a.size
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    diff = (a_only - b_only) / n if n else 0.0
    low, high = paired_difference_interval(a_only, b_only, n, confidence)
    return PairedComparison(diff, low, high, mcnemar_exact(a_only, b_only), n, a_only, b_only)


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the order given.

    The i-th smallest of m p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)): monotone in the
    raw p-values and never above 1. Rejecting where the adjusted p is below alpha controls the
    family-wise error rate at alpha, under any dependence between the tests.

    A NaN p-value (a test that could not be run) stays NaN and does not count towards the family size
    m: a test that was never performed cannot produce a false rejection.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm_adjust takes a flat sequence of p-values, got shape {p.shape}")
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    order = valid[np.argsort(p[valid], kind="stable")]
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def holm_within(families: list[str], p_values: list[float]) -> tuple[list[float], list[int]]:
    """Holm's adjustment within each family (in the order given), and each test's family size (non-NaN p's)."""
    adjusted, sizes = [math.nan] * len(p_values), [0] * len(p_values)
    for name in dict.fromkeys(families):
        members = [i for i, family in enumerate(families) if family == name]
        values = [p_values[i] for i in members]
        size = int(np.count_nonzero(~np.isnan(values)))
        for i, q in zip(members, holm_adjust(values), strict=True):
            adjusted[i], sizes[i] = float(q), size
    return adjusted, sizes


def _mcnemar_n(difference: float, discordance_rate: float, z_alpha: float, z_power: float) -> float:
    """Connor's (1987) sample size for McNemar's test: [z_a sqrt(psi) + z_b sqrt(psi - d^2)]^2 / d^2."""
    root = z_alpha * math.sqrt(discordance_rate) + z_power * math.sqrt(max(discordance_rate - difference**2, 0.0))
    return root**2 / difference**2


def required_n(difference: float, discordance_rate: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Images needed for McNemar's test to detect ``difference`` with ``power`` at two-sided ``alpha``.

    Connor (1987) / Miettinen: n = [z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - delta^2)]^2 / delta^2,
    with psi the discordance rate (fraction of images on which the models disagree) and delta = p_A - p_B.
    Rounded up. None when the difference is 0 (no n suffices) or larger in magnitude than the
    discordance rate (impossible: |p_A - p_B| <= psi always).
    """
    z_alpha, z_power = power_quantiles(alpha, power)
    delta = abs(difference)
    if delta == 0 or delta > discordance_rate:
        return None
    return math.ceil(_mcnemar_n(delta, discordance_rate, z_alpha, z_power))


def detectable_difference(discordance_rate: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |p_A - p_B| that McNemar's test on ``n`` images detects with ``power`` at two-sided ``alpha``.

    Connor's (1987) formula (see :func:`required_n`) solved for the difference delta, with the
    discordance rate psi as the nuisance parameter. A true difference delta needs at least delta
    discordance (every discordant image favouring one model), so where the observed rate lies below a
    candidate delta the rate cannot hold under that alternative and max(observed psi, delta) is used
    instead. This also settles an observed rate of 0 (two models that agree on every image) without an
    arbitrary floor: the answer is then the smallest difference the run could detect at all, reached
    when all disagreement goes one way, about (z_{1-alpha/2} + z_power)^2 / n (7.8 / n at the defaults).

    The required n falls monotonically as delta grows, so the solution is unique; it is found by
    bracketed root finding. ``inf`` when even delta = 1 needs more than ``n`` images (n < z^2, under 4).
    """
    z_alpha, z_power = power_quantiles(alpha, power)
    if not 0 <= discordance_rate <= 1:
        raise ValueError(f"discordance_rate must lie in [0, 1], got {discordance_rate}")

    def excess(delta: float) -> float:
        return _mcnemar_n(delta, max(discordance_rate, delta), z_alpha, z_power) - n

    if excess(1.0) > 0:
        return math.inf
    return float(brentq(excess, 1e-12, 1.0, xtol=1e-15))


def mcnemar_power(difference: float, discordance_rate: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of the exact (conditional) McNemar test at two-sided level ``alpha`` on ``n`` images.

    The alternative: the models disagree on a fraction ``discordance_rate`` = psi = p10 + p01 of the
    images, and p_A - p_B = p10 - p01 = ``difference``. The number of discordant images D is then
    Binomial(n, psi); given D = d, the images A alone gets right are Binomial(d, p10 / psi), and the test
    (:func:`mcnemar_exact`) rejects where 2 · P(Binomial(d, 1/2) <= min count) < ``alpha``, i.e. where the
    smaller count is at most k_d, the largest k with P(Binomial(d, 1/2) <= k) < alpha / 2. The power sums
    the rejection probability of each d over D's distribution: no normal approximation anywhere, so
    it checks what Connor's formula (:func:`detectable_difference`, :func:`required_n`) promises.
    """
    delta, psi = abs(difference), discordance_rate
    if not 0 <= psi <= 1 or delta > psi or n < 0 or not 0 < alpha < 1:
        raise ValueError(
            f"need 0 <= |difference| <= discordance_rate <= 1, n >= 0 and alpha in (0, 1), got {difference}, "
            f"{discordance_rate}, {n}, {alpha}"
        )
    if psi == 0:
        return 0.0
    d = np.arange(n + 1)
    k = binom.ppf(alpha / 2, d, 0.5) - 1  # ppf: the smallest k with cdf >= alpha/2; one below it stays under
    k = np.where(binom.cdf(k + 1, d, 0.5) < alpha / 2, k + 1, k)  # guard ppf's floating-point edge
    k = np.where(binom.cdf(k, d, 0.5) >= alpha / 2, k - 1, k)
    share = (psi + delta) / (2 * psi)  # p10 / psi: the chance a discordant image favours A
    rejects = binom.cdf(k, d, share) + binom.sf(d - k - 1, d, share)
    return float(np.sum(binom.pmf(d, n, psi) * np.where(k >= 0, rejects, 0.0)))


def mean_interval(values: np.ndarray | Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student-t confidence interval: (mean, low, high).

    The t interval (n - 1 degrees of freedom) is the standard one for a mean over images, and for the
    mean of paired differences. One value gives (value, nan, nan): there is no spread to estimate, and a
    zero-width interval would claim a certainty the data cannot give. No values raise ValueError.
    """
    z_value(confidence)
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half = float(student_t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def bootstrap_replicates(
    statistics: Callable[[np.ndarray], float | np.ndarray], n: int, *, seed: int, resamples: int = 2000
) -> np.ndarray:
    """``statistics`` on ``resamples`` resamples of the ``n`` images drawn with replacement.

    ``statistics(indices)`` evaluates the quantity (e.g. an mCE difference between two models), or an
    array of several (each model's calibration error and their differences), on the images
    ``indices`` (an int array of length ``n``, repeats allowed). Resampling image indices, not
    per-model results, keeps the pairing: both models are always judged on the same resampled images,
    and several statistics of one draw stay paired with each other. The index draws come from
    ``np.random.default_rng(seed)`` in blocks, so the same seed gives the same replicates; the function
    is called once per resample. Returns ``(resamples,)`` for one value, ``(resamples, k)`` for k.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"the bootstrap needs n >= 1 and resamples >= 1, got n = {n}, resamples = {resamples}")
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, 2**22 // n))  # bound the index block at ~32 MiB
    values = []
    for start in range(0, resamples, block):
        rows = rng.integers(0, n, size=(min(block, resamples - start), n))
        values += [np.asarray(statistics(indices), dtype=float) for indices in rows]
    return np.stack(values)


def paired_bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    seed: int,
    resamples: int = 2000,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Paired bootstrap interval of ``statistic`` over images: the percentile interval, widened to at least
    the Student-t interval of the bootstrap's standard error.

    Why not the percentile interval alone: at small n it is far too narrow. It can never leave the
    range of the statistics the n images give (at n = 3 with per-image mCE differences -0.2, -0.4,
    -0.6 it is exactly (-0.6, -0.2), while a paired t-interval is (-0.90, +0.10)), its spread is that
    of a plug-in variance, short by the factor (n - 1)/n, and it uses normal rather than t quantiles;
    at n = 1 it has zero width. The t part, estimate ± t_{n-1} · sqrt(n / (n - 1)) · sd(replicates),
    corrects both: for a mean over images it is the paired t-interval (up to resampling noise), and
    it shrinks to the normal interval as n grows, where the percentile interval's skewness takes
    over. The union is conservative; at n = 1 the t part is undefined and the percentile interval
    stands, zero-width, which no claim accepts (:func:`ellrobust.stats.decisions.interval_direction`).
    The estimate is ``statistic`` on all images in order. Replicates that are NaN make the interval NaN.
    """
    z_value(confidence)
    values = bootstrap_replicates(statistic, n, seed=seed, resamples=resamples)
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    if n >= 2 and resamples >= 2:
        estimate = statistic(np.arange(n))
        half = student_t.ppf(0.5 + confidence / 2, n - 1) * math.sqrt(n / (n - 1)) * values.std(ddof=1)
        low, high = np.minimum(low, estimate - half), np.maximum(high, estimate + half)
    return float(low), float(high)


def bootstrap_intervals(
    statistics: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    seed: int,
    resamples: int = 2000,
    confidence: float = CONFIDENCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals of several statistics computed on the same resamples: (lows, highs).

    For a ``statistics(indices)`` that returns an array of values (each of several models' calibration
    errors and their differences): one draw of the images serves all of them, so they cost one
    resampling and stay paired with each other. Percentile only, without
    :func:`paired_bootstrap_interval`'s t widening: its callers (calibration) compute no interval
    below :data:`~ellrobust.stats.calibration.MIN_CALIBRATION_IMAGES` images, where the percentile
    interval's small-n failure does not arise, and support no verdict claim.
    """
    z_value(confidence)
    values = bootstrap_replicates(statistics, n, seed=seed, resamples=resamples)
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    return low, high
