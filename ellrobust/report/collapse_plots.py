"""The collapse figures: each metric per layer, clean and adversarial, and the elliptical metric m per layer."""

from __future__ import annotations

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ellrobust.report.legend import collapse_label, series_columns, series_label
from ellrobust.report.number_format import format_eps
from ellrobust.report.plots import (
    VIRIDIS,
    interval_band,
    interval_bounds,
    legend_below,
    line_style,
    model_colors,
    plain_text,
)
from ellrobust.results import ELLIPTICAL_METRICS, Metric
from ellrobust.verdict.results_view import Lookup, split_params

_COLLAPSE_LABELS = {
    Metric.TOKEN_COSINE: ("mean token cosine similarity", "Token cosine similarity per layer (higher: more collapsed)"),
    Metric.ATTENTION_ENTROPY: ("attention entropy", "Attention entropy per layer"),
    Metric.EFFECTIVE_RANK: ("effective rank of the tokens", "Effective rank per layer (lower: more collapsed)"),
}


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
    colors = model_colors(df)
    fig = Figure(figsize=(11.0 if not diffs.empty else 6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if not diffs.empty else 1, squeeze=False).ravel().tolist()
    ax = axes[0]
    for _, series in values.groupby(columns, sort=False):
        series = series.sort_values("layer")
        first = series.iloc[0]
        style = line_style(colors, first, [c for c in columns if c != "params"])
        if "params" in columns:
            style["label"] = plain_text(
                f"{series_label(first, [c for c in columns if c != 'params'])}, {_collapse_text(first['params'])}"
            )
        lows, highs = interval_bounds(series, lookup, metric)
        interval_band(ax, [int(v) for v in series["layer"]], series["value"].tolist(), lows, highs, style, scale=1)
    ylabel, title = _COLLAPSE_LABELS.get(
        metric, (plain_text(metric.replace("_", " ")), plain_text(f"{metric} per layer"))
    )
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
                "label": plain_text(f"{first['model']} − {first['baseline']}"),
            }
            lows, highs = interval_bounds(series, lookup, f"{metric}_difference")
            interval_band(ax, [int(v) for v in series["layer"]], series["value"].tolist(), lows, highs, style, scale=1)
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
    shades = {eps: VIRIDIS(0.1 + 0.75 * i / max(len(budgets) - 1, 1)) for i, eps in enumerate(budgets)}
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
                    "label": plain_text(label),
                }
                lows, highs = interval_bounds(series, lookup, metric)
                interval_band(
                    ax, [int(v) for v in series["layer"]], series["value"].tolist(), lows, highs, style, scale=1
                )
            ax.set_title(plain_text(attack or "clean images"), fontsize="medium")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        row[0].set_ylabel(_M_LABELS[metric])
    for ax in grid[-1]:
        ax.set_xlabel("layer")
    legend_below(fig, [ax for row in grid for ax in row])
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
