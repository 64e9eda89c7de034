"""The verdict: one claim per primary endpoint and pair of models, Holm across the claims.

The question ellrobust exists for is *is the elliptical model more robust, and less collapsed, than
the same DeiT?* Each claim of the paper has one primary endpoint, declared before the run and
recorded in run.json (``primaries``); the run computes each primary per elliptical × plain pair
(:mod:`ellrobust.measures.primary_claims`, rows ``method == "primary"``), and the verdict adjusts
their p by Holm across the pair's claims (m ≤ 6: one per :class:`~ellrobust.stats.claim_family.ClaimName`)
and applies the adaptive condition
(:func:`ellrobust.stats.claim_family.judge_claims`). Every other comparison of the run is a
secondary analysis: shown as explanation, Holm-adjusted within its own family, never changing a
claim's status. The rules are written once, in :data:`RULES`; the report's Verdict section and the
README's are rendered from it (``python scripts/readme_rules.py``).

:func:`claims` returns data; the words are :mod:`ellrobust.report.claim_sentences`'s, so the terminal
and the report say the same.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from ellrobust.core.registry import Registry
from ellrobust.results import Metric
from ellrobust.stats.claim_family import ClaimName, PrimaryStatus, judge_claims
from ellrobust.stats.decisions import ALPHA, CONFIDENCE, MIN_IMAGES, POWER, holm_level, images_needed
from ellrobust.stats.primary_endpoints import Primary, PrimaryTest
from ellrobust.verdict.claim_types import Claim, ClaimStatus, Endpoint
from ellrobust.verdict.results_view import Lookup, patch_rows, prepare

#: The method of the primary endpoints' rows.
PRIMARY_METHOD = "primary"

_PERCENT, _POWER = (f"{round(level * 100)} %" for level in (CONFIDENCE, POWER))

#: The rules, one markdown bullet each: the single source of the report's and the README's text.
RULES = (
    "**One primary endpoint per claim**, fixed before the run and recorded in run.json (`primaries`), per "
    "elliptical × plain pair: **adversarial robustness**, the exact two-sided sign test on each image's "
    "worst-case L∞ budget over every attack of the run on the model itself (a minimal-norm method's ε*, "
    "else the smallest grid budget that broke the image; never broken: censored at the largest budget, a tie "
    "when both are; misclassified clean: 0), with the Hodges–Lehmann estimate and its interval; **patch "
    "robustness**, the same sign test on each image's worst-case number of patches over the run's patch attacks "
    "(patch, patch-fool, attention-fool), the counterpart of ε* for the patch threat model; "
    "**corruptions**, the paired t-test on each image's share of the mCE difference; **collapse**, the "
    "paired t-test on the token cosine averaged over the later half of the layers; **natural shift**, the "
    "exact McNemar test of clean accuracy on a shift dataset; **OOD detection**, DeLong's test of the AUROCs.",
    f"**Holm across the claims**: the primaries' p of a pair are adjusted together (m: the claims the run "
    f"measured, at most {len(ClaimName)}). A claim is *supported* when its adjusted p is below {ALPHA:g} **and** its "
    f"{_PERCENT} interval lies on the elliptical model's side of 0, *contradicted* in the mirror case, and "
    f"otherwise *inconclusive at this n*, with the images a difference of the observed size would need for "
    f"{_POWER} power at Holm's first-step level α/m.",
    "**The adaptive condition** (`--m-grad both`): each robustness claim is decided only when its primary "
    "also rejects, the same way, with the elliptical model attacked through its metric (`m_grad full`): an "
    "intersection-union test, whose p is the larger of the two, so it spends no extra α. Without "
    "`--m-grad both` the claim is judged on `m_grad detach` and its line says the adaptive check was not run.",
    f"**Small n**: an interval over fewer than {MIN_IMAGES} images, or of zero width, decides nothing.",
    "**Secondary analyses** (each attack × ε × m_grad × precision, the worst case, transfer, ε* per "
    "method, each patch attack × number of patches, each corruption × severity cell, per-layer collapse, "
    "top-5 and calibration) are tested with Holm within their own family and shown as explanation; they "
    "never change a claim's status. Transfer is a gradient-masking check (sanity check "
    "`transfer_not_stronger`), not a claim.",
)


def elliptical_models(meta: Mapping) -> dict[str, bool]:
    """Model name → whether it is elliptical, from a run.json (``models[name]["elliptical"]``)."""
    models = meta.get("models") or {}
    return {
        name: bool(info["elliptical"])
        for name, info in models.items()
        if isinstance(info, Mapping) and "elliptical" in info
    }


@dataclass(frozen=True)
class ClaimFamily:
    """A claim the verdict knows: its place among the verdict's lines and what a run lacks to judge it.

    Attributes:
        name: the claim, as its primary's rows name it (``params.claim``).
        order: where its line sits.
        missing: what a run lacks to judge it, with the option that measures it (None: it can be judged,
            or it only applies to some datasets).
    """

    name: str
    order: int
    missing: Callable[[pd.DataFrame], str | None] = lambda df: None


CLAIM_FAMILIES: Registry[ClaimFamily] = Registry("claim family")


def claim_family(family: ClaimFamily) -> ClaimFamily:
    """Register a claim."""
    return CLAIM_FAMILIES.add(family.name, family)


def _order(name: str) -> int:
    return CLAIM_FAMILIES.get(name).order if name in CLAIM_FAMILIES else 1000


def unmeasured(df: pd.DataFrame) -> list[str]:
    """Claims a run could not speak to, with the option that would measure them, in the verdict's order."""
    families = sorted((f for _, f in CLAIM_FAMILIES.items()), key=lambda f: f.order)
    return [m for f in families if (m := f.missing(df)) is not None]


