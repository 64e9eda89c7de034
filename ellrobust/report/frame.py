"""Shared helpers over the results table for the report's tables and plots.

The results table leaves optional text fields empty in two ways (``""`` from the engine, ``<NA>``
after a CSV round trip); :func:`prepare` makes them one. A *series* is what one line of a plot or
one column of a wide table shows: a model, and, only where they vary, its ``m_grad`` mode, the
attack precision, the method or the run it comes from. Keeping that rule in one place makes legends
and table columns agree.

Intervals, differences and adjusted p-values are rows of their own that share the key fields of the
number they qualify (``robust_accuracy`` and ``robust_accuracy_ci_low``); :class:`Lookup` finds a
row's companions. The report never computes an interval itself: a run without those rows shows none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ellrobust import results

#: Text columns whose missing values mean "not applicable" and become "".
TEXT_COLUMNS = ("run", "model", "checkpoint", "method", "params", "m_grad", "precision", "baseline", "metric")

#: Significance level of every test the report and the verdict call significant (after Holm's adjustment).
ALPHA = 0.05



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


def format_pct_interval(value: float, low: float, high: float) -> str:
    """``64.6 (60.1–68.9)``: an accuracy in % with its interval; the value alone when there is none."""
    if pd.isna(value):
        return ""
    if pd.isna(low) or pd.isna(high):
        return format_pct(value)
    return f"{format_pct(value)} ({format_pct(low)}–{format_pct(high)})"


def format_pp(value: float) -> str:
    """A difference of fractions in signed percentage points (``+3.1``); empty if missing."""
    return "" if pd.isna(value) else f"{value * 100:+.1f}"


def format_pp_interval(low: float, high: float) -> str:
    """``+1.2 … +7.9``: a difference's interval in percentage points; empty if missing."""
    return "" if pd.isna(low) or pd.isna(high) else f"{low * 100:+.1f} … {high * 100:+.1f}"


def format_p(value: float) -> str:
    """A p-value with three significant digits, two in scientific notation below 0.001; empty if missing."""
    if pd.isna(value):
        return ""
    return f"{value:.2g}" if value < 0.001 else f"{value:.3g}"


def format_number_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    """``0.412 (0.401 … 0.423)``: a collapse statistic (``signed``: a difference) with its interval, if any."""
    if pd.isna(value):
        return ""
    fmt = (lambda v: ("+" if v >= 0 else "") + format_number(v)) if signed else format_number
    if pd.isna(low) or pd.isna(high):
        return fmt(value)
    return f"{fmt(value)} ({fmt(low)} … {fmt(high)})"


def row_key(row: Mapping) -> tuple:
    """A row's run and :func:`ellrobust.results.row_key`: the key its companions (intervals, p) share."""
    return (str(row.get("run", "")), *results.row_key(row))


class Lookup:
    """The value of a row's companion metric (its interval, p-value ...): NaN when the run has none."""

    def __init__(self, df: pd.DataFrame) -> None:
        self._values = {(*row_key(r), r["metric"]): r["value"] for r in df.to_dict(orient="records")}
        self._metrics = set(df["metric"])

    def __call__(self, row: Mapping, metric: str) -> float:
        return float(self._values.get((*row_key(row), metric), math.nan))

    def has(self, metric: str) -> bool:
        """Whether any row of the table carries ``metric``."""
        return metric in self._metrics


def varying(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """The columns among ``columns`` that take more than one value in ``df``."""
    return [c for c in columns if c in df and df[c].nunique(dropna=False) > 1]


def series_columns(df: pd.DataFrame, extra: Sequence[str] = ()) -> list[str]:
    """``model`` plus whichever of run, ``extra`` and ``m_grad`` tell rows of ``df`` apart."""
    return ["model", *varying(df, ["run", *extra, "m_grad", "precision"])]


def series_label(row: pd.Series | dict, columns: Sequence[str]) -> str:
    """``deit (m_grad full, run b)``: the model, then the non-empty distinguishing fields."""
    parts = [f"{'m_grad ' if c == 'm_grad' else ''}{row[c]}" for c in columns if c != "model" and row.get(c)]
    return f"{row['model']} ({', '.join(parts)})" if parts else str(row["model"])


def holm_direction(difference: float, low: float, high: float, p_adjusted: float) -> int:
    """+1 when a paired difference A − B significantly favours A, −1 when it favours B, 0 otherwise.

    Significant means: Holm-adjusted p below :data:`ALPHA` *and* the 95 % interval on the same side
    of 0 (where the run wrote one). The exact test and the score interval almost always agree; where
    they do not, the weaker of the two decides, so no table mark or verdict rests on one alone.
    """
    if pd.isna(p_adjusted) or p_adjusted >= ALPHA or pd.isna(difference):
        return 0
    if difference > 0 and (pd.isna(low) or low > 0):
        return 1
    if difference < 0 and (pd.isna(high) or high < 0):
        return -1
    return 0
