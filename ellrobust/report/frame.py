"""Shared helpers over the results table for the report's tables and plots.

The results table leaves optional text fields empty in two ways (``""`` from the engine, ``<NA>``
after a CSV round trip); :func:`prepare` makes them one. A *series* is what one line of a plot or
one column of a wide table shows: a model, and, only where they vary, its ``m_grad`` mode, the
method or the run it comes from. Keeping that rule in one place makes legends and table columns agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ellrobust.metrics.stats import binomial_se

#: Text columns whose missing values mean "not applicable" and become "".
TEXT_COLUMNS = ("run", "model", "checkpoint", "method", "params", "m_grad", "baseline", "metric")

#: z for a two-sided 95 % interval.
Z95 = 1.959964


def prepare(df: pd.DataFrame, run: str = "") -> pd.DataFrame:
    """A copy of a results table with a ``run`` column and empty text fields as ``""``."""
    out = df.copy()
    out["run"] = run
    for col in TEXT_COLUMNS:
        if col not in out:
            out[col] = ""
        out[col] = out[col].astype("string").fillna("").astype(str)
    return out


def format_eps(eps: float) -> str:
    """A budget in /255 units when it is a whole number of grey levels (``8/255``), else as a decimal."""
    k = eps * 255
    return f"{k:.3g}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def format_pct(value: float) -> str:
    """A fraction as a percentage with one decimal; empty for missing values."""
    return "" if pd.isna(value) else f"{value * 100:.1f}"


def format_number(value: float) -> str:
    """A general number: three decimals below 10 (ratios, cosines), one above (ranks); empty if missing."""
    if pd.isna(value):
        return ""
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def format_int(value: object) -> str:
    """An optional integer (severity, layer) as text; empty for missing values."""
    return "" if pd.isna(value) else str(int(value))


def binomial_band(p: float, n: int) -> tuple[float, float]:
    """The 95 % Wald interval of an accuracy ``p`` measured on ``n`` images, clipped to [0, 1]."""
    half = Z95 * binomial_se(p, n) if n > 0 else 0.0
    return max(p - half, 0.0), min(p + half, 1.0)


def varying(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and df[c].nunique(dropna=False) > 1]


def series_columns(df: pd.DataFrame, extra: Sequence[str] = ()) -> list[str]:
    """``model`` plus whichever of run, ``extra`` and ``m_grad`` tell rows of ``df`` apart."""
    return ["model", *varying(df, ["run", *extra, "m_grad"])]


def series_label(row: pd.Series | dict, columns: Sequence[str]) -> str:
    """``deit (m_grad full, run b)``: the model, then the non-empty distinguishing fields."""
    parts = [f"{'m_grad ' if c == 'm_grad' else ''}{row[c]}" for c in columns if c != "model" and row[c]]
    return f"{row['model']} ({', '.join(parts)})" if parts else str(row["model"])
