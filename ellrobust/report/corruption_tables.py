"""The corruption tables: accuracy per corruption and severity, CE and mCE per model, the pair's mCE difference."""

from __future__ import annotations

import pandas as pd

from ellrobust.report.legend import series_columns, series_label, varying
from ellrobust.report.number_format import (
    format_number,
    format_pp,
    format_signed,
    format_signed_interval,
)
from ellrobust.report.table_model import Align, Table
from ellrobust.report.tables import accuracy_cell, grouped, has_column, metric_rows, ordered_columns, row_holm_direction
from ellrobust.results import Metric
from ellrobust.stats.decisions import Favours
from ellrobust.verdict.results_view import (
    Lookup,
    paired_records,
    parse_params,
)

#: Preference among mCE normalisations: the first one present is summarised.
MCE_ORDER = ("alexnet", "none", "baseline")


def corruption_table(df: pd.DataFrame) -> Table | None:
    """Corruption accuracy (%) (95 % CI) per corruption × model, one column per severity plus their mean."""
    cor = metric_rows(df, Metric.CORRUPTION_ACCURACY)
    if cor.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(cor, ["run"]), "method", "model", *(["m_grad"] if has_column(cor, "m_grad") else [])]
    severities = sorted(int(s) for s in cor["severity"].dropna().unique())
    out = []
    for fields, group in grouped(cor, keys):
        records = group.to_dict(orient="records")
        by_sev = {int(r["severity"]): r for r in records if not pd.isna(r["severity"])}
        overall = next((r for r in records if pd.isna(r["severity"])), None)
        out.append(
            (
                *(str(fields[k]) for k in keys),
                *(accuracy_cell(lookup, by_sev.get(s), Metric.CORRUPTION_ACCURACY) for s in severities),
                accuracy_cell(lookup, overall, Metric.CORRUPTION_ACCURACY),
            )
        )
    headers = (*("corruption" if k == "method" else k for k in keys), *(f"severity {s}" for s in severities), "mean")
    align = (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (len(severities) + 1)
    return Table(headers, tuple(out), align, title="Corruption accuracy (%) per severity, with 95 % Wilson intervals")


def _normalization(params: str) -> str:
    return str(parse_params(params).get("normalization", ""))


def _ce_by_model(df: pd.DataFrame) -> tuple[str, dict[tuple[str, str, str], float]]:
    """The preferred CE normalisation present and (run, model, corruption) → its CE."""
    ce = df[df["metric"] == Metric.CE.value]
    norms = {_normalization(p) for p in ce["params"]}
    norm = next((k for k in MCE_ORDER if k in norms), next(iter(sorted(norms)), ""))
    values = {}
    for r in ce.to_dict(orient="records"):
        if _normalization(r["params"]) == norm:
            values[(r["run"], r["model"], r["method"])] = r["value"]
    return norm, values


def corruption_summary(df: pd.DataFrame) -> tuple[Table, str] | None:
    """Per corruption: each model's mean accuracy over severities [CI], each pair's mean difference, how
    many severity cells survive Holm in each direction, and CE; with the CE normalisation shown."""
    cor = metric_rows(df, Metric.CORRUPTION_ACCURACY)
    if cor.empty:
        return None
    lookup = Lookup(df)
    columns = series_columns(cor)
    series = list(dict.fromkeys(series_label(r, columns) for r in cor.to_dict(orient="records")))
    means: dict[tuple[str, str], dict] = {}
    for r in cor.to_dict(orient="records"):
        if pd.isna(r["severity"]):
            means[(r["method"], series_label(r, columns))] = r
    paired = [r for r in paired_records(df, lookup) if not pd.isna(r["severity"])]
    pairs = list(dict.fromkeys((r["run"], r["model"], r["baseline"]) for r in paired))
    norm, ce = _ce_by_model(df)
    ce_models = list(dict.fromkeys((run, model) for run, model, _ in ce))
    out = []
    for corruption in pd.unique(cor["method"]):
        cells = [
            str(corruption),
            *(accuracy_cell(lookup, means.get((corruption, s)), Metric.CORRUPTION_ACCURACY) for s in series),
        ]
        for run, a, b in pairs:
            mine = [r for r in paired if (r["run"], r["model"], r["baseline"], r["method"]) == (run, a, b, corruption)]
            if not mine:
                cells += ["", ""]
                continue
            directions = [row_holm_direction(r) for r in mine]
            mean = sum(r[Metric.ACCURACY_DIFFERENCE] for r in mine) / len(mine)
            adjusted = not all(pd.isna(r[Metric.MCNEMAR_P_ADJUSTED]) for r in mine)
            holm = f"{directions.count(Favours.A)} / {directions.count(Favours.B)} of {len(mine)}" if adjusted else ""
            cells += [format_pp(mean), holm]
        cells += [format_number(ce.get((run, model, corruption), float("nan"))) for run, model in ce_models]
        out.append(tuple(cells))
    multi_run = len({p[0] for p in pairs}) > 1
    pair_headers = []
    for run, a, b in pairs:
        tag = f" ({run})" if multi_run else ""
        pair_headers += [f"{a} − {b}{tag} (pp)", f"cells surviving Holm{tag} (A / B)"]
    multi_ce = len({run for run, _ in ce_models}) > 1
    ce_headers = [f"CE {model}" + (f" ({run})" if multi_ce else "") for run, model in ce_models]
    headers = ("corruption", *(f"{s} (%)" for s in series), *pair_headers, *ce_headers)
    title = "Corruptions: mean accuracy (%) over the severities, paired difference, cells surviving Holm, CE"
    return Table(headers, tuple(out), (Align.LEFT,) + (Align.RIGHT,) * (len(headers) - 1), title=title), norm


def _reference(row: dict) -> str:
    """What a CE row is normalised by, for its label: AlexNet, a baseline model, or nothing."""
    normalization = _normalization(row["params"])
    if row["baseline"]:
        return f"vs {row['baseline']}"
    return {"alexnet": "vs AlexNet", "none": "unnormalised"}.get(normalization, normalization)


def ce_table(df: pd.DataFrame) -> Table | None:
    """Corruption error per corruption and mCE: one row per corruption and reference, one column per model.

    CE may be reported against several references (AlexNet on ImageNet; elsewhere unnormalised and
    relative to a baseline model); each row names its reference, in the order the run wrote them.
    """
    names = {Metric.CE: "", Metric.MCE: "mCE", Metric.RELATIVE_MCE: "relative mCE"}
    rows = df[df["metric"].isin([m.value for m in names])].copy()
    if rows.empty:
        return None
    rows["reference"] = [_reference(r) for r in rows.to_dict(orient="records")]
    columns = series_columns(rows)
    labels = list(dict.fromkeys(series_label(r, columns) for r in rows.to_dict(orient="records")))
    cells: dict[str, dict[str, float]] = {}
    for r in ordered_columns(rows, ["reference", "metric", "method"]).to_dict(orient="records"):
        name = r["method"] if r["metric"] == Metric.CE else names[Metric(r["metric"])]
        row_label = f"{name} ({r['reference']})" if r["reference"] else name
        cells.setdefault(row_label, {})[series_label(r, columns)] = r["value"]
    out = tuple((label, *(format_number(v.get(s, float("nan"))) for s in labels)) for label, v in cells.items())
    title = "Corruption error (CE) per corruption and mCE, by reference (lower is better)"
    return Table(("corruption", *labels), out, (Align.LEFT,) + (Align.RIGHT,) * len(labels), title=title)


def mce_difference_table(df: pd.DataFrame) -> Table | None:
    """mCE(A) − mCE(B) with its 95 % paired bootstrap interval, per normalisation."""
    rows = df[(df["metric"] == Metric.MCE.difference.value) & df["baseline"].ne("")]
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = varying(rows, ["run"])
    out = []
    for r in rows.to_dict(orient="records"):
        norm = _normalization(r["params"])
        low, high = lookup(r, Metric.MCE.difference.ci_low), lookup(r, Metric.MCE.difference.ci_high)
        out.append(
            (
                *(str(r[k]) for k in keys),
                r["model"],
                r["baseline"],
                {"alexnet": "AlexNet", "none": "unnormalised", "baseline": "baseline-normalised"}.get(norm, norm),
                format_signed(r["value"]),
                format_signed_interval(low, high),
            )
        )
    headers = (*keys, "A", "B", "normalisation", "mCE A − B", "95 % bootstrap CI")
    title = "mCE difference on the same images (negative: A has the lower mCE)"
    return Table(headers, tuple(out), (Align.LEFT,) * (len(keys) + 3) + (Align.RIGHT,) * 2, title=title)
