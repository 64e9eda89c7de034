"""Parsers for the CLI's compact values: eps lists (``1/255,2/255``), name lists, integer ranges.

Each raises :class:`UsageError` with the offending text and an example of the expected form, and
nothing else, whatever the input (a fuzz test holds them to that).
"""

from __future__ import annotations

import math
from fractions import Fraction

from ellrobust.core.errors import UsageError

#: Upper bound of every iteration or query budget (``--steps``, ``--restarts``, ``--queries``, ``--samples``):
#: AutoAttack's largest is 5 000 queries, and a value beyond this is a typo that would run for ever.
MAX_BUDGET = 10**6
#: Upper bound of ``-n``: above the largest labelled image sets (ImageNet-21k: 14 million images), so
#: that a subset of any real split can be asked for, while an absurd value is caught as a typo.
MAX_IMAGES = 10**8
#: Lower bound of ``--resolution``: bisecting (0, 1] to this width takes 20 steps; a finer width is a
#: typo, and below float64's spacing the bracket cannot narrow at all, so bisection would never end.
MIN_RESOLUTION = 1e-6


def parse_fraction(text: str) -> float:
    """``"8/255"``, ``"0.03"``, ``"1e-2"``, ``"1/255/16"`` (divisions from left to right) → float.

    Raises ValueError on anything else (ZeroDivisionError on a zero divisor).
    """
    text = text.strip()
    if not text:
        raise ValueError("empty")
    if "/" in text:
        first, *divisors = (Fraction(part.strip()) for part in text.split("/"))
        for divisor in divisors:
            first /= divisor
        value = float(first)
    else:
        value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def parse_eps_list(text: str, *, upper: float = 1.0, option: str = "--eps") -> tuple[float, ...]:
    """A comma-separated list of budgets in [0, 1] pixel units, e.g. ``"1/255,2/255,4/255"``.

    ``option`` names the value in messages: the flag on the command line, the argument in Python.
    """
    items = [t for t in str(text).split(",")]
    if not any(t.strip() for t in items):
        raise UsageError(f"{option} is empty; give budgets in [0, 1] pixel units, e.g. {option} 1/255,2/255,4/255.")
    out = []
    for item in items:
        try:
            value = parse_fraction(item)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise UsageError(
                f"{option} value {item.strip()!r} is not a number; "
                "write budgets like 8/255 or 0.03, separated by commas."
            ) from None
        if not 0 <= value <= upper:
            raise UsageError(
                f"{option} value {item.strip()!r} = {value:g} is outside [0, {upper:g}]; "
                "budgets are in [0, 1] pixel units (8/255, not 8)."
            )
        out.append(value)
    return tuple(sorted(set(out)))


