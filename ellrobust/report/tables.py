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
from collections.abc import Sequence

import pandas as pd

from ellrobust.report.legend import Labels, collapse_label, series_columns, series_label, varying
from ellrobust.report.number_format import (
    format_budget,
    format_budget_interval,
    format_eps,
    format_int,
    format_layers,
    format_level,
    format_number,
    format_number_interval,
    format_p,
    format_pct,
    format_pct_interval,
    format_pp,
    format_pp_interval,
    format_signed,
    format_signed_interval,
)
from ellrobust.report.table_model import Align, Cell, Table
from ellrobust.results import COLLAPSE_METRICS, Metric
from ellrobust.stats.calibration import MIN_CALIBRATION_IMAGES
from ellrobust.stats.decisions import ALPHA, POWER, Favours, holm_direction, holm_level
from ellrobust.verdict.results_view import (
    TEXT_COLUMNS,
    Lookup,
    interval_metrics,
    paired_records,
    parse_params,
    split_params,
)
from ellrobust.verdict.rules import MCE_ORDER

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
#: Suffixes of rows that qualify another row (intervals, differences): never a metric of their own.
COMPANION_SUFFIXES = ("_ci_low", "_ci_high", "_difference")
#: How the survival of Holm's adjustment reads in the paired tables (emphasised where it survives).
SURVIVES_HOLM = {Favours.A: Cell("yes (A)"), Favours.B: Cell("yes (B)"), Favours.NEITHER: "no"}


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
    return df[(df["metric"] == str(metric)) & df["baseline"].eq("")]


def _sections(keys: list[tuple]) -> tuple[int, ...]:
    """The rows at which the group key changes: where the terminal draws a rule."""
    return tuple(i for i in range(1, len(keys)) if keys[i] != keys[i - 1])


def clean_table(df: pd.DataFrame) -> Table | None:
    """Clean accuracy per model, with the checkpoint digest and its 95 % Wilson interval where the run has it,
    and top-5 accuracy (95 % CI) where the run measured it."""
    rows = _ordered(_values(df, Metric.CLEAN_ACCURACY), ["run", "model"])
    if rows.empty:
        return None
    lookup = Lookup(df)
    with_ci = lookup.has(Metric.CLEAN_ACCURACY.ci_low)
    top5 = {(r["run"], r["model"]): r for r in _clean_rows(df, Metric.TOP5_ACCURACY).to_dict(orient="records")}
    with_top5 = bool(top5)
    keys = [*varying(rows, ["run"]), "model"]
    out = []
    for r in rows.to_dict(orient="records"):
        cells = [*(str(r[k]) for k in keys), r["checkpoint"], format_int(r["n"]), format_pct(r["value"])]
        if with_ci:
            low, high = (lookup(r, m) for m in (Metric.CLEAN_ACCURACY.ci_low, Metric.CLEAN_ACCURACY.ci_high))
            cells.append(f"{format_pct(low)} – {format_pct(high)}")
        if with_top5:
            cells.append(_accuracy_cell(lookup, top5.get((r["run"], r["model"])), Metric.TOP5_ACCURACY))
        out.append(tuple(cells))
    headers = (*keys, "checkpoint", "n", "accuracy (%)", *(["95 % CI (%)"] if with_ci else []))
    headers += ("top-5 (%)",) if with_top5 else ()
    align = (Align.LEFT,) * (len(keys) + 1) + (Align.RIGHT,) * (len(headers) - len(keys) - 1)
    return Table(headers, tuple(out), align, title="Clean accuracy (%)")


def _accuracy_cell(lookup: Lookup, row: dict | None, metric: Metric) -> str:
    if row is None:
        return ""
    return format_pct_interval(row["value"], lookup(row, metric.ci_low), lookup(row, metric.ci_high))


