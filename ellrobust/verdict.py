"""The verdict: one line per claim about an elliptical model against a plain one, judged by adjusted tests.

The question ellrobust exists for is *is the elliptical model more robust, and less collapsed, than
the same DeiT?* Its answer must not be stronger than the statistics behind it. Every line therefore
reads *supported*, *contradicted* or *inconclusive at this n* under rules fixed in advance:

* **Attacks** (one line per attack, the worst case included, per ``m_grad`` mode and precision): a
  budget ε *favours* a model when the paired difference points its way, the Holm-adjusted exact
  McNemar p (``mcnemar_p_adjusted``) is below 0.05 and the 95 % score interval excludes 0 on that
  side. The claim "the elliptical model is more robust" is *supported* when at least one budget
  favours the elliptical model and none favours the baseline, *contradicted* in the mirror case,
  and *inconclusive at this n* otherwise (nothing significant, or significant in both directions).
* **Adaptive attack** (where ``m_grad`` full and detach were both run): among the attacks whose
  detach line is supported, the same rule applied to their ``m_grad`` full rows. With no supported
  detach line there is no advantage that could survive: inconclusive.
* **Corruption mCE**: *supported* when the 95 % paired bootstrap interval of mCE(elliptical) −
  mCE(baseline) (``mce_difference``) lies below 0, *contradicted* when above 0. AlexNet-normalised
  mCE is judged where it exists, else unnormalised, else baseline-normalised.
* **Collapse**: token cosine averaged over the later half of the layers (the summary rows, ``layer``
  empty): *supported* when the 95 % paired t-interval of elliptical − baseline lies below 0 (less
  collapsed), *contradicted* when above 0.

Holm's family is every paired comparison of one pair of models in one run (each row with a
``mcnemar_p`` for that pair), so a claim cannot be rescued by testing more budgets. A run whose table
lacks the adjusted p or the interval a rule needs gets *inconclusive*, saying what is missing:
nothing reads *supported* on evidence the rules did not see.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import pandas as pd

from ellrobust.report.frame import (
    format_eps,
    format_p,
    format_pp,
    format_pp_interval,
    holm_direction,
    prepare,
    row_key,
)
from ellrobust.report.labels import build_labels, collapse_label, split_params

#: z-values of a two-sided 5 % test and of 80 % power: scale an interval's half-width to a sample size.
_Z_ALPHA, _Z_POWER = 1.959964, 0.841621

#: Preference among mCE normalisations: the first one present is judged.
_MCE_ORDER = ("alexnet", "none", "baseline")
_MCE_NAMES = {"alexnet": "AlexNet-normalised", "none": "unnormalised", "baseline": "baseline-normalised"}


class ClaimStatus(StrEnum):
    """What the evidence says about a claim."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive at this n"


@dataclass(frozen=True)
class Claim:
    """One line of the verdict.

    Attributes:
        claim: The claim, in words (``deit-elliptical is more robust than deit under pgd (m_grad detach)``).
        status: Supported, contradicted or inconclusive at this n.
        evidence: The numbers behind the status: differences, intervals, adjusted p, n, and for an
            inconclusive line what the run could detect and how many images a difference of the
            observed size would need.
        models: (elliptical model, baseline model).
    """

    claim: str
    status: ClaimStatus
    evidence: str
    models: tuple[str, str]


def elliptical_models(meta: Mapping) -> dict[str, bool]:
    """Model name → whether it is elliptical, from a run.json (``models[name]["elliptical"]``)."""
    models = meta.get("models") or {}
    return {name: bool(info["elliptical"]) for name, info in models.items() if isinstance(info, Mapping) and "elliptical" in info}


