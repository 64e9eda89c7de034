"""Statistics of per-image minimal adversarial budgets ε*: robust-accuracy curves, paired tests, images needed.

A minimal-norm attack (FMN, Pintor et al. 2021; or a bisection over ε) gives, per image and model, the
smallest budget ε* that breaks it: 0.0 for an image misclassified clean, and for an image the attack
never broke up to ``eps_max`` the value ``eps_max`` with a ``censored`` flag, meaning only ε* > eps_max.
An attack with budget ε succeeds on an image exactly when ε* ≤ ε, so the robust accuracy at ε is the
fraction with ε* > ε, and one run of the attack gives the whole curve.

Both models are attacked on the same images, so their budgets are compared pair by pair. The censoring
is at one known, common eps_max, which makes the truncated budget min(ε*, eps_max) fully observed: that
is the value every function here works with (a censored ε* stands at eps_max), and the rules follow.

* **Ties.** Both censored: d = ε*_A − ε*_B = 0, a tie (which of two unbroken images is more robust is
  unknown). Both misclassified clean: d = 0 too, a real tie. Ties are dropped by both tests.
* **One censored.** d is a bound (a lower bound when A is censored, an upper one when B is), but its
  sign is known whenever the other model's ε* < eps_max, and that is all the sign test uses.
* **Misclassified clean images stay in.** ε* = 0 is a real budget, the smallest possible; dropping
  those images would compare the models on a set that depends on the models.

The pieces:

* the robust-accuracy curve with pointwise Wilson bands (:func:`ellrobust.stats.inference.wilson_interval`),
  and the per-image worst case over several attacks;
* the paired **sign test** (Dixon & Mood 1946, J Am Stat Assoc 41:557): the exact binomial test of the
  signs of d, the p-value that enters Holm's family;
* the **Wilcoxon signed-rank test** (Wilcoxon 1945, Biometrics Bull 1:80), as a secondary statistic;
* the **Hodges–Lehmann** estimate of the paired difference (Hodges & Lehmann 1963, Ann Math Stat
  34:598), the median of the Walsh averages, with the distribution-free interval of the signed-rank test
  inverted (Tukey's construction; Hollander, Wolfe & Chicken 2014, Nonparametric Statistical Methods,
  3rd ed., ch. 3), and the median of d with its exact order-statistic interval, the sign test inverted;
* a subsampling estimate of how many images the sign test on ε* and McNemar's test at one fixed ε need.

Pure functions of numpy arrays (numpy and scipy only); the level, α and the power target are those of
:mod:`ellrobust.stats.decisions`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ellrobust.stats.decisions import ALPHA, CONFIDENCE, POWER, holm_level
from ellrobust.stats.inference import mcnemar_exact, wilson_interval
from ellrobust.stats.rank_tests import hodges_lehmann, median_interval, sign_test, signed_rank_test

#: A measured norm within this of a budget is inside it: an attack's ``x + δ`` clamped to [0, 1] and taken
#: back off ``x`` in float32 can land an ulp or so past the budget it clamped to (an L2 norm sums many such
#: roundings). So an image whose ε* is the budget up to that rounding counts as broken at that budget, as
#: the fixed-budget attack that found it says.
REL_TOL, ABS_TOL = 1e-5, 1e-6


def within(norms, eps):
    """Which measured norms are inside budget ``eps`` up to float32 rounding (numpy arrays or torch tensors)."""
    return norms <= eps * (1 + REL_TOL) + ABS_TOL


@dataclass(frozen=True)
class RobustCurve:
    """Robust accuracy (fraction of images with ε* > ε) at each ε, with pointwise Wilson bands."""

    eps: np.ndarray
    robust: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


@dataclass(frozen=True)
class EpsComparison:
    """Paired comparison of the minimal budgets ε* of models A and B on the same images (A − B).

    ``p_value`` is the sign test's, the one to put into Holm's family; see :func:`paired_eps_test`.
    """

    n: int  # pairs (images)
    n_zero: int  # ties, d = 0: both censored, both misclassified clean, or equal ε*
    n_a_larger: int  # images on which A needs the larger budget (A more robust)
    n_b_larger: int
    n_censored_a: int
    n_censored_b: int
    median_a: float
    median_b: float
    median_a_is_bound: bool  # half or more of A's ε* censored: median_a is only a lower bound
    median_b_is_bound: bool
    p_value: float  # = sign_p
    sign_p: float
    wilcoxon_p: float
    wilcoxon_exact: bool  # exact null distribution (else normal approximation with tie correction)
    wilcoxon_note: str  # why the signed-rank magnitudes are bounds, "" when no pair has one side censored
    hl_estimate: float  # Hodges–Lehmann: median of the Walsh averages of d
    hl_low: float
    hl_high: float
    hl_exact: bool
    median_difference: float  # median of d, with the sign test's order-statistic interval
    median_low: float
    median_high: float


@dataclass(frozen=True)
class ImagesNeeded:
    """Estimated power of two paired tests at each subsample size, and the smallest size reaching ``power``."""

    sizes: tuple[int, ...]
    sign_power: tuple[float, ...]  # sign test on ε*
    mcnemar_power: tuple[float, ...]  # exact McNemar on correctness at the fixed ε
    sign_needed: int | None  # smallest size in ``sizes`` with power >= ``power``; None if none reaches it
    mcnemar_needed: int | None
    power: float
    repeats: int


def _check_eps_max(eps_max: float) -> float:
    if not (math.isfinite(eps_max) and eps_max > 0):
        raise ValueError(f"eps_max must be a positive finite budget, got {eps_max}")
    return float(eps_max)


def _budgets(eps_star: np.ndarray, censored: np.ndarray, eps_max: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (ε* truncated at eps_max, censored flags) as float and bool vectors."""
    eps = np.asarray(eps_star, dtype=float)
    flags = np.asarray(censored)
    if eps.ndim != 1 or flags.shape != eps.shape:
        raise ValueError(
            f"{name}: ε* and censored must be 1-D arrays of one length per image, got shapes {eps.shape} and "
            f"{flags.shape}"
        )
    if eps.size == 0:
        raise ValueError(f"{name}: no images; pass at least one ε*")
    if flags.dtype != bool:
        if not np.isin(flags, (0, 1)).all():
            raise ValueError(f"{name}: censored must be boolean (or 0/1) flags")
        flags = flags.astype(bool)
    if not np.isfinite(eps).all():
        raise ValueError(f"{name}: ε* holds NaN or infinite values; record a censored image as eps_max, flagged")
    if (eps < 0).any():
        raise ValueError(f"{name}: ε* must be non-negative (0.0 for an image misclassified clean)")
    if (eps[~flags] > eps_max).any():
        raise ValueError(f"{name}: an ε* above eps_max = {eps_max} is not flagged censored; flag it or raise eps_max")
    return np.where(flags, eps_max, eps), flags


