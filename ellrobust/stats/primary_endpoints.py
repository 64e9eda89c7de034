"""Primary endpoints: the one pre-declared test of each claim, and the per-image worst-case budget it reads.

A claim (the elliptical model is more robust to attacks, to corruptions, less collapsed …) gets one
test fixed before the run; every other comparison of the run explains it and never changes its
status. This module computes each primary's numbers as a :class:`Primary` (test, estimate, interval,
p); :mod:`ellrobust.stats.claim_family` adjusts them by Holm across the claims and reads the statuses.

**Adversarial robustness.** The primary reads each image's *worst-case budget* over every white-box
method of the run (:func:`worst_case_budgets`): the minimal-norm ε* of each minimal-norm method, and
for each fixed-budget attack the smallest grid budget that broke the image; the smallest of them is
the image's budget. One method alone can overestimate ε* (FMN at 100 steps does on a few per cent of
images; :func:`overestimates` counts them against the run's fixed-budget attacks), and the minimum
over methods removes that. Images no method broke are censored at the largest budget of the run,
images misclassified clean count 0. Two models' budgets are then compared pair by pair
(:func:`budget_primary`): by the exact sign test (the default: it reads only the signs, which the
common censoring leaves intact) or by Wilcoxon's signed-rank test, which weighs the magnitudes of the
budgets truncated at the common censoring point. Both are exact (sign) or asymptotically exact
(signed-rank) under the null that the two models are exchangeable on each image, censoring included;
the simulation of :mod:`ellrobust.stats.primary_simulation` checks the level of both. The estimate is
Hodges–Lehmann's with its interval where a minimal-norm method made the budgets continuous, else the
median difference with the sign test's order-statistic interval (grid budgets tie too often for
Walsh averages to mean much). A suite may instead declare the RobustBench-style fixed-budget primary
(:func:`fixed_budget_primary`): worst-case robust accuracy at one stated ε, by exact McNemar.

**The other claims.** Accuracy on a shift dataset (McNemar, :func:`accuracy_primary`), mCE and later-half
token cosine (the paired t-test on per-image differences, :func:`mean_difference_primary`, with
:func:`mce_image_differences` writing the mCE difference as a mean over images), OOD AUROC (DeLong,
:func:`auroc_primary`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.stats import ttest_1samp

from ellrobust.stats.decisions import CONFIDENCE
from ellrobust.stats.inference import mean_interval, paired_comparison
from ellrobust.stats.minimal_budgets import (
    fixed_budget_eps,
    paired_eps_test,
    robust_flags,
    within,
    worst_case_eps,
)
from ellrobust.stats.ood_detection import paired_auroc


class PrimaryTest(StrEnum):
    """The test behind a primary endpoint (its value names it in tables and run.json)."""

    SIGN = "sign test"
    SIGNED_RANK = "Wilcoxon signed-rank"
    MCNEMAR = "McNemar"
    PAIRED_T = "paired t"
    DELONG = "DeLong"


#: The tests :func:`budget_primary` offers on worst-case budgets.
BUDGET_TESTS = (PrimaryTest.SIGN, PrimaryTest.SIGNED_RANK)


@dataclass(frozen=True)
class Primary:
    """One primary endpoint's numbers, A − B (A: the elliptical model).

    Attributes:
        test: The test whose p this is.
        estimate: The estimated difference A − B in the endpoint's unit (budget, fraction, mCE …).
        ci_low: Lower end of its 95 % interval (the interval that goes with ``test``).
        ci_high: Upper end.
        p: The test's two-sided p (NaN where it could not be computed).
        n: Paired images.
        higher_is_better: Whether a positive difference favours A (budgets, accuracy, AUROC) or B (mCE,
            token cosine).
    """

    test: PrimaryTest
    estimate: float
    ci_low: float
    ci_high: float
    p: float
    n: int
    higher_is_better: bool = True


@dataclass(frozen=True)
class MinimalNormBudgets:
    """A minimal-norm method's per-image ε* (0 where misclassified clean) and censored flags at ``eps_max``."""

    name: str
    eps_star: np.ndarray
    censored: np.ndarray
    eps_max: float


@dataclass(frozen=True)
class GridBudgets:
    """A fixed-budget attack's outcomes: ``broken[k, i]``, whether it broke image i at ``eps_grid[k]``."""

    name: str
    eps_grid: np.ndarray
    broken: np.ndarray


@dataclass(frozen=True)
class WorstCaseBudgets:
    """Per image, the smallest budget any method of the run broke it at, and whether none did.

    Attributes:
        budgets: The worst-case budget per image (0 where misclassified clean, ``eps_max`` where censored).
        censored: No method broke the image up to its largest budget.
        eps_max: The largest budget of the run, where censored images stand.
        continuous: Whether a minimal-norm method ran (budgets are then continuous, not grid values).
        methods: The methods combined, in the order given.
    """

    budgets: np.ndarray
    censored: np.ndarray
    eps_max: float
    continuous: bool
    methods: tuple[str, ...]


