"""Pivoting the long results table into the report's tables (pure functions, frame → :class:`Table`).

Each function takes a :func:`~ellrobust.report.frame.prepare`-d table and returns ``None`` when the
run measured nothing of its kind, so the document can say so instead of printing an empty table.
Rows keep the order in which the run produced them (the order the user named models and attacks),
not alphabetical order. Values stay floats until here; this is where they are rounded.

Intervals, adjusted p-values and power are read from their own rows (:class:`~ellrobust.report.frame.Lookup`);
a column whose rows the run lacks (an older ellrobust) is left out rather than filled with guesses.
Column headers are short words; methods and settings appear as the labels of :mod:`~ellrobust.report.labels`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from ellrobust import results
from ellrobust.report.frame import (
    TEXT_COLUMNS,
    Lookup,
    format_eps,
    format_int,
    format_number,
    format_number_interval,
    format_p,
    format_pct,
    format_pct_interval,
    format_pp,
    format_pp_interval,
    holm_direction,
    series_columns,
    series_label,
    varying,
)
from ellrobust.report.labels import Labels, collapse_label, parse_params, split_params
from ellrobust.report.markdown import Align, Table

#: Collapse metrics in the order the report shows them; any other per-layer metric follows.
COLLAPSE_METRICS = tuple(m.value for m in results.COLLAPSE_METRICS)
#: Metrics of a paired accuracy comparison, in the order the paired table shows them.
PAIRED_METRICS = (
    "accuracy_difference",
    "difference_ci_low",
    "difference_ci_high",
    "mcnemar_p",
    "mcnemar_p_adjusted",
    "detectable_difference",
    "n_required",
)
#: Suffixes of rows that qualify another row (intervals, differences): never a metric of their own.
COMPANION_SUFFIXES = ("_ci_low", "_ci_high", "_difference")
#: Preference among CE normalisations for the corruption summary.
CE_ORDER = ("alexnet", "none", "baseline")


def _ordered(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows sorted by ``columns``, each by the order of first appearance of its values (stable)."""

    def rank(s: pd.Series) -> pd.Series:
        order = {v: i for i, v in enumerate(pd.unique(s))}
        return s.map(order)

    return df.sort_values(list(columns), key=rank, kind="stable") if len(df) else df


def _any(df: pd.DataFrame, column: str) -> bool:
    """Whether a column holds a value anywhere (a non-empty string or a non-missing number)."""
    if column not in df:
        return False
    col = df[column]
    return bool(col.ne("").any()) if column in TEXT_COLUMNS else bool(col.notna().any())


def _groups(df: pd.DataFrame, keys: list[str]):
    """(key fields as a dict, rows) per distinct key, in the order of ``keys``' first appearance."""
    for key, group in _ordered(df, keys).groupby(keys, sort=False, dropna=False):
        yield dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), group


def _values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A metric's own rows (not paired rows that happen to share its name)."""
    return df[(df["metric"] == metric) & df["baseline"].eq("")]


def clean_table(df: pd.DataFrame) -> Table | None:
    """Clean accuracy per model, with the checkpoint digest and its 95 % Wilson interval where the run has it."""
    rows = _ordered(_values(df, "clean_accuracy"), ["run", "model"])
    if rows.empty:
        return None
    lookup = Lookup(df)
    with_ci = lookup.has("clean_accuracy_ci_low")
    keys = [*varying(rows, ["run"]), "model"]
    out = []
    for r in rows.to_dict(orient="records"):
        cells = [*(str(r[k]) for k in keys), r["checkpoint"], format_int(r["n"]), format_pct(r["value"])]
        if with_ci:
            cells.append(f"{format_pct(lookup(r, 'clean_accuracy_ci_low'))} – {format_pct(lookup(r, 'clean_accuracy_ci_high'))}")
        out.append(tuple(cells))
    headers = (*keys, "checkpoint", "n", "accuracy (%)", *(["95 % CI (%)"] if with_ci else []))
    return Table(headers, tuple(out), (Align.LEFT,) * (len(keys) + 1) + (Align.RIGHT,) * (len(headers) - len(keys) - 1))


