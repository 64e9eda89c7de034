"""The paired tables: each model against each other on the same images, and the calibration and top-5 tables."""

from __future__ import annotations

import pandas as pd

from ellrobust.report.legend import Labels, varying
from ellrobust.report.number_format import (
    format_int,
    format_level,
    format_p,
    format_pct,
    format_pct_interval,
    format_pp,
    format_pp_interval,
)
from ellrobust.report.table_model import Align, Table
from ellrobust.report.tables import (
    SURVIVES_HOLM,
    budget_cell,
    has_column,
    key_cell,
    metric_rows,
    ordered_columns,
    row_holm_direction,
)
from ellrobust.results import Metric
from ellrobust.stats.calibration import MIN_CALIBRATION_IMAGES
from ellrobust.stats.decisions import ALPHA, POWER, holm_level
from ellrobust.verdict.results_view import (
    Lookup,
    paired_records,
)


def paired_table(df: pd.DataFrame, labels: Labels, corruptions: bool = False) -> Table | None:
    """A − B accuracy differences with their 95 % interval, exact McNemar p, Holm-adjusted p and power.

    ``corruptions`` picks the corruption × severity cells (the appendix) instead of everything else.
    Columns for statistics the table lacks are left out.
    """
    records = [r for r in paired_records(df) if pd.isna(r["severity"]) != corruptions]
    if not records:
        return None
    rows = pd.DataFrame(records)
    rows["comparison"] = [labels.method(m, p) for m, p in zip(rows["method"], rows["params"], strict=True)]
    keys = [
        *varying(rows, ["run"]),
        "model",
        "baseline",
        "comparison",
        *(c for c in ("eps", "severity") if has_column(rows, c)),
        *(c for c in ("m_grad", "precision") if has_column(rows, c)),
    ]
    present = {
        m
        for m in (Metric.MCNEMAR_P, Metric.MCNEMAR_P_ADJUSTED, Metric.DETECTABLE_DIFFERENCE, Metric.N_REQUIRED)
        if rows[m].notna().any()
    }
    out = []
    for r in ordered_columns(rows, keys).to_dict(orient="records"):
        cells = [budget_cell(r) if k == "eps" else key_cell(k, r[k]) for k in keys]
        cells += [
            format_pp(r[Metric.ACCURACY_DIFFERENCE]),
            format_pp_interval(r[Metric.DIFFERENCE_CI_LOW], r[Metric.DIFFERENCE_CI_HIGH]),
        ]
        if Metric.MCNEMAR_P in present:
            cells.append(format_p(r[Metric.MCNEMAR_P]))
        if Metric.MCNEMAR_P_ADJUSTED in present:
            cells += [format_p(r[Metric.MCNEMAR_P_ADJUSTED]), SURVIVES_HOLM[row_holm_direction(r)]]
        if Metric.DETECTABLE_DIFFERENCE in present:
            cells.append(format_pct(r[Metric.DETECTABLE_DIFFERENCE]))
        if Metric.N_REQUIRED in present:
            cells.append(format_int(r[Metric.N_REQUIRED]))
        out.append(tuple(cells))
    names = {"model": "A", "baseline": "B", "eps": "ε", "comparison": "images" if corruptions else "comparison"}
    headers = [*(names.get(k, k) for k in keys), "A − B (pp)", "95 % CI"]
    headers += ["McNemar p"] if Metric.MCNEMAR_P in present else []
    headers += ["Holm p", "survives Holm"] if Metric.MCNEMAR_P_ADJUSTED in present else []
    headers += [DETECTABLE] if Metric.DETECTABLE_DIFFERENCE in present else []
    headers += ["n needed"] if Metric.N_REQUIRED in present else []
    align = tuple(Align.LEFT if h == "survives Holm" or i < len(keys) else Align.RIGHT for i, h in enumerate(headers))
    what = "per corruption and severity" if corruptions else "on the same images"
    title = (
        f"Paired differences {what} (A − B in percentage points, its 95 % score CI, exact McNemar p; "
        f"Holm within each secondary family of A and B: clean, attacks, corruption cells{_power_note(rows, present)})"
    )
    return Table(tuple(headers), tuple(out), align, title=title)


#: The header of the detectable-difference column; its level is in the table's title (:func:`_power_note`).
DETECTABLE = "detectable"