def robust_table(df: pd.DataFrame, labels: Labels) -> Table | None:
    """Robust accuracy (%) (95 % CI) per attack × model (× m_grad × precision), one column per eps, clean first."""
    rob = _values(df, Metric.ROBUST_ACCURACY)
    if rob.empty:
        return None
    lookup = Lookup(df)
    rob = rob.assign(attack=[labels.method(m, p) for m, p in zip(rob["method"], rob["params"], strict=True)])
    clean = {(r["run"], r["model"]): r for r in _values(df, Metric.CLEAN_ACCURACY).to_dict(orient="records")}
    keys = [*varying(rob, ["run"]), "attack", "model", *(c for c in ("m_grad", "precision") if _any(rob, c))]
    eps_values = sorted(rob["eps"].dropna().unique())
    out = []
    for fields, group in _groups(rob, keys):
        first = group.iloc[0]
        by_eps = {e: r for e, r in zip(group["eps"], group.to_dict(orient="records"), strict=True)}
        out.append(
            (
                *(str(fields[k]) for k in keys),
                _accuracy_cell(lookup, clean.get((first["run"], first["model"])), Metric.CLEAN_ACCURACY),
                *(_accuracy_cell(lookup, by_eps.get(e), Metric.ROBUST_ACCURACY) for e in eps_values),
            )
        )
    headers = (*keys, "clean", *(f"ε {format_eps(e)}" for e in eps_values))
    align = (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (1 + len(eps_values))
    return Table(headers, tuple(out), align, title="Robust accuracy (%) with 95 % Wilson intervals")


def transfer_table(df: pd.DataFrame, labels: Labels) -> Table | None:
    """Source × target per attack and budget (``--transfer``): each target's accuracy (%) (95 % CI) on
    the adversarial images crafted on the source, the white-box accuracy on the diagonal."""
    transferred = _values(df, Metric.TRANSFER_ACCURACY)
    if transferred.empty:
        return None
    lookup = Lookup(df)
    white_box = _values(df, Metric.ROBUST_ACCURACY)
    white_box = white_box[white_box["method"].ne("worst-case")]
    cells: dict[tuple, dict[str, str]] = {}
    for metric, rows in ((Metric.ROBUST_ACCURACY, white_box), (Metric.TRANSFER_ACCURACY, transferred)):
        for r in rows.to_dict(orient="records"):
            params = parse_params(r["params"])
            source = params.get("source", r["model"])
            mode = params.get("source_m_grad", "") if "source" in params else r["m_grad"]
            key = (labels.method(r["method"], r["params"]), r["eps"], r["precision"], source, mode)
            cells.setdefault(key, {})[r["model"]] = _accuracy_cell(lookup, r, metric)
    keys = [k for k in cells if any(target != k[3] for target in cells[k])]  # settings something transferred from
    if not keys:
        return None
    targets = list(dict.fromkeys(df["model"]))
    with_precision = len({k[2] for k in keys}) > 1
    out = []
    for key in sorted(keys, key=lambda k: (k[0], k[1], str(k[2]), targets.index(k[3]) if k[3] in targets else 0)):
        attack, eps, precision, source, mode = key
        first = [attack, f"{format_eps(eps)}", *([str(precision)] if with_precision else [])]
        out.append((*first, f"{source} ({mode})" if mode else source, *(cells[key].get(t, "") for t in targets)))
    headers = ("attack", "ε", *(["precision"] if with_precision else []), "source / target", *targets)
    align = (Align.LEFT,) * (len(headers) - len(targets)) + (Align.RIGHT,) * len(targets)
    sections = _sections([row[:2] for row in out])
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
    for r in _values(df, Metric.EPS_STAR_MEDIAN).to_dict(orient="records"):
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
    for r in _ordered(rows, keys).to_dict(orient="records"):
        cells = [_key_cell(k, r[k]) for k in keys]
        for model in (r["model"], r["baseline"]):
            found = median_of(model, r)
            censored = lookup(found, Metric.N_CENSORED) if found is not None else float("nan")
            cells.append(_median_cell(found, censored))
        low = lookup(r, Metric.EPS_STAR_DIFFERENCE_CI_LOW)
        high = lookup(r, Metric.EPS_STAR_DIFFERENCE_CI_HIGH)
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
        "censored at eps_max, Hodges–Lehmann A − B with its 95 % CI, paired sign test (Holm over all paired "
        "comparisons of A and B in the run)"
    )
    return Table(headers, tuple(out), align, title=title)


def ood_table(df: pd.DataFrame) -> Table | None:
    """OOD detection (imagenet-o) per model: AUROC with DeLong's 95 % interval and AUPR, OOD positive, score −MSP."""
    rows = _ordered(_values(df, Metric.OOD_AUROC), ["run", "model"])
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(rows, ["run"]), "model"]
    out = []
    for r in rows.to_dict(orient="records"):
        low, high = lookup(r, Metric.OOD_AUROC_CI_LOW), lookup(r, Metric.OOD_AUROC_CI_HIGH)
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
    rows = df[(df["metric"] == Metric.OOD_AUROC_DIFFERENCE.value) & df["baseline"].ne("")]
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = [*varying(rows, ["run"]), "model", "baseline"]
    out = []
    for r in _ordered(rows, keys).to_dict(orient="records"):
        low, high = lookup(r, Metric.OOD_AUROC_DIFFERENCE_CI_LOW), lookup(r, Metric.OOD_AUROC_DIFFERENCE_CI_HIGH)
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
        "(Holm over all paired comparisons of A and B in the run)"
    )
    return Table(headers, tuple(out), align, title=title)