def _accuracy_cell(lookup: Lookup, row: dict | None, metric: str) -> str:
    if row is None:
        return ""
    return format_pct_interval(row["value"], lookup(row, f"{metric}_ci_low"), lookup(row, f"{metric}_ci_high"))


def robust_table(df: pd.DataFrame, labels: Labels) -> Table | None:
    """Robust accuracy (%) (95 % CI) per attack × model (× m_grad × precision), one column per eps, clean first."""
    rob = _values(df, "robust_accuracy")
    if rob.empty:
        return None
    lookup = Lookup(df)
    rob = rob.assign(attack=[labels.method(m, p) for m, p in zip(rob["method"], rob["params"], strict=True)])
    clean = {(r["run"], r["model"]): r for r in _values(df, "clean_accuracy").to_dict(orient="records")}
    keys = [*varying(rob, ["run"]), "attack", "model", *(c for c in ("m_grad", "precision") if _any(rob, c))]
    eps_values = sorted(rob["eps"].dropna().unique())
    out = []
    for fields, group in _groups(rob, keys):
        first = group.iloc[0]
        by_eps = {e: r for e, r in zip(group["eps"], group.to_dict(orient="records"), strict=True)}
        out.append(
            (
                *(str(fields[k]) for k in keys),
                _accuracy_cell(lookup, clean.get((first["run"], first["model"])), "clean_accuracy"),
                *(_accuracy_cell(lookup, by_eps.get(e), "robust_accuracy") for e in eps_values),
            )
        )
    headers = (*keys, "clean", *(f"ε {format_eps(e)}" for e in eps_values))
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (1 + len(eps_values)))


def max_half_width(df: pd.DataFrame, metric: str) -> float | None:
    """The widest half-interval (as a fraction) among a metric's rows, or None when the run has no intervals."""
    lookup = Lookup(df)
    rows = _values(df, metric).to_dict(orient="records")
    widths = [(lookup(r, f"{metric}_ci_high") - lookup(r, f"{metric}_ci_low")) / 2 for r in rows]
    widths = [w for w in widths if not pd.isna(w)]
    return max(widths) if widths else None


def corruption_table(df: pd.DataFrame) -> Table | None:
    """Corruption accuracy (%) (95 % CI) per corruption × model, one column per severity plus their mean."""
    cor = _values(df, "corruption_accuracy")
    if cor.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(cor, ["run"]), "method", "model", *(["m_grad"] if _any(cor, "m_grad") else [])]
    severities = sorted(int(s) for s in cor["severity"].dropna().unique())
    out = []
    for fields, group in _groups(cor, keys):
        records = group.to_dict(orient="records")
        by_sev = {int(r["severity"]): r for r in records if not pd.isna(r["severity"])}
        overall = next((r for r in records if pd.isna(r["severity"])), None)
        out.append(
            (
                *(str(fields[k]) for k in keys),
                *(_accuracy_cell(lookup, by_sev.get(s), "corruption_accuracy") for s in severities),
                _accuracy_cell(lookup, overall, "corruption_accuracy"),
            )
        )
    headers = (*("corruption" if k == "method" else k for k in keys), *(f"severity {s}" for s in severities), "mean")
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (len(severities) + 1))


def _paired_records(df: pd.DataFrame, where: pd.Series) -> list[dict]:
    """Paired accuracy comparisons as one dict per measurement with every paired metric (NaN if absent)."""
    lookup = Lookup(df)
    diffs = df[where & (df["metric"] == "accuracy_difference") & df["baseline"].ne("")]
    return [{**r, **{m: lookup(r, m) for m in PAIRED_METRICS}} for r in diffs.to_dict(orient="records")]


def _holm_direction(r: dict) -> int:
    return holm_direction(r["accuracy_difference"], r["difference_ci_low"], r["difference_ci_high"], r["mcnemar_p_adjusted"])


