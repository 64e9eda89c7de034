"""The verdict's claims in words: one sentence per claim and the evidence behind it, for every renderer.

:func:`ellrobust.verdict.rules.claims` returns numbers; this module writes them, once, for the report's
Verdict section and for the lines ``eval`` prints after its tables. Methods appear under the short
labels of :mod:`~ellrobust.report.legend` (those of the run the claim comes from), numbers through
:mod:`~ellrobust.report.number_format`. The text is plain (not escaped): each back end escapes it its way.
"""

from __future__ import annotations

import math

from ellrobust.report.legend import Labels, collapse_label
from ellrobust.report.number_format import (
    ZERO_WIDTH,
    format_budget,
    format_eps,
    format_layers,
    format_level,
    format_p,
    format_pp,
    format_pp_interval,
    format_signed,
    format_signed_interval,
)
from ellrobust.results import Metric
from ellrobust.stats.decisions import ALPHA, CONFIDENCE, MIN_IMAGES, POWER, holm_level, zero_width
from ellrobust.verdict.claim_types import AttackEvidence, Budget, Claim, ClaimKind, Power, Reason, Setting

#: How the judged mCE is named in a claim.
MCE_NAMES = {"alexnet": "AlexNet-normalised", "none": "unnormalised", "baseline": "baseline-normalised"}

_GAPS = {
    Reason.NO_ADJUSTED_P: "no Holm-adjusted p (mcnemar_p_adjusted)",
    Reason.NO_SUMMARY_ROWS: "no later-half summary rows",
}


def claim_line(claim: Claim, labels: Labels) -> str:
    """``<claim>. <evidence>.``: the line a renderer prints after the claim's status."""
    return f"{claim_text(claim, labels)}. {evidence_text(claim, labels)}."


def claim_text(claim: Claim, labels: Labels) -> str:
    """The claim itself: ``deit-elliptical is more robust than deit under pgd (m_grad detach, fp32)``."""
    e, b = claim.models
    if claim.kind is ClaimKind.ATTACK:
        return f"{e} is more robust than {b} under {_setting(labels, claim.attacks[0].setting)}"
    if claim.kind is ClaimKind.ADAPTIVE:
        return f"{e}'s advantage over {b} survives the adaptive attack (m_grad full)"
    if claim.kind is ClaimKind.MINIMAL:
        return f"{e} needs larger minimal budgets ε* than {b} under {_setting(labels, claim.minimal.setting)}"
    if claim.kind is ClaimKind.MCE:
        name = MCE_NAMES.get(claim.normalization, claim.normalization)
        return f"{e} has a lower {name + ' ' if name else ''}mCE than {b} (lower: more robust to corruptions)"
    layers = format_layers(claim.collapse.get("layers"))
    span = f"layers {layers}, " if layers else ""
    return (
        f"{e}'s tokens are less collapsed than {b}'s in the later half of the layers "
        f"(token cosine, {span}{collapse_label(claim.collapse)})"
    )


def evidence_text(claim: Claim, labels: Labels) -> str:
    """The numbers behind the status: n, the differences with their intervals and adjusted p, power."""
    parts = [f"n = {claim.n}" if claim.n is not None else "n unknown"]
    if claim.kind in (ClaimKind.ATTACK, ClaimKind.ADAPTIVE):
        parts += _attack_evidence(claim, labels)
    elif claim.kind is ClaimKind.MINIMAL:
        parts += _minimal_evidence(claim)
    else:
        parts += _estimate_evidence(claim)
    return "; ".join(parts)


def _setting(labels: Labels, setting: Setting) -> str:
    extra = [x for x in (f"m_grad {setting.m_grad}" if setting.m_grad else "", setting.precision) if x]
    return labels.method(setting.method, setting.params) + (f" ({', '.join(extra)})" if extra else "")


def _budget(budget: Budget) -> str:
    details = []
    if not math.isnan(budget.ci_low):
        details.append(f"{format_level(CONFIDENCE)} CI {format_pp_interval(budget.ci_low, budget.ci_high)}")
    if math.isnan(budget.p_adjusted):
        details.append(f"unadjusted p {format_p(budget.p)}")
    else:
        details.append(f"Holm p {format_p(budget.p_adjusted)}")
    return f"ε {format_eps(budget.eps)}: {format_pp(budget.difference)} pp ({', '.join(details)})"


def _budgets(attack: AttackEvidence) -> str:
    return "; ".join(_budget(b) for b in attack.budgets)


def _attack_evidence(claim: Claim, labels: Labels) -> list[str]:
    if claim.reason is Reason.NOTHING_TO_SURVIVE:
        return ["no attack shows a significant advantage under m_grad detach, so there is none to survive"]
    if claim.kind is ClaimKind.ATTACK:
        parts = [_budgets(claim.attacks[0])]
    else:
        parts = [f"{_setting(labels, a.setting)}: {_budgets(a)}" for a in claim.attacks]
    if claim.reason in _GAPS:
        parts.append(f"not judged: the run holds {_GAPS[claim.reason]}")
    elif claim.reason is not None:
        parts.append(
            "significant in both directions"
            if claim.reason is Reason.BOTH_DIRECTIONS
            else "no budget significant after Holm"
        )
    if claim.power is not None:
        parts += _power(claim.power)
    return parts