def max_half_width(df: pd.DataFrame, metric: Metric) -> float | None:
    """The widest half-interval (as a fraction) among a metric's rows, or None when the run has no intervals."""
    lookup = Lookup(df)
    rows = _values(df, metric).to_dict(orient="records")
    widths = [(lookup(r, metric.ci_high) - lookup(r, metric.ci_low)) / 2 for r in rows]
    widths = [w for w in widths if not pd.isna(w)]
    return max(widths) if widths else None


def corruption_table(df: pd.DataFrame) -> Table | None:
    """Corruption accuracy (%) (95 % CI) per corruption × model, one column per severity plus their mean."""
    cor = _values(df, Metric.CORRUPTION_ACCURACY)
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
                *(_accuracy_cell(lookup, by_sev.get(s), Metric.CORRUPTION_ACCURACY) for s in severities),
                _accuracy_cell(lookup, overall, Metric.CORRUPTION_ACCURACY),
            )
        )
    headers = (*("corruption" if k == "method" else k for k in keys), *(f"severity {s}" for s in severities), "mean")
    align = (Align.LEFT,) * len(keys) + (Align.RIGHT,) * (len(severities) + 1)
    return Table(headers, tuple(out), align, title="Corruption accuracy (%) per severity, with 95 % Wilson intervals")


def _holm_direction(r: dict) -> Favours:
    values = (
        Metric.ACCURACY_DIFFERENCE,
        Metric.DIFFERENCE_CI_LOW,
        Metric.DIFFERENCE_CI_HIGH,
        Metric.MCNEMAR_P_ADJUSTED,
    )
    return holm_direction(*(r[m] for m in values))


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
    cor = _values(df, Metric.CORRUPTION_ACCURACY)
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
            *(_accuracy_cell(lookup, means.get((corruption, s)), Metric.CORRUPTION_ACCURACY) for s in series),
        ]
        for run, a, b in pairs:
            mine = [r for r in paired if (r["run"], r["model"], r["baseline"], r["method"]) == (run, a, b, corruption)]
            if not mine:
                cells += ["", ""]
                continue
            directions = [_holm_direction(r) for r in mine]
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
    for r in _ordered(rows, ["reference", "metric", "method"]).to_dict(orient="records"):
        name = r["method"] if r["metric"] == Metric.CE else names[Metric(r["metric"])]
        row_label = f"{name} ({r['reference']})" if r["reference"] else name
        cells.setdefault(row_label, {})[series_label(r, columns)] = r["value"]
    out = tuple((label, *(format_number(v.get(s, float("nan"))) for s in labels)) for label, v in cells.items())
    title = "Corruption error (CE) per corruption and mCE, by reference (lower is better)"
    return Table(("corruption", *labels), out, (Align.LEFT,) + (Align.RIGHT,) * len(labels), title=title)


def mce_difference_table(df: pd.DataFrame) -> Table | None:
    """mCE(A) − mCE(B) with its 95 % paired bootstrap interval, per normalisation."""
    rows = df[(df["metric"] == Metric.MCE_DIFFERENCE.value) & df["baseline"].ne("")]
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = varying(rows, ["run"])
    out = []
    for r in rows.to_dict(orient="records"):
        norm = _normalization(r["params"])
        low, high = lookup(r, Metric.MCE_DIFFERENCE.ci_low), lookup(r, Metric.MCE_DIFFERENCE.ci_high)
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
        values = _clean_setting(_values(df, metric), variant)
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
    rows = _values(df, metric)
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
        modes.setdefault(_condition_key(r, condition), []).append(r["m_grad"])
    shown = [
        {**r, "mode": mode}
        for r in rows.to_dict(orient="records")
        for mode in (
            list(dict.fromkeys(modes.get(_condition_key(r, condition), []))) or [""]
            if r["m_grad"] == ""
            else [r["m_grad"]]
        )
    ]
    rows = pd.DataFrame(shown)
    keys = [
        *varying(rows, ["run"]),
        "images",
        "eps",
        *(["mode"] if _any(rows, "m_grad") else []),
        *(["precision"] if _any(rows, "precision") else []),
        "setting",
        "layer_text",
    ]
    models = list(dict.fromkeys(rows["model"]))
    out, groups = [], []
    for fields, group in _groups(rows, keys):
        by_model = {r["model"]: r for r in group.to_dict(orient="records")}
        cells = [
            format_number_interval(r["value"], lookup(r, low_name), lookup(r, high_name))
            if (r := by_model.get(m))
            else ""
            for m in models
        ]
        out.append((*(_key_cell(k, fields[k]) for k in keys), *cells))
        groups.append(tuple(_key_cell(k, fields[k]) for k in keys[:-1]))
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
        sections=_sections(groups),
    )


