"""Holm across the claims' primaries, the adaptive condition, and one typed result per claim.

Each claim of a run has one primary endpoint (:mod:`ellrobust.stats.primary_endpoints`). Their p
form one Holm family of the claims present (m ≤ 5 here; a claim the run did not measure is *not run*
and does not count), so the family-wise error of reading any claim *supported* or *contradicted* when
the models do not differ stays at α however many secondary comparisons the run also makes.

**The adaptive condition** is an intersection-union test (Berger 1982): a robustness claim's null
is the union "no difference under ``m_grad detach`` *or* none under ``m_grad full``", rejected only
when both primaries reject in the same direction. Its p is the larger of the two, a valid p for that
union, and it enters Holm in place of the detach primary's: no extra α is spent. Without the full
primary the claim is judged on its primary alone and says the adaptive check was not run.

A claim reads *supported* when its Holm-adjusted p is below α **and** its interval (both intervals,
under the adaptive condition) lies on the elliptical model's side of 0, *contradicted* in the mirror
case, *inconclusive* otherwise; the interval rules (zero width, fewer than
:data:`~ellrobust.stats.decisions.MIN_IMAGES` images) are :func:`~ellrobust.stats.decisions.interval_direction`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ellrobust.stats.decisions import ALPHA, Favours, interval_direction
from ellrobust.stats.inference import holm_adjust
from ellrobust.stats.primary_endpoints import Primary, PrimaryTest


class ClaimName(StrEnum):
    """The paper's claims, one primary each, in the order a verdict lists them."""

    ROBUSTNESS = "adversarial robustness"
    PATCH_ROBUSTNESS = "patch robustness"
    CORRUPTIONS = "corruptions"
    COLLAPSE = "collapse"
    NATURAL_SHIFT = "natural shift"
    OOD = "OOD detection"