def _method_budgets(method: MinimalNormBudgets | GridBudgets) -> tuple[np.ndarray, np.ndarray, float]:
    """(ε* or smallest breaking grid budget, censored, the method's largest budget) of one method."""
    if isinstance(method, GridBudgets):
        grid = np.asarray(method.eps_grid, dtype=float).reshape(-1)
        if grid.size == 0:
            raise ValueError(f"{method.name}: an empty budget grid; pass the budgets the attack ran at")
        top = float(grid.max())
        stars, censored = fixed_budget_eps(method.broken, grid, eps_max=top)
        return stars, censored, top
    stars = np.asarray(method.eps_star, dtype=float)
    censored = np.asarray(method.censored, dtype=bool)
    if stars.shape != censored.shape or (stars[~censored] > method.eps_max).any():
        raise ValueError(
            f"{method.name}: ε* and censored must have one value per image, and an uncensored ε* must not "
            f"exceed eps_max = {method.eps_max}; flag images the method never broke as censored"
        )
    return np.where(censored, method.eps_max, stars), censored, float(method.eps_max)


def worst_case_budgets(
    methods: Sequence[MinimalNormBudgets | GridBudgets], clean_correct: np.ndarray
) -> WorstCaseBudgets:
    """Each image's worst-case budget over every method of one model's run (in one norm and m_grad mode).

    An image counts as broken at ε if any method broke it at or below ε, so its budget is the smallest
    over the methods that broke it (:func:`~ellrobust.stats.minimal_budgets.worst_case_eps`); a
    fixed-budget attack contributes the smallest grid budget that broke the image
    (:func:`~ellrobust.stats.minimal_budgets.fixed_budget_eps`). An image no method broke is censored
    at the largest budget any method reached: every method failed up to its own largest budget, so its
    ε* exceeds the largest of them. Images misclassified clean (``clean_correct`` False) count 0 and
    are never censored, whatever the methods recorded for them.
    """
    if not methods:
        raise ValueError("pass at least one method's budgets")
    clean = np.asarray(clean_correct, dtype=bool)
    parts = [_method_budgets(m) for m in methods]
    if any(stars.shape != clean.shape for stars, _, _ in parts):
        raise ValueError(f"every method must report the {clean.size} images clean_correct flags; attack the same ones")
    eps_max = max(top for _, _, top in parts)
    budgets, censored = worst_case_eps(
        *(stars for stars, _, _ in parts), censored=[flags for _, flags, _ in parts], eps_max=eps_max
    )
    return WorstCaseBudgets(
        budgets=np.where(clean, budgets, 0.0),
        censored=censored & clean,
        eps_max=eps_max,
        continuous=any(isinstance(m, MinimalNormBudgets) for m in methods),
        methods=tuple(m.name for m in methods),
    )


def _same_run(a: WorstCaseBudgets, b: WorstCaseBudgets) -> None:
    if a.budgets.shape != b.budgets.shape or not math.isclose(a.eps_max, b.eps_max):
        raise ValueError(
            f"the two models' worst-case budgets must cover the same images and censor at the same budget, got "
            f"{a.budgets.size} images at eps_max {a.eps_max} and {b.budgets.size} at {b.eps_max}; run both models "
            "through the same methods"
        )


def budget_primary(
    a: WorstCaseBudgets, b: WorstCaseBudgets, test: PrimaryTest = PrimaryTest.SIGN, confidence: float = CONFIDENCE
) -> Primary:
    """The primary of adversarial robustness: a paired test of two models' worst-case budgets (A − B).

    ``test`` is the exact sign test or Wilcoxon's signed-rank test on d = min(ε*_A, eps_max) −
    min(ε*_B, eps_max), zeros (both censored, both misclassified clean, equal grid budgets) dropped, as
    :func:`~ellrobust.stats.minimal_budgets.paired_eps_test` computes them. Continuous budgets get the
    Hodges–Lehmann estimate and interval, grid budgets the median difference and its order-statistic
    interval.
    """
    if test not in BUDGET_TESTS:
        raise ValueError(f"the budget primary is one of {', '.join(BUDGET_TESTS)}, got {test!r}")
    _same_run(a, b)
    found = paired_eps_test(a.budgets, a.censored, b.budgets, b.censored, eps_max=a.eps_max, confidence=confidence)
    p = found.sign_p if test is PrimaryTest.SIGN else found.wilcoxon_p
    if a.continuous or b.continuous:
        estimate, low, high = found.hl_estimate, found.hl_low, found.hl_high
    else:
        estimate, low, high = found.median_difference, found.median_low, found.median_high
    return Primary(test, estimate, low, high, p, found.n)


def accuracy_primary(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = CONFIDENCE) -> Primary:
    """Paired accuracies A − B on the same images: exact McNemar p and Tango's score interval."""
    found = paired_comparison(correct_a, correct_b, confidence)
    return Primary(PrimaryTest.MCNEMAR, found.difference, found.ci_low, found.ci_high, found.p_value, found.n)


