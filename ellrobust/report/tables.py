"""The tables of a results table, built once for the terminal and the report (frame → neutral :class:`Table`).

``eval`` prints these tables (:mod:`~ellrobust.report.render_rich`) and the report writes them
(:mod:`~ellrobust.report.render_markdown`), so both show the same columns, labels and numbers. Each builder
takes a :func:`~ellrobust.verdict.results_view.prepare`-d table and returns ``None`` when the run measured nothing
of its kind, so a caller can say so instead of printing an empty table. Rows keep the order in which
the run produced them (the order the user named models and attacks), not alphabetical order. Values
stay floats until here; they are written by :mod:`~ellrobust.report.number_format`.

Intervals, adjusted p-values and power are read from their own rows (:class:`~ellrobust.verdict.results_view.Lookup`);
a column whose rows the table lacks (a statistic the run did not compute) is left out rather than
filled with guesses. Column headers are short words; methods and settings appear as the labels of
:mod:`~ellrobust.report.legend`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pandas as pd

from ellrobust.attacks import patch_budgeted
from ellrobust.report.legend import Labels, varying
from ellrobust.report.number_format import (
    format_budget,
    format_budget_interval,
    format_eps,
    format_int,
    format_p,
    format_pct,
    format_pct_interval,
    format_pp,
    format_pp_interval,
)
from ellrobust.report.table_model import Align, Cell, Table
from ellrobust.results import Metric
from ellrobust.stats.decisions import Favours, holm_direction
from ellrobust.verdict.results_view import (
    TEXT_COLUMNS,
    Lookup,
    parse_params,
    patch_rows,
)

#: Suffixes of rows that qualify another row (intervals, differences): never a metric of their own.
COMPANION_SUFFIXES = ("_ci_low", "_ci_high", "_difference")
#: How the survival of Holm's adjustment reads in the paired tables (emphasised where it survives).
SURVIVES_HOLM = {Favours.A: Cell("yes (A)"), Favours.B: Cell("yes (B)"), Favours.NEITHER: "no"}


def ordered_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Rows sorted by ``columns``, each by the order of first appearance of its values (stable)."""

    def rank(s: pd.Series) -> pd.Series:
        order = {v: i for i, v in enumerate(pd.unique(s))}
        return s.map(order)

    return df.sort_values(list(columns), key=rank, kind="stable") if len(df) else df


def has_column(df: pd.DataFrame, column: str) -> bool:
    """Whether a column holds a value anywhere (a non-empty string or a non-missing number)."""
    if column not in df:
        return False
    col = df[column]
    return bool(col.ne("").any()) if column in TEXT_COLUMNS else bool(col.notna().any())


def grouped(df: pd.DataFrame, keys: list[str]):
    """(key fields as a dict, rows) per distinct key, in the order of ``keys``' first appearance."""
    for key, group in ordered_columns(df, keys).groupby(keys, sort=False, dropna=False):
        yield dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)), group


def metric_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A metric's own rows (not paired rows that happen to share its name)."""
    return df[(df["metric"] == str(metric)) & df["baseline"].eq("")]


def section_breaks(keys: list[tuple]) -> tuple[int, ...]:
    """The rows at which the group key changes: where the terminal draws a rule."""
    return tuple(i for i in range(1, len(keys)) if keys[i] != keys[i - 1])


def clean_table(df: pd.DataFrame) -> Table | None:
    """Clean accuracy per model, with the checkpoint digest and its 95 % Wilson interval where the run has it,
    and top-5 accuracy (95 % CI) where the run measured it."""
    rows = ordered_columns(metric_rows(df, Metric.CLEAN_ACCURACY), ["run", "model"])
    if rows.empty:
        return None
    lookup = Lookup(df)
    with_ci = lookup.has(Metric.CLEAN_ACCURACY.ci_low)
    top5 = {(r["run"], r["model"]): r for r in clean_rows(df, Metric.TOP5_ACCURACY).to_dict(orient="records")}
    with_top5 = bool(top5)
    keys = [*varying(rows, ["run"]), "model"]
    out = []
    for r in rows.to_dict(orient="records"):
        cells = [*(str(r[k]) for k in keys), r["checkpoint"], format_int(r["n"]), format_pct(r["value"])]
        if with_ci:
            low, high = (lookup(r, m) for m in (Metric.CLEAN_ACCURACY.ci_low, Metric.CLEAN_ACCURACY.ci_high))
            cells.append(f"{format_pct(low)} – {format_pct(high)}")
        if with_top5:
            cells.append(accuracy_cell(lookup, top5.get((r["run"], r["model"])), Metric.TOP5_ACCURACY))
        out.append(tuple(cells))
    headers = (*keys, "checkpoint", "n", "accuracy (%)", *(["95 % CI (%)"] if with_ci else []))
    headers += ("top-5 (%)",) if with_top5 else ()
    align = (Align.LEFT,) * (len(keys) + 1) + (Align.RIGHT,) * (len(headers) - len(keys) - 1)
    return Table(headers, tuple(out), align, title="Clean accuracy (%)")


