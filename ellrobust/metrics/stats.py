"""Paired statistics for two models evaluated on the same examples.

Both models see exactly the same images, so the comparison is paired: per example, each model is
right or wrong. The difference of accuracies gets a Wald interval on the mean paired difference, and
the exact McNemar test uses only the discordant pairs (one right, the other wrong).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm


@dataclass(frozen=True)
class PairedComparison:
    """Accuracy of A minus accuracy of B, its 95 % confidence interval, and McNemar's exact p-value."""

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


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (1.0 when there are none)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(binomtest(min(a_only, b_only), n, 0.5).pvalue)


def paired_comparison(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> PairedComparison:
    """Compare two per-example correctness vectors over the same examples."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in length: {a.shape} vs {b.shape}")
    n = a.size
    d = a.astype(float) - b.astype(float)
    diff = float(d.mean()) if n else 0.0
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    z = float(norm.ppf(0.5 + confidence / 2))
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    return PairedComparison(diff, diff - z * se, diff + z * se, mcnemar_exact(a_only, b_only), n, a_only, b_only)
