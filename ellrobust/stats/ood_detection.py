"""Out-of-distribution detection: AUROC, AUPR, and DeLong's intervals and paired test for AUROC.

The convention is Hendrycks et al.'s for ImageNet-O (``calibration_tools.get_measures`` of
``hendrycks/natural-adv-examples``, which the Elliptical-Attention paper's code reuses): the
out-of-distribution images are the *positive* class, and the score is the negative maximum softmax
probability, so a higher score means "more likely out of distribution". Every function here takes
``scores`` (higher: more OOD) and ``ood`` flags (True: out of distribution).

* :func:`auroc` is the Mann–Whitney statistic: the probability that an OOD image scores above an
  in-distribution one, a tie counting one half. That is the area under the ROC curve drawn through
  the distinct thresholds with trapezoids, as scikit-learn's ``roc_auc_score`` draws it.
* :func:`average_precision` is scikit-learn's ``average_precision_score``: the precision at each
  distinct threshold weighted by the recall it adds (a step function, no interpolation), tied
  scores entering together at one threshold.
* :func:`delong` gives the variance of one or several AUROCs measured on the same images (DeLong,
  DeLong & Clarke-Pearson 1988, Biometrics 44:837) through the structural components, computed
  from midranks in O(n log n) (Sun & Xu 2014, IEEE Signal Process Lett 21:1389). For two models it
  gives the paired difference, its Wald interval and the two-sided z-test p; the interval and the
  test share one standard error, so they always agree on the side of 0.

Pure functions of numpy arrays, which refuse non-finite scores (a NaN has no rank); the normal
quantile is that of :mod:`ellrobust.stats.decisions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from ellrobust.stats.decisions import CONFIDENCE, z_value


def _check(scores: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, ood = np.asarray(scores, dtype=float), np.asarray(ood, dtype=bool)
    if scores.shape[-1] != ood.shape[0] or ood.ndim != 1:
        raise ValueError(f"{scores.shape[-1]} scores for {ood.shape[0]} flags")
    if not np.isfinite(scores).all():
        raise ValueError("a score is not finite (NaN logits?): the images have no order to measure")
    if ood.all() or not ood.any():
        raise ValueError("AUROC needs both out-of-distribution and in-distribution images")
    return scores, ood


def auroc(scores: np.ndarray, ood: np.ndarray) -> float:
    """P(score of an OOD image > score of an in-distribution image), ties counting ½ (as ``roc_auc_score``)."""
    scores, ood = _check(scores, ood)
    ranks = rankdata(scores)  # midranks: a tie gets the mean of the ranks it spans
    m, n = int(ood.sum()), int((~ood).sum())
    return float((ranks[ood].sum() - m * (m + 1) / 2) / (m * n))


def average_precision(scores: np.ndarray, ood: np.ndarray) -> float:
    """Σ (Rₖ − Rₖ₋₁) Pₖ over the distinct thresholds, highest first (as ``average_precision_score``)."""
    scores, ood = _check(scores, ood)
    order = np.argsort(-scores, kind="mergesort")
    ranked, positive = scores[order], ood[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # the last image of each distinct score
    true_pos = np.cumsum(positive)[last]
    precision = true_pos / (last + 1)
    recall = true_pos / true_pos[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class DeLong:
    """The AUROCs of k models on the same images and their DeLong covariance (k × k)."""

    aurocs: np.ndarray
    covariance: np.ndarray


def structural_components(scores: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's V₁₀ (one per OOD image) and V₀₁ (one per in-distribution image), for each row of ``scores``.

    V₁₀(xᵢ) is the fraction of in-distribution images that OOD image i outscores (ties ½) and V₀₁(yⱼ)
    the fraction of OOD images that outscore in-distribution image j; both average to the AUROC.
    From midranks (Sun & Xu 2014): with Tᶻ the midranks among all images, Tˣ among the OOD images
    and Tʸ among the in-distribution ones, V₁₀ = (Tᶻ − Tˣ)/n and V₀₁ = 1 − (Tᶻ − Tʸ)/m.
    """
    scores, ood = _check(np.atleast_2d(scores), ood)
    m, n = int(ood.sum()), int((~ood).sum())
    all_ranks = rankdata(scores, axis=1)
    v10 = (all_ranks[:, ood] - rankdata(scores[:, ood], axis=1)) / n
    v01 = 1.0 - (all_ranks[:, ~ood] - rankdata(scores[:, ~ood], axis=1)) / m
    return v10, v01


def delong(scores: np.ndarray, ood: np.ndarray) -> DeLong:
    """AUROCs of the rows of ``scores`` (k models × images) with their DeLong covariance S₁₀/m + S₀₁/n."""
    v10, v01 = structural_components(scores, ood)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(v10), len(v10)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(v01), len(v01)))
    return DeLong(v10.mean(axis=1), s10 / m + s01 / n)


def auroc_interval(scores: np.ndarray, ood: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """DeLong's Wald interval for one model's AUROC, clipped to [0, 1]."""
    result = delong(scores, ood)
    half = z_value(confidence) * math.sqrt(max(float(result.covariance[0, 0]), 0.0))
    centre = float(result.aurocs[0])
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AurocComparison:
    """AUROC(A) − AUROC(B) on the same images, its DeLong interval and two-sided p."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_auroc(
    scores_a: np.ndarray, scores_b: np.ndarray, ood: np.ndarray, confidence: float = CONFIDENCE
) -> AurocComparison:
    """DeLong's paired comparison of two models' AUROCs on the same images.

    Var(A − B) = Var A + Var B − 2 Cov(A, B) from the joint covariance; z = (A − B)/SE, and the
    interval is (A − B) ± z₍₁₋α/₂₎ SE. Models that score the images in the same order have no
    variance of their difference: the difference is then exactly 0, with the point interval and p = 1.
    """
    result = delong(np.vstack([scores_a, scores_b]), ood)
    cov = result.covariance
    difference = float(result.aurocs[0] - result.aurocs[1])
    se = math.sqrt(max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0))
    if se == 0.0:
        return AurocComparison(difference, difference, difference, 1.0 if difference == 0 else 0.0)
    half = z_value(confidence) * se
    p = float(2 * norm.sf(abs(difference) / se))
    return AurocComparison(difference, difference - half, difference + half, p)
