"""The report's figures, drawn with matplotlib's object-oriented API on the Agg canvas.

No ``pyplot``: it keeps global state (current figure, registered windows) and picks a GUI backend
when one is around, which leaks memory in long processes and breaks on headless CI machines. Here a
:class:`~matplotlib.figure.Figure` is built, attached to a ``FigureCanvasAgg`` and written as PNG.

A model (of one run) keeps its colour in every figure; the elliptical ``m_grad`` modes differ by line
style (``full``, the adaptive attack, dashed), attack precisions by marker. Bands are the intervals
the run wrote as rows (95 % Wilson for accuracies, t-intervals over images for collapse metrics);
a run without those rows gets lines without bands, never an interval invented here.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ellrobust.core.files import atomic_write
from ellrobust.report.legend import Labels, collapse_label, series_columns, series_label
from ellrobust.report.number_format import format_eps
from ellrobust.results import ELLIPTICAL_METRICS, Metric
from ellrobust.results.adversarial_images import adversarial_files, load_adversarial, load_clean
from ellrobust.stats.decisions import Favours, holm_direction
from ellrobust.stats.inference import paired_difference_interval
from ellrobust.stats.minimal_budgets import (
    fixed_budget_eps,
    robust_curve,
    robust_curve_interval,
    robust_flags,
    worst_case_eps,
)
from ellrobust.verdict.results_view import Lookup, interval_metrics, parse_params, split_params

#: The sequential colours of budgets (small ε dark, large light).
_VIRIDIS = colormaps["viridis"]
#: Line style and marker per m_grad mode: the adaptive ``full`` attack dashed with hollow squares, so
#: it stays visible where it coincides with ``detach``.
_STYLES = {"": ("-", "o", None), "detach": ("-", "o", None), "full": ("--", "s", "none")}
#: Markers per attack precision, used where a figure shows several precisions.
_PRECISION_MARKERS = {"fp32": "o", "tf32": "^", "bf16": "v"}
_COLLAPSE_LABELS = {
    Metric.TOKEN_COSINE: ("mean token cosine similarity", "Token cosine similarity per layer (higher: more collapsed)"),
    Metric.ATTENTION_ENTROPY: ("attention entropy", "Attention entropy per layer"),
    Metric.EFFECTIVE_RANK: ("effective rank of the tokens", "Effective rank per layer (lower: more collapsed)"),
}


def _palette(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """One colour per (run, model), in order of appearance, shared by every figure of a report."""
    pairs = list(dict.fromkeys(zip(df["run"], df["model"], strict=True)))
    return {pair: f"C{i % 10}" for i, pair in enumerate(pairs)}


def _grid(panels: int, max_cols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    """A constrained-layout figure with ``panels`` axes sharing y; unused grid cells are hidden."""
    cols = min(panels, max_cols)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _in_255(eps: list[float]) -> bool:
    """Whether every budget is a whole number of grey levels (L∞ budgets), so /255 units read naturally."""
    return all(abs(e * 255 - round(e * 255)) < 1e-6 for e in eps)


def _accuracy_ylim(ax, highs: list[float]) -> None:
    """0 to the highest band (rounded up to 10 %), so small accuracies are not squashed at the bottom."""
    top = min(100.0, math.ceil((max(highs, default=1.0) * 100 + 1) / 10) * 10)
    ax.set_ylim(0, top)


def _plain(text: str) -> str:
    """Text matplotlib shows literally: a ``$`` in a model name would otherwise start mathtext."""
    return text.replace("$", r"\$")


def _style(colors: dict[tuple[str, str], str], first: pd.Series, columns: list[str]) -> dict:
    """Colour by (run, model), line style by m_grad mode, marker by precision where it varies, label from the fields."""
    linestyle, marker, fill = _STYLES.get(first["m_grad"], (":", "^", None))
    if "precision" in columns:
        marker = _PRECISION_MARKERS.get(first["precision"], "D")
    return {
        "color": colors[(first["run"], first["model"])],
        "linestyle": linestyle,
        "marker": marker,
        "markerfacecolor": fill,
        "markersize": 5,
        "label": _plain(series_label(first, columns)),
    }


def _band(
    ax, x: list[float], values: list[float], lows: list[float], highs: list[float], style: dict, scale: float = 100
) -> list[float]:
    """Draw a line with its interval band (where the run wrote one); returns the upper edges (for the y range)."""
    lo, hi = np.array(lows, dtype=float) * scale, np.array(highs, dtype=float) * scale
    known = ~(np.isnan(lo) | np.isnan(hi))
    if known.any():
        ax.fill_between(np.array(x, dtype=float), lo, hi, where=known, color=style["color"], alpha=0.15, linewidth=0)
    ax.plot(x, [v * scale for v in values], **style)
    return [h if not math.isnan(h) else v for h, v in zip(highs, values, strict=True)]


def _intervals(rows: pd.DataFrame, lookup: Lookup, metric: str) -> tuple[list[float], list[float]]:
    records = rows.to_dict(orient="records")
    low, high = interval_metrics(metric)
    return [lookup(r, low) for r in records], [lookup(r, high) for r in records]


def _clean_points(df: pd.DataFrame, lookup: Lookup) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(run, model) → clean accuracy and its interval: the ε = 0 / severity 0 point of every curve."""
    low, high = Metric.CLEAN_ACCURACY.ci_low, Metric.CLEAN_ACCURACY.ci_high
    return {
        (r["run"], r["model"]): (r["value"], lookup(r, low), lookup(r, high))
        for r in df[(df["metric"] == Metric.CLEAN_ACCURACY.value) & df["baseline"].eq("")].to_dict(orient="records")
    }