def claims(df: pd.DataFrame, elliptical: Mapping[str, bool]) -> list[Claim]:
    """Every claim the results table of one run can speak to, for each elliptical × plain pair of models.

    Args:
        df: One run's results table (as written, or :func:`~ellrobust.report.frame.prepare`-d).
        elliptical: Model name → whether it is elliptical; models missing here are not judged.

    Returns:
        Claims grouped by pair, in the order attacks (in the run's order), adaptive attack, mCE,
        collapse. Only what the run measured gets a line.
    """
    df = prepare(df) if "run" not in df else df
    order = [m for m in dict.fromkeys([*df["model"], *df["baseline"]]) if m]
    out = []
    for e in (m for m in order if elliptical.get(m) is True):
        for b in (m for m in order if elliptical.get(m) is False):
            pair = _Pair(e, b, _oriented(df, e, b), df)
            out += _attack_claims(pair)
            out += _adaptive_claim(pair)
            out += _mce_claim(pair)
            out += _collapse_claims(pair)
    return out


@dataclass(frozen=True)
class _Pair:
    elliptical: str
    baseline: str
    paired: pd.DataFrame  # the pair's paired rows, oriented elliptical − baseline, one row per measurement
    df: pd.DataFrame

    @property
    def models(self) -> tuple[str, str]:
        return (self.elliptical, self.baseline)


def _oriented(df: pd.DataFrame, e: str, b: str) -> pd.DataFrame:
    """The paired rows of (e, b) in either orientation, with differences turned into e − b."""
    rows = df[df["baseline"].ne("") & (((df["model"] == e) & (df["baseline"] == b)) | ((df["model"] == b) & (df["baseline"] == e)))]
    rows = rows.copy()
    flip = rows["model"] == b
    metric = rows["metric"]
    is_diff = metric.eq("accuracy_difference") | metric.str.endswith("_difference")
    rows.loc[flip & is_diff, "value"] = 0.0 - rows.loc[flip & is_diff, "value"]  # 0.0 − x: no −0.0 in the text
    for low, high in _interval_names(set(metric)):
        lows, highs = flip & metric.eq(low), flip & metric.eq(high)
        rows.loc[lows, "value"], rows.loc[highs, "value"] = 0.0 - rows.loc[lows, "value"], 0.0 - rows.loc[highs, "value"]
        rows.loc[lows, "metric"], rows.loc[highs, "metric"] = high, low
    rows.loc[flip, ["model", "baseline"]] = [e, b]
    return rows


def _interval_names(metrics: set[str]) -> list[tuple[str, str]]:
    """(low, high) metric names of difference intervals present in the table."""
    pairs = [("difference_ci_low", "difference_ci_high")]
    pairs += [(m, m.removesuffix("_low") + "_high") for m in metrics if m.endswith("_difference_ci_low")]
    return pairs


_PAIRED = ("accuracy_difference", "difference_ci_low", "difference_ci_high", "mcnemar_p", "mcnemar_p_adjusted", "detectable_difference", "n_required")
_FIELDS = ("method", "params", "eps", "severity", "m_grad", "precision", "n")


def _paired_wide(pair: _Pair) -> pd.DataFrame:
    """The pair's accuracy comparisons, one row per measurement, one column per paired metric (NaN if absent)."""
    out: dict[tuple, dict] = {}
    for r in pair.paired[pair.paired["metric"].isin(_PAIRED)].to_dict(orient="records"):
        record = out.setdefault(row_key(r), {**{f: r.get(f) for f in _FIELDS}, **dict.fromkeys(_PAIRED, math.nan)})
        record[r["metric"]] = r["value"]
    return pd.DataFrame(list(out.values()), columns=[*_FIELDS, *_PAIRED])


@dataclass(frozen=True)
class _Attack:
    """The paired budgets of one attack setting: method, params, m_grad mode and precision."""

    method: str
    params: str
    m_grad: str
    precision: str
    rows: pd.DataFrame


def _attacks(pair: _Pair) -> list[_Attack]:
    wide = _paired_wide(pair)
    wide = wide[wide["eps"].notna()]
    groups = wide.groupby(["method", "params", "m_grad", "precision"], sort=False, dropna=False)
    return [_Attack(*(_text(k) for k in key), rows.sort_values("eps")) for key, rows in groups]


def _direction(row: Mapping) -> int:
    return holm_direction(row["accuracy_difference"], row["difference_ci_low"], row["difference_ci_high"], row["mcnemar_p_adjusted"])