def claims(df: pd.DataFrame, elliptical: Mapping[str, bool]) -> list[Claim]:
    """Every claim the run's primaries speak to, for each elliptical × plain pair of models.

    Args:
        df: One run's results table (as written, or :func:`~ellrobust.verdict.results_view.prepare`-d).
        elliptical: Model name → whether it is elliptical; models missing here are not judged.

    Returns:
        Per pair (in the run's order of models), one claim per primary the run computed, in the
        registered order; at most six.
    """
    df = prepare(df) if "run" not in df else df
    lookup = Lookup(df)
    rows = df[(df["method"] == PRIMARY_METHOD) & (df["metric"] == Metric.PRIMARY_ESTIMATE.value)]
    order = [m for m in dict.fromkeys([*df["model"], *df["baseline"]]) if m]
    out = []
    for e in (m for m in order if elliptical.get(m) is True):
        for b in (m for m in order if elliptical.get(m) is False):
            mine = rows[(rows["model"] == e) & (rows["baseline"] == b)].to_dict(orient="records")
            out += _pair_claims((e, b), [(_endpoint(r), _primary(r, lookup), r["m_grad"]) for r in mine])
    return out


def _endpoint(row: Mapping) -> Endpoint:
    params = json.loads(row["params"])
    return Endpoint(params["claim"], params["test"], params["what"], params["unit"], bool(params["higher_is_better"]))


def _primary(row: Mapping, lookup: Lookup) -> Primary:
    params = json.loads(row["params"])
    return Primary(
        PrimaryTest(params["test"]),
        float(row["value"]),
        lookup(row, Metric.PRIMARY_ESTIMATE.ci_low),
        lookup(row, Metric.PRIMARY_ESTIMATE.ci_high),
        lookup(row, Metric.PRIMARY_P),
        int(lookup(row, Metric.PRIMARY_N)),
        bool(params["higher_is_better"]),
    )


_STATUS = {
    PrimaryStatus.SUPPORTED: ClaimStatus.SUPPORTED,
    PrimaryStatus.CONTRADICTED: ClaimStatus.CONTRADICTED,
}


def _pair_claims(models: tuple[str, str], found: list[tuple[Endpoint, Primary, str]]) -> list[Claim]:
    """Holm across the pair's primaries, the robustness one under ``m_grad detach`` (or none), its
    ``m_grad full`` twin as the adaptive condition."""
    found = sorted(found, key=lambda f: _order(f[0].claim))
    main = {e.claim: (e, p) for e, p, mg in found if mg != "full"}
    full = {e.claim: p for e, p, mg in found if mg == "full"}
    if not main:
        return []
    adaptive = {name: p for name, p in full.items() if name in main}
    results = judge_claims({name: p for name, (_, p) in main.items()}, adaptive=adaptive)
    m = len(main)
    out = []
    for (endpoint, primary), result in zip(main.values(), results, strict=True):
        status = _STATUS.get(result.status, ClaimStatus.INCONCLUSIVE)
        needed = None
        if status is ClaimStatus.INCONCLUSIVE:
            half = (primary.ci_high - primary.ci_low) / 2
            count = images_needed(primary.estimate, half, primary.n, alpha=holm_level(m))
            needed = math.nan if count is None or math.isnan(half) else float(count)
        out.append(Claim(models, status, endpoint, result, m, needed))
    return out


def _no_attack(df: pd.DataFrame) -> str | None:
    robust = df["eps"].notna() & df["metric"].eq(Metric.ROBUST_ACCURACY.value)
    return None if (robust & ~patch_rows(df)).any() else "adversarial robustness (`--attack`)"


def _no_patch_attack(df: pd.DataFrame) -> str | None:
    patched = (df["eps"].notna() & patch_rows(df)).any()
    return None if patched else "patch robustness (`--attack patch-fool --patches 1,2,4`)"


def _no_mce(df: pd.DataFrame) -> str | None:
    return None if df["metric"].eq(Metric.MCE.value).any() else "corruptions (`--corruption all`)"


def _no_collapse(df: pd.DataFrame) -> str | None:
    collapse = (df["metric"].eq(Metric.TOKEN_COSINE.value) & df["method"].eq("collapse")).any()
    return None if collapse else "representation collapse (`--collapse`)"


claim_family(ClaimFamily(ClaimName.ROBUSTNESS.value, 10, _no_attack))
claim_family(ClaimFamily(ClaimName.PATCH_ROBUSTNESS.value, 15, _no_patch_attack))
claim_family(ClaimFamily(ClaimName.CORRUPTIONS.value, 20, _no_mce))
claim_family(ClaimFamily(ClaimName.COLLAPSE.value, 30, _no_collapse))
claim_family(ClaimFamily(ClaimName.NATURAL_SHIFT.value, 40))
claim_family(ClaimFamily(ClaimName.OOD.value, 50))