def _ce_by_model(df: pd.DataFrame) -> tuple[str, dict[tuple[str, str, str], float]]:
    """The preferred CE normalisation present and (run, model, corruption) → its CE."""
    ce = df[df["metric"] == "ce"]
    norms = {str(parse_params(p).get("normalization", "")) for p in ce["params"]}
    norm = next((k for k in CE_ORDER if k in norms), next(iter(sorted(norms)), ""))
    values = {}
    for r in ce.to_dict(orient="records"):
        if str(parse_params(r["params"]).get("normalization", "")) == norm:
            values[(r["run"], r["model"], r["method"])] = r["value"]
    return norm, values


def corruption_summary(df: pd.DataFrame) -> tuple[Table, str] | None:
    """Per corruption: each model's mean accuracy over severities [CI], each pair's mean difference, how
    many severity cells survive Holm in each direction, and CE; with the CE normalisation shown."""
    cor = _values(df, "corruption_accuracy")
    if cor.empty:
        return None
    lookup = Lookup(df)
    columns = series_columns(cor)
    series = list(dict.fromkeys(series_label(r, columns) for r in cor.to_dict(orient="records")))
    means: dict[tuple[str, str], dict] = {}
    for r in cor.to_dict(orient="records"):
        if pd.isna(r["severity"]):
            means[(r["method"], series_label(r, columns))] = r
    paired = _paired_records(df, df["severity"].notna())
    pairs = list(dict.fromkeys((r["run"], r["model"], r["baseline"]) for r in paired))
    norm, ce = _ce_by_model(df)
    ce_models = list(dict.fromkeys((run, model) for run, model, _ in ce))
    out = []
    for corruption in pd.unique(cor["method"]):
        cells = [str(corruption), *(_accuracy_cell(lookup, means.get((corruption, s)), "corruption_accuracy") for s in series)]
        for run, a, b in pairs:
            mine = [r for r in paired if (r["run"], r["model"], r["baseline"], r["method"]) == (run, a, b, corruption)]
            if not mine:
                cells += ["", ""]
                continue
            directions = [_holm_direction(r) for r in mine]
            mean = sum(r["accuracy_difference"] for r in mine) / len(mine)
            holm = "" if all(pd.isna(r["mcnemar_p_adjusted"]) for r in mine) else f"{directions.count(1)} / {directions.count(-1)} of {len(mine)}"
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
    return Table(headers, tuple(out), (Align.LEFT,) + (Align.RIGHT,) * (len(headers) - 1)), norm


def _reference(row: dict) -> str:
    """What a CE row is normalised by, for its label: AlexNet, a baseline model, or nothing."""
    normalization = str(parse_params(row["params"]).get("normalization", ""))
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


def mce_difference_table(df: pd.DataFrame) -> Table | None:
    """mCE(A) − mCE(B) with its 95 % paired bootstrap interval, per normalisation."""
    rows = df[(df["metric"] == "mce_difference") & df["baseline"].ne("")]
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = varying(rows, ["run"])
    out = []
    for r in rows.to_dict(orient="records"):
        norm = str(parse_params(r["params"]).get("normalization", ""))
        out.append(
            (
                *(str(r[k]) for k in keys),
                r["model"],
                r["baseline"],
                {"alexnet": "AlexNet", "none": "unnormalised", "baseline": "baseline-normalised"}.get(norm, norm),
                f"{r['value']:+.3f}",
                _range(lookup(r, "mce_difference_ci_low"), lookup(r, "mce_difference_ci_high")),
            )
        )
    headers = (*keys, "A", "B", "normalisation", "mCE A − B", "95 % bootstrap CI")
    return Table(headers, tuple(out), (Align.LEFT,) * (len(keys) + 3) + (Align.RIGHT,) * 2)


def _range(low: float, high: float) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f"{low:+.3f} … {high:+.3f}"


def collapse_metrics(df: pd.DataFrame) -> list[str]:
    """Collapse metrics present in the table (intervals and differences excluded): known ones first."""
    rows = df[(df["method"] == "collapse") | df["layer"].notna()]
    present = [m for m in pd.unique(rows["metric"]) if not any(s in m for s in COMPANION_SUFFIXES)]
    return [m for m in COLLAPSE_METRICS if m in present] + [m for m in present if m not in COLLAPSE_METRICS]


def _collapse_variants(df: pd.DataFrame, metric: str) -> list[str]:
    """Collapse settings (all heads together) measured on the clean images, e.g. ``residual, cls``."""
    rows = _values(df, metric)
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


