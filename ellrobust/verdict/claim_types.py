"""What the verdict returns: claims with their status, reason and the numbers behind them, as plain
frozen data (the words are :mod:`ellrobust.report.claim_sentences`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ellrobust.stats.decisions import (
    Favours,
)


class ClaimStatus(StrEnum):
    """What the evidence says about a claim."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive at this n"


class ClaimKind(StrEnum):
    """What a claim is about."""

    ATTACK = "attack"  # more robust under one attack setting
    ADAPTIVE = "adaptive"  # the advantage survives the adaptive attack (m_grad full)
    MCE = "mce"  # lower mCE
    COLLAPSE = "collapse"  # less collapsed tokens in the later half of the layers
    MINIMAL = "minimal"  # larger minimal budgets ε* (FMN, bisection)


class Reason(StrEnum):
    """Why a claim is inconclusive, or what its table lacks for it to be judged."""

    NOT_SIGNIFICANT = "not significant"  # no budget survives Holm, or the interval includes 0
    BOTH_DIRECTIONS = "both directions"  # budgets significant in either direction
    NOTHING_TO_SURVIVE = "nothing to survive"  # adaptive: no supported m_grad detach line
    NO_ADJUSTED_P = "no adjusted p"  # the table holds no mcnemar_p_adjusted
    NO_PAIRED_INTERVAL = "no paired interval"  # the table holds no interval of the paired difference
    NO_SUMMARY_ROWS = "no summary rows"  # collapse: no later-half summary rows
    TOO_FEW_IMAGES = "too few images"  # an interval-only claim on fewer than MIN_IMAGES images
    ZERO_WIDTH = "zero width"  # the interval has collapsed to a point


@dataclass(frozen=True)
class Setting:
    """One attack setting: the method and its params, the ``m_grad`` mode, the precision."""

    method: str
    params: str
    m_grad: str
    precision: str


@dataclass(frozen=True)
class Budget:
    """The paired comparison at one budget ε, elliptical − baseline (NaN where the table has no such row).

    Attributes:
        eps: The budget in [0, 1] pixel units.
        difference: Robust accuracy of the elliptical model minus the baseline's, as a fraction.
        ci_low: Lower end of the difference's 95 % score interval.
        ci_high: Upper end.
        p: The exact McNemar p.
        p_adjusted: The Holm-adjusted p.
        detectable: The smallest difference the run detects with 80 % power at Holm's α/m.
        n_required: Images a difference of the observed size would need (80 % power at α/m).
        favours: Whom the difference significantly favours (A: the elliptical model).
        family_size: m, the size of the pair's Holm family (NaN where the table does not record it: its
            power rows were then computed at α itself).
    """

    eps: float
    difference: float
    ci_low: float
    ci_high: float
    p: float
    p_adjusted: float
    detectable: float
    n_required: float
    favours: Favours
    family_size: float = math.nan


@dataclass(frozen=True)
class AttackEvidence:
    """The budgets of one attack setting."""

    setting: Setting
    budgets: tuple[Budget, ...]


@dataclass(frozen=True)
class Power:
    """What the budgets of an inconclusive attack line could have shown.

    Attributes:
        detectable: The smallest and largest detectable difference over the budgets; None without rows.
        largest: The budget with the largest observed difference; None when no budget moved.
        family_size: The Holm family size m the power rows were computed at (the largest over the
            budgets); None where the table does not record it (power at α itself).
    """

    detectable: tuple[float, float] | None
    largest: Budget | None
    family_size: int | None = None


@dataclass(frozen=True)
class Estimate:
    """A paired difference judged by its interval alone (mCE, collapse), elliptical − baseline.

    Attributes:
        values: Each model's own value (its mCE, its mean token cosine), for those the table holds.
        difference: The paired difference; NaN when the table holds none.
        ci_low: Lower end of its 95 % interval (paired bootstrap for mCE, paired t for collapse).
        ci_high: Upper end.
        images_needed: For an inconclusive interval: the images a difference of the observed size would
            need (the interval scaled as 1/√n); None when no difference was observed.
    """

    values: tuple[tuple[str, float], ...]
    difference: float
    ci_low: float
    ci_high: float
    images_needed: int | None = None


@dataclass(frozen=True)
class CellCount:
    """How many corruption × severity cells favour each model, out of how many."""

    elliptical: int
    baseline: int
    total: int


@dataclass(frozen=True)
class MinimalEvidence:
    """The paired comparison of minimal budgets ε* of one minimal-norm setting, elliptical − baseline.

    Attributes:
        setting: The method, its params, m_grad mode and precision.
        medians: Each model's median ε* (censored at eps_max), for those the table holds.
        difference: The Hodges–Lehmann estimate of ε*(elliptical) − ε*(baseline), in pixel units.
        ci_low: Lower end of its 95 % distribution-free interval.
        ci_high: Upper end.
        sign_p: The paired sign test's p.
        p_adjusted: Its Holm-adjusted p (the pair's family).
        wilcoxon_p: The signed-rank test's p (secondary).
        favours: Whom the comparison significantly favours (A: the elliptical model).
    """

    setting: Setting
    medians: tuple[tuple[str, float], ...]
    difference: float
    ci_low: float
    ci_high: float
    sign_p: float
    p_adjusted: float
    wilcoxon_p: float
    favours: Favours


@dataclass(frozen=True)
class Claim:
    """One claim of the verdict and the numbers behind its status.

    Attributes:
        kind: What the claim is about.
        models: (elliptical model, baseline model).
        status: Supported, contradicted or inconclusive at this n.
        n: The images behind the claim (None when the table does not say).
        reason: Why an inconclusive claim is inconclusive (None otherwise).
        attacks: The attack setting of an attack claim; for the adaptive claim, the m_grad full rows of
            each attack whose detach line is supported.
        power: For an inconclusive attack or adaptive claim, what the run could detect.
        estimate: The judged difference of an mCE or collapse claim.
        normalization: The mCE judged (``alexnet``, ``none``, ``baseline``, or as the table names it).
        cells: For an mCE claim, the corruption × severity cells surviving Holm (None without adjusted p).
        collapse: The collapse measurement of a collapse claim (``feature``, ``cls``, ``layers``).
        minimal: The paired ε* comparison of a minimal-budget claim.
    """

    kind: ClaimKind
    models: tuple[str, str]
    status: ClaimStatus
    n: int | None
    reason: Reason | None = None
    attacks: tuple[AttackEvidence, ...] = ()
    power: Power | None = None
    estimate: Estimate | None = None
    normalization: str = ""
    cells: CellCount | None = None
    collapse: Mapping[str, object] = field(default_factory=dict)
    minimal: MinimalEvidence | None = None
