"""What the verdict returns: one claim per pair and primary endpoint, with its status and the numbers
behind it, as plain frozen data (the words are :mod:`ellrobust.report.claim_sentences`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ellrobust.stats.claim_family import Adaptive, ClaimResult


class ClaimStatus(StrEnum):
    """What the evidence says about a claim."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive at this n"


@dataclass(frozen=True)
class Endpoint:
    """What a primary compares, as the run recorded it in the params of its rows.

    Attributes:
        claim: the claim it decides (``adversarial robustness``, ``corruptions``, ...).
        test: the test (``sign``, ``McNemar``, ``paired t``, ``DeLong``).
        what: the quantity compared per image, in words (``worst-case L∞ budget ε``).
        unit: how its estimate reads (``pixels``, ``fraction``, ``cosine``, ``auroc``, ``ratio``).
        higher_is_better: whether a positive difference favours the elliptical model.
    """

    claim: str
    test: str
    what: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Claim:
    """One claim of one elliptical × plain pair, judged by its primary under Holm across the pair's claims.

    Attributes:
        models: (elliptical, baseline).
        status: supported, contradicted or inconclusive at this n.
        endpoint: what its primary compares.
        result: the numbers (:func:`~ellrobust.stats.claim_family.judge_claims`): estimate and interval
            (for robustness: under ``m_grad detach``), p, Holm's p, n, the adaptive condition and the
            ``m_grad full`` primary.
        family_size: m, the number of the pair's claims in Holm's family.
        n_needed: the images a difference of the observed size would need for 80 % power at Holm's
            first-step level α/m; None once the claim is decided, NaN for an observed difference of 0.
    """

    models: tuple[str, str]
    status: ClaimStatus
    endpoint: Endpoint
    result: ClaimResult
    family_size: int
    n_needed: float | None = None

    @property
    def name(self) -> str:
        return self.endpoint.claim

    @property
    def adaptive(self) -> Adaptive:
        return self.result.adaptive