def _layers_text(params: str) -> str:
    layers = split_params(params)[1].get("layers")
    values = [int(v) for v in layers] if isinstance(layers, list) else []
    if len(values) > 1 and values == list(range(values[0], values[-1] + 1)):
        return f"later half ({values[0]}–{values[-1]})"
    return f"later half ({', '.join(map(str, values))})" if values else "later half"


def collapse_table(df: pd.DataFrame, metric: str) -> list[tuple[str, Table]]:
    """One per-layer metric on the clean images: layers as rows; each model (95 % CI) and each pair's
    paired difference (95 % CI) as columns; the later-half summary as the last row. One table per
    collapse setting (usually one), paired with its label."""
    lookup = Lookup(df)
    out = []
    for variant in _collapse_variants(df, metric):
        values = _clean_setting(_values(df, metric), variant)
        diffs = _clean_setting(df[(df["metric"] == f"{metric}_difference") & df["baseline"].ne("")], variant)
        columns = series_columns(values)
        series = list(dict.fromkeys(series_label(r, columns) for r in values.to_dict(orient="records")))
        pairs = list(dict.fromkeys((r["run"], r["model"], r["baseline"]) for r in diffs.to_dict(orient="records")))
        cells: dict[object, dict[object, str]] = {}
        summary_label = None
        for r in values.to_dict(orient="records"):
            layer = "summary" if pd.isna(r["layer"]) else int(r["layer"])
            summary_label = _layers_text(r["params"]) if layer == "summary" else summary_label
            cells.setdefault(layer, {})[series_label(r, columns)] = format_number_interval(r["value"], lookup(r, f"{metric}_ci_low"), lookup(r, f"{metric}_ci_high"))
        for r in diffs.to_dict(orient="records"):
            layer = "summary" if pd.isna(r["layer"]) else int(r["layer"])
            low, high = lookup(r, f"{metric}_difference_ci_low"), lookup(r, f"{metric}_difference_ci_high")
            cells.setdefault(layer, {})[(r["run"], r["model"], r["baseline"])] = format_number_interval(r["value"], low, high, signed=True)
        layers = sorted(k for k in cells if k != "summary") + (["summary"] if "summary" in cells else [])
        rows = tuple(
            (summary_label if layer == "summary" else str(layer), *(cells[layer].get(k, "") for k in [*series, *pairs]))
            for layer in layers
        )
        multi_run = len({p[0] for p in pairs}) > 1
        headers = ("layer", *series, *(f"{a} − {b}" + (f" ({run})" if multi_run else "") for run, a, b in pairs))
        out.append((variant, Table(headers, rows, (Align.LEFT,) + (Align.RIGHT,) * (len(headers) - 1))))
    return out


def collapse_other_table(df: pd.DataFrame, metric: str, labels: Labels) -> Table | None:
    """The collapse rows :func:`collapse_table` leaves out (adversarial images, single heads), long: one row
    per image set × layer × setting, one column per model.

    A baseline is attacked once (m_grad ''), so its rows stand next to every m_grad mode of an
    elliptical model on the same attack and ε, as in the paired comparison.
    """
    rows = _values(df, metric)
    rows = rows[(rows["method"] != "collapse") | ~rows["params"].map(_all_heads).astype(bool)]
    if rows.empty:
        return None
    lookup = Lookup(df)
    rows = rows.assign(
        images=["clean" if m == "collapse" else labels.method(m, p) for m, p in zip(rows["method"], rows["params"], strict=True)],
        setting=rows["params"].map(_collapse_label_of),
        layer_text=["later half" if pd.isna(v) else str(int(v)) for v in rows["layer"]],
    )
    condition = ["run", "images", "eps", "precision", "setting"]
    modes: dict[tuple, list[str]] = {}
    for r in rows[rows["m_grad"] != ""].to_dict(orient="records"):
        modes.setdefault(_condition_key(r, condition), []).append(r["m_grad"])
    shown = [
        {**r, "mode": mode}
        for r in rows.to_dict(orient="records")
        for mode in (list(dict.fromkeys(modes.get(_condition_key(r, condition), []))) or [""] if r["m_grad"] == "" else [r["m_grad"]])
    ]
    rows = pd.DataFrame(shown)
    keys = [*varying(rows, ["run"]), "images", "eps", *(["mode"] if _any(rows, "m_grad") else []), *(["precision"] if _any(rows, "precision") else []), "setting", "layer_text"]
    models = list(dict.fromkeys(rows["model"]))
    out = []
    for fields, group in _groups(rows, keys):
        by_model = {r["model"]: r for r in group.to_dict(orient="records")}
        cells = [
            format_number_interval(r["value"], lookup(r, f"{metric}_ci_low"), lookup(r, f"{metric}_ci_high")) if (r := by_model.get(m)) else ""
            for m in models
        ]
        out.append((*(_key_cell(k, fields[k]) for k in keys), *cells))
    headers = (*({"images": "images", "eps": "ε", "mode": "m_grad", "layer_text": "layer"}.get(k, k) for k in keys), *models)
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * len(models))


