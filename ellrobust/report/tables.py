"""Pivoting the long results table into the report's tables (pure functions, frame → :class:`Table`).

Each function takes a :func:`~ellrobust.report.frame.prepare`-d table and returns ``None`` when the
run measured nothing of its kind, so the document can say so instead of printing an empty table.
Rows keep the order in which the run produced them (the order the user named models and attacks),
not alphabetical order. Values stay floats until here; this is where they are rounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pandas as pd

from ellrobust.collapse import CollapseMetric
from ellrobust.report.frame import (
    TEXT_COLUMNS,
    binomial_band,
    format_eps,
    format_int,
    format_number,
    format_pct,
    series_columns,
    series_label,
    varying,
)
from ellrobust.report.markdown import Align, Table

#: Collapse metrics in the order the report shows them; any other per-layer metric follows.
COLLAPSE_METRICS = tuple(m.value for m in CollapseMetric)
PAIRED_METRICS = ("accuracy_difference", "difference_ci_low", "difference_ci_high", "mcnemar_p")
_HEADERS = {"run": "run", "model": "model", "m_grad": "m_grad", "method": "method", "params": "settings"}


def settings_text(settings: Mapping) -> str:
    """``{"steps": 10, "attacks": ["fgsm", "pgd"]}`` → ``steps=10, attacks=fgsm+pgd`` (short, for a cell)."""
    return ", ".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}" for k, v in settings.items())


def params_text(params: str) -> str:
    """A row's params JSON as :func:`settings_text`; text that is not a JSON object is shown as it is."""
    try:
        obj = json.loads(params) if params else {}
    except ValueError:
        return params
    return settings_text(obj) if isinstance(obj, dict) else params


def _ordered(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows sorted by ``columns``, each by the order of first appearance of its values (stable)."""

    def rank(s: pd.Series) -> pd.Series:
        order = {v: i for i, v in enumerate(pd.unique(s))}
        return s.map(order)

    return df.sort_values(list(columns), key=rank, kind="stable") if len(df) else df


def _any(df: pd.DataFrame, column: str) -> bool:
    """Whether a column holds a value anywhere (a non-empty string or a non-missing number)."""
    col = df[column]
    return bool(col.ne("").any()) if column in TEXT_COLUMNS else bool(col.notna().any())


def _cell(column: str, value: object) -> str:
    if column == "params":
        return params_text(str(value))
    if column == "eps":
        return "" if pd.isna(value) else format_eps(float(value))
    if column in ("severity", "layer", "n"):
        return format_int(value)
    return str(value)


def _groups(df: pd.DataFrame, keys: list[str]):
    """(key fields as a dict, rows) per distinct key, in the order of ``keys``' first appearance."""
    for key, group in _ordered(df, keys).groupby(keys, sort=False, dropna=False):
        yield dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), group


def clean_table(df: pd.DataFrame) -> Table | None:
    """Clean accuracy per model, with the checkpoint digest and a 95 % binomial interval."""
    rows = _ordered(df[df["metric"] == "clean_accuracy"], ["run", "model"])
    if rows.empty:
        return None
    keys = [*varying(rows, ["run"]), "model"]
    out = []
    for r in rows.to_dict(orient="records"):
        low, high = binomial_band(r["value"], int(r["n"]))
        out.append(
            (
                *(str(r[k]) for k in keys),
                r["checkpoint"],
                format_int(r["n"]),
                format_pct(r["value"]),
                f"{format_pct(low)} – {format_pct(high)}",
            )
        )
    headers = (*keys, "checkpoint", "n", "accuracy (%)", "95 % CI (%)")
    return Table(headers, tuple(out), (Align.LEFT,) * (len(keys) + 1) + (Align.RIGHT,) * 3)