def _band_text(lookup: Lookup, metric: str, rows: pd.DataFrame) -> str:
    if lookup.has(interval_metrics(metric)[0]):
        return f"bands: 95 % Wilson interval at n = {_n_text(rows)}"
    return f"n = {_n_text(rows)}; no intervals in this run"


def robust_figure(df: pd.DataFrame, labels: Labels) -> Figure | None:
    """Accuracy vs eps, one panel per attack, every model on each panel; eps 0 is clean accuracy."""
    rob = df[(df["metric"] == Metric.ROBUST_ACCURACY.value) & df["baseline"].eq("")]
    if rob.empty:
        return None
    lookup = Lookup(df)
    clean = _clean_points(df, lookup)
    panels = list(
        dict.fromkeys(
            zip(
                rob["method"],
                (labels.method(m, p) for m, p in zip(rob["method"], rob["params"], strict=True)),
                strict=True,
            )
        )
    )
    columns = series_columns(rob)
    colors = _palette(df)
    fig, axes = _grid(len(panels), 3, (4.4, 3.4))
    highs: list[float] = []
    for ax, (method, label) in zip(axes, panels, strict=True):
        panel = rob[(rob["method"] == method) & rob["params"].map(lambda p, m=method: labels.method(m, p)).eq(label)]
        panel_eps = sorted(panel["eps"].dropna().unique())
        scale = 255 if _in_255(panel_eps) else 1
        for _, series in panel.groupby(columns, sort=False):
            series = series.dropna(subset=["eps"]).sort_values("eps")
            first = series.iloc[0]
            x = [e * scale for e in series["eps"]]
            values = series["value"].tolist()
            lows, his = _intervals(series, lookup, Metric.ROBUST_ACCURACY)
            if (first["run"], first["model"]) in clean:
                value, low, high = clean[(first["run"], first["model"])]
                x, values, lows, his = [0.0, *x], [value, *values], [low, *lows], [high, *his]
            highs += _band(ax, x, values, lows, his, _style(colors, first, columns))
        ticks = [0.0, *(e * scale for e in panel_eps)]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_title(_plain(label))
        ax.set_xlabel("ε (/255 of the pixel range)" if scale == 255 else "ε ([0, 1] pixel units)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    _accuracy_ylim(axes[0], highs)
    _legend(fig, axes)
    fig.suptitle(f"Robust accuracy vs attack budget (ε = 0: clean; {_band_text(lookup, Metric.ROBUST_ACCURACY, rob)})")
    return fig


#: Points of the ε grid on which the robustness curve is drawn, from 0 to the method's eps_max.
CURVE_POINTS = 200

#: A minimal-norm measurement of one model: (run, model, method, params, m_grad, precision).
Budget = tuple[str, str, str, str, str, str]


def minimal_budgets(examples: pd.DataFrame | None) -> dict[Budget, tuple[pd.Series, pd.Series, float]]:
    """Each model's per-image ε* and censored flags (indexed by the image's index in the split) and eps_max,
    per minimal-norm measurement, from a per-example table with a ``run`` column (one run folder's
    ``examples.csv.gz`` each, :func:`ellrobust.results.load_examples`); empty without one.

    The table holds one line per image and grid budget, all with the same ε*; the first is kept.
    """
    if examples is None or "eps_star" not in examples or examples["eps_star"].isna().all():
        return {}
    rows = examples[examples["eps_star"].notna()].copy()
    for column in ("run", "m_grad", "precision", "params"):
        rows[column] = rows[column].astype("string").fillna("").astype(str) if column in rows else ""
    keys = ["run", "model", "method", "params", "m_grad", "precision"]
    out = {}
    for key, group in rows.groupby(keys, sort=False):
        group = group.drop_duplicates("index").set_index("index")
        eps_max = parse_params(key[3]).get("eps_max")
        if eps_max is None:
            continue
        out[key] = (group["eps_star"].astype(float), group["censored"].fillna(0).astype(bool), float(eps_max))
    return out


def _norm_of(method: str, params: str) -> str | None:
    from ellrobust.attacks import ATTACKS

    settings = parse_params(params)
    if settings.get("norm"):
        return str(settings["norm"])
    return ATTACKS.get(method).norm if method in ATTACKS else None


#: Methods whose per-example lines are not one attack's outcomes at a budget: derived, or the sanity attack.
_NOT_AN_ATTACK = ("worst-case", "sanity-pgd-large-eps")


def worst_case_budgets(
    examples: pd.DataFrame | None, budgets: dict[Budget, tuple[pd.Series, pd.Series, float]]
) -> dict[tuple[str, str, str, str, str], tuple[pd.Series, pd.Series, float, tuple[str, ...]]]:
    """Per (run, model, m_grad, precision, norm) with a minimal-norm method: each image's worst-case ε*.

    An image counts as broken at ε if any method of the run broke it at or below ε: the minimum of the
    minimal-norm methods' ε* and of the smallest grid budget at which a fixed-budget attack in the same
    norm broke it (:func:`~ellrobust.stats.minimal_budgets.fixed_budget_eps`; attacks in the same ``m_grad``
    mode, and another model's transferred images in every mode, as the worst-case rows count them).
    The result holds the combined ε* and censored flags (indexed by image), the smallest eps_max of the
    minimal-norm methods (where the combined curve ends) and the methods combined; a group that no
    fixed-budget attack or second minimal-norm method joins is left out (its curve is the method's own).
    """
    if examples is None or not budgets:
        return {}
    lines = examples[examples["eps"].notna() & examples["eps_star"].isna() & ~examples["method"].isin(_NOT_AN_ATTACK)]
    if "severity" in lines:
        lines = lines[lines["severity"].isna()]
    lines = lines.assign(
        **{c: lines[c].astype("string").fillna("").astype(str) for c in ("run", "m_grad", "precision", "params")}
    )
    groups: dict[tuple[str, str, str, str, str], list] = {}
    for (run, model, method, params, mode, precision), value in budgets.items():
        groups.setdefault((run, model, mode, precision, _norm_of(method, params)), []).append((method, value))
    out = {}
    for (run, model, mode, precision, norm), minimal in groups.items():
        index = minimal[0][1][0].index
        eps_max = min(value[2] for _, value in minimal)
        stars = [value[0].reindex(index).to_numpy() for _, value in minimal]
        censored = [
            (value[1].reindex(index).to_numpy()) | (s > eps_max) for (_, value), s in zip(minimal, stars, strict=True)
        ]
        stars = [np.minimum(s, eps_max) for s in stars]
        names = [method for method, _ in minimal]
        mine = lines[(lines["run"] == run) & (lines["model"] == model) & (lines["precision"] == precision)]
        for (method, params, line_mode), attack in mine.groupby(["method", "params", "m_grad"], sort=False):
            transferred = "source" in parse_params(params)
            if _norm_of(method, params) != norm or not (transferred or line_mode == mode):
                continue
            robust = attack.pivot_table(index="eps", columns="index", values="correct", aggfunc="min")
            robust = robust.reindex(columns=index, fill_value=1).fillna(1).astype(bool)
            bound, never = fixed_budget_eps(~robust.to_numpy(), robust.index.to_numpy(), eps_max=eps_max)
            stars.append(bound)
            censored.append(never)
            source = parse_params(params).get("source")
            names.append(f"{method} from {source}" if transferred else method)
        if len(names) < 2:
            continue
        combined, all_censored = worst_case_eps(*stars, censored=censored, eps_max=eps_max)
        key = (run, model, mode, precision, norm)
        out[key] = (pd.Series(combined, index=index), pd.Series(all_censored, index=index), eps_max, tuple(names))
    return out


def _paired_curve(
    a: tuple[pd.Series, pd.Series, float], b: tuple[pd.Series, pd.Series, float], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust accuracy of A − B at each ε of ``grid`` on the images both have, with Tango's paired interval."""
    common = a[0].index.intersection(b[0].index)
    eps_max = min(a[2], b[2])
    flags_a = robust_flags(a[0][common].to_numpy(), a[1][common].to_numpy(), grid, eps_max=eps_max)
    flags_b = robust_flags(b[0][common].to_numpy(), b[1][common].to_numpy(), grid, eps_max=eps_max)
    a_only, b_only, n = (flags_a & ~flags_b).sum(axis=1), (~flags_a & flags_b).sum(axis=1), len(common)
    limits = np.array([paired_difference_interval(int(x), int(y), n) for x, y in zip(a_only, b_only, strict=True)])
    return (a_only - b_only) / max(n, 1), limits[:, 0], limits[:, 1]


def robustness_curve_figure(df: pd.DataFrame, examples: pd.DataFrame | None) -> Figure | None:
    """Robust accuracy vs ε read from each image's minimal budget ε* (left), and the paired difference A − B
    (right), on a fine grid from 0 to the method's eps_max.

    Left: per model and m_grad mode, the fraction of images with ε* > ε with its pointwise 95 % Wilson
    band, the fixed-budget attacks of the run in the same norm as markers with their Wilson intervals,
    and (dotted) the per-image worst case over every method (:func:`worst_case_budgets`): where a
    fixed-budget attack broke images that the minimal-norm method did not at that ε, it lies below.
    Right: for each pair of models the run compared on ε* (``eps_star_difference`` rows), the difference of
    the two curves on the same images with the pointwise 95 % Tango score interval
    (:func:`~ellrobust.stats.inference.paired_difference_interval`) of the per-image robust flags at each ε.
    ``examples`` is the per-example table of the runs with a ``run`` column; None without ε* draws nothing.
    """
    budgets = minimal_budgets(examples)
    if not budgets:
        return None
    lookup = Lookup(df)
    colors = _palette(df)
    pairs = df[(df["metric"] == Metric.EPS_STAR_DIFFERENCE.value) & df["baseline"].ne("")].to_dict(orient="records")
    pairs = [
        r for r in pairs if (r["run"], r["model"], r["method"], r["params"], r["m_grad"], r["precision"]) in budgets
    ]
    fig = Figure(figsize=(12.0 if pairs else 6.5, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if pairs else 1, squeeze=False).ravel().tolist()
    methods = list(dict.fromkeys(key[2] for key in budgets))
    norms = {_norm_of(key[2], key[3]) for key in budgets}
    scale = 255 if _in_255([eps_max for _, _, eps_max in budgets.values()]) and norms == {"Linf"} else 1
    ax = axes[0]
    eps_top = 0.0
    for key, (stars, censored, eps_max) in budgets.items():
        run, model, method, _, mode, precision = key
        grid = np.linspace(0.0, eps_max, CURVE_POINTS)
        curve = robust_curve_interval(stars.to_numpy(), censored.to_numpy(), grid, eps_max=eps_max)
        linestyle = ("-", "--", ":", "-.")[(methods.index(method) + (mode == "full")) % 4]
        what = [model, *([method] if len(methods) > 1 else []), *([f"m_grad {mode}"] if mode else [])]
        style = {"color": colors.get((run, model), "C0"), "linestyle": linestyle, "label": _plain(", ".join(what))}
        ax.fill_between(grid * scale, curve.low * 100, curve.high * 100, color=style["color"], alpha=0.15, linewidth=0)
        ax.plot(grid * scale, curve.robust * 100, **style)
        eps_top = max(eps_top, eps_max)
    for (run, model, mode, _, _), (stars, censored, eps_max, names) in worst_case_budgets(examples, budgets).items():
        grid = np.linspace(0.0, eps_max, CURVE_POINTS)
        robust = robust_curve(stars.to_numpy(), censored.to_numpy(), grid, eps_max=eps_max)
        what = f"{model}, m_grad {mode}" if mode else model
        label = _plain(f"{what}: per-image worst case of {len(set(names))} methods")
        ax.plot(grid * scale, robust * 100, color=colors.get((run, model), "C0"), linestyle=(0, (1, 1)), label=label)
    fixed = df[(df["metric"] == Metric.ROBUST_ACCURACY.value) & df["baseline"].eq("") & df["eps"].notna()]
    fixed = fixed[~fixed["method"].isin(methods + ["worst-case"])]
    fixed = fixed[[_norm_of(m, p) in norms for m, p in zip(fixed["method"], fixed["params"], strict=True)]]
    markers = {method: "osv^D"[i % 5] for i, method in enumerate(dict.fromkeys(fixed["method"]))}
    groups = list(fixed.groupby(["run", "model", "method", "params", "m_grad", "precision"], sort=False))
    for i, (_, series) in enumerate(groups):
        shift = (i - (len(groups) - 1) / 2) * 0.006 * eps_top  # side by side, not on top of each other
        first = series.iloc[0]
        values = series["value"].to_numpy() * 100
        lows, highs = (np.array(v, dtype=float) * 100 for v in _intervals(series, lookup, Metric.ROBUST_ACCURACY))
        errors = np.vstack([values - np.nan_to_num(lows, nan=0), np.nan_to_num(highs, nan=0) - values]).clip(min=0)
        mode = f", m_grad {first['m_grad']}" if first["m_grad"] else ""
        ax.errorbar(
            (series["eps"].to_numpy() + shift) * scale,
            values,
            yerr=errors if not np.isnan(lows).all() else None,
            fmt=markers[first["method"]],
            color=colors.get((first["run"], first["model"]), "C0"),
            markerfacecolor="none" if first["m_grad"] == "full" else None,
            capsize=3,
            label=_plain(f"{first['model']}: {first['method']} at fixed ε{mode}"),
        )
    unit = "ε (/255 of the pixel range)" if scale == 255 else "ε ([0, 1] pixel units)"
    ax.set_xlim(0, eps_top * scale)
    ax.set_ylim(-2, 102)  # markers at 0 % stay whole
    ax.set_xlabel(unit)
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title("Robust accuracy from ε*\n(bands, error bars: pointwise 95 % Wilson)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize="x-small")  # the curves fall to 0 % well before eps_max: room there
    if pairs:
        ax = axes[1]
        for r in pairs:
            a = budgets[(r["run"], r["model"], r["method"], r["params"], r["m_grad"], r["precision"])]
            b_key = (r["run"], r["baseline"], r["method"], r["params"])
            b = budgets.get((*b_key, r["m_grad"], r["precision"]), budgets.get((*b_key, "", r["precision"])))
            if b is None:
                continue
            grid = np.linspace(0.0, min(a[2], b[2]), CURVE_POINTS)
            diff, low, high = _paired_curve(a, b, grid)
            what = [*([r["method"]] if len(methods) > 1 else []), *([f"m_grad {r['m_grad']}"] if r["m_grad"] else [])]
            label = f"{r['model']} − {r['baseline']}" + (f" ({', '.join(what)})" if what else "")
            color = colors.get((r["run"], r["model"]), "C0")
            ax.fill_between(grid * scale, low * 100, high * 100, color=color, alpha=0.15, linewidth=0)
            ax.plot(grid * scale, diff * 100, color=color, label=_plain(label))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlim(0, eps_top * scale)
        ax.set_xlabel(unit)
        ax.set_ylabel("A − B robust accuracy (pp)")
        ax.set_title(
            "Paired difference A − B on the same images\n(band: pointwise 95 % Tango score)", fontsize="medium"
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    n = _n_text(df[df["metric"] == Metric.EPS_STAR_MEDIAN.value])
    fig.suptitle(f"Robust accuracy vs ε from minimal budgets ε* (n = {n}; curves: fraction of images with ε* > ε)")
    return fig


def corruption_figure(df: pd.DataFrame) -> Figure | None:
    """Corruption accuracy vs severity, one small panel per corruption; severity 0 is clean accuracy."""
    cor = df[(df["metric"] == Metric.CORRUPTION_ACCURACY.value) & df["baseline"].eq("")]
    if cor.empty:
        return None
    lookup = Lookup(df)
    clean = _clean_points(df, lookup)
    corruptions = list(pd.unique(cor["method"]))
    columns = series_columns(cor)
    colors = _palette(df)
    fig, axes = _grid(len(corruptions), 5, (3.0, 2.5))
    highs: list[float] = []
    severities = sorted(int(s) for s in cor["severity"].dropna().unique())
    for ax, corruption in zip(axes, corruptions, strict=True):
        for _, series in cor[cor["method"] == corruption].groupby(columns, sort=False):
            series = series.dropna(subset=["severity"]).sort_values("severity")
            if series.empty:
                continue
            first = series.iloc[0]
            x = [int(s) for s in series["severity"]]
            values = series["value"].tolist()
            lows, his = _intervals(series, lookup, Metric.CORRUPTION_ACCURACY)
            if (first["run"], first["model"]) in clean:
                value, low, high = clean[(first["run"], first["model"])]
                x, values, lows, his = [0, *x], [value, *values], [low, *lows], [high, *his]
            highs += _band(ax, x, values, lows, his, _style(colors, first, columns))
        ax.set_xticks([0, *severities], ["clean", *map(str, severities)])
        ax.set_title(_plain(corruption.replace("_", " ")), fontsize="medium")
        ax.grid(alpha=0.3)
    cols = min(len(corruptions), 5)
    for ax in axes[-cols:]:
        ax.set_xlabel("severity")
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy (%)")
    _accuracy_ylim(axes[0], highs)
    _legend(fig, axes)
    fig.suptitle(f"Corruption accuracy vs severity ({_band_text(lookup, 'corruption_accuracy', cor)})")
    return fig


def _clean_collapse(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A collapse metric's per-layer rows on the clean images, all heads together (the paper's figure)."""
    rows = df[(df["metric"] == metric) & df["layer"].notna()]
    rows = rows[rows["params"].map(lambda p: split_params(p)[1].get("head") is None).astype(bool)]
    clean = rows[rows["method"] == "collapse"]
    return clean if not clean.empty else rows


def collapse_figure(df: pd.DataFrame, metric: str) -> Figure | None:
    """A per-layer metric with its interval bands; beside it, the paired difference per layer where the run has one."""
    rows = _clean_collapse(df, metric)
    values = rows[rows["baseline"].eq("")]
    if values.empty:
        return None
    diffs = _clean_collapse(df, f"{metric}_difference")
    lookup = Lookup(df)
    columns = series_columns(values, extra=("method", "params"))
    colors = _palette(df)
    fig = Figure(figsize=(11.0 if not diffs.empty else 6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if not diffs.empty else 1, squeeze=False).ravel().tolist()
    ax = axes[0]
    for _, series in values.groupby(columns, sort=False):
        series = series.sort_values("layer")
        first = series.iloc[0]
        style = _style(colors, first, [c for c in columns if c != "params"])
        if "params" in columns:
            style["label"] = _plain(
                f"{series_label(first, [c for c in columns if c != 'params'])}, {_collapse_text(first['params'])}"
            )
        lows, highs = _intervals(series, lookup, metric)
        _band(ax, [int(v) for v in series["layer"]], series["value"].tolist(), lows, highs, style, scale=1)
    ylabel, title = _COLLAPSE_LABELS.get(metric, (_plain(metric.replace("_", " ")), _plain(f"{metric} per layer")))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if not diffs.empty:
        ax = axes[1]
        for i, (_, series) in enumerate(diffs.groupby(["run", "model", "baseline", "params"], sort=False)):
            series = series.sort_values("layer")
            first = series.iloc[0]
            style = {
                "color": f"C{(i + 2) % 10}",
                "marker": "o",
                "markersize": 5,
                "label": _plain(f"{first['model']} − {first['baseline']}"),
            }
            lows, highs = _intervals(series, lookup, f"{metric}_difference")
            _band(ax, [int(v) for v in series["layer"]], series["value"].tolist(), lows, highs, style, scale=1)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"difference in {ylabel}")
        ax.set_title("Paired difference A − B (band: 95 % t-interval)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return fig


def elliptical_m_figure(df: pd.DataFrame) -> Figure | None:
    """The elliptical metric m per layer, its mean and its spread over coordinates (one row of panels each),
    on the clean images and on each attack's adversarial images (one column per attack).

    In every panel the clean images are the black line and the attack's budgets one sequential colour
    each, from the smallest ε (dark) to the largest (light), with their 95 % t-interval bands; the
    adaptive attack (``m_grad full``) is dashed; where a run has several elliptical models, each has a
    marker of its own. One legend below the panels. Every set of images in one panel would be two
    dozen lines on five layers: unreadable.
    """
    panels = {metric: rows for metric in ELLIPTICAL_METRICS if not (rows := _m_rows(df, metric)).empty}
    if not panels:
        return None
    lookup = Lookup(df)
    every = pd.concat(panels.values())
    attacks = list(dict.fromkeys(every.loc[every["method"] != "collapse", "method"])) or [None]
    budgets = sorted(every["eps"].dropna().unique())
    shades = {eps: _VIRIDIS(0.1 + 0.75 * i / max(len(budgets) - 1, 1)) for i, eps in enumerate(budgets)}
    models = list(dict.fromkeys(zip(every["run"], every["model"], strict=True)))
    fig = Figure(figsize=(4.0 * len(attacks) + 0.6, 3.3 * len(panels) + 1.0), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(panels), len(attacks), squeeze=False, sharex=True)
    for row, (metric, rows) in zip(grid, panels.items(), strict=True):
        for ax, attack in zip(row, attacks, strict=True):
            keys = ["run", "model", "method", "eps", "m_grad"]
            for (run, model, method, eps, mode), series in rows.groupby(keys, sort=False, dropna=False):
                if method not in ("collapse", attack):
                    continue
                series = series.sort_values("layer")
                clean = method == "collapse"
                what = "clean images" if clean else f"ε {format_eps(eps)}"
                label = ", ".join(
                    [*([model] if len(models) > 1 else []), what, *(["m_grad full"] if mode == "full" else [])]
                )
                style = {
                    "color": "black" if clean else shades[eps],
                    "linestyle": "--" if mode == "full" else "-",
                    "marker": "osv^D"[models.index((run, model)) % 5],
                    "markersize": 4,
                    "label": _plain(label),
                }
                lows, highs = _intervals(series, lookup, metric)
                _band(ax, [int(v) for v in series["layer"]], series["value"].tolist(), lows, highs, style, scale=1)
            ax.set_title(_plain(attack or "clean images"), fontsize="medium")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        row[0].set_ylabel(_M_LABELS[metric])
    for ax in grid[-1]:
        ax.set_xlabel("layer")
    _legend(fig, [ax for row in grid for ax in row])
    fig.suptitle(
        "The elliptical metric m per layer on clean and adversarial images (bands: 95 % t-interval over images)"
    )
    return fig


#: Axis labels of the elliptical metric's panels.
_M_LABELS = {
    Metric.ELLIPTICAL_M_MEAN: "mean of m over coordinates",
    Metric.ELLIPTICAL_M_SPREAD: "spread (s.d.) of m over coordinates",
}


def _m_rows(df: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """A metric of m per layer, all heads together, of every set of images (clean and adversarial)."""
    rows = df[(df["metric"] == metric.value) & df["layer"].notna() & df["baseline"].eq("")]
    return rows[rows["params"].map(lambda p: split_params(p)[1].get("head") is None).astype(bool)]


def _collapse_text(params: str) -> str:
    return collapse_label(split_params(params)[1])


def difference_heatmap(df: pd.DataFrame) -> Figure | None:
    """Paired accuracy differences on corrupted images, corruption × severity, one panel per pair of models.

    A diverging colour map centred at 0 (blue: the first model more accurate, red: the second); the
    cells that survive Holm's adjustment (:func:`~ellrobust.stats.decisions.holm_direction`) are boxed and starred.
    """
    rows = df[(df["metric"] == Metric.ACCURACY_DIFFERENCE.value) & df["severity"].notna() & df["baseline"].ne("")]
    if rows.empty:
        return None
    lookup = Lookup(df)
    pairs = list(dict.fromkeys(zip(rows["run"], rows["model"], rows["baseline"], strict=True)))
    corruptions = list(pd.unique(rows["method"]))
    severities = sorted(int(s) for s in rows["severity"].unique())
    limit = max(float(rows["value"].abs().max()) * 100, 1.0)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    fig = Figure(
        figsize=(1.2 + 0.75 * len(severities) * len(pairs) + 1.6 * len(pairs), 1.3 + 0.38 * len(corruptions)),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(pairs), squeeze=False, sharey=True).ravel().tolist()
    image = None
    for ax, (run, a, b) in zip(axes, pairs, strict=True):
        mine = rows[(rows["run"] == run) & (rows["model"] == a) & (rows["baseline"] == b)]
        grid = np.full((len(corruptions), len(severities)), np.nan)
        marked = np.zeros_like(grid, dtype=bool)
        for r in mine.to_dict(orient="records"):
            i, j = corruptions.index(r["method"]), severities.index(int(r["severity"]))
            grid[i, j] = r["value"] * 100
            low, high = lookup(r, Metric.DIFFERENCE_CI_LOW), lookup(r, Metric.DIFFERENCE_CI_HIGH)
            favours = holm_direction(r["value"], low, high, lookup(r, Metric.MCNEMAR_P_ADJUSTED))
            marked[i, j] = favours is not Favours.NEITHER
        image = ax.imshow(grid, cmap="RdBu", norm=norm, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if np.isnan(value):
                continue
            star = "*" if marked[i, j] else ""
            ax.text(
                j,
                i,
                f"{value:+.0f}{star}",
                ha="center",
                va="center",
                fontsize="small",
                color="white" if abs(value) > 0.6 * limit else "black",
            )
            if marked[i, j]:
                ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="black", linewidth=1.5))
        ax.set_xticks(range(len(severities)), [str(s) for s in severities])
        ax.set_yticks(range(len(corruptions)), [_plain(c.replace("_", " ")) for c in corruptions])
        ax.set_xlabel("severity")
        ax.set_title(_plain(f"{a} − {b}" + (f" ({run})" if len({p[0] for p in pairs}) > 1 else "")), fontsize="medium")
    fig.colorbar(image, ax=axes, label="A − B (pp); blue: A more accurate", shrink=0.9)
    fig.suptitle(
        "Paired accuracy difference on corrupted images (boxed *: survives Holm's adjustment)", fontsize="medium"
    )
    return fig


def _legend(fig: Figure, axes: list) -> None:
    """One legend for the whole figure, below the panels, so no panel's curves are hidden under it."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()), list(entries), loc="outside lower center", ncols=min(len(entries), 3), frameon=False
    )


def _n_text(rows: pd.DataFrame) -> str:
    ns = sorted({int(n) for n in rows["n"].dropna()})
    return ", ".join(map(str, ns)) or "?"


#: Images a gallery shows, at most.
GALLERY_IMAGES = 4


def gallery_figure(run_dir: Path, df: pd.DataFrame) -> Figure | None:
    """A few images under attack, for the first two models of a run saved with ``--save-adversarial``.

    The attack shown is the run's strongest at its largest budget (the lowest robust accuracy of the
    first model there; an elliptical model in m_grad detach, fp32). The images are those both models
    classify correctly clean, the ones on which the models disagree under attack first, then by index.
    Per model: the clean image, the adversarial one, and the perturbation amplified to the full range
    (grey is 0, ``±ε`` is black and white), titled with the true class and what the model says.
    """
    clean = load_clean(run_dir)
    if clean is None:
        return None
    sets = [load_adversarial(p) for p in adversarial_files(run_dir)]
    shown = _gallery_sets(sets, df)
    if shown is None or any(not np.array_equal(s.index, clean["index"]) for s in shown):
        return None
    first, second = shown
    x = clean["x"]
    # an image a model got wrong clean was not attacked: its x_adv is the clean image, its class wrong
    wrong_clean = [(s.prediction != s.label) & (s.x_adv == x).reshape(len(x), -1).all(1) for s in shown]
    candidates = np.flatnonzero(~wrong_clean[0] & ~wrong_clean[1])
    agree = (first.prediction == first.label) == (second.prediction == second.label)
    order = sorted(candidates.tolist(), key=lambda k: (bool(agree[k]), int(clean["index"][k])))[:GALLERY_IMAGES]
    if not order:
        return None
    fig = Figure(figsize=(8.4, 1.6 * len(order) + 0.7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(order), 6, squeeze=False)
    for r, k in enumerate(order):
        for c, saved in enumerate(shown):
            delta = (saved.x_adv[k] - x[k]) / (2 * saved.eps) + 0.5
            panels = (
                (x[k], f"image {int(clean['index'][k])}: class {int(clean['label'][k])}"),
                (saved.x_adv[k], f"{saved.model}: {int(saved.prediction[k])}"),
                (delta, "perturbation"),
            )
            for j, (image, title) in enumerate(panels):
                ax = axes[r][3 * c + j]
                ax.imshow(np.transpose(image, (1, 2, 0)).clip(0, 1), interpolation="nearest")
                ax.set_title(_plain(title), fontsize="small")
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(
        _plain(
            f"{first.method} at ε {format_eps(first.eps)}: the clean image, the adversarial image (the class the "
            "model says)\nand the perturbation amplified (grey 0, black and white ±ε)"
        ),
        fontsize="medium",
    )
    return fig


def _gallery_sets(sets: list, df: pd.DataFrame):
    """The two saved sets a gallery shows: the first two models, the strongest attack at its largest budget."""
    models = list(dict.fromkeys(df["model"]))
    if len(models) < 2 or not sets:
        return None
    a, b = models[:2]
    usable = [s for s in sets if s.m_grad in ("", "detach") and s.precision == "fp32"]
    largest = max((s.eps for s in usable), default=None)
    rows = df[(df["metric"] == Metric.ROBUST_ACCURACY.value) & (df["model"] == a) & df["baseline"].eq("")]
    strength = {
        method: value
        for method, eps, mode, value in zip(rows["method"], rows["eps"], rows["m_grad"], rows["value"], strict=True)
        if largest is not None and eps == largest and mode in ("", "detach")
    }
    for method in sorted({s.method for s in usable if s.eps == largest}, key=lambda m: strength.get(m, 1.0)):
        of = {s.model: s for s in usable if s.method == method and s.eps == largest}
        pair = [of.get(a), of.get(b)]
        if all(pair):
            return pair
    return None


def save_png(fig: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically; no software-version metadata, so identical plots give identical bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    atomic_write(path, buf.getvalue())
