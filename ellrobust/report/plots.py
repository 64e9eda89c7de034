"""The report's figures, drawn with matplotlib's object-oriented API on the Agg canvas.

No ``pyplot``: it keeps global state (current figure, registered windows) and picks a GUI backend
when one is around, which leaks memory in long processes and breaks on headless CI machines. Here a
:class:`~matplotlib.figure.Figure` is built, attached to a ``FigureCanvasAgg`` and written as PNG.

A model (of one run) keeps its colour in every figure; the elliptical ``m_grad`` modes differ by line style
(``full``, the adaptive attack, dashed). Confidence bands are 95 % binomial (Wald) intervals at
each row's ``n``: they show how much of a gap between two curves sampling noise alone could make.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ellrobust.report.frame import binomial_band, series_columns, series_label
from ellrobust.report.tables import params_text
from ellrobust.results import atomic_write

#: Line style and marker per m_grad mode: the adaptive ``full`` attack dashed with hollow squares, so
#: it stays visible where it coincides with ``detach``.
_STYLES = {"": ("-", "o", None), "detach": ("-", "o", None), "full": ("--", "s", "none")}
_COLLAPSE_LABELS = {
    "token_cosine": ("mean token cosine similarity", "Token cosine similarity per layer (higher: more collapsed)"),
    "attention_entropy": ("attention entropy", "Attention entropy per layer"),
    "effective_rank": ("effective rank of the tokens", "Effective rank per layer (lower: more collapsed)"),
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
    """Colour by (run, model), line style and marker by m_grad mode, label from the series' fields."""
    linestyle, marker, fill = _STYLES.get(first["m_grad"], (":", "^", None))
    return {
        "color": colors[(first["run"], first["model"])],
        "linestyle": linestyle,
        "marker": marker,
        "markerfacecolor": fill,
        "markersize": 5,
        "label": _plain(series_label(first, columns)),
    }


def _band(ax, x: list[float], values: list[float], ns: list[int], style: dict) -> list[float]:
    """Draw a line with its 95 % binomial band; returns the band's upper edge (for the y range)."""
    bands = [binomial_band(v, n) for v, n in zip(values, ns, strict=True)]
    ax.fill_between(
        x, [b[0] * 100 for b in bands], [b[1] * 100 for b in bands], color=style["color"], alpha=0.15, linewidth=0
    )
    ax.plot(x, [v * 100 for v in values], **style)
    return [b[1] for b in bands]


def robust_figure(df: pd.DataFrame) -> Figure | None:
    """Accuracy vs eps, one panel per attack, every model on each panel; eps 0 is clean accuracy."""
    rob = df[df["metric"] == "robust_accuracy"]
    if rob.empty:
        return None
    clean = {
        (r["run"], r["model"]): (r["value"], int(r["n"]))
        for r in df[df["metric"] == "clean_accuracy"].to_dict(orient="records")
    }
    by_params = (rob.groupby("method")["params"].nunique() > 1).any()
    panels = list(dict.fromkeys(zip(rob["method"], rob["params"] if by_params else [""] * len(rob), strict=True)))
    columns = series_columns(rob)
    colors = _palette(df)
    fig, axes = _grid(len(panels), 3, (4.4, 3.4))
    highs: list[float] = []
    for ax, (method, params) in zip(axes, panels, strict=True):
        panel = rob[rob["method"] == method]
        if by_params:
            panel = panel[panel["params"] == params]
        panel_eps = sorted(panel["eps"].dropna().unique())
        scale = 255 if _in_255(panel_eps) else 1
        for _, series in panel.groupby(columns, sort=False):
            series = series.dropna(subset=["eps"]).sort_values("eps")
            first = series.iloc[0]
            x = [e * scale for e in series["eps"]]
            values, ns = series["value"].tolist(), [int(n) for n in series["n"]]
            if (first["run"], first["model"]) in clean:
                value, n = clean[(first["run"], first["model"])]
                x, values, ns = [0.0, *x], [value, *values], [n, *ns]
            highs += _band(ax, x, values, ns, _style(colors, first, columns))
        ticks = [0.0, *(e * scale for e in panel_eps)]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_title(_plain(f"{method} ({params_text(params)})" if params else method))
        ax.set_xlabel("ε (/255 of the pixel range)" if scale == 255 else "ε ([0, 1] pixel units)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    _accuracy_ylim(axes[0], highs)
    _legend(fig, axes)
    fig.suptitle(f"Robust accuracy vs attack budget (ε = 0: clean; bands: 95 % binomial CI at n = {_n_text(rob)})")
    return fig


def corruption_figure(df: pd.DataFrame) -> Figure | None:
    """Corruption accuracy vs severity, one small panel per corruption; severity 0 is clean accuracy."""
    cor = df[df["metric"] == "corruption_accuracy"]
    if cor.empty:
        return None
    clean = {
        (r["run"], r["model"]): (r["value"], int(r["n"]))
        for r in df[df["metric"] == "clean_accuracy"].to_dict(orient="records")
    }
    corruptions = list(pd.unique(cor["method"]))
    columns = series_columns(cor)
    colors = _palette(df)
    fig, axes = _grid(len(corruptions), 5, (3.0, 2.5))
    highs: list[float] = []
    severities = sorted(int(s) for s in cor["severity"].dropna().unique())
    for ax, corruption in zip(axes, corruptions, strict=True):
        for _, series in cor[cor["method"] == corruption].groupby(columns, sort=False):
            series = series.dropna(subset=["severity"]).sort_values("severity")
            first = series.iloc[0]
            x = [int(s) for s in series["severity"]]
            values, ns = series["value"].tolist(), [int(n) for n in series["n"]]
            if (first["run"], first["model"]) in clean:
                value, n = clean[(first["run"], first["model"])]
                x, values, ns = [0, *x], [value, *values], [n, *ns]
            highs += _band(ax, x, values, ns, _style(colors, first, columns))
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
    fig.suptitle(f"Corruption accuracy vs severity (bands: 95 % binomial CI at n = {_n_text(cor)})")
    return fig


def collapse_figure(df: pd.DataFrame, metric: str) -> Figure | None:
    """A per-layer metric (token cosine similarity: the paper's collapse figure), one line per model."""
    rows = df[(df["metric"] == metric) & df["layer"].notna()]
    rows = rows[~rows["params"].fillna("").str.contains('"head"')]  # per-head rows stay in the tables
    clean = rows[rows["method"] == "collapse"]
    rows = clean if not clean.empty else rows  # the paper's figure: clean images; adversarial ones are tabulated
    if rows.empty:
        return None
    columns = series_columns(rows, extra=("method",))
    colors = _palette(df)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for _, series in rows.groupby(columns, sort=False):
        series = series.sort_values("layer")
        first = series.iloc[0]
        ax.plot([int(v) for v in series["layer"]], series["value"].tolist(), **_style(colors, first, columns))
    ylabel, title = _COLLAPSE_LABELS.get(metric, (_plain(metric.replace("_", " ")), _plain(f"{metric} per layer")))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
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


def save_png(fig: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically; no software-version metadata, so identical plots give identical bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, metadata={"Software": None})
    atomic_write(path, buf.getvalue())