def robust_table(df: pd.DataFrame) -> Table | None:
    """Robust accuracy (%) per attack × model (× m_grad), one column per eps, clean accuracy first."""
    rob = df[df["metric"] == "robust_accuracy"]
    if rob.empty:
        return None
    clean = {(r["run"], r["model"]): r["value"] for r in df[df["metric"] == "clean_accuracy"].to_dict(orient="records")}
    settings = ["params"] if (rob.groupby("method")["params"].nunique() > 1).any() else []
    keys = [*varying(rob, ["run"]), "method", *settings, "model", *(["m_grad"] if _any(rob, "m_grad") else [])]
    eps_values = sorted(rob["eps"].dropna().unique())
    out = []
    for fields, group in _groups(rob, keys):
        first = group.iloc[0]
        by_eps = dict(zip(group["eps"], group["value"], strict=True))
        out.append(
            (
                *(_cell(k, fields[k]) for k in keys),
                format_pct(clean.get((first["run"], first["model"]), float("nan"))),
                *(format_pct(by_eps.get(e, float("nan"))) for e in eps_values),
            )
        )
    headers = (*(_HEADERS[k] for k in keys), "clean", *(f"ε {format_eps(e)}" for e in eps_values))
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (1 + len(eps_values)))


def corruption_table(df: pd.DataFrame) -> Table | None:
    """Corruption accuracy (%) per corruption × model, one column per severity plus their mean."""
    cor = df[df["metric"] == "corruption_accuracy"]
    if cor.empty:
        return None
    keys = [*varying(cor, ["run"]), "method", "model", *(["m_grad"] if _any(cor, "m_grad") else [])]
    severities = sorted(int(s) for s in cor["severity"].dropna().unique())
    out = []
    for fields, group in _groups(cor, keys):
        by_sev = {int(s): v for s, v in zip(group["severity"], group["value"], strict=True) if not pd.isna(s)}
        overall = group.loc[group["severity"].isna(), "value"]  # the run's own mean over severities, if written
        mean = overall.iloc[0] if len(overall) else sum(by_sev.values()) / max(len(by_sev), 1)
        out.append(
            (
                *(_cell(k, fields[k]) for k in keys),
                *(format_pct(by_sev.get(s, float("nan"))) for s in severities),
                format_pct(mean),
            )
        )
    headers = (
        *("corruption" if k == "method" else _HEADERS[k] for k in keys),
        *(f"severity {s}" for s in severities),
        "mean",
    )
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (len(severities) + 1))


def _reference(row: dict) -> str:
    """What a CE row is normalised by, for its label: AlexNet, a baseline model, or nothing."""
    try:
        normalization = json.loads(row["params"]).get("normalization", "") if row["params"] else ""
    except (ValueError, AttributeError):
        normalization = ""
    if row["baseline"]:
        return f"vs {row['baseline']}"
    return {"alexnet": "vs AlexNet", "none": "unnormalised"}.get(normalization, normalization)


def ce_table(df: pd.DataFrame) -> Table | None:
    """Corruption error per corruption and mCE: one row per corruption and reference, one column per model.

    CE may be reported against several references (AlexNet on ImageNet; elsewhere unnormalised and
    relative to a baseline model); each row names its reference, in the order the run wrote them.
    """
    names = {"ce": "", "mce": "mCE", "relative_mce": "relative mCE"}
    rows = df[df["metric"].isin(list(names))].copy()
    if rows.empty:
        return None
    rows["reference"] = [_reference(r) for r in rows.to_dict(orient="records")]
    columns = series_columns(rows)
    labels = list(dict.fromkeys(series_label(r, columns) for r in rows.to_dict(orient="records")))
    cells: dict[str, dict[str, float]] = {}
    for r in _ordered(rows, ["reference", "metric", "method"]).to_dict(orient="records"):
        name = r["method"] if r["metric"] == "ce" else names[r["metric"]]
        row_label = f"{name} ({r['reference']})" if r["reference"] else name
        cells.setdefault(row_label, {})[series_label(r, columns)] = r["value"]
    out = tuple((label, *(format_number(v.get(s, float("nan"))) for s in labels)) for label, v in cells.items())
    return Table(("corruption", *labels), out, (Align.LEFT,) + (Align.RIGHT,) * len(labels))