def _pairs(
    eps_a: np.ndarray, cens_a: np.ndarray, eps_b: np.ndarray, cens_b: np.ndarray, eps_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    eps_max = _check_eps_max(eps_max)
    a, ca = _budgets(eps_a, cens_a, eps_max, "model A")
    b, cb = _budgets(eps_b, cens_b, eps_max, "model B")
    if a.shape != b.shape:
        raise ValueError(f"paired ε* differ in length: {a.size} images for A, {b.size} for B; pass the same images")
    return a, ca, b, cb


def robust_curve(eps_star: np.ndarray, censored: np.ndarray, eps_grid: np.ndarray, *, eps_max: float) -> np.ndarray:
    """Fraction of images with ε* > ε at each ε of ``eps_grid``: the robust accuracy an attack at ε measures.

    ε* equal to ε up to float32 rounding (:func:`within`) is broken at ε. A censored image is robust
    at every ε ≤ eps_max. Beyond eps_max its ε* is unknown, so a grid past eps_max is refused rather
    than guessed. At ε = 0 the curve is the clean accuracy (misclassified images have ε* = 0).
    """
    eps_max = _check_eps_max(eps_max)
    eps, flags = _budgets(eps_star, censored, eps_max, "robust_curve")
    grid = np.asarray(eps_grid, dtype=float)
    if grid.ndim != 1 or not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("eps_grid must be a 1-D array of finite, non-negative budgets")
    if (grid > eps_max).any():
        raise ValueError(
            f"eps_grid reaches {grid.max()}, above eps_max = {eps_max}, where censored ε* are unknown; "
            "stop the grid at eps_max or rerun the attack with a larger eps_max"
        )
    return robust_flags(eps, flags, grid, eps_max=eps_max).mean(axis=1)


def robust_flags(eps_star: np.ndarray, censored: np.ndarray, eps_grid, *, eps_max: float) -> np.ndarray:
    """Per budget of ``eps_grid`` and image, whether the image is robust there (``(len(grid), n)`` bools).

    The per-image form of :func:`robust_curve` (its mean over images): robust at ε when censored or
    ε* > ε beyond float32 rounding (:func:`within`); a grid past ``eps_max`` is refused.
    """
    eps_max = _check_eps_max(eps_max)
    eps, flags = _budgets(eps_star, censored, eps_max, "robust_flags")
    grid = np.asarray(eps_grid, dtype=float).reshape(-1)
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("eps_grid must be a 1-D array of finite, non-negative budgets")
    if (grid > eps_max).any():
        raise ValueError(
            f"eps_grid reaches {grid.max()}, above eps_max = {eps_max}, where censored ε* are unknown; "
            "stop the grid at eps_max or rerun the attack with a larger eps_max"
        )
    return flags[None, :] | ~within(eps[None, :], grid[:, None])


def robust_curve_interval(
    eps_star: np.ndarray,
    censored: np.ndarray,
    eps_grid: np.ndarray,
    *,
    eps_max: float,
    confidence: float = CONFIDENCE,
) -> RobustCurve:
    """:func:`robust_curve` with a Wilson score interval at each ε.

    The bands are pointwise: each covers the robust accuracy at its own ε with the stated confidence,
    not the whole curve at once (the same as an attack run at each ε separately would give).
    """
    robust = robust_curve(eps_star, censored, eps_grid, eps_max=eps_max)
    n = int(np.asarray(eps_star).size)
    limits = np.array([wilson_interval(round(r * n), n, confidence) for r in robust]).reshape(-1, 2)
    return RobustCurve(np.asarray(eps_grid, dtype=float), robust, limits[:, 0], limits[:, 1], n)


def worst_case_eps(
    *eps_star: np.ndarray, censored: Sequence[np.ndarray], eps_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the smallest ε* over several attacks (methods), and whether every one was censored.

    An image counts as broken at ε if any method broke it at or below ε, so its worst-case budget is the
    minimum over the methods that broke it; it stays censored only if no method broke it (then ε* is
    eps_max). Pass the methods' ε* arrays positionally and their censored flags, in the same order, as
    ``censored``.
    """
    eps_max = _check_eps_max(eps_max)
    if not eps_star or len(eps_star) != len(censored):
        raise ValueError(f"pass one censored array per ε* array, got {len(eps_star)} ε* and {len(censored)} censored")
    checked = [_budgets(e, c, eps_max, f"method {i}") for i, (e, c) in enumerate(zip(eps_star, censored, strict=True))]
    if len({e.size for e, _ in checked}) > 1:
        raise ValueError("the methods' ε* differ in length; attack the same images with every method")
    eps = np.stack([e for e, _ in checked])
    flags = np.stack([c for _, c in checked])
    all_censored = flags.all(axis=0)
    broken = np.where(flags, np.inf, eps).min(axis=0)
    return np.where(all_censored, eps_max, broken), all_censored


def fixed_budget_eps(broken: np.ndarray, eps_grid, *, eps_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the smallest budget of ``eps_grid`` at which a fixed-budget attack broke it, and whether none did.

    A fixed-budget attack that broke an image at ε shows that its ε* is at most ε: the smallest such ε
    of the run's grid is that attack's bound on ε*, the form :func:`worst_case_eps` combines with a
    minimal-norm method's. An image the attack broke at no budget up to ``eps_max`` is censored there
    (recorded as ``eps_max``, like a minimal-norm method's). Budgets above ``eps_max`` are left out: a
    curve from these budgets ends at ``eps_max``. ``broken`` is ``(len(eps_grid), n)`` bools.
    """
    eps_max = _check_eps_max(eps_max)
    grid = np.asarray(eps_grid, dtype=float).reshape(-1)
    flags = np.asarray(broken, dtype=bool)
    if flags.ndim != 2 or flags.shape[0] != grid.size:
        raise ValueError(f"broken must be (len(eps_grid), n) = ({grid.size}, n) bools, got shape {flags.shape}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("eps_grid must be a 1-D array of finite, non-negative budgets")
    keep = grid <= eps_max
    stars = np.where(flags[keep], grid[keep, None], np.inf).min(axis=0, initial=np.inf)
    censored = np.isinf(stars)
    return np.where(censored, eps_max, stars), censored


def paired_eps_test(
    eps_a: np.ndarray,
    cens_a: np.ndarray,
    eps_b: np.ndarray,
    cens_b: np.ndarray,
    *,
    eps_max: float,
    confidence: float = CONFIDENCE,
) -> EpsComparison:
    """Compare the minimal budgets of models A and B on the same images, pair by pair (d = ε*_A − ε*_B).

    Censoring rule: a censored ε* is set to eps_max. When both are censored the pair is a tie (d = 0,
    dropped by both tests). When one is censored d is a bound, a lower bound if A is censored and an upper
    one if B is, and its sign is still known when the other model's ε* < eps_max; against an ε* of
    exactly eps_max it counts as a tie, which can only cost the sign test a pair, never add a wrong one.
    Images misclassified clean (ε* = 0) stay in: they are real, minimal budgets.

    * ``sign_p``, the **paired sign test** (exact binomial on the signs, zeros dropped), is the primary
      test and the one ``p_value`` holds for Holm's family: it uses only the signs, which the censoring
      leaves intact, so it is exactly valid under it;
    * ``wilcoxon_p``, the **Wilcoxon signed-rank test** (:func:`signed_rank_test`), is secondary: it also
      weighs the magnitudes |d|, which are bounds where one side is censored (``wilcoxon_note`` says how
      many), so its result depends on eps_max;
    * ``median_a`` / ``median_b``: the median ε* per model, censored values at eps_max; when half or
      more of a model's images are censored the middle value is censored and the median only a lower
      bound, flagged by ``median_a_is_bound`` / ``median_b_is_bound``;
    * the Hodges–Lehmann estimate of d with its exact (n ≤ :data:`EXACT_MAX_N`) or normal-approximation
      interval (:func:`hodges_lehmann`), and the median of d with its exact binomial interval
      (:func:`median_interval`), which agrees with the sign test.

    Both estimates describe the budgets truncated at eps_max, min(ε*, eps_max), which the censoring
    leaves fully observed.
    """
    a, ca, b, cb = _pairs(eps_a, cens_a, eps_b, cens_b, eps_max)
    d = a - b
    n = d.size
    one_sided = int((ca != cb).sum())
    note = (
        f"{one_sided} of {n} pairs have one model censored: their |d| are bounds (ε* truncated at eps_max)"
        if one_sided
        else ""
    )
    sign_p = sign_test(d)
    wilcoxon_p, exact = signed_rank_test(d)
    hl, hl_low, hl_high, hl_exact = hodges_lehmann(d, confidence)
    median_d, median_low, median_high = median_interval(d, confidence)
    middle = (n + 1) // 2  # censored values are the largest, so the middle one is censored from this count
    return EpsComparison(
        n=n,
        n_zero=int((d == 0).sum()),
        n_a_larger=int((d > 0).sum()),
        n_b_larger=int((d < 0).sum()),
        n_censored_a=int(ca.sum()),
        n_censored_b=int(cb.sum()),
        median_a=float(np.median(a)),
        median_b=float(np.median(b)),
        median_a_is_bound=bool(ca.sum() >= middle),
        median_b_is_bound=bool(cb.sum() >= middle),
        p_value=sign_p,
        sign_p=sign_p,
        wilcoxon_p=wilcoxon_p,
        wilcoxon_exact=exact,
        wilcoxon_note=note,
        hl_estimate=hl,
        hl_low=hl_low,
        hl_high=hl_high,
        hl_exact=hl_exact,
        median_difference=median_d,
        median_low=median_low,
        median_high=median_high,
    )


def images_needed(
    eps_a: np.ndarray,
    cens_a: np.ndarray,
    eps_b: np.ndarray,
    cens_b: np.ndarray,
    correct_a_at: np.ndarray,
    correct_b_at: np.ndarray,
    *,
    eps_max: float,
    sizes: Sequence[int],
    seed: int,
    repeats: int = 1000,
    alpha: float = ALPHA,
    power: float = POWER,
    family_size: int = 1,
) -> ImagesNeeded:
    """How many images the sign test on ε* and McNemar's test at one fixed ε need, by subsampling.

    For each size m in ``sizes``, ``repeats`` subsets of m of the paired images are drawn without
    replacement (``np.random.default_rng(seed)``), and the power of each test is the fraction of subsets
    on which it rejects (p below Holm's first-step level ``alpha`` / ``family_size``): (a) the sign test
    on ε*, censoring as in :func:`paired_eps_test`; (b) the exact McNemar test
    (:func:`ellrobust.stats.inference.mcnemar_exact`) on the correctness flags ``correct_a_at`` /
    ``correct_b_at`` of an attack at one fixed ε on the same images. The smallest m whose power
    reaches ``power`` is reported for each, or None.

    Both tests sit in the pair's Holm family of a run (clean, every attack × ε, every corruption cell,
    every minimal-norm method), where a p below α / family size is what is certain to survive; pass
    that size as ``family_size``, or the power stated is a single test's, which Holm does not give.

    The estimate is conditional on the images at hand: it treats them as the population, so it is
    sound for m well below n; as m approaches n the subsets overlap more and more, and at m = n every
    subset is the full sample, whose test either rejects or does not (power 0 or 1).
    """
    a, _, b, _ = _pairs(eps_a, cens_a, eps_b, cens_b, eps_max)
    right_a = np.asarray(correct_a_at)
    right_b = np.asarray(correct_b_at)
    if right_a.shape != a.shape or right_b.shape != a.shape:
        raise ValueError(
            f"correct_a_at and correct_b_at must hold one flag per image ({a.size}), got shapes {right_a.shape} and "
            f"{right_b.shape}"
        )
    if not (np.isin(right_a, (0, 1)).all() and np.isin(right_b, (0, 1)).all()):
        raise ValueError("correct_a_at and correct_b_at must be boolean (or 0/1) flags")
    right_a, right_b = right_a.astype(bool), right_b.astype(bool)
    ordered = sorted(int(m) for m in sizes)
    if not ordered or ordered[0] < 1 or ordered[-1] > a.size:
        raise ValueError(f"sizes must be subsample sizes from 1 to the {a.size} paired images, got {list(sizes)}")
    if repeats < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"need repeats >= 1 and alpha, power in (0, 1), got {repeats}, {alpha}, {power}")
    level = holm_level(family_size, alpha)
    # Both tests are binomial tests of two discordant counts: per image, +1 / −1 / 0 for each.
    sign = np.sign(a - b).astype(int)
    mcnemar = right_a.astype(int) - right_b.astype(int)
    p_of: dict[tuple[int, int], float] = {}  # the counts repeat across subsets; compute each p once

    def rejects(column: np.ndarray) -> bool:
        counts = (int((column > 0).sum()), int((column < 0).sum()))
        if counts not in p_of:
            p_of[counts] = mcnemar_exact(*counts)
        return p_of[counts] < level

    rng = np.random.default_rng(seed)
    sign_power, mcnemar_power = [], []
    for m in ordered:
        hits = np.zeros(2)
        for _ in range(repeats):
            subset = rng.choice(a.size, size=m, replace=False)
            hits += (rejects(sign[subset]), rejects(mcnemar[subset]))
        sign_power.append(float(hits[0] / repeats))
        mcnemar_power.append(float(hits[1] / repeats))

    def first(powers: list[float]) -> int | None:
        return next((m for m, p in zip(ordered, powers, strict=True) if p >= power), None)

    return ImagesNeeded(
        sizes=tuple(ordered),
        sign_power=tuple(sign_power),
        mcnemar_power=tuple(mcnemar_power),
        sign_needed=first(sign_power),
        mcnemar_needed=first(mcnemar_power),
        power=power,
        repeats=repeats,
    )