def _judge(directions: list[int]) -> ClaimStatus:
    if 1 in directions and -1 not in directions:
        return ClaimStatus.SUPPORTED
    if -1 in directions and 1 not in directions:
        return ClaimStatus.CONTRADICTED
    return ClaimStatus.INCONCLUSIVE


def _budget_text(row: Mapping) -> str:
    text = f"ε {format_eps(float(row['eps']))}: {format_pp(row['accuracy_difference'])} pp"
    details = []
    if not pd.isna(row["difference_ci_low"]):
        details.append(f"95 % CI {format_pp_interval(row['difference_ci_low'], row['difference_ci_high'])}")
    details.append(f"Holm p {format_p(row['mcnemar_p_adjusted'])}" if not pd.isna(row["mcnemar_p_adjusted"]) else f"unadjusted p {format_p(row['mcnemar_p'])}")
    return f"{text} ({', '.join(details)})"


def _power_text(rows: pd.DataFrame) -> str:
    """What an inconclusive comparison could detect, and the images a difference of the observed size needs."""
    parts = []
    detectable = rows["detectable_difference"].dropna()
    if len(detectable):
        low, high = detectable.min() * 100, detectable.max() * 100
        span = f"{low:.1f}" if math.isclose(low, high, abs_tol=0.05) else f"{low:.1f}–{high:.1f}"
        parts.append(f"this run detects differences of {span} pp (80 % power, α = 0.05)")
    moved = rows[rows["accuracy_difference"].abs() > 0]
    if moved.empty:
        parts.append("no difference was observed at any budget")
    else:
        largest = moved.loc[moved["accuracy_difference"].abs().idxmax()]
        where = f" at ε {format_eps(float(largest['eps']))}" if "eps" in largest and not pd.isna(largest["eps"]) else ""
        needed = largest["n_required"]
        size = f"{abs(largest['accuracy_difference']) * 100:.1f} pp"
        if pd.isna(needed):
            parts.append(f"the largest observed difference is {size}{where}")
        else:
            parts.append(f"the largest observed difference, {size}{where}, needs about {int(needed)} images to detect")
    return "; ".join(parts)


def _condition(labels, method: str, params: str, m_grad: str, precision: str) -> str:
    extra = [f"m_grad {m_grad}" if m_grad else "", precision if precision else ""]
    extra = [x for x in extra if x]
    return labels.method(method, params) + (f" ({', '.join(extra)})" if extra else "")


def _attack_claims(pair: _Pair) -> list[Claim]:
    labels = build_labels(pair.df)
    out = []
    for attack in _attacks(pair):
        condition = _condition(labels, attack.method, attack.params, attack.m_grad, attack.precision)
        claim = f"{pair.elliptical} is more robust than {pair.baseline} under {condition}"
        out.append(Claim(claim, *_judge_rows(attack.rows), pair.models))
    return out


def _judge_rows(rows: pd.DataFrame) -> tuple[ClaimStatus, str]:
    """Status and evidence of a set of paired budgets under the attack rule."""
    evidence = f"{_n_text(rows)}; {_budgets_text(rows)}"
    if rows["mcnemar_p_adjusted"].isna().all():
        return ClaimStatus.INCONCLUSIVE, f"{evidence}; not judged: the run holds no Holm-adjusted p (mcnemar_p_adjusted)"
    directions = [_direction(r) for r in rows.to_dict(orient="records")]
    status = _judge(directions)
    if status is ClaimStatus.INCONCLUSIVE:
        why = "significant in both directions" if 1 in directions and -1 in directions else "no budget significant after Holm"
        evidence += f"; {why}; {_power_text(rows)}"
    return status, evidence


def _budgets_text(rows: pd.DataFrame) -> str:
    return "; ".join(_budget_text(r) for r in rows.to_dict(orient="records"))