def collapse_metrics(df: pd.DataFrame) -> list[str]:
    """Per-layer metrics present in the table: the known collapse metrics first, then any other."""
    present = list(pd.unique(df.loc[df["layer"].notna(), "metric"]))
    return [m for m in COLLAPSE_METRICS if m in present] + [m for m in present if m not in COLLAPSE_METRICS]


def collapse_table(df: pd.DataFrame, metric: str) -> Table | None:
    """One per-layer metric: one row per layer, one column per model (the paper's figure as numbers)."""
    rows = df[(df["metric"] == metric) & df["layer"].notna()]
    if rows.empty:
        return None
    columns = series_columns(rows, extra=("method", "params"))
    labels = list(dict.fromkeys(series_label(r, columns) for r in rows.to_dict(orient="records")))
    values: dict[int, dict[str, float]] = {}
    for r in rows.to_dict(orient="records"):
        values.setdefault(int(r["layer"]), {})[series_label(r, columns)] = r["value"]
    out = tuple(
        (str(layer), *(format_number(v.get(s, float("nan"))) for s in labels)) for layer, v in sorted(values.items())
    )
    return Table(("layer", *labels), out, (Align.RIGHT,) * (1 + len(labels)))


def paired_table(df: pd.DataFrame) -> Table | None:
    """A − B accuracy differences with their 95 % CI and exact McNemar p, per shared measurement."""
    rows = df[df["metric"].isin(PAIRED_METRICS) & df["baseline"].ne("")]
    if rows.empty:
        return None
    keys = [
        *varying(rows, ["run"]),
        "model",
        "baseline",
        "method",
        *(["params"] if (rows.groupby("method")["params"].nunique() > 1).any() else []),
        *(c for c in ("eps", "severity") if _any(rows, c)),
        *(["m_grad"] if _any(rows, "m_grad") else []),
    ]
    out = []
    for fields, group in _groups(rows, keys):
        v = {m: float("nan") for m in PAIRED_METRICS} | dict(zip(group["metric"], group["value"], strict=True))
        out.append(
            (
                *(_cell(k, fields[k]) for k in keys),
                f"{v['accuracy_difference'] * 100:+.1f}",
                f"{v['difference_ci_low'] * 100:+.1f} … {v['difference_ci_high'] * 100:+.1f}",
                f"{v['mcnemar_p']:.3g}",
            )
        )
    names = {"model": "A", "baseline": "B", "eps": "ε", "severity": "severity"}
    headers = (*(names.get(k) or _HEADERS[k] for k in keys), "A − B (pp)", "95 % CI (pp)", "McNemar p")
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * 3)


def sanity_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The sanity-check rows (``method == "sanity"``; value 1 pass, 0 fail)."""
    return df[(df["method"] == "sanity") & df["metric"].str.startswith("sanity_")]


def sanity_detail(params: str) -> str:
    """The human-readable detail a sanity row keeps in its params JSON."""
    try:
        obj = json.loads(params) if params else {}
    except ValueError:
        return params
    return str(obj.get("detail", "")) if isinstance(obj, dict) else params


def sanity_table(df: pd.DataFrame) -> Table | None:
    """Every sanity check with pass / FAIL and its detail."""
    rows = _ordered(sanity_rows(df), ["run", "model", "m_grad"])
    if rows.empty:
        return None
    keys = [*varying(rows, ["run"]), "model", *(["m_grad"] if _any(rows, "m_grad") else [])]
    out = tuple(
        (
            *(str(r[k]) for k in keys),
            r["metric"].removeprefix("sanity_"),
            "pass" if r["value"] >= 1 else "FAIL",
            sanity_detail(r["params"]),
        )
        for r in rows.to_dict(orient="records")
    )
    return Table((*keys, "check", "result", "detail"), out, (Align.LEFT,) * (len(keys) + 3))