def _condition_key(row: dict, columns: list[str]) -> tuple:
    return tuple(None if not isinstance(row[c], str) and pd.isna(row[c]) else row[c] for c in columns)


def _key_cell(column: str, value: object) -> str:
    if column == "eps":
        return "" if pd.isna(value) else format_eps(float(value))
    if column in ("severity", "layer", "n"):
        return format_int(value)
    return str(value)


def paired_table(df: pd.DataFrame, labels: Labels, corruptions: bool = False) -> Table | None:
    """A − B accuracy differences with their 95 % interval, exact McNemar p, Holm-adjusted p and power.

    ``corruptions`` picks the corruption × severity cells (the appendix) instead of everything else.
    Columns for metrics the run lacks (an older ellrobust) are left out.
    """
    records = _paired_records(df, df["severity"].notna() if corruptions else df["severity"].isna())
    if not records:
        return None
    rows = pd.DataFrame(records)
    rows["comparison"] = [labels.method(m, p) for m, p in zip(rows["method"], rows["params"], strict=True)]
    keys = [
        *varying(rows, ["run"]),
        "model",
        "baseline",
        "comparison",
        *(c for c in ("eps", "severity") if _any(rows, c)),
        *(c for c in ("m_grad", "precision") if _any(rows, c)),
    ]
    present = [m for m in PAIRED_METRICS if rows[m].notna().any()]
    out = []
    for r in _ordered(rows, keys).to_dict(orient="records"):
        cells = [_key_cell(k, r[k]) for k in keys]
        cells += [format_pp(r["accuracy_difference"]), format_pp_interval(r["difference_ci_low"], r["difference_ci_high"])]
        if "mcnemar_p" in present:
            cells.append(format_p(r["mcnemar_p"]))
        if "mcnemar_p_adjusted" in present:
            direction = _holm_direction(r)
            cells += [format_p(r["mcnemar_p_adjusted"]), {1: "yes (A)", -1: "yes (B)"}.get(direction, "no")]
        if "detectable_difference" in present:
            cells.append(format_pct(r["detectable_difference"]))
        if "n_required" in present:
            cells.append("" if pd.isna(r["n_required"]) else str(int(r["n_required"])))
        out.append(tuple(cells))
    names = {"model": "A", "baseline": "B", "eps": "ε", "comparison": "images" if corruptions else "comparison"}
    headers = [*(names.get(k, k) for k in keys), "A − B (pp)", "95 % CI (pp)"]
    headers += ["McNemar p"] if "mcnemar_p" in present else []
    headers += ["Holm p", "survives Holm"] if "mcnemar_p_adjusted" in present else []
    headers += ["detectable (pp)"] if "detectable_difference" in present else []
    headers += ["n needed"] if "n_required" in present else []
    align = tuple(Align.LEFT if h == "survives Holm" or i < len(keys) else Align.RIGHT for i, h in enumerate(headers))
    return Table(tuple(headers), tuple(out), align)


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
    keys = [*varying(rows, ["run"]), "model", *(c for c in ("m_grad", "precision") if _any(rows, c))]
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