def _adaptive_claim(pair: _Pair) -> list[Claim]:
    attacks = _attacks(pair)
    if not {"detach", "full"} <= {a.m_grad for a in attacks}:
        return []
    claim = f"{pair.elliptical}'s advantage over {pair.baseline} survives the adaptive attack (m_grad full)"
    labels = build_labels(pair.df)
    full = {(a.method, a.params, a.precision): a for a in attacks if a.m_grad == "full"}
    survivors = [
        full[(a.method, a.params, a.precision)]
        for a in attacks
        if a.m_grad == "detach" and (a.method, a.params, a.precision) in full and _judge_rows(a.rows)[0] is ClaimStatus.SUPPORTED
    ]
    if not survivors:
        evidence = "no attack shows a significant advantage under m_grad detach, so there is none to survive"
        return [Claim(claim, ClaimStatus.INCONCLUSIVE, evidence, pair.models)]
    rows = pd.concat([a.rows for a in survivors])
    status, _ = _judge_rows(rows)
    evidence = _n_text(rows) + "; " + "; ".join(
        f"{_condition(labels, a.method, a.params, a.m_grad, a.precision)}: {_budgets_text(a.rows)}" for a in survivors
    )
    if status is ClaimStatus.INCONCLUSIVE:
        evidence += f"; {_power_text(rows)}"
    return [Claim(claim, status, evidence, pair.models)]


def _mce_claim(pair: _Pair) -> list[Claim]:
    df = pair.df
    mce = df[(df["metric"] == "mce") & df["model"].isin(pair.models)]
    if mce.empty:
        return []
    diff = pair.paired[pair.paired["metric"].isin(["mce_difference", "mce_difference_ci_low", "mce_difference_ci_high"])]
    by_norm = {str(split_params(p)[0].get("normalization", "")): p for p in pd.unique(mce["params"])}
    norm = next((k for k in _MCE_ORDER if k in by_norm), next(iter(by_norm)))
    name = _MCE_NAMES.get(norm, norm or "mCE")
    claim = f"{pair.elliptical} has a lower {name} mCE than {pair.baseline} (lower: more robust to corruptions)"
    values = {r["model"]: r["value"] for r in mce[mce["params"] == by_norm[norm]].to_dict(orient="records")}
    points = ", ".join(f"{m} {values[m]:.3f}" for m in pair.models if m in values)
    n = _n_text(mce)
    cells = _cell_counts(pair)
    rows = {r["metric"]: r["value"] for r in diff[diff["params"] == by_norm[norm]].to_dict(orient="records")}
    d, low, high = (rows.get(m, math.nan) for m in ("mce_difference", "mce_difference_ci_low", "mce_difference_ci_high"))
    if pd.isna(d) or pd.isna(low) or pd.isna(high):
        evidence = f"{n}; mCE {points}; not judged: the run holds no paired interval (mce_difference_ci_low/high){cells}"
        return [Claim(claim, ClaimStatus.INCONCLUSIVE, evidence, pair.models)]
    status = ClaimStatus.SUPPORTED if high < 0 else ClaimStatus.CONTRADICTED if low > 0 else ClaimStatus.INCONCLUSIVE
    evidence = f"{n}; mCE {points}; difference {d:+.3f} (95 % paired bootstrap CI {low:+.3f} … {high:+.3f}){cells}"
    if status is ClaimStatus.INCONCLUSIVE:
        evidence += "; " + _scaled_n_text(d, (high - low) / 2, _n(mce))
    return [Claim(claim, status, evidence, pair.models)]


def _cell_counts(pair: _Pair) -> str:
    """How many corruption × severity cells survive Holm, in each direction."""
    wide = _paired_wide(pair)
    cells = wide[wide["severity"].notna()] if len(wide) else wide
    if cells.empty or cells["mcnemar_p_adjusted"].isna().all():
        return ""
    directions = [_direction(r) for r in cells.to_dict(orient="records")]
    return (
        f"; corruption × severity cells surviving Holm: {directions.count(1)} favour {pair.elliptical}, "
        f"{directions.count(-1)} favour {pair.baseline}, of {len(directions)}"
    )


