"""The decision rule every judgement and every table mark shares: α, Holm's direction, power, z-values.

A paired difference counts as *significant* only where two pieces of evidence agree: the exact McNemar
test after Holm's adjustment (p below :data:`ALPHA`) and the 95 % score interval (on the same side of
0). They almost always agree; where they do not, the weaker of the two decides, so no verdict and no
table mark rests on one alone. An interval of zero width never counts (it claims a certainty no
resampling of the images can give), nor does an interval over fewer than :data:`MIN_IMAGES` images.

Power is stated at the level the verdict applies: a comparison of a pair's Holm family of m tests is
rejected for certain once its p is below Holm's first-step level α/m (:func:`holm_level`), so the
power at α/m is what the run can promise for any one comparison of the family (Holm's later steps
can only add rejections). The verdict (:mod:`ellrobust.verdict.rules`), the tables of the report and of
the terminal, and every statement of power read this one module, so they cannot disagree about what
"significant" means or at which level.

Pure functions and constants; the normal quantiles come from scipy, computed where they are asked for,
so no hard-coded copy of a z-value can drift from the level it stands for.
"""

from __future__ import annotations

import math
from enum import IntEnum

from scipy.stats import norm

#: Significance level of every test ellrobust calls significant (after Holm's adjustment).
ALPHA = 0.05
#: Level of every interval: an interval that excludes 0 agrees with a two-sided test at :data:`ALPHA`.
CONFIDENCE = 1 - ALPHA
#: Power at which detectable differences and required sample sizes are stated.
POWER = 0.8


def min_images(alpha: float = ALPHA) -> int:
    """The fewest paired images on which any distribution-free test of a paired difference can reach ``alpha``.

    With n images the most extreme outcome, every image favouring one model, has a two-sided sign-test
    p of 2 · 2^-n; below the n where that falls under ``alpha`` (6 at α = 0.05: 2/64 ≈ 0.031, while
    2/32 ≈ 0.063) no test that does not assume a distribution for the per-image differences can be
    significant, and an interval that nonetheless excludes 0 rests on that assumption alone (a t
    interval on normality, a bootstrap on the handful of values it resamples).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return math.floor(math.log2(2 / alpha)) + 1


#: Below this many images an interval alone (mCE, collapse) never supports or contradicts a claim.
MIN_IMAGES = min_images()


class Favours(IntEnum):
    """Which model of a paired comparison A − B the evidence favours (the sign of a significant difference)."""

    B = -1
    NEITHER = 0
    A = 1


def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile of a confidence level in (0, 1) (1.96 at 95 %)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    return float(norm.ppf(0.5 + confidence / 2))


def power_quantiles(alpha: float = ALPHA, power: float = POWER) -> tuple[float, float]:
    """(z of a two-sided test at ``alpha``, z of ``power``): the two quantiles of every sample-size formula."""
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha} and {power}")
    return z_value(1 - alpha), float(norm.ppf(power))


def holm_level(family_size: int, alpha: float = ALPHA) -> float:
    """Holm's first-step level α/m for a family of ``family_size`` tests: the level power is stated at."""
    if family_size < 1:
        raise ValueError(f"a Holm family holds at least one test, got {family_size}")
    return alpha / family_size


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def zero_width(low: float, high: float) -> bool:
    """Whether an interval (both ends present) has collapsed to a point.

    Up to floating-point noise: resampled means of equal values differ in their last bits (a constant
    -0.2 comes back as -0.20000000000000007 … -0.19999999999999984), which is no width at all.
    """
    return not (_missing(low) or _missing(high)) and math.isclose(low, high, rel_tol=1e-9, abs_tol=1e-12)


def holm_direction(difference: float, low: float, high: float, p_adjusted: float) -> Favours:
    """Whom a paired difference A − B significantly favours, or :attr:`Favours.NEITHER`.

    Significant means: the Holm-adjusted p below :data:`ALPHA` *and* the 95 % interval on the same side
    of 0. Where a table holds no interval for the difference, the adjusted test decides alone; where it
    holds no adjusted p, nothing is significant. A zero-width interval is no evidence of a side.
    """
    if _missing(p_adjusted) or p_adjusted >= ALPHA or _missing(difference) or zero_width(low, high):
        return Favours.NEITHER
    if difference > 0 and (_missing(low) or low > 0):
        return Favours.A
    if difference < 0 and (_missing(high) or high < 0):
        return Favours.B
    return Favours.NEITHER


def interval_direction(low: float, high: float, *, lower_is_better: bool = False, n: int | None = None) -> Favours:
    """Whom the 95 % interval of a difference A − B favours: the side of 0 it lies on, if it excludes 0.

    For a metric where lower is better (mCE, token cosine) an interval below 0 favours A. Neither is
    favoured by a zero-width interval (n = 1, or per-image differences that are all equal), nor by one
    over ``n`` < :data:`MIN_IMAGES` images, whatever its ends.
    """
    if _missing(low) or _missing(high) or low <= 0 <= high or zero_width(low, high):
        return Favours.NEITHER
    if n is not None and n < MIN_IMAGES:
        return Favours.NEITHER
    above = low > 0
    return Favours.A if above != lower_is_better else Favours.B


def images_needed(
    difference: float, half_width: float, n: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Images for a two-sided test at ``alpha`` to detect ``difference`` with ``power``, from an interval.

    For the claims judged by an interval alone (mCE, collapse), which stand outside any Holm family, so
    the default level is α itself. A 95 % interval of half-width h on n images shrinks as 1/√n; a
    difference d is detected with the given power once h has shrunk to d · z_α / (z_α + z_power). None
    when no difference was observed (no number of images detects 0).
    """
    if difference == 0:
        return None
    z_alpha, z_power = power_quantiles(alpha, power)
    return math.ceil(n * ((z_alpha + z_power) / z_alpha) ** 2 * (half_width / abs(difference)) ** 2)
