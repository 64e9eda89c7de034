"""The decision rule every judgement and every table mark shares: α, Holm's direction, power, z-values.

A paired difference counts as *significant* only where two pieces of evidence agree: the exact McNemar
test after Holm's adjustment (p below :data:`ALPHA`) and the 95 % score interval (on the same side of
0). They almost always agree; where they do not, the weaker of the two decides, so no verdict and no
table mark rests on one alone. The verdict (:mod:`ellrobust.verdict`), the tables of the report and of
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


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def holm_direction(difference: float, low: float, high: float, p_adjusted: float) -> Favours:
    """Whom a paired difference A − B significantly favours, or :attr:`Favours.NEITHER`.

    Significant means: the Holm-adjusted p below :data:`ALPHA` *and* the 95 % interval on the same side
    of 0. Where a table holds no interval for the difference, the adjusted test decides alone; where it
    holds no adjusted p, nothing is significant.
    """
    if _missing(p_adjusted) or p_adjusted >= ALPHA or _missing(difference):
        return Favours.NEITHER
    if difference > 0 and (_missing(low) or low > 0):
        return Favours.A
    if difference < 0 and (_missing(high) or high < 0):
        return Favours.B
    return Favours.NEITHER


def interval_direction(low: float, high: float, *, lower_is_better: bool = False) -> Favours:
    """Whom the 95 % interval of a difference A − B favours: the side of 0 it lies on, if it excludes 0.

    For a metric where lower is better (mCE, token cosine) an interval below 0 favours A.
    """
    if _missing(low) or _missing(high) or low <= 0 <= high:
        return Favours.NEITHER
    above = low > 0
    return Favours.A if above != lower_is_better else Favours.B


def images_needed(
    difference: float, half_width: float, n: int, alpha: float = ALPHA, power: float = POWER
) -> int | None:
    """Images for a two-sided test at ``alpha`` to detect ``difference`` with ``power``, from an interval.

    A 95 % interval of half-width h on n images shrinks as 1/√n; a difference d is detected with the
    given power once h has shrunk to d · z_α / (z_α + z_power). None when no difference was observed
    (no number of images detects 0).
    """
    if difference == 0:
        return None
    z_alpha, z_power = power_quantiles(alpha, power)
    return math.ceil(n * ((z_alpha + z_power) / z_alpha) ** 2 * (half_width / abs(difference)) ** 2)
