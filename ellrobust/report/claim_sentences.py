"""The verdict's claims in words: one line per claim, for every renderer.

:func:`ellrobust.verdict.rules.claims` returns numbers; this module writes them, once, for the report's
Verdict section, the lines ``eval`` prints and the trackers. A line says the claim, its primary
endpoint, the estimate with its 95 % interval, p and Holm's p, the adaptive condition of the
robustness claim, and, when inconclusive, the images a difference of the observed size would need.
The text is plain (not escaped): each back end escapes it its way.
"""

from __future__ import annotations

import math

from ellrobust.report.number_format import format_budget, format_level, format_p, format_pp, format_signed
from ellrobust.stats.claim_family import Adaptive
from ellrobust.stats.decisions import ALPHA, POWER, holm_level
from ellrobust.verdict.claim_types import Claim

#: How an estimate of each unit reads: a budget in /255, a proportion in percentage points, else 3 decimals.
_FORMATS = {"pixels": format_budget, "fraction": format_pp, "ratio": format_pp}
_UNITS = {"fraction": " pp", "ratio": " pp"}

_ADAPTIVE = {
    Adaptive.PASSED: "adaptive check (m_grad full): agrees",
    Adaptive.FAILED: "adaptive check (m_grad full): does not confirm it, so not decided",
    Adaptive.NOT_REACHED: "adaptive check (m_grad full): run, nothing to confirm",
    Adaptive.NOT_RUN: "adaptive check not run (pass --m-grad both)",
}


def claim_line(claim: Claim) -> str:
    """``<claim> (<A> vs <B>): <test> on <what>: <estimate> (95 % CI …), p …, Holm p … (m = k); …``."""
    e, b = claim.models
    r = claim.result
    parts = [
        f"{claim.name}, {e} vs {b}: {claim.endpoint.test} on {claim.endpoint.what}, "
        f"{_value(claim, r.estimate, signed=True)} (95 % CI {_interval(claim, r.ci_low, r.ci_high)}), "
        f"p {_p(r.p)}, Holm p {_p(r.p_holm)} (m = {claim.family_size}), n = {r.n}"
    ]
    if r.adaptive is not Adaptive.NOT_APPLICABLE:
        parts.append(_ADAPTIVE[r.adaptive])
    if claim.n_needed is not None:
        parts.append(_needed(claim))
    return "; ".join(parts) + "."


def _p(value: float) -> str:
    """A p-value, or why there is none (every image differs by the same amount: no test can run)."""
    return format_p(value) or "none (no spread)"


def _value(claim: Claim, value: float, *, signed: bool = False) -> str:
    unit = claim.endpoint.unit
    if unit == "pixels":
        return format_budget(value, signed=signed)
    fmt = _FORMATS.get(unit, format_signed)
    return fmt(value) + _UNITS.get(unit, "")


def _interval(claim: Claim, low: float, high: float) -> str:
    return f"{_value(claim, low, signed=True)} … {_value(claim, high, signed=True)}"


def _needed(claim: Claim) -> str:
    level = f"{format_level(POWER)} power at Holm's α/m = {ALPHA:g}/{claim.family_size}"
    level += f" = {holm_level(claim.family_size):.3g}"
    if claim.n_needed is None or math.isnan(claim.n_needed):
        return f"no difference observed, so no number of images to state ({level})"
    return f"about {claim.n_needed:.0f} images would detect a difference of this size ({level})"
