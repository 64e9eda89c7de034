"""The one-screen summary: one row per model (and m_grad mode), the numbers the claims are about.

Clean accuracy, worst-case robust accuracy at each L∞ budget (the worst case over the run's attacks,
or its one attack) and at each patch budget (over its patch attacks), the median minimal budget ε*, mCE
and the later-half token cosine, whichever the run measured. ``eval`` prints it with the verdict by
default and the report opens with it; every other table is a detail (``eval --details``, the report's
later sections).
"""

from __future__ import annotations

import pandas as pd

from ellrobust.attacks import ATTACKS, AttackRequest
from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.report.number_format import format_budget, format_eps, format_number, format_pct
from ellrobust.report.table_model import Align, Table
from ellrobust.report.tables import metric_rows, ordered_columns, patch_count
from ellrobust.results import Metric
from ellrobust.verdict.results_view import parse_params, split_params

#: mCE normalisations in the order the summary prefers them.
_NORMALISATIONS = ("alexnet", "none", "baseline")


def summary_table(df: pd.DataFrame) -> Table | None:
    """One row per model and m_grad mode of a prepared results table; None for a table without clean accuracy."""
    clean = ordered_columns(metric_rows(df, Metric.CLEAN_ACCURACY), ["model"])
    if clean.empty:
        return None
    robust, patched = _worst_case(df, "Linf"), _worst_case(df, PATCH_NORM)
    budgets = sorted(robust["eps"].dropna().unique()) if not robust.empty else []
    counts = sorted(patched["eps"].dropna().unique()) if not patched.empty else []
    stars = metric_rows(df, Metric.EPS_STAR_MEDIAN)
    star_method = next(iter(stars["method"]), None)
    mce, norm = _mce(df)
    cosine = _cosine(df)
    attacked = pd.concat([robust, patched])
    modes = {m: list(dict.fromkeys(attacked[attacked["model"] == m]["m_grad"])) or [""] for m in clean["model"]}
    out = []
    for r in clean.to_dict(orient="records"):
        for mg in modes[r["model"]]:
            cells = [r["model"] + (f" ({mg})" if mg else ""), format_pct(r["value"])]
            mine = robust[(robust["model"] == r["model"]) & (robust["m_grad"] == mg)]
            cells += [_value(mine[mine["eps"] == e], format_pct) for e in budgets]
            mine = patched[(patched["model"] == r["model"]) & (patched["m_grad"] == mg)]
            cells += [_value(mine[mine["eps"] == k], format_pct) for k in counts]
            if star_method is not None:
                at = stars[(stars["model"] == r["model"]) & (stars["method"] == star_method)]
                at = at[at["m_grad"] == mg] if mg else at
                cells.append(_value(at, lambda v: format_budget(v, unit=False)))
            if mce is not None:
                cells.append(_value(mce[mce["model"] == r["model"]], lambda v: format_pct(v)))
            if cosine is not None:
                cells.append(_value(cosine[cosine["model"] == r["model"]], format_number))
            out.append(tuple(cells))
    headers = ["model", "clean", *(f"ε {format_eps(e)}" for e in budgets), *(patch_count(k) for k in counts)]
    headers += ["ε*"] if star_method is not None else []
    headers += ["mCE"] if mce is not None else []
    headers += ["cos."] if cosine is not None else []
    notes = ["ε: worst case over attacks"] if budgets else []
    notes += ["patches: worst case over patch attacks"] if counts else []
    notes += [f"ε*: {star_method}'s median (/255)"] if star_method is not None else []
    notes += [f"mCE {norm}"] if mce is not None else []
    notes += ["cos.: later-half token cosine"] if cosine is not None else []
    align = (Align.LEFT,) + (Align.RIGHT,) * (len(headers) - 1)
    return Table(tuple(headers), tuple(out), align, title="Summary (%)", caption="; ".join(notes))


def _value(rows: pd.DataFrame, fmt) -> str:
    return fmt(float(rows["value"].iloc[0])) if not rows.empty else ""


def _worst_case(df: pd.DataFrame, norm: str) -> pd.DataFrame:
    """Robust accuracy in ``norm`` at fp32: the worst case where the run has one, else its one attack's."""
    rows = metric_rows(df, Metric.ROBUST_ACCURACY)
    rows = rows[rows["eps"].notna() & rows["precision"].isin(["", "fp32"])]
    keep = [_white_box(m, parse_params(p), norm) for m, p in zip(rows["method"], rows["params"], strict=True)]
    rows = rows[pd.Series(keep, index=rows.index, dtype=bool)]
    worst = rows[rows["method"] == "worst-case"]
    if not worst.empty:
        return worst
    attacks = list(dict.fromkeys(rows["method"]))
    return rows[rows["method"] == attacks[0]] if len(attacks) == 1 else rows.iloc[0:0]


def _white_box(method: str, params: dict, norm: str) -> bool:
    """An attack (or worst case) of the model itself in ``norm``: not transferred, not a sanity probe."""
    if "source" in params or (method != "worst-case" and method not in ATTACKS):
        return False
    found = params.get("norm", "Linf") if method == "worst-case" else AttackRequest(method, params).norm
    return found == norm


def _mce(df: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    rows = metric_rows(df, Metric.MCE)
    if rows.empty:
        return None, ""
    norms = [parse_params(p).get("normalization", "") for p in rows["params"]]
    norm = next((n for n in _NORMALISATIONS if n in norms), norms[0])
    return rows[pd.Series([n == norm for n in norms], index=rows.index)], {"none": "unnormalised"}.get(norm, norm)


def _cosine(df: pd.DataFrame) -> pd.DataFrame | None:
    rows = metric_rows(df, Metric.TOKEN_COSINE)
    rows = rows[(rows["method"] == "collapse") & rows["layer"].isna()]
    rows = rows[rows["params"].map(lambda p: split_params(p)[1].get("head") is None).astype(bool)]
    return None if rows.empty else rows
