"""The verdict: claims about an elliptical model against a plain one, each judged by adjusted tests.

The question ellrobust exists for is *is the elliptical model more robust, and less collapsed, than
the same DeiT?* Its answer must not be stronger than the statistics behind it, so every claim reads
*supported*, *contradicted* or *inconclusive at this n* under rules fixed in advance. The rules are
written once, in :data:`RULES`, next to the code that applies them; the report's Verdict section and
the README's are rendered from it (``python scripts/readme_rules.py``). What counts as significant
(α, Holm's direction, the agreement of test and interval) is :mod:`ellrobust.stats.decisions`.

:func:`claims` returns data: each :class:`Claim` carries the numbers behind its status (differences,
intervals, adjusted p, n, what the run could detect, the images a difference would need). The words
are the renderers' (:mod:`ellrobust.report.claim_sentences`), so the terminal and the report say the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from ellrobust.core.registry import Registry
from ellrobust.results import Metric
from ellrobust.stats.decisions import (
    ALPHA,
    CONFIDENCE,
    MIN_IMAGES,
    POWER,
    Favours,
    holm_direction,
    images_needed,
    interval_direction,
    zero_width,
)
from ellrobust.verdict.claim_types import (
    AttackEvidence,
    Budget,
    CellCount,
    Claim,
    ClaimKind,
    ClaimStatus,
    Estimate,
    MinimalEvidence,
    Power,
    Reason,
    Setting,
)
from ellrobust.verdict.results_view import Lookup, paired_records, prepare, split_params

#: Preference among mCE normalisations: the first one present is judged.
MCE_ORDER = ("alexnet", "none", "baseline")

_PERCENT, _POWER = (f"{round(level * 100)} %" for level in (CONFIDENCE, POWER))

#: The rules, one markdown bullet each: the single source of the report's and the README's text.
RULES = (
    f"A budget (or a corruption × severity cell) *favours* a model when the paired difference points its way, "
    f"the Holm-adjusted exact McNemar p is below {ALPHA:g} **and** the {_PERCENT} score interval excludes 0 on "
    "that side.",
    "**Attacks**, one line per attack (the worst case included) per m_grad mode and precision: *supported* when "
    "at least one budget favours the elliptical model and none favours the baseline; *contradicted* in the mirror "
    "case; otherwise (nothing significant, or significant in both directions) *inconclusive at this n*, with the "
    f"smallest difference the run could detect and the number of images a difference of the observed size would "
    f"need, both with {_POWER} power at Holm's first-step level α/m (m: the size of the pair's family, "
    "`holm_family_size`), the level an adjusted p below α is certain to clear.",
    "**Adaptive attack** (`--m-grad both`): the attacks whose m_grad detach line is supported, judged by the "
    "same rule on their elliptical(full) − baseline rows. No supported detach line: inconclusive.",
    f"**Corruption mCE**: *supported* when the {_PERCENT} paired bootstrap interval of mCE(elliptical) − "
    "mCE(baseline) (`mce_difference`; never narrower than its Student-t interval) lies below 0, *contradicted* "
    "when above 0; AlexNet-normalised mCE where it "
    "exists, else unnormalised, else baseline-normalised. The corruption × severity cells that favour either "
    "model are counted alongside.",
    "**Collapse**: token cosine averaged over the later half of the layers (summary rows, `layer` empty): "
    f"*supported* when the {_PERCENT} paired t-interval of elliptical − baseline lies below 0 (less collapsed), "
    "*contradicted* when above 0.",
    "**Minimal budgets** (`--attack fmn`, `bisect-<attack>`), one line per method per m_grad mode and precision: "
    "*supported* when the paired sign test on the per-image minimal budgets ε* survives Holm (adjusted p below "
    f"{ALPHA:g}) **and** the {_PERCENT} Hodges–Lehmann interval of ε*(elliptical) − ε*(baseline) lies above 0 "
    "(the elliptical model needs larger budgets); *contradicted* in the mirror case; otherwise *inconclusive at "
    "this n*. Censored ε* (not broken within eps_max) count at eps_max.",
    "**Holm's family** is every paired comparison of one pair of models in one run (clean, every attack × ε × "
    "m_grad × precision and the worst case, every corruption × severity, the sign test on ε* of every "
    "minimal-norm method, DeLong's test of the ImageNet-O AUROCs), so a claim cannot be rescued by testing "
    "more budgets. Top-5 and calibration differences are reported beside it, not in it.",
    f"**Small n**: a claim judged by an interval alone (mCE, collapse) reads *inconclusive at this n* on fewer "
    f"than {MIN_IMAGES} images (below that no distribution-free test of a paired difference can reach "
    f"p < {ALPHA:g}), and so does any claim whose interval has zero width (n = 1, or every image differing by "
    "the same amount): a zero-width interval claims a certainty no resampling of the images can give.",
    "A line whose table lacks a row its rule needs (an adjusted p, a paired interval) reads *inconclusive* and "
    "says what is missing: nothing reads *supported* on evidence the rules did not see.",
)


def elliptical_models(meta: Mapping) -> dict[str, bool]:
    """Model name → whether it is elliptical, from a run.json (``models[name]["elliptical"]``)."""
    models = meta.get("models") or {}
    return {
        name: bool(info["elliptical"])
        for name, info in models.items()
        if isinstance(info, Mapping) and "elliptical" in info
    }


def claims(df: pd.DataFrame, elliptical: Mapping[str, bool]) -> list[Claim]:
    """Every claim the results table of one run can speak to, for each elliptical × plain pair of models.

    Args:
        df: One run's results table (as written, or :func:`~ellrobust.verdict.results_view.prepare`-d).
        elliptical: Model name → whether it is elliptical; models missing here are not judged.

    Returns:
        Claims grouped by pair, in the order attacks (in the run's order), minimal budgets, adaptive
        attack, mCE, collapse. Only what the run measured gets a claim.
    """
    df = prepare(df) if "run" not in df else df
    lookup = Lookup(df)
    comparisons = paired_records(df, lookup)
    order = [m for m in dict.fromkeys([*df["model"], *df["baseline"]]) if m]
    out = []
    for e in (m for m in order if elliptical.get(m) is True):
        for b in (m for m in order if elliptical.get(m) is False):
            mine = [_orient(r, e, b) for r in comparisons if {r["model"], r["baseline"]} == {e, b}]
            pair = _Pair(e, b, df, lookup, mine)
            for family in ordered_claim_families():
                out += family.judge(pair)
    return out


@dataclass(frozen=True)
class ClaimFamily:
    """A kind of claim the verdict judges for every elliptical × plain pair.

    Attributes:
        name: what it is about, for listings.
        order: where its lines sit among the verdict's.
        judge: the pair's claims of this kind (none when the run did not measure it).
        missing: what a run lacks to judge it, with the option that measures it (None: it can be judged,
            or it needs nothing beyond what other kinds need).
    """

    name: str
    order: int
    judge: Callable[[_Pair], list[Claim]]
    missing: Callable[[pd.DataFrame], str | None] = lambda df: None


CLAIM_FAMILIES: Registry[ClaimFamily] = Registry("claim family")


def claim_family(family: ClaimFamily) -> ClaimFamily:
    """Register a kind of claim."""
    return CLAIM_FAMILIES.add(family.name, family)


def ordered_claim_families() -> list[ClaimFamily]:
    return sorted((f for _, f in CLAIM_FAMILIES.items()), key=lambda f: f.order)


def unmeasured(df: pd.DataFrame) -> list[str]:
    """Claims a run could not speak to, with the option that would measure them, in the verdict's order."""
    return [m for f in ordered_claim_families() if (m := f.missing(df)) is not None]


@dataclass(frozen=True)
class _Pair:
    elliptical: str
    baseline: str
    df: pd.DataFrame
    lookup: Lookup
    comparisons: list[dict]  # the pair's paired accuracy comparisons, oriented elliptical − baseline

    @property
    def models(self) -> tuple[str, str]:
        return (self.elliptical, self.baseline)

    def estimate(self, rows: list[dict], metric: Metric) -> tuple[float, float, float]:
        """(difference, low, high) of the pair's row of ``metric`` (the first of ``rows``), elliptical − baseline."""
        if not rows:
            return math.nan, math.nan, math.nan
        r = rows[0]
        d, low, high = r["value"], self.lookup(r, metric.ci_low), self.lookup(r, metric.ci_high)
        if r["model"] == self.baseline:
            return 0.0 - d, 0.0 - high, 0.0 - low  # 0.0 − x: no −0.0 in the text
        return d, low, high


def _orient(record: dict, e: str, b: str) -> dict:
    """A paired accuracy comparison as elliptical − baseline, whichever way round the table wrote it."""
    if record["model"] == e:
        return record
    low, high = record[Metric.DIFFERENCE_CI_LOW], record[Metric.DIFFERENCE_CI_HIGH]
    return {
        **record,
        "model": e,
        "baseline": b,
        Metric.ACCURACY_DIFFERENCE.value: 0.0 - record[Metric.ACCURACY_DIFFERENCE],
        Metric.DIFFERENCE_CI_LOW.value: 0.0 - high,
        Metric.DIFFERENCE_CI_HIGH.value: 0.0 - low,
    }


def _budget(r: Mapping) -> Budget:
    values = [float(r[m]) for m in (Metric.ACCURACY_DIFFERENCE, Metric.DIFFERENCE_CI_LOW, Metric.DIFFERENCE_CI_HIGH)]
    return Budget(
        float(r["eps"]),
        *values,
        p=float(r[Metric.MCNEMAR_P]),
        p_adjusted=float(r[Metric.MCNEMAR_P_ADJUSTED]),
        detectable=float(r[Metric.DETECTABLE_DIFFERENCE]),
        n_required=float(r[Metric.N_REQUIRED]),
        favours=holm_direction(*values, float(r[Metric.MCNEMAR_P_ADJUSTED])),
        family_size=float(r[Metric.HOLM_FAMILY_SIZE]),
    )


def _attacks(pair: _Pair) -> list[tuple[AttackEvidence, int | None]]:
    """Each attack setting of the pair with its budgets (by ε) and its n, in the order the run wrote them."""
    groups: dict[Setting, list[dict]] = {}
    for r in pair.comparisons:
        if not pd.isna(r["eps"]):
            groups.setdefault(Setting(r["method"], r["params"], r["m_grad"], r["precision"]), []).append(r)
    return [
        (AttackEvidence(s, tuple(_budget(r) for r in sorted(rows, key=lambda r: r["eps"]))), _n(r["n"] for r in rows))
        for s, rows in groups.items()
    ]


def _judge(budgets: Iterable[Budget]) -> tuple[ClaimStatus, Reason | None, Power | None]:
    """Status of a set of paired budgets under the attack rule, why it is inconclusive, and its power."""
    budgets = list(budgets)
    if all(math.isnan(b.p_adjusted) for b in budgets):
        return ClaimStatus.INCONCLUSIVE, Reason.NO_ADJUSTED_P, None
    favours = {b.favours for b in budgets}
    if Favours.A in favours and Favours.B not in favours:
        return ClaimStatus.SUPPORTED, None, None
    if Favours.B in favours and Favours.A not in favours:
        return ClaimStatus.CONTRADICTED, None, None
    reason = Reason.BOTH_DIRECTIONS if {Favours.A, Favours.B} <= favours else Reason.NOT_SIGNIFICANT
    return ClaimStatus.INCONCLUSIVE, reason, _power(budgets)


def _power(budgets: list[Budget]) -> Power:
    detectable = [b.detectable for b in budgets if not math.isnan(b.detectable)]
    moved = [b for b in budgets if abs(b.difference) > 0]
    largest = max(moved, key=lambda b: abs(b.difference)) if moved else None
    sizes = [int(b.family_size) for b in budgets if not math.isnan(b.family_size)]
    return Power((min(detectable), max(detectable)) if detectable else None, largest, max(sizes) if sizes else None)


def _attack_claims(pair: _Pair) -> list[Claim]:
    out = []
    for attack, n in _attacks(pair):
        status, reason, power = _judge(attack.budgets)
        out.append(Claim(ClaimKind.ATTACK, pair.models, status, n, reason, (attack,), power))
    return out


def _adaptive_claim(pair: _Pair) -> list[Claim]:
    attacks = _attacks(pair)
    if not {"detach", "full"} <= {a.setting.m_grad for a, _ in attacks}:
        return []
    full = {
        (a.setting.method, a.setting.params, a.setting.precision): (a, n)
        for a, n in attacks
        if a.setting.m_grad == "full"
    }
    survivors = [
        full[key]
        for a, _ in attacks
        if a.setting.m_grad == "detach"
        and (key := (a.setting.method, a.setting.params, a.setting.precision)) in full
        and _judge(a.budgets)[0] is ClaimStatus.SUPPORTED
    ]
    if not survivors:
        n = _n(n for _, n in attacks)
        return [Claim(ClaimKind.ADAPTIVE, pair.models, ClaimStatus.INCONCLUSIVE, n, Reason.NOTHING_TO_SURVIVE)]
    status, reason, power = _judge(b for a, _ in survivors for b in a.budgets)
    evidence = tuple(a for a, _ in survivors)
    return [Claim(ClaimKind.ADAPTIVE, pair.models, status, _n(n for _, n in survivors), reason, evidence, power)]


def _minimal_claims(pair: _Pair) -> list[Claim]:
    """One claim per minimal-norm setting both models ran: the sign test on ε* under Holm and the HL interval."""
    df, out = pair.df, []
    for r in _paired_rows(pair, Metric.EPS_STAR_DIFFERENCE).to_dict(orient="records"):
        d, low, high = pair.estimate([r], Metric.EPS_STAR_DIFFERENCE)
        p_adjusted = pair.lookup(r, Metric.EPS_STAR_SIGN_P_ADJUSTED)
        setting = Setting(r["method"], r["params"], r["m_grad"], r["precision"])
        medians = df[
            (df["metric"] == Metric.EPS_STAR_MEDIAN.value)
            & (df["method"] == r["method"])
            & (df["params"] == r["params"])
            & (df["precision"] == r["precision"])
            & ((df["model"] == pair.baseline) | (df["m_grad"] == r["m_grad"]))
            & df["model"].isin(pair.models)
        ]
        values = {m["model"]: float(m["value"]) for m in medians.to_dict(orient="records")}
        favours = holm_direction(d, low, high, p_adjusted)
        evidence = MinimalEvidence(
            setting,
            tuple((m, values[m]) for m in pair.models if m in values),
            d,
            low,
            high,
            pair.lookup(r, Metric.EPS_STAR_SIGN_P),
            p_adjusted,
            pair.lookup(r, Metric.EPS_STAR_WILCOXON_P),
            favours,
        )
        if math.isnan(p_adjusted):
            status, reason = ClaimStatus.INCONCLUSIVE, Reason.NO_ADJUSTED_P
        else:
            status = {Favours.A: ClaimStatus.SUPPORTED, Favours.B: ClaimStatus.CONTRADICTED}.get(
                favours, ClaimStatus.INCONCLUSIVE
            )
            reason = None if status is not ClaimStatus.INCONCLUSIVE else Reason.NOT_SIGNIFICANT
        out.append(Claim(ClaimKind.MINIMAL, pair.models, status, _n([r["n"]]), reason, minimal=evidence))
    return out


def _interval_status(estimate: Estimate, n: int | None) -> tuple[ClaimStatus, Reason | None]:
    """Supported when the interval of elliptical − baseline lies below 0 (lower is better), contradicted above.

    Never on a zero-width interval, nor on fewer than :data:`~ellrobust.stats.decisions.MIN_IMAGES`
    images: there the reason says which.
    """
    if math.isnan(estimate.ci_low) or math.isnan(estimate.ci_high) or math.isnan(estimate.difference):
        return ClaimStatus.INCONCLUSIVE, Reason.NO_PAIRED_INTERVAL
    if zero_width(estimate.ci_low, estimate.ci_high):
        return ClaimStatus.INCONCLUSIVE, Reason.ZERO_WIDTH
    if n is not None and n < MIN_IMAGES:
        return ClaimStatus.INCONCLUSIVE, Reason.TOO_FEW_IMAGES
    favours = interval_direction(estimate.ci_low, estimate.ci_high, lower_is_better=True, n=n)
    status = {Favours.A: ClaimStatus.SUPPORTED, Favours.B: ClaimStatus.CONTRADICTED}.get(
        favours, ClaimStatus.INCONCLUSIVE
    )
    return status, None if status is not ClaimStatus.INCONCLUSIVE else Reason.NOT_SIGNIFICANT


def _estimate(
    pair: _Pair, values: Mapping[str, float], difference: tuple[float, float, float], n: int | None
) -> Estimate:
    """The estimate with, where its interval includes 0 or n is too small, the images a difference of its size
    would need (at least :data:`~ellrobust.stats.decisions.MIN_IMAGES`)."""
    d, low, high = difference
    estimate = Estimate(tuple((m, values[m]) for m in pair.models if m in values), d, low, high)
    reason = _interval_status(estimate, n)[1]
    if reason in (Reason.NOT_SIGNIFICANT, Reason.TOO_FEW_IMAGES) and n is not None:
        needed = images_needed(d, (high - low) / 2, n)
        if needed is not None and reason is Reason.TOO_FEW_IMAGES:
            needed = max(needed, MIN_IMAGES)
        return Estimate(estimate.values, d, low, high, needed)
    return estimate


def _paired_rows(pair: _Pair, metric: Metric) -> pd.DataFrame:
    """The rows of a difference metric between the pair's two models, whichever way round."""
    df = pair.df
    same = (df["model"] == pair.elliptical) & (df["baseline"] == pair.baseline)
    flipped = (df["model"] == pair.baseline) & (df["baseline"] == pair.elliptical)
    return df[(df["metric"] == metric.value) & (same | flipped)]


def _mce_claim(pair: _Pair) -> list[Claim]:
    df = pair.df
    mce = df[(df["metric"] == Metric.MCE.value) & df["model"].isin(pair.models)]
    if mce.empty:
        return []
    by_norm = {str(split_params(p)[0].get("normalization", "")): p for p in pd.unique(mce["params"])}
    norm = next((k for k in MCE_ORDER if k in by_norm), next(iter(by_norm)))
    params = by_norm[norm]
    values = {r["model"]: r["value"] for r in mce[mce["params"] == params].to_dict(orient="records")}
    diffs = _paired_rows(pair, Metric.MCE.difference)
    n = _n(mce["n"])
    estimate = _estimate(
        pair,
        values,
        pair.estimate(diffs[diffs["params"] == params].to_dict(orient="records"), Metric.MCE.difference),
        n,
    )
    status, reason = _interval_status(estimate, n)
    return [
        Claim(
            ClaimKind.MCE,
            pair.models,
            status,
            n,
            reason,
            estimate=estimate,
            normalization=norm,
            cells=_cell_count(pair),
        )
    ]


def _cell_count(pair: _Pair) -> CellCount | None:
    """How many corruption × severity cells survive Holm, in each direction."""
    cells = [_budget({**r, "eps": math.nan}) for r in pair.comparisons if not pd.isna(r["severity"])]
    if not cells or all(math.isnan(c.p_adjusted) for c in cells):
        return None
    favours = [c.favours for c in cells]
    return CellCount(favours.count(Favours.A), favours.count(Favours.B), len(cells))


def _collapse_claims(pair: _Pair) -> list[Claim]:
    df = pair.df
    cosine = df[
        (df["metric"] == Metric.TOKEN_COSINE.value) & (df["method"] == "collapse") & df["model"].isin(pair.models)
    ]
    summary, per_layer = cosine[cosine["layer"].isna()], cosine[cosine["layer"].notna()]
    if not set(pair.models) <= set(cosine["model"]):
        return []  # nothing measured, or a model without tokens (a CNN baseline): no collapse to compare
    diffs = _paired_rows(pair, Metric.TOKEN_COSINE.difference)
    diffs = diffs[diffs["layer"].isna() & (diffs["method"] == "collapse")].to_dict(orient="records")
    all_heads = [p for p in dict.fromkeys(per_layer["params"]) if "head" not in split_params(p)[1]]
    out = []
    for params in list(dict.fromkeys(summary["params"])) or all_heads:
        settings = split_params(params)[1]
        if settings.get("head") is not None:
            continue
        values = {r["model"]: r["value"] for r in summary[summary["params"] == params].to_dict(orient="records")}
        # the difference rows also carry the baseline's layers (models of different depths): match on what was measured
        mine = [r for r in diffs if split_params(r["params"])[1] == settings]
        n = _n((summary if not summary.empty else per_layer)["n"])
        estimate = _estimate(pair, values, pair.estimate(mine, Metric.TOKEN_COSINE.difference), n)
        status, reason = _interval_status(estimate, n)
        if summary.empty and reason is Reason.NO_PAIRED_INTERVAL:
            reason = Reason.NO_SUMMARY_ROWS
        out.append(Claim(ClaimKind.COLLAPSE, pair.models, status, n, reason, estimate=estimate, collapse=settings))
    return out


def _n(values: Iterable[object]) -> int | None:
    ns = [v for v in values if not pd.isna(v)]
    return int(min(ns)) if ns else None


def _no_attack(df: pd.DataFrame) -> str | None:
    attacked = (df["eps"].notna() & df["metric"].eq(Metric.ROBUST_ACCURACY.value)).any()
    return None if attacked else "robustness under attack (`--attack`)"


def _no_adaptive(df: pd.DataFrame) -> str | None:
    return None if {"detach", "full"} <= set(df["m_grad"]) else "the adaptive attack (`--m-grad both`)"


def _no_mce(df: pd.DataFrame) -> str | None:
    return None if df["metric"].eq(Metric.MCE.value).any() else "corruption mCE (`--corruption all`)"


def _no_collapse(df: pd.DataFrame) -> str | None:
    collapse = (df["metric"].eq(Metric.TOKEN_COSINE.value) & df["method"].eq("collapse")).any()
    return None if collapse else "representation collapse (`--collapse`)"


claim_family(ClaimFamily("attacks", 10, _attack_claims, _no_attack))
claim_family(ClaimFamily("minimal budgets", 20, _minimal_claims))
claim_family(ClaimFamily("adaptive attack", 30, _adaptive_claim, _no_adaptive))
claim_family(ClaimFamily("corruption mCE", 40, _mce_claim, _no_mce))
claim_family(ClaimFamily("representation collapse", 50, _collapse_claims, _no_collapse))