class PrimaryStatus(StrEnum):
    """What a claim's primary says."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive at this n"
    NOT_RUN = "not run"


class StatusReason(StrEnum):
    """Why a claim has its status (the words are the renderers')."""

    SIGNIFICANT = "significant after Holm, interval agrees"
    NOT_SIGNIFICANT = "not significant after Holm"
    INTERVAL_DISAGREES = "interval includes 0 or is degenerate"
    MODES_DISAGREE = "m_grad detach and full point different ways"
    NO_P = "no p-value"
    NOT_MEASURED = "not measured in this run"


#: The claims decided under the adaptive condition: both robustness claims, the elliptical model attacked both ways.
ADAPTIVE_CLAIMS = (ClaimName.ROBUSTNESS, ClaimName.PATCH_ROBUSTNESS)


class Adaptive(StrEnum):
    """The adaptive condition of a robustness claim (:data:`ADAPTIVE_CLAIMS`)."""

    PASSED = "passed"  # the full primary confirms the detach one: the claim is decided
    FAILED = "failed"  # the detach primary alone would decide the claim; the full one does not confirm it
    NOT_REACHED = "not reached"  # the detach primary alone decides nothing: the condition changes nothing
    NOT_RUN = "not run"  # no m_grad full primary (run without --m-grad both)
    NOT_APPLICABLE = "not applicable"  # a claim other than the robustness ones


@dataclass(frozen=True)
class ClaimResult:
    """One claim's verdict line: its primary's numbers, the Holm-adjusted p, the status and why.

    ``p`` is the p that entered Holm (the intersection-union p, max(detach, full), under the adaptive
    condition); ``primary`` and ``adaptive_primary`` keep each mode's own numbers.
    """

    claim: str
    test: PrimaryTest | None
    estimate: float
    ci_low: float
    ci_high: float
    p: float
    p_holm: float
    n: int
    status: PrimaryStatus
    reason: StatusReason
    adaptive: Adaptive
    primary: Primary | None = None
    adaptive_primary: Primary | None = None


def interval_side(primary: Primary) -> Favours:
    """Whom a primary's interval favours (A: the elliptical model), with its direction of better."""
    return interval_direction(
        primary.ci_low, primary.ci_high, lower_is_better=not primary.higher_is_better, n=primary.n
    )


def status_of(p_holm: float, sides: tuple[Favours, ...]) -> tuple[PrimaryStatus, StatusReason]:
    """The status from a Holm-adjusted p and the side of each interval the claim requires.

    The decision rule, shared by :func:`judge_claims` and the simulations that check its level.
    """
    if math.isnan(p_holm):
        return PrimaryStatus.INCONCLUSIVE, StatusReason.NO_P
    if p_holm >= ALPHA:
        return PrimaryStatus.INCONCLUSIVE, StatusReason.NOT_SIGNIFICANT
    distinct = set(sides)
    if Favours.NEITHER in distinct:
        return PrimaryStatus.INCONCLUSIVE, StatusReason.INTERVAL_DISAGREES
    if len(distinct) > 1:
        return PrimaryStatus.INCONCLUSIVE, StatusReason.MODES_DISAGREE
    status = PrimaryStatus.SUPPORTED if sides[0] is Favours.A else PrimaryStatus.CONTRADICTED
    return status, StatusReason.SIGNIFICANT


def union_p(p_values: tuple[float, ...]) -> float:
    """The intersection-union p: the largest of the components' p (NaN if any is NaN)."""
    return math.nan if any(math.isnan(p) for p in p_values) else max(p_values)


def judge_claims(
    primaries: Mapping[str, Primary | None], *, adaptive: Mapping[str, Primary] | None = None
) -> tuple[ClaimResult, ...]:
    """Judge each claim by its primary, Holm-adjusted across the claims that were run.

    Args:
        primaries: Claim name → its primary (the ``m_grad detach`` one for a robustness claim), or None
            where the run did not measure the claim (*not run*, left out of Holm's family).
        adaptive: Robustness claim → its primary under ``m_grad full`` (none without ``--m-grad both``).

    Returns:
        One result per claim, in the order given.

    Raises:
        ValueError: an adaptive primary for a claim that is not a robustness claim, or without its own primary.
    """
    adaptive = dict(adaptive or {})
    for name in adaptive:
        if name not in ADAPTIVE_CLAIMS or primaries.get(name) is None:
            raise ValueError(f"an m_grad full primary needs a robustness claim's own primary, got {name!r}")
    run = {name: primary for name, primary in primaries.items() if primary is not None}
    parts = {name: (primary, *((adaptive[name],) if name in adaptive else ())) for name, primary in run.items()}
    p = {name: union_p(tuple(part.p for part in both)) for name, both in parts.items()}
    adjusted = dict(zip(p, (float(q) for q in holm_adjust(list(p.values()))), strict=True))
    out = []
    for name, primary in primaries.items():
        if name not in ADAPTIVE_CLAIMS:
            state = Adaptive.NOT_APPLICABLE
        elif name not in adaptive:
            state = Adaptive.NOT_RUN
        if primary is None:
            nan = math.nan
            status, reason = PrimaryStatus.NOT_RUN, StatusReason.NOT_MEASURED
            out.append(ClaimResult(name, None, nan, nan, nan, nan, nan, 0, status, reason, state))
            continue
        status, reason = status_of(adjusted[name], tuple(interval_side(part) for part in parts[name]))
        if name in adaptive:
            state = _adaptive_state(status, _detach_alone(p, name, primary))
        out.append(
            ClaimResult(
                name, primary.test, primary.estimate, primary.ci_low, primary.ci_high, p[name], adjusted[name],
                primary.n, status, reason, state, primary, adaptive.get(name),
            )
        )  # fmt: skip
    return tuple(out)


def _detach_alone(p: dict[str, float], name: str, primary: Primary) -> PrimaryStatus:
    """The status the robustness claim would have on its detach primary alone (the same Holm family)."""
    alone = {**p, name: primary.p}
    adjusted = dict(zip(alone, holm_adjust(list(alone.values())), strict=True))
    return status_of(float(adjusted[name]), (interval_side(primary),))[0]


def _adaptive_state(status: PrimaryStatus, alone: PrimaryStatus) -> Adaptive:
    decided = (PrimaryStatus.SUPPORTED, PrimaryStatus.CONTRADICTED)
    if status in decided:
        return Adaptive.PASSED
    return Adaptive.FAILED if alone in decided else Adaptive.NOT_REACHED