def _collapse_claims(pair: _Pair) -> list[Claim]:
    df = pair.df
    summary = df[(df["metric"] == "token_cosine") & df["layer"].isna() & (df["method"] == "collapse") & df["model"].isin(pair.models)]
    per_layer = df[(df["metric"] == "token_cosine") & df["layer"].notna() & (df["method"] == "collapse") & df["model"].isin(pair.models)]
    if not set(pair.models) <= set(summary["model"]) | set(per_layer["model"]):
        return []  # nothing measured, or a model without tokens (a CNN baseline): no collapse to compare
    diffs = pair.paired[pair.paired["metric"].str.startswith("token_cosine_difference") & pair.paired["layer"].isna() & (pair.paired["method"] == "collapse")]
    out = []
    variants = list(dict.fromkeys(summary["params"])) or list(dict.fromkeys(p for p in per_layer["params"] if "head" not in split_params(p)[1]))
    for params in variants:
        settings = split_params(params)[1]
        if settings.get("head") is not None:
            continue
        layers = settings.get("layers")
        span = f"layers {_layers_text(layers)}, " if layers else ""
        claim = (
            f"{pair.elliptical}'s tokens are less collapsed than {pair.baseline}'s in the later half of the layers "
            f"(token cosine, {span}{collapse_label(settings)})"
        )
        values = {r["model"]: r["value"] for r in summary[summary["params"] == params].to_dict(orient="records")}
        points = ", ".join(f"{m} {values[m]:.3f}" for m in pair.models if m in values)
        # the difference rows also carry the baseline's layers (models of different depths): match on what was measured
        rows = {r["metric"]: r["value"] for r in diffs.to_dict(orient="records") if split_params(r["params"])[1] == settings}
        d = rows.get("token_cosine_difference", math.nan)
        low, high = rows.get("token_cosine_difference_ci_low", math.nan), rows.get("token_cosine_difference_ci_high", math.nan)
        n_rows = summary if not summary.empty else per_layer
        n = _n_text(n_rows)
        if pd.isna(d) or pd.isna(low) or pd.isna(high):
            missing = "no later-half summary rows" if summary.empty else "no paired interval (token_cosine_difference_ci_low/high)"
            evidence = f"{n}; {'mean token cosine ' + points + '; ' if points else ''}not judged: the run holds {missing}"
            out.append(Claim(claim, ClaimStatus.INCONCLUSIVE, evidence, pair.models))
            continue
        status = ClaimStatus.SUPPORTED if high < 0 else ClaimStatus.CONTRADICTED if low > 0 else ClaimStatus.INCONCLUSIVE
        evidence = f"{n}; mean token cosine {points}; difference {d:+.3f} (95 % paired t-interval {low:+.3f} … {high:+.3f})"
        if status is ClaimStatus.INCONCLUSIVE:
            evidence += "; " + _scaled_n_text(d, (high - low) / 2, _n(n_rows))
        out.append(Claim(claim, status, evidence, pair.models))
    return out


def _scaled_n_text(difference: float, half_width: float, n: int | None) -> str:
    """Images for 80 % power at the observed difference, scaling the interval's half-width as 1/√n."""
    if difference == 0 or n is None:
        return "no difference was observed"
    needed = math.ceil(n * ((_Z_ALPHA + _Z_POWER) / _Z_ALPHA) ** 2 * (half_width / abs(difference)) ** 2)
    return f"a difference of the observed size needs about {needed} images to detect (interval scaled as 1/√n, 80 % power)"


def _layers_text(layers: object) -> str:
    values = [int(v) for v in layers] if isinstance(layers, list) else []
    if values and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}" if len(values) > 1 else str(values[0])
    return ", ".join(map(str, values))


def _n(rows: pd.DataFrame) -> int | None:
    ns = rows["n"].dropna() if "n" in rows else pd.Series(dtype=float)
    return int(ns.min()) if len(ns) else None


def _n_text(rows: pd.DataFrame) -> str:
    n = _n(rows)
    return f"n = {n}" if n is not None else "n unknown"


def _text(value: object) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