def _power_note(rows: pd.DataFrame, present: set[Metric]) -> str:
    """``, m = 10; detectable and n needed: 80 % power at Holm's first-step α/m = 0.05/10 = 0.005``.

    m is the Holm family size the rows record (a range when the table holds several families or pairs);
    rows without ``holm_family_size`` were computed for a single test at α.
    """
    if not present & {Metric.DETECTABLE_DIFFERENCE, Metric.N_REQUIRED}:
        return ""
    sizes = sorted({int(m) for m in rows[Metric.HOLM_FAMILY_SIZE] if not pd.isna(m)})
    if not sizes:
        return f"; detectable and n needed: {format_level(POWER)} power at α = {ALPHA:g}, a single test"
    if len(sizes) == 1:
        level = f"α/m = {ALPHA:g}/{sizes[0]} = {holm_level(sizes[0]):.3g}"
        m = f"m = {sizes[0]}"
    else:
        level, m = "α/m", f"m = {sizes[0]}–{sizes[-1]}"
    return f", {m}; detectable and n needed: {format_level(POWER)} power at Holm's first-step {level}"


def _images_cell(row: dict) -> str:
    """Which images a calibration row is about: ``clean``, or a corruption and its severity."""
    return "clean" if row["method"] == "clean" else f"{row['method']} s{format_int(row['severity'])}"


def _on_images(rows: pd.DataFrame, corruptions: bool) -> pd.DataFrame:
    return rows[rows["method"].ne("clean")] if corruptions else rows[rows["method"].eq("clean")]


def calibration_table(df: pd.DataFrame, corruptions: bool = False) -> Table | None:
    """Each model's top-5 accuracy and calibration errors in % (ECE over 15 equal-width bins, the paper's RMS error over
    adaptive bins of 100) with their 95 % bootstrap intervals, on the clean images (or, with
    ``corruptions``, on every corruption × severity cell)."""
    rows = _on_images(metric_rows(df, Metric.CALIBRATION_ERROR), corruptions)
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = varying(rows, ["run"])
    out = []
    for r in ordered_columns(rows, [*keys, "method", "severity", "model"]).to_dict(orient="records"):
        cells = [*(str(r[k]) for k in keys), _images_cell(r), r["model"], format_int(r["n"])]
        for metric in (Metric.TOP5_ACCURACY, Metric.CALIBRATION_ERROR, Metric.RMS_CALIBRATION_ERROR):
            cells.append(format_pct_interval(lookup(r, metric), lookup(r, metric.ci_low), lookup(r, metric.ci_high)))
        out.append(tuple(cells))
    headers = (*keys, "images", "model", "n", "top-5 (%)", "ECE (%)", "RMS calibration error (%)")
    title = (
        "Top-5 accuracy (%, 95 % Wilson CI) and calibration of the max-softmax confidence "
        "(%, lower is better, 95 % bootstrap CI)"
    )
    small = bool((rows["n"] < MIN_CALIBRATION_IMAGES).any())
    caption = f"below {MIN_CALIBRATION_IMAGES} images: no calibration interval, no RMS error (it needs two bins of 100)"
    align = (Align.LEFT,) * (len(keys) + 2) + (Align.RIGHT,) * 4
    return Table(headers, tuple(out), align, title=title, caption=caption if small else "")


def calibration_difference_table(df: pd.DataFrame, corruptions: bool = False) -> Table | None:
    """Per pair of models on the same images: top-5 accuracy A − B (pp) with its score interval and
    McNemar p, and each calibration error's A − B (pp) with its paired bootstrap interval; reported
    beside the verdict, not in its Holm family."""
    top5 = Metric.TOP5_ACCURACY.difference
    rows = _on_images(df[df["metric"].eq(top5.value) & df["baseline"].ne("")], corruptions)
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = varying(rows, ["run"])
    out = []
    for r in ordered_columns(rows, [*keys, "model", "baseline", "method", "severity"]).to_dict(orient="records"):
        cells = [*(str(r[k]) for k in keys), r["model"], r["baseline"], _images_cell(r)]
        cells += [
            format_pp(r["value"]),
            format_pp_interval(lookup(r, top5.ci_low), lookup(r, top5.ci_high)),
            format_p(lookup(r, Metric.TOP5_MCNEMAR_P)),
        ]
        for metric in (Metric.CALIBRATION_ERROR.difference, Metric.RMS_CALIBRATION_ERROR.difference):
            interval = format_pp_interval(lookup(r, metric.ci_low), lookup(r, metric.ci_high))
            cells += [format_pp(lookup(r, metric)), interval]
        out.append(tuple(cells))
    headers = (*keys, "A", "B", "images", "top-5 A − B (pp)", "95 % CI", "McNemar p")
    headers += ("ECE A − B (pp)", "95 % CI", "RMS A − B (pp)", "95 % CI")
    title = "Top-5 and calibration differences on the same images (not in the verdict's Holm family)"
    return Table(headers, tuple(out), (Align.LEFT,) * (len(keys) + 3) + (Align.RIGHT,) * 7, title=title)