def fixed_budget_primary(
    a: WorstCaseBudgets, b: WorstCaseBudgets, eps: float, confidence: float = CONFIDENCE
) -> Primary:
    """The RobustBench-style primary: worst-case robust accuracy A − B at one stated ``eps``, by McNemar.

    An image is robust at ``eps`` when no method of the run broke it at or below ``eps`` (its worst-case
    budget exceeds it beyond float32 rounding). ``eps`` must not exceed the censoring budget.
    """
    _same_run(a, b)
    robust_a = robust_flags(a.budgets, a.censored, [eps], eps_max=a.eps_max)[0]
    robust_b = robust_flags(b.budgets, b.censored, [eps], eps_max=b.eps_max)[0]
    return accuracy_primary(robust_a, robust_b, confidence)


def mean_difference_primary(
    differences: np.ndarray, *, higher_is_better: bool, confidence: float = CONFIDENCE
) -> Primary:
    """Mean of per-image differences A − B: the paired t-test and its Student-t interval (mCE, token cosine).

    The p and the interval are the same t statistic, so they agree on the side of 0. Fewer than two
    images, or differences without spread, leave p NaN (no test can be run).
    """
    d = np.asarray(differences, dtype=float).ravel()
    mean, low, high = mean_interval(d, confidence)
    p = float(ttest_1samp(d, 0.0).pvalue) if d.size >= 2 and np.ptp(d) > 0 else math.nan
    return Primary(PrimaryTest.PAIRED_T, mean, low, high, p, int(d.size), higher_is_better)


def mce_image_differences(wrong_a: np.ndarray, wrong_b: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Per image, its share of mCE(A) − mCE(B): their mean over images is the mCE difference.

    ``wrong_*`` are (corruptions, severities, images) 0/1 errors; ``reference`` the (corruptions,
    severities) errors of the normalising model (AlexNet's,
    :data:`~ellrobust.stats.corruption_error.ALEXNET_ERRORS`), or None for the unnormalised mCE.
    CE_c = Σ_s E[c][s] / Σ_s E_ref[c][s] (or the mean over severities) is linear in the per-image
    errors, so mCE = mean_c CE_c is too, and a paired t-test on these values tests the mCE difference.
    (A baseline model's errors as the reference make mCE a ratio of two random errors, not linear.)
    """
    a = np.asarray(wrong_a, dtype=float)
    b = np.asarray(wrong_b, dtype=float)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(
            f"wrong_a and wrong_b must both be (corruptions, severities, images), got {a.shape} and {b.shape}"
        )
    if reference is None:
        weights = np.full(a.shape[0], 1.0 / a.shape[1])
    else:
        ref = np.asarray(reference, dtype=float)
        if ref.shape != a.shape[:2] or (ref.sum(axis=1) <= 0).any():
            raise ValueError(f"reference must be (corruptions, severities) = {a.shape[:2]} errors with a positive sum")
        weights = 1.0 / ref.sum(axis=1)
    return np.einsum("c,csi->i", weights, a - b) / a.shape[0]


def auroc_primary(
    scores_a: np.ndarray, scores_b: np.ndarray, ood: np.ndarray, confidence: float = CONFIDENCE
) -> Primary:
    """OOD detection AUROC(A) − AUROC(B) on the same images, by DeLong's paired test."""
    found = paired_auroc(scores_a, scores_b, ood, confidence)
    n = int(np.asarray(ood).size)
    return Primary(PrimaryTest.DELONG, found.difference, found.ci_low, found.ci_high, found.p_value, n)


@dataclass(frozen=True)
class Overestimate:
    """How many images a minimal-norm method overestimates against the run's fixed-budget attacks.

    Attributes:
        method: The minimal-norm method.
        n: Images.
        over: Images with ε* above a grid budget that broke them (beyond float32 rounding).
        over_by_margin: Those whose ε* exceeds that budget by more than ``margin`` (known for sure:
            a censored ε* counts only when eps_max already exceeds the budget by the margin).
        margin: The relative margin (0.25: ε* more than 25 % above the budget).
    """

    method: str
    n: int
    over: int
    over_by_margin: int
    margin: float


def overestimates(method: MinimalNormBudgets, attacks: Sequence[GridBudgets], *, margin: float = 0.25) -> Overestimate:
    """Count the images where ``method``'s ε* exceeds the smallest budget a fixed-budget attack broke them at.

    Such an ε* is not minimal: an attack of the same run broke the image at a smaller budget. A censored
    ε* (never broken up to eps_max) counts where an attack broke the image at a budget up to eps_max.
    Only budgets up to the method's eps_max are compared. Attacks in the same norm and m_grad mode.
    """
    if not attacks:
        raise ValueError(f"{method.name}: pass the run's fixed-budget attacks to compare its ε* against")
    stars, censored, eps_max = _method_budgets(method)
    bounds = [fixed_budget_eps(a.broken, a.eps_grid, eps_max=eps_max) for a in attacks]
    if any(bound.shape != stars.shape for bound, _ in bounds):
        raise ValueError(f"{method.name}: every attack must report the method's {stars.size} images")
    bound = np.min([np.where(never, np.inf, b) for b, never in bounds], axis=0)
    broken = np.isfinite(bound)
    over = broken & (censored | ~within(stars, bound))
    by_margin = over & ~within(stars, bound * (1 + margin))
    return Overestimate(method.name, int(stars.size), int(over.sum()), int(by_margin.sum()), margin)