def accuracy_cell(lookup: Lookup, row: dict | None, metric: Metric) -> str:
    if row is None:
        return ""
    return format_pct_interval(row["value"], lookup(row, metric.ci_low), lookup(row, metric.ci_high))


def robust_table(df: pd.DataFrame, labels: Labels, *, patches: bool = False) -> Table | None:
    """Robust accuracy (%) (95 % CI) per attack × model (× m_grad × precision), one column per eps, clean first.

    Pixel budgets, or with ``patches`` the patch attacks' numbers of patches (a budget of each kind never
    shares a column with the other; the patch table's worst case is over the patch attacks alone).
    """
    rob = metric_rows(df, Metric.ROBUST_ACCURACY)
    rob = rob[patch_rows(rob) == patches]
    if rob.empty:
        return None
    lookup = Lookup(df)
    names = [
        "worst-case" if patches and m == "worst-case" else labels.method(m, p)
        for m, p in zip(rob["method"], rob["params"], strict=True)
    ]
    rob = rob.assign(attack=names)
    clean = {(r["run"], r["model"]): r for r in metric_rows(df, Metric.CLEAN_ACCURACY).to_dict(orient="records")}
    keys = [*varying(rob, ["run"]), "attack", "model", *(c for c in ("m_grad", "precision") if has_column(rob, c))]
    eps_values = sorted(rob["eps"].dropna().unique())
    out = []
    for fields, group in grouped(rob, keys):
        first = group.iloc[0]
        by_eps = {e: r for e, r in zip(group["eps"], group.to_dict(orient="records"), strict=True)}
        out.append(
            (
                *(str(fields[k]) for k in keys),
                accuracy_cell(lookup, clean.get((first["run"], first["model"])), Metric.CLEAN_ACCURACY),
                *(accuracy_cell(lookup, by_eps.get(e), Metric.ROBUST_ACCURACY) for e in eps_values),
            )
        )
    headers = (*keys, "clean", *(patch_count(e) if patches else f"ε {format_eps(e)}" for e in eps_values))
    align = (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (1 + len(eps_values))
    title = "Accuracy (%) under patch attacks" if patches else "Robust accuracy (%)"
    return Table(headers, tuple(out), align, title=f"{title} with 95 % Wilson intervals")


def transfer_table(df: pd.DataFrame, labels: Labels) -> Table | None:
    """Source × target per attack and budget (``--transfer``): each target's accuracy (%) (95 % CI) on
    the adversarial images crafted on the source, the white-box accuracy on the diagonal."""
    transferred = metric_rows(df, Metric.TRANSFER_ACCURACY)
    if transferred.empty:
        return None
    lookup = Lookup(df)
    white_box = metric_rows(df, Metric.ROBUST_ACCURACY)
    white_box = white_box[white_box["method"].ne("worst-case")]
    cells: dict[tuple, dict[str, str]] = {}
    budgets: dict[tuple, str] = {}
    for metric, rows in ((Metric.ROBUST_ACCURACY, white_box), (Metric.TRANSFER_ACCURACY, transferred)):
        for r in rows.to_dict(orient="records"):
            params = parse_params(r["params"])
            source = params.get("source", r["model"])
            mode = params.get("source_m_grad", "") if "source" in params else r["m_grad"]
            key = (labels.method(r["method"], r["params"]), r["eps"], r["precision"], source, mode)
            cells.setdefault(key, {})[r["model"]] = accuracy_cell(lookup, r, metric)
            budgets[key] = budget_cell(r)
    keys = [k for k in cells if any(target != k[3] for target in cells[k])]  # settings something transferred from
    if not keys:
        return None
    targets = list(dict.fromkeys(df["model"]))
    with_precision = len({k[2] for k in keys}) > 1
    out = []
    for key in sorted(keys, key=lambda k: (k[0], k[1], str(k[2]), targets.index(k[3]) if k[3] in targets else 0)):
        attack, _, precision, source, mode = key
        first = [attack, budgets[key], *([str(precision)] if with_precision else [])]
        out.append((*first, f"{source} ({mode})" if mode else source, *(cells[key].get(t, "") for t in targets)))
    headers = ("attack", "ε", *(["precision"] if with_precision else []), "source / target", *targets)
    align = (Align.LEFT,) * (len(headers) - len(targets)) + (Align.RIGHT,) * len(targets)
    sections = section_breaks([row[:2] for row in out])
    title = "Transfer: accuracy (%) of each target on the source's adversarial images (diagonal: white-box)"
    return Table(headers, tuple(out), align, title=title, sections=sections)


def _median_cell(row: dict | None, censored: float) -> str:
    """A model's median ε* in /255 with its censored count, ``≥`` where half or more of its images are
    censored (the median is then only a lower bound): ``≥ 16.00 (25)``."""
    if row is None:
        return ""
    n = row["n"]
    bound = not pd.isna(censored) and not pd.isna(n) and censored >= (int(n) + 1) // 2
    count = "" if pd.isna(censored) else f" ({int(censored)})"
    return ("≥ " if bound else "") + format_budget(row["value"], unit=False) + count


def eps_star_table(df: pd.DataFrame, labels: Labels) -> Table | None:
    """Per pair of models and minimal-norm method (× m_grad × precision where they vary): each model's median
    ε* (``≥`` when only a lower bound) and censored count, the Hodges–Lehmann difference A − B with its 95 %
    interval, the sign test's p (raw and Holm-adjusted, in the McNemar family), Wilcoxon's p, and whether
    the difference survives Holm."""
    diffs = df[(df["metric"] == Metric.EPS_STAR_DIFFERENCE.value) & df["baseline"].ne("")]
    if diffs.empty:
        return None
    lookup = Lookup(df)
    medians = {}
    for r in metric_rows(df, Metric.EPS_STAR_MEDIAN).to_dict(orient="records"):
        medians[(r["run"], r["model"], r["method"], r["params"], r["m_grad"], r["precision"])] = r

    def median_of(model: str, r: dict) -> dict | None:
        key = (r["run"], model, r["method"], r["params"])
        return medians.get((*key, r["m_grad"], r["precision"]), medians.get((*key, "", r["precision"])))

    rows = diffs.assign(comparison=[labels.method(m, p) for m, p in zip(diffs["method"], diffs["params"], strict=True)])
    keys = [
        *varying(rows, ["run"]),
        "model",
        "baseline",
        "comparison",
        *varying(rows, ["m_grad", "precision"]),
    ]
    out = []
    for r in ordered_columns(rows, keys).to_dict(orient="records"):
        cells = [key_cell(k, r[k]) for k in keys]
        for model in (r["model"], r["baseline"]):
            found = median_of(model, r)
            censored = lookup(found, Metric.N_CENSORED) if found is not None else float("nan")
            cells.append(_median_cell(found, censored))
        low = lookup(r, Metric.EPS_STAR_DIFFERENCE.ci_low)
        high = lookup(r, Metric.EPS_STAR_DIFFERENCE.ci_high)
        p_adjusted = lookup(r, Metric.EPS_STAR_SIGN_P_ADJUSTED)
        cells += [
            f"{format_budget(r['value'], signed=True, unit=False)} ({format_budget_interval(low, high)})"
            if not (pd.isna(low) or pd.isna(high))
            else format_budget(r["value"], signed=True, unit=False),
            format_p(lookup(r, Metric.EPS_STAR_SIGN_P)),
            format_p(p_adjusted),
            SURVIVES_HOLM[holm_direction(r["value"], low, high, p_adjusted)],
            format_p(lookup(r, Metric.EPS_STAR_WILCOXON_P)),
        ]
        out.append(tuple(cells))
    names = {"model": "A", "baseline": "B", "comparison": "method"}
    headers = (
        *(names.get(k, k) for k in keys),
        "median ε* A (censored)",
        "median ε* B (censored)",
        "HL A − B (95 % CI)",
        "sign p",
        "Holm p",
        "survives Holm",
        "Wilcoxon p",
    )
    align = tuple(Align.LEFT if h == "survives Holm" or i < len(keys) else Align.RIGHT for i, h in enumerate(headers))
    title = (
        "Minimal budgets ε* (/255) on the same images: median per model (≥: only a lower bound) with the images "
        "censored at eps_max, Hodges–Lehmann A − B with its 95 % CI, paired sign test (Holm within "
        "the attacks' family of A and B)"
    )
    return Table(headers, tuple(out), align, title=title)


def ood_table(df: pd.DataFrame) -> Table | None:
    """OOD detection (imagenet-o) per model: AUROC with DeLong's 95 % interval and AUPR, OOD positive, score −MSP."""
    rows = ordered_columns(metric_rows(df, Metric.OOD_AUROC), ["run", "model"])
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(rows, ["run"]), "model"]
    out = []
    for r in rows.to_dict(orient="records"):
        low, high = lookup(r, Metric.OOD_AUROC.ci_low), lookup(r, Metric.OOD_AUROC.ci_high)
        cells = [*(str(r[k]) for k in keys), format_int(r["n"]), format_pct(r["value"])]
        cells += [f"{format_pct(low)} – {format_pct(high)}", format_pct(lookup(r, Metric.OOD_AUPR))]
        out.append(tuple(cells))
    headers = (*keys, "n in-dist.", "AUROC (%)", "95 % DeLong CI", "AUPR (%)")
    title = (
        "Out-of-distribution detection (%): ImageNet-O against ImageNet val, scored by the maximum softmax "
        "probability over ImageNet-O's 200 classes (OOD positive, score −MSP)"
    )
    return Table(headers, tuple(out), (Align.LEFT,) * len(keys) + (Align.RIGHT,) * 4, title=title)


