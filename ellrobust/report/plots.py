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

from ellrobust.core.files import atomic_write
from ellrobust.report.legend import Labels, series_columns, series_label
from ellrobust.results import Metric
from ellrobust.stats.decisions import Favours, holm_direction
from ellrobust.verdict.results_view import Lookup, interval_metrics, patch_rows

#: The sequential colours of budgets (small ε dark, large light).
VIRIDIS = colormaps["viridis"]
#: Line style and marker per m_grad mode: the adaptive ``full`` attack dashed with hollow squares, so
#: it stays visible where it coincides with ``detach``.
_STYLES = {"": ("-", "o", None), "detach": ("-", "o", None), "full": ("--", "s", "none")}
#: Markers per attack precision, used where a figure shows several precisions.
_PRECISION_MARKERS = {"fp32": "o", "tf32": "^", "bf16": "v"}


def model_colors(df: pd.DataFrame) -> dict[tuple[str, str], str]:
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


def in_255(eps: list[float]) -> bool:
    """Whether every budget is a whole number of grey levels (L∞ budgets), so /255 units read naturally."""
    return all(abs(e * 255 - round(e * 255)) < 1e-6 for e in eps)


def _accuracy_ylim(ax, highs: list[float]) -> None:
    """0 to the highest band (rounded up to 10 %), so small accuracies are not squashed at the bottom."""
    top = min(100.0, math.ceil((max(highs, default=1.0) * 100 + 1) / 10) * 10)
    ax.set_ylim(0, top)


def plain_text(text: str) -> str:
    """Text matplotlib shows literally: a ``$`` in a model name would otherwise start mathtext."""
    return text.replace("$", r"\$")


def line_style(colors: dict[tuple[str, str], str], first: pd.Series, columns: list[str]) -> dict:
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
        "label": plain_text(series_label(first, columns)),
    }


def interval_band(
    ax, x: list[float], values: list[float], lows: list[float], highs: list[float], style: dict, scale: float = 100
) -> list[float]:
    """Draw a line with its interval band (where the run wrote one); returns the upper edges (for the y range)."""
    lo, hi = np.array(lows, dtype=float) * scale, np.array(highs, dtype=float) * scale
    known = ~(np.isnan(lo) | np.isnan(hi))
    if known.any():
        ax.fill_between(np.array(x, dtype=float), lo, hi, where=known, color=style["color"], alpha=0.15, linewidth=0)
    ax.plot(x, [v * scale for v in values], **style)
    return [h if not math.isnan(h) else v for h, v in zip(highs, values, strict=True)]


def interval_bounds(rows: pd.DataFrame, lookup: Lookup, metric: str) -> tuple[list[float], list[float]]:
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
        return f"bands: 95 % Wilson interval at n = {n_text(rows)}"
    return f"n = {n_text(rows)}; no intervals in this run"


def robust_figure(df: pd.DataFrame, labels: Labels, *, patches: bool = False) -> Figure | None:
    """Accuracy vs eps, one panel per attack, every model on each panel; eps 0 is clean accuracy.

    ``patches`` draws the patch attacks against their number of patches instead of the pixel-norm attacks.
    """
    rob = df[(df["metric"] == Metric.ROBUST_ACCURACY.value) & df["baseline"].eq("")]
    rob = rob[patch_rows(rob) == patches]
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
    colors = model_colors(df)
    fig, axes = _grid(len(panels), 3, (4.4, 3.4))
    highs: list[float] = []
    for ax, (method, label) in zip(axes, panels, strict=True):
        panel = rob[(rob["method"] == method) & rob["params"].map(lambda p, m=method: labels.method(m, p)).eq(label)]
        panel_eps = sorted(panel["eps"].dropna().unique())
        scale = 255 if in_255(panel_eps) and not patches else 1
        for _, series in panel.groupby(columns, sort=False):
            series = series.dropna(subset=["eps"]).sort_values("eps")
            first = series.iloc[0]
            x = [e * scale for e in series["eps"]]
            values = series["value"].tolist()
            lows, his = interval_bounds(series, lookup, Metric.ROBUST_ACCURACY)
            if (first["run"], first["model"]) in clean:
                value, low, high = clean[(first["run"], first["model"])]
                x, values, lows, his = [0.0, *x], [value, *values], [low, *lows], [high, *his]
            highs += interval_band(ax, x, values, lows, his, line_style(colors, first, columns))
        ticks = [0.0, *(e * scale for e in panel_eps)]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_title(plain_text(label))
        ax.set_xlabel(
            "patches" if patches else "ε (/255 of the pixel range)" if scale == 255 else "ε ([0, 1] pixel units)"
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    _accuracy_ylim(axes[0], highs)
    legend_below(fig, axes)
    budget = "number of patches (0" if patches else "attack budget (ε = 0"
    fig.suptitle(f"Robust accuracy vs {budget}: clean; {_band_text(lookup, Metric.ROBUST_ACCURACY, rob)})")
    return fig


#: A minimal-norm measurement of one model: (run, model, method, params, m_grad, precision).
Budget = tuple[str, str, str, str, str, str]


def corruption_figure(df: pd.DataFrame) -> Figure | None:
    """Corruption accuracy vs severity, one small panel per corruption; severity 0 is clean accuracy."""
    cor = df[(df["metric"] == Metric.CORRUPTION_ACCURACY.value) & df["baseline"].eq("")]
    if cor.empty:
        return None
    lookup = Lookup(df)
    clean = _clean_points(df, lookup)
    corruptions = list(pd.unique(cor["method"]))
    columns = series_columns(cor)
    colors = model_colors(df)
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
            lows, his = interval_bounds(series, lookup, Metric.CORRUPTION_ACCURACY)
            if (first["run"], first["model"]) in clean:
                value, low, high = clean[(first["run"], first["model"])]
                x, values, lows, his = [0, *x], [value, *values], [low, *lows], [high, *his]
            highs += interval_band(ax, x, values, lows, his, line_style(colors, first, columns))
        ax.set_xticks([0, *severities], ["clean", *map(str, severities)])
        ax.set_title(plain_text(corruption.replace("_", " ")), fontsize="medium")
        ax.grid(alpha=0.3)
    cols = min(len(corruptions), 5)
    for ax in axes[-cols:]:
        ax.set_xlabel("severity")
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy (%)")
    _accuracy_ylim(axes[0], highs)
    legend_below(fig, axes)
    fig.suptitle(f"Corruption accuracy vs severity ({_band_text(lookup, 'corruption_accuracy', cor)})")
    return fig


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
        ax.set_yticks(range(len(corruptions)), [plain_text(c.replace("_", " ")) for c in corruptions])
        ax.set_xlabel("severity")
        ax.set_title(
            plain_text(f"{a} − {b}" + (f" ({run})" if len({p[0] for p in pairs}) > 1 else "")), fontsize="medium"
        )
    fig.colorbar(image, ax=axes, label="A − B (pp); blue: A more accurate", shrink=0.9)
    fig.suptitle(
        "Paired accuracy difference on corrupted images (boxed *: survives Holm's adjustment)", fontsize="medium"
    )
    return fig


def legend_below(fig: Figure, axes: list) -> None:
    """One legend for the whole figure, below the panels, so no panel's curves are hidden under it."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(
        list(entries.values()), list(entries), loc="outside lower center", ncols=min(len(entries), 3), frameon=False
    )


def n_text(rows: pd.DataFrame) -> str:
    ns = sorted({int(n) for n in rows["n"].dropna()})
    return ", ".join(map(str, ns)) or "?"


def save_png(fig: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically; no software-version metadata, so identical plots give identical bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    atomic_write(path, buf.getvalue())