def _condition_key(row: dict, columns: list[str]) -> tuple:
    return tuple(None if not isinstance(row[c], str) and pd.isna(row[c]) else row[c] for c in columns)


def _key_cell(column: str, value: object) -> str:
    if column == "eps":
        return format_eps(value)
    if column in ("severity", "layer", "n"):
        return format_int(value)
    return str(value)


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
        *(c for c in ("eps", "severity") if _any(rows, c)),
        *(c for c in ("m_grad", "precision") if _any(rows, c)),
    ]
    present = {
        m
        for m in (Metric.MCNEMAR_P, Metric.MCNEMAR_P_ADJUSTED, Metric.DETECTABLE_DIFFERENCE, Metric.N_REQUIRED)
        if rows[m].notna().any()
    }
    out = []
    for r in _ordered(rows, keys).to_dict(orient="records"):
        cells = [_key_cell(k, r[k]) for k in keys]
        cells += [
            format_pp(r[Metric.ACCURACY_DIFFERENCE]),
            format_pp_interval(r[Metric.DIFFERENCE_CI_LOW], r[Metric.DIFFERENCE_CI_HIGH]),
        ]
        if Metric.MCNEMAR_P in present:
            cells.append(format_p(r[Metric.MCNEMAR_P]))
        if Metric.MCNEMAR_P_ADJUSTED in present:
            cells += [format_p(r[Metric.MCNEMAR_P_ADJUSTED]), SURVIVES_HOLM[_holm_direction(r)]]
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
        f"Holm over all paired comparisons of A and B in the run{_power_note(rows, present)})"
    )
    return Table(tuple(headers), tuple(out), align, title=title)


#: The header of the detectable-difference column; its level is in the table's title (:func:`_power_note`).
DETECTABLE = "detectable"


def _power_note(rows: pd.DataFrame, present: set[Metric]) -> str:
    """``, m = 10; detectable and n needed: 80 % power at Holm's first-step α/m = 0.05/10 = 0.005``.

    m is the Holm family size the rows record (one per pair of models; a range when the table holds
    several pairs); rows written before ``holm_family_size`` were computed for a single test at α.
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


def _clean_rows(df: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """A metric's own rows on the clean images."""
    rows = _values(df, metric)
    return rows[rows["method"].eq("clean")]


def _images_cell(row: dict) -> str:
    """Which images a calibration row is about: ``clean``, or a corruption and its severity."""
    return "clean" if row["method"] == "clean" else f"{row['method']} s{format_int(row['severity'])}"


def _on_images(rows: pd.DataFrame, corruptions: bool) -> pd.DataFrame:
    return rows[rows["method"].ne("clean")] if corruptions else rows[rows["method"].eq("clean")]


def calibration_table(df: pd.DataFrame, corruptions: bool = False) -> Table | None:
    """Each model's top-5 accuracy and calibration errors in % (ECE over 15 equal-width bins, the paper's RMS error over
    adaptive bins of 100) with their 95 % bootstrap intervals, on the clean images (or, with
    ``corruptions``, on every corruption × severity cell)."""
    rows = _on_images(_values(df, Metric.CALIBRATION_ERROR), corruptions)
    if rows.empty:
        return None
    lookup = Lookup(df)
    keys = varying(rows, ["run"])
    out = []
    for r in _ordered(rows, [*keys, "method", "severity", "model"]).to_dict(orient="records"):
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
    for r in _ordered(rows, [*keys, "model", "baseline", "method", "severity"]).to_dict(orient="records"):
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
    return Table((*keys, "check", "result", "detail"), out, (Align.LEFT,) * (len(keys) + 3), title="Sanity checks")