def ood_difference_table(df: pd.DataFrame) -> Table | None:
    """AUROC(A) − AUROC(B) on the same images with DeLong's 95 % interval, its p (raw, Holm) and whether it survives."""
    rows = df[(df["metric"] == Metric.OOD_AUROC.difference.value) & df["baseline"].ne("")]
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(rows, ["run"]), "model", "baseline"]
    out = []
    for r in ordered_columns(rows, keys).to_dict(orient="records"):
        low, high = lookup(r, Metric.OOD_AUROC.difference.ci_low), lookup(r, Metric.OOD_AUROC.difference.ci_high)
        p_adjusted = lookup(r, Metric.OOD_AUROC_DELONG_P_ADJUSTED)
        out.append(
            (
                *(str(r[k]) for k in keys),
                format_pp(r["value"]),
                format_pp_interval(low, high),
                format_p(lookup(r, Metric.OOD_AUROC_DELONG_P)),
                format_p(p_adjusted),
                SURVIVES_HOLM[holm_direction(r["value"], low, high, p_adjusted)],
            )
        )
    names = {"model": "A", "baseline": "B"}
    headers = (*(names.get(k, k) for k in keys), "AUROC A − B (pp)", "95 % DeLong CI", "DeLong p", "Holm p")
    headers = (*headers, "survives Holm")
    align = tuple(Align.LEFT if h == "survives Holm" or i < len(keys) else Align.RIGHT for i, h in enumerate(headers))
    title = (
        "OOD detection on the same images: AUROC A − B (percentage points) with DeLong's paired 95 % CI and z-test "
        "(Holm within its own family)"
    )
    return Table(headers, tuple(out), align, title=title)