def _power(power: Power) -> list[str]:
    """What an inconclusive comparison could detect, and the images a difference of the observed size needs."""
    parts = []
    if power.detectable is not None:
        low, high = (v * 100 for v in power.detectable)
        span = f"{low:.1f}" if math.isclose(low, high, abs_tol=0.05) else f"{low:.1f}–{high:.1f}"
        parts.append(f"this run detects differences of {span} pp ({power_level(power.family_size)})")
    largest = power.largest
    if largest is None:
        parts.append("no difference was observed at any budget")
        return parts
    size = f"{abs(largest.difference) * 100:.1f} pp at ε {format_eps(largest.eps)}"
    if math.isnan(largest.n_required):
        parts.append(f"the largest observed difference is {size}")
    else:
        parts.append(f"the largest observed difference, {size}, needs about {int(largest.n_required)} images to detect")
    return parts


def power_level(family_size: int | None) -> str:
    """``80 % power at Holm's α/m = 0.05/10 = 0.005``: the level the power rows were computed at.

    Rows that do not record their family (tables written before ``holm_family_size``) were computed
    for a single test at α, and say so.
    """
    if family_size is None:
        return f"{format_level(POWER)} power at α = {ALPHA:g}, a single test"
    return f"{format_level(POWER)} power at Holm's α/m = {ALPHA:g}/{family_size} = {holm_level(family_size):.3g}"


def _minimal_evidence(claim: Claim) -> list[str]:
    """Medians, the Hodges–Lehmann difference with its interval, the sign test's Holm p, Wilcoxon's p."""
    m = claim.minimal
    parts = []
    if m.medians:
        parts.append("median ε* " + ", ".join(f"{model} {format_budget(value)}" for model, value in m.medians))
    if claim.reason is Reason.NO_ADJUSTED_P:
        return [*parts, "not judged: the run holds no Holm-adjusted p (eps_star_sign_p_adjusted)"]
    interval = (
        f"{format_budget(m.ci_low, signed=True)} {ZERO_WIDTH}"
        if zero_width(m.ci_low, m.ci_high)
        else f"{format_budget(m.ci_low, signed=True)} … {format_budget(m.ci_high, signed=True)}"
    )
    parts.append(
        f"Hodges–Lehmann ε* difference {format_budget(m.difference, signed=True)} "
        f"({format_level(CONFIDENCE)} CI {interval}), sign test Holm p {format_p(m.p_adjusted)} "
        f"(unadjusted {format_p(m.sign_p)}; Wilcoxon p {format_p(m.wilcoxon_p)})"
    )
    if claim.reason is Reason.NOT_SIGNIFICANT:
        parts.append("not significant after Holm, or the interval includes 0")
    return parts


def _estimate_evidence(claim: Claim) -> list[str]:
    estimate = claim.estimate
    what = "mCE" if claim.kind is ClaimKind.MCE else "mean token cosine"
    points = ", ".join(f"{model} {value:.3f}" for model, value in estimate.values)
    parts = [f"{what} {points}"] if points or claim.kind is ClaimKind.MCE else []
    cells = _cells(claim)
    if claim.reason in (Reason.NO_PAIRED_INTERVAL, Reason.NO_SUMMARY_ROWS):
        metric = Metric.MCE.difference if claim.kind is ClaimKind.MCE else Metric.TOKEN_COSINE.difference
        gap = _GAPS.get(claim.reason, f"no paired interval ({metric.value}_ci_low/high)")
        return [*parts, f"not judged: the run holds {gap}{cells}"]
    interval = "paired bootstrap CI" if claim.kind is ClaimKind.MCE else "paired t-interval"
    parts.append(
        f"difference {format_signed(estimate.difference)} "
        f"({format_level(CONFIDENCE)} {interval} {format_signed_interval(estimate.ci_low, estimate.ci_high)}){cells}"
    )
    if claim.reason is Reason.ZERO_WIDTH:
        parts.append("the interval has zero width, which supports nothing")
    elif claim.reason is Reason.TOO_FEW_IMAGES:
        parts.append(f"fewer than {MIN_IMAGES} images, too few for an interval alone to support a claim")
    if claim.reason in (Reason.NOT_SIGNIFICANT, Reason.TOO_FEW_IMAGES):
        if estimate.images_needed is None:
            parts.append("no difference was observed")
        else:
            parts.append(
                f"a difference of the observed size needs about {estimate.images_needed} images to detect "
                f"(interval scaled as 1/√n, {format_level(POWER)} power at α = {ALPHA:g})"
            )
    return parts


def _cells(claim: Claim) -> str:
    """``; corruption × severity cells surviving Holm: 3 favour A, 0 favour B, of 15`` (mCE claims)."""
    if claim.cells is None:
        return ""
    e, b = claim.models
    c = claim.cells
    counts = f"{c.elliptical} favour {e}, {c.baseline} favour {b}, of {c.total}"
    return f"; corruption × severity cells surviving Holm: {counts}"
