"""The representation-collapse tables: each metric per layer on the clean images, on adversarial images and per head."""

from __future__ import annotations

import pandas as pd

from ellrobust.report.legend import Labels, collapse_label, series_columns, series_label, varying
from ellrobust.report.number_format import (
    format_layers,
    format_number_interval,
)
from ellrobust.report.table_model import Align, Table
from ellrobust.report.tables import (
    COMPANION_SUFFIXES,
    condition_key,
    grouped,
    has_column,
    key_cell,
    metric_rows,
    section_breaks,
)
from ellrobust.results import COLLAPSE_METRICS, Metric
from ellrobust.verdict.results_view import (
    Lookup,
    interval_metrics,
    split_params,
)

#: Collapse metrics: the section title of each, and which way is more collapsed (a table's caption).
COLLAPSE_TITLES = {
    Metric.TOKEN_COSINE: "Token cosine similarity",
    Metric.ATTENTION_ENTROPY: "Attention entropy",
    Metric.EFFECTIVE_RANK: "Effective rank",
    Metric.ELLIPTICAL_M_MEAN: "Elliptical metric m: mean over coordinates",
    Metric.ELLIPTICAL_M_SPREAD: "Elliptical metric m: spread (standard deviation) over coordinates",
}


_COLLAPSED = {
    Metric.TOKEN_COSINE: "higher: more collapsed",
    Metric.EFFECTIVE_RANK: "lower: more collapsed",
}


def collapse_metrics(df: pd.DataFrame) -> list[str]:
    """Collapse metrics present in the table (intervals and differences excluded): known ones first."""
    rows = df[(df["method"] == "collapse") | df["layer"].notna()]
    present = [m for m in pd.unique(rows["metric"]) if not any(s in m for s in COMPANION_SUFFIXES)]
    known = [m.value for m in COLLAPSE_METRICS]
    return [m for m in known if m in present] + [m for m in present if m not in known]


def _title(metric: str) -> str:
    return COLLAPSE_TITLES.get(metric, metric)


def _collapse_variants(df: pd.DataFrame, metric: str) -> list[str]:
    """Collapse settings (all heads together) measured on the clean images, e.g. ``residual, cls``."""
    rows = metric_rows(df, metric)
    rows = rows[rows["method"] == "collapse"]
    settings = [split_params(p)[1] for p in rows["params"]]
    return list(dict.fromkeys(collapse_label(s) for s in settings if s.get("head") is None))


def _collapse_label_of(params: str) -> str:
    return collapse_label(split_params(params)[1])


def _all_heads(params: str) -> bool:
    return split_params(params)[1].get("head") is None


