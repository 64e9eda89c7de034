"""How every number is written, in the report and on the terminal alike.

Values stay floats in the results table; they are rounded here and nowhere else, so a budget, a
percentage or a p-value reads the same in every table, every verdict line and every check summary.
Each function returns ``""`` for a missing value (None or NaN), which a table shows as an empty cell.
An interval of a difference whose ends coincide is written as its one value marked :data:`ZERO_WIDTH`,
so it cannot be read as a precise estimate: no claim rests on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ellrobust.stats.decisions import zero_width

#: How an interval of zero width is marked after its one value.
ZERO_WIDTH = "(zero width)"


def _interval(low: float, high: float, fmt) -> str:
    """``fmt(low) … fmt(high)``, or ``fmt(low) (zero width)`` when the ends coincide; ``""`` when one is missing."""
    if _missing(low) or _missing(high):
        return ""
    return f"{fmt(low)} {ZERO_WIDTH}" if zero_width(low, high) else f"{fmt(low)} … {fmt(high)}"


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(value)
    except TypeError:
        return value != value  # pandas' NA


def format_eps(eps: float | None) -> str:
    """A budget in /255 units when it is a whole number of grey levels (``8/255``), else as a decimal."""
    if _missing(eps):
        return ""
    k = eps * 255
    return f"{k:.3g}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def format_budget(value: float | None, *, signed: bool = False, unit: bool = True) -> str:
    """A measured budget (a minimal ε*, a difference of two) in /255 units with two decimals (``6.78/255``;
    ``6.78`` without ``unit``, for a column whose header names it)."""
    if _missing(value):
        return ""
    k = value * 255
    return (f"{k:+.2f}" if signed else f"{k:.2f}") + ("/255" if unit else "")


def format_budget_interval(low: float, high: float) -> str:
    """``-1.42 … +1.23``: the interval of a difference of budgets in /255 units (the header names the unit)."""
    return _interval(low, high, lambda v: format_budget(v, signed=True, unit=False))


def format_pct(value: float) -> str:
    """A fraction as a percentage with one decimal."""
    return "" if _missing(value) else f"{value * 100:.1f}"


def format_number(value: float) -> str:
    """A general number: three decimals below 10 (ratios, cosines), one above (ranks)."""
    if _missing(value):
        return ""
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def format_signed(value: float) -> str:
    """A difference of general numbers (mCE, a collapse statistic) with its sign and three decimals: ``-0.073``."""
    return "" if _missing(value) else f"{value:+.3f}"


def format_int(value: object) -> str:
    """An optional integer (severity, layer, images)."""
    return "" if _missing(value) else str(int(value))


def format_pct_interval(value: float, low: float, high: float) -> str:
    """``64.6 (60.1–68.9)``: an accuracy in % with its interval; the value alone when there is none."""
    if _missing(value):
        return ""
    if _missing(low) or _missing(high):
        return format_pct(value)
    return f"{format_pct(value)} ({format_pct(low)}–{format_pct(high)})"


def format_pp(value: float) -> str:
    """A difference of fractions in signed percentage points (``+3.1``)."""
    return "" if _missing(value) else f"{value * 100:+.1f}"


def format_pp_interval(low: float, high: float) -> str:
    """``+1.2 … +7.9``: a difference's interval in percentage points."""
    return _interval(low, high, format_pp)


def format_signed_interval(low: float, high: float) -> str:
    """``-0.087 … -0.057``: the interval of a difference of general numbers."""
    return _interval(low, high, format_signed)


def format_p(value: float) -> str:
    """A p-value with three significant digits, two in scientific notation below 0.001."""
    if _missing(value):
        return ""
    return f"{value:.2g}" if value < 0.001 else f"{value:.3g}"


def format_number_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    """``0.412 (0.401 … 0.423)``: a collapse statistic (``signed``: a difference) with its interval, if any."""
    if _missing(value):
        return ""
    fmt = (lambda v: ("+" if v >= 0 else "") + format_number(v)) if signed else format_number
    if _missing(low) or _missing(high):
        return fmt(value)
    if zero_width(low, high):
        return f"{fmt(value)} {ZERO_WIDTH}"
    return f"{fmt(value)} ({fmt(low)} … {fmt(high)})"


def format_level(fraction: float) -> str:
    """A confidence level or a power as the text writes it: ``95 %``."""
    return f"{round(fraction * 100)} %"


def format_layers(layers: object) -> str:
    """Blocks as a range where they are contiguous (``3–5``), else listed (``0, 3, 5``); ``""`` for none."""
    values = [int(v) for v in layers] if isinstance(layers, Sequence) and not isinstance(layers, str) else []
    if len(values) > 1 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}–{values[-1]}"
    return ", ".join(map(str, values))