def parse_budget(text: str | None, option: str) -> float | None:
    """One budget in [0, 1] pixel units (``16/255``, ``0.0625``, ``1/255/16``), or None when not given."""
    if text is None:
        return None
    try:
        value = parse_fraction(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise UsageError(f"{option} {text.strip()!r} is not a number; write a budget like 16/255 or 0.0625.") from None
    if not 0 < value <= 1:
        raise UsageError(
            f"{option} {text.strip()!r} = {value:g} is outside (0, 1]; "
            "budgets are in [0, 1] pixel units (16/255, not 16)."
        )
    return value


def parse_name_list(text: str, option: str) -> tuple[str, ...]:
    """``"pgd,fgsm"`` → ("pgd", "fgsm"), order kept, duplicates dropped."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UsageError(f"{option} is empty; give one or more names separated by commas.")
    return tuple(dict.fromkeys(names))


def parse_int_range(text: str, option: str, low: int, high: int) -> tuple[int, ...]:
    """``"1-5"``, ``"3"``, ``"1,3,5"`` → sorted integers, each within [low, high]."""
    out: set[int] = set()
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise UsageError(f"{option} is empty; write e.g. {low}-{high} or {low},{high}.")
    for part in parts:
        try:
            if "-" in part[1:]:
                a, b = (
                    part.split("-", 1)
                    if not part.startswith("-")
                    else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                )
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ValueError
                values = range(lo, hi + 1)
            else:
                values = [int(part)]
        except ValueError:
            raise UsageError(
                f"{option} value {part!r} is not an integer or a range; write e.g. {low}-{high} or {low},{high}."
            ) from None
        for v in values:
            if not low <= v <= high:
                raise UsageError(f"{option} value {v} is outside {low}–{high}.")
            out.add(v)
    return tuple(sorted(out))


def parse_workers(text: str, option: str = "--workers") -> int | None:
    """``--workers``: ``auto`` (None: chosen for the data) or a number of worker processes ≥ 0."""
    value = str(text).strip().lower()
    if value == "auto":
        return None
    try:
        workers = int(value)
    except ValueError:
        raise UsageError(f"{option} must be 'auto' or a whole number ≥ 0 (got {text!r}).") from None
    if workers < 0:
        raise UsageError(f"{option} must be 'auto' or a whole number ≥ 0 (got {text!r}).")
    return workers


#: The largest block index ``--elliptical-layers`` accepts while parsing (each model checks its depth).
_MAX_BLOCK = 10_000


def parse_elliptical_layers(values: list[str]) -> tuple[tuple[int, ...] | None, ...]:
    """``--elliptical-layers``, once for every elliptical model or once per model in ``--model`` order.

    Each value is a list or range of 0-based blocks (``1-11``, ``1,3,5``); ``-`` keeps a model's
    default (every block after the first), e.g. for the baseline in a per-model list. Block 0 has no
    previous layer's values, so it cannot be elliptical.
    """
    out: list[tuple[int, ...] | None] = []
    for value in values:
        if value.strip() in ("-", "default"):
            out.append(None)
        else:
            out.append(parse_int_range(value, "--elliptical-layers", 1, _MAX_BLOCK))
    return tuple(out)


def _keeps_default(value: str) -> bool:
    return value.strip() in ("-", "default")


def parse_checkpoints(values: list[str]) -> tuple[str | None, ...]:
    """``--checkpoint`` once per model in order; ``-`` gives a model its default weights (shipped, or random)."""
    return tuple(None if _keeps_default(value) else value for value in values)


def parse_heads(values: list[str]) -> tuple[int | None, ...]:
    """``--heads``, once for every model whose architecture comes from a checkpoint or once per model (``-``: none)."""
    out: list[int | None] = []
    for value in values:
        if _keeps_default(value):
            out.append(None)
            continue
        try:
            heads = int(value)
        except ValueError:
            raise UsageError(f"--heads value {value!r} is not a whole number; write e.g. --heads 6.") from None
        if heads <= 0:
            raise UsageError(f"--heads must be a positive number of attention heads (got {value!r}).")
        out.append(heads)
    return tuple(out)


def parse_channels(values: list[str], option: str) -> tuple[tuple[float, float, float] | None, ...]:
    """``--mean``/``--std``: three comma-separated values (R, G, B) or one for all channels; ``-`` keeps a
    model's own."""
    out: list[tuple[float, float, float] | None] = []
    for value in values:
        if _keeps_default(value):
            out.append(None)
            continue
        try:
            channels = [parse_fraction(part) for part in value.split(",")]
        except (ValueError, ZeroDivisionError, OverflowError):
            raise UsageError(
                f"{option} value {value!r} is not a list of numbers; write e.g. {option} 0.485,0.456,0.406."
            ) from None
        if len(channels) not in (1, 3):
            raise UsageError(
                f"{option} value {value!r} has {len(channels)} numbers; give 3 (R, G, B) or 1 for all channels."
            )
        if option == "--std" and min(channels) <= 0:
            raise UsageError(f"--std values must be positive (got {value!r}).")
        out.append(tuple(channels * 3) if len(channels) == 1 else tuple(channels))
    return tuple(out)