def max_half_width(df: pd.DataFrame, metric: Metric) -> float | None:
    """The widest half-interval (as a fraction) among a metric's rows, or None when the run has no intervals."""
    lookup = Lookup(df)
    rows = metric_rows(df, metric).to_dict(orient="records")
    widths = [(lookup(r, metric.ci_high) - lookup(r, metric.ci_low)) / 2 for r in rows]
    widths = [w for w in widths if not pd.isna(w)]
    return max(widths) if widths else None


def row_holm_direction(r: dict) -> Favours:
    values = (
        Metric.ACCURACY_DIFFERENCE,
        Metric.DIFFERENCE_CI_LOW,
        Metric.DIFFERENCE_CI_HIGH,
        Metric.MCNEMAR_P_ADJUSTED,
    )
    return holm_direction(*(r[m] for m in values))


def condition_key(row: dict, columns: list[str]) -> tuple:
    return tuple(None if not isinstance(row[c], str) and pd.isna(row[c]) else row[c] for c in columns)


def budget_cell(row: Mapping) -> str:
    """A row's budget: ``8/255`` for a pixel budget, ``2 patches`` for a patch attack's."""
    if patch_budgeted(row["method"], parse_params(row["params"])):
        return patch_count(row["eps"])
    return format_eps(row["eps"])


def patch_count(count: float) -> str:
    """``1 patch``, ``2 patches``."""
    return f"{count:g} patch" + ("" if count == 1 else "es")


def key_cell(column: str, value: object) -> str:
    if column == "eps":
        return format_eps(value)
    if column in ("severity", "layer", "n"):
        return format_int(value)
    return str(value)


def clean_rows(df: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """A metric's own rows on the clean images."""
    rows = metric_rows(df, metric)
    return rows[rows["method"].eq("clean")]


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
    rows = ordered_columns(sanity_rows(df), ["run", "model", "m_grad"])
    if rows.empty:
        return None
    keys = [*varying(rows, ["run"]), "model", *(c for c in ("m_grad", "precision") if has_column(rows, c))]
    out = tuple(
        (
            *(str(r[k]) for k in keys),
            r["metric"].removeprefix("sanity_"),
            "pass" if r["value"] >= 1 else "FAIL",
            sanity_detail(r["params"]),
        )
        for r in rows.to_dict(orient="records")
    )
    return Table((*keys, "check", "result", "detail"), out, (Align.LEFT,) * (len(keys) + 3), title="Sanity checks")