def _clean_setting(rows: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Collapse rows on the clean images with one setting, all heads together."""
    rows = rows[(rows["method"] == "collapse") & rows["params"].map(_collapse_label_of).eq(variant)]
    return rows[rows["params"].map(_all_heads).astype(bool)]


def _later_half(params: str) -> str:
    layers = format_layers(split_params(params)[1].get("layers"))
    return f"later half ({layers})" if layers else "later half"


def collapse_table(df: pd.DataFrame, metric: str) -> list[tuple[str, Table]]:
    """One per-layer metric on the clean images: layers as rows; each model (95 % CI) and each pair's
    paired difference (95 % CI) as columns; the later-half summary as the last row. One table per
    collapse setting (usually one), paired with its label."""
    lookup = Lookup(df)
    low_name, high_name = interval_metrics(metric)
    diff_low, diff_high = interval_metrics(f"{metric}_difference")
    out = []
    for variant in _collapse_variants(df, metric):
        values = _clean_setting(metric_rows(df, metric), variant)
        diffs = _clean_setting(df[(df["metric"] == f"{metric}_difference") & df["baseline"].ne("")], variant)
        columns = series_columns(values)
        series = list(dict.fromkeys(series_label(r, columns) for r in values.to_dict(orient="records")))
        pairs = list(dict.fromkeys((r["run"], r["model"], r["baseline"]) for r in diffs.to_dict(orient="records")))
        cells: dict[object, dict[object, str]] = {}
        summary_label = None
        for r in values.to_dict(orient="records"):
            layer = "summary" if pd.isna(r["layer"]) else int(r["layer"])
            summary_label = _later_half(r["params"]) if layer == "summary" else summary_label
            cell = format_number_interval(r["value"], lookup(r, low_name), lookup(r, high_name))
            cells.setdefault(layer, {})[series_label(r, columns)] = cell
        for r in diffs.to_dict(orient="records"):
            layer = "summary" if pd.isna(r["layer"]) else int(r["layer"])
            cell = format_number_interval(r["value"], lookup(r, diff_low), lookup(r, diff_high), signed=True)
            cells.setdefault(layer, {})[(r["run"], r["model"], r["baseline"])] = cell
        layers = sorted(k for k in cells if k != "summary") + (["summary"] if "summary" in cells else [])
        rows = tuple(
            (summary_label if layer == "summary" else str(layer), *(cells[layer].get(k, "") for k in [*series, *pairs]))
            for layer in layers
        )
        multi_run = len({p[0] for p in pairs}) > 1
        headers = ("layer", *series, *(f"{a} − {b}" + (f" ({run})" if multi_run else "") for run, a, b in pairs))
        note = f"{_COLLAPSED[metric]}; " if metric in _COLLAPSED else ""
        table = Table(
            headers,
            rows,
            (Align.LEFT,) + (Align.RIGHT,) * (len(headers) - 1),
            title=f"{_title(metric)} per layer on the clean images ({variant}; 95 % CI over images)",
            caption=f"{note}A − B: paired difference on the same images (95 % paired t-interval)"
            if pairs
            else note.rstrip("; "),
        )
        out.append((variant, table))
    return out


def collapse_other_table(df: pd.DataFrame, metric: str, labels: Labels) -> Table | None:
    """The collapse rows :func:`collapse_table` leaves out (adversarial images, single heads), long: one row
    per image set × layer × setting, one column per model.

    A baseline is attacked once (m_grad ''), so its rows stand next to every m_grad mode of an
    elliptical model on the same attack and ε, as in the paired comparison.
    """
    rows = metric_rows(df, metric)
    rows = rows[(rows["method"] != "collapse") | ~rows["params"].map(_all_heads).astype(bool)]
    if rows.empty:
        return None
    lookup = Lookup(df)
    low_name, high_name = interval_metrics(metric)
    rows = rows.assign(
        images=[
            "clean" if m == "collapse" else labels.method(m, p)
            for m, p in zip(rows["method"], rows["params"], strict=True)
        ],
        setting=rows["params"].map(_collapse_label_of),
        layer_text=["later half" if pd.isna(v) else str(int(v)) for v in rows["layer"]],
    )
    condition = ["run", "images", "eps", "precision", "setting"]
    modes: dict[tuple, list[str]] = {}
    for r in rows[rows["m_grad"] != ""].to_dict(orient="records"):
        modes.setdefault(condition_key(r, condition), []).append(r["m_grad"])
    shown = [
        {**r, "mode": mode}
        for r in rows.to_dict(orient="records")
        for mode in (
            list(dict.fromkeys(modes.get(condition_key(r, condition), []))) or [""]
            if r["m_grad"] == ""
            else [r["m_grad"]]
        )
    ]
    rows = pd.DataFrame(shown)
    keys = [
        *varying(rows, ["run"]),
        "images",
        "eps",
        *(["mode"] if has_column(rows, "m_grad") else []),
        *(["precision"] if has_column(rows, "precision") else []),
        "setting",
        "layer_text",
    ]
    models = list(dict.fromkeys(rows["model"]))
    out, groups = [], []
    for fields, group in grouped(rows, keys):
        by_model = {r["model"]: r for r in group.to_dict(orient="records")}
        cells = [
            format_number_interval(r["value"], lookup(r, low_name), lookup(r, high_name))
            if (r := by_model.get(m))
            else ""
            for m in models
        ]
        out.append((*(key_cell(k, fields[k]) for k in keys), *cells))
        groups.append(tuple(key_cell(k, fields[k]) for k in keys[:-1]))
    headers = (
        *({"images": "images", "eps": "ε", "mode": "m_grad", "layer_text": "layer"}.get(k, k) for k in keys),
        *models,
    )
    return Table(
        headers,
        tuple(out),
        (Align.LEFT,) * len(keys) + (Align.RIGHT,) * len(models),
        title=f"{_title(metric)} on adversarial images and per head (95 % CI over images)",
        caption="each model's own adversarial images (those it was attacked on): no paired differences",
        sections=section_breaks(groups),
    )
