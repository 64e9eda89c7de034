"""The request's values from any caller: each parser takes a value and the label its caller knows it by.

A value may be command-line text (``"1/255,2/255"``), a TOML value or a Python value; each parser
checks its type and bounds and raises one-line :class:`~ellrobust.core.errors.UsageError` naming the
value by ``label`` (``--eps``, ``eps=``, ``eps``): :mod:`~ellrobust.request.spec` says which parser
reads which option.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ellrobust.attacks import validate_params
from ellrobust.attacks.patches import patch_counts
from ellrobust.core.errors import QUOTE_LIMIT, UsageError, quote
from ellrobust.core.parsing import parse_eps_list, parse_fraction, parse_int_range, parse_name_list, parse_workers
from ellrobust.core.precision import parse_precision

#: Upper bound of ``--batch-size``, ``--workers``, ``--img-size`` and other sizes: beyond it, a typo.
MAX_SIZE = 1 << 20

Parser = Callable[[object, str], object]


def shown(value: object) -> str:
    """A value as a message shows it: its ``repr``, cut to :data:`~ellrobust.core.errors.QUOTE_LIMIT`
    characters when a caller passed something huge (a 2 MB string stays one readable line)."""
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else quote(text, marks=False)


def whole(low: int, high: int, unit: str = "", hint: str = "pass a smaller value") -> Parser:
    """A whole number within [low, high]; ``unit`` words the messages (``number of images``)."""

    def parse(value: object, label: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{label} must be a whole number (got {shown(value)}).")
        if value < low:
            what = f"a positive {unit}" if low == 1 and unit else ("positive" if low == 1 else f"≥ {low}")
            raise UsageError(f"{label} must be {what} (got {value}).")
        if value > high:
            raise UsageError(
                f"{label} {value} is above the bound of {high:,}{' ' + unit.split()[-1] if unit else ''}; {hint}."
            )
        return value

    return parse


def number(low: float, high: float, unit: str) -> Parser:
    """A finite number within [low, high] ``unit``."""

    def parse(value: object, label: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{label} must be a number (got {shown(value)}).")
        if not low <= value <= high:
            raise UsageError(f"{label} must be ≥ {low:g} {unit} and at most {high:g} (got {value}).")
        return value

    return parse


def flag(value: object, label: str) -> bool:
    """True or False only: a suite's ``"false"`` is a string, not a switch."""
    if not isinstance(value, bool):
        raise UsageError(f"{label} must be true or false (got {shown(value)}).")
    return value


def text(value: object, label: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{label} must be a string (got {shown(value)}).")
    return value


def choice(*choices: str) -> Parser:
    def parse(value: object, label: str) -> str:
        if value not in choices:
            raise UsageError(f"{label} must be one of {', '.join(choices)} (got {shown(value)}).")
        return value

    return parse


def path(value: object, label: str) -> str:
    if not isinstance(value, str | os.PathLike):
        raise UsageError(f"{label} must be a path (got {shown(value)}).")
    return str(Path(value).expanduser())


def _joined(value: object) -> object:
    """A list as the command line's comma-separated text; anything else as it is."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ",".join(str(v) for v in value)
    return value


def names(value: object, label: str) -> tuple[str, ...]:
    """Names as a comma-separated string or a list of strings (an empty list: none)."""
    if isinstance(value, str):
        return parse_name_list(value, label)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    raise UsageError(f"{label} must be a name, names separated by commas, or a list of names (got {shown(value)}).")


#: ``SCHEME:WHERE``, a tracker and its destination (``tensorboard:runs/tb``, ``mlflow:file:./mlruns``).
_TARGET = re.compile(r"[A-Za-z][\w+.-]*:\S.*")
#: A comma opens a new target only before another ``SCHEME:``, so a destination may hold commas.
_NEXT_TARGET = re.compile(r",\s*(?=[A-Za-z][\w+.-]*:)")


def tracker_targets(value: object, label: str) -> tuple[str, ...]:
    """Trackers to log a run to, as ``SCHEME:WHERE`` strings: one, a comma-separated list, or a list of them.

    The scheme is checked against the trackers that exist where they live (``ellrobust.report.trackers``,
    a floor above this one), before the run starts; here only the form.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(v, str) for v in items):
        raise UsageError(f"{label} must be SCHEME:WHERE text or a list of it (got {shown(value)}).")
    targets = [t.strip() for item in items for t in _NEXT_TARGET.split(item) if t.strip()]
    wrong = next((t for t in targets if not _TARGET.fullmatch(t)), None)
    if wrong is not None:
        raise UsageError(
            f"{label} takes SCHEME:WHERE, e.g. tensorboard:runs/tb or mlflow:file:./mlruns (got {shown(wrong)})."
        )
    return tuple(dict.fromkeys(targets))


def eps_list(value: object, label: str) -> tuple[float, ...]:
    value = _joined(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(
            f"{label} must be budgets in [0, 1] pixel units, such as 8/255 or '8/255', or a list of them "
            f"(got {shown(value)})."
        )
    return parse_eps_list(str(value), option=label)


def patch_list(value: object, label: str) -> tuple[float, ...]:
    """Patch budgets: whole numbers of patches ≥ 1, as text (``1,2,4``), a number or a list."""
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
        if not all(item.isdigit() for item in items):
            raise UsageError(f"{label} must be whole numbers of patches ≥ 1, such as 1,2,4 (got {shown(value)}).")
        value = [int(item) for item in items]
    return patch_counts(value, label)


def severities(value: object, label: str) -> tuple[int, ...]:
    value = _joined(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UsageError(f"{label} must be severities such as 1-5, 3 or [1, 3] (got {shown(value)}).")
    return parse_int_range(str(value), label, 1, 5)


def workers(value: object, label: str) -> int | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UsageError(f"{label} must be 'auto' or a whole number ≥ 0 (got {shown(value)}).")
    count = parse_workers(str(value), label)
    if count is not None and count > MAX_SIZE:
        raise UsageError(f"{label} {count} is above the bound of {MAX_SIZE:,} processes; pass a smaller value.")
    return count


def precisions(value: object, label: str) -> tuple[str, ...]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = [str(v) for v in value]  # Precision members are their names
    chosen = tuple(dict.fromkeys(parse_precision(p, label) for p in names(value, label)))
    if not chosen:
        raise UsageError(f"{label} is empty; choose among fp32, tf32, bf16.")
    return chosen


def device(value: object, label: str) -> str:
    if not isinstance(value, str) and type(value).__name__ != "device":
        raise UsageError(f"{label} must be a torch device such as 'cpu' or 'cuda' (got {shown(value)}).")
    return str(value)


def budget(value: object, label: str) -> object:
    """One budget in pixel units, as text (``16/255``) or a number; the attacks check its bounds."""
    if not isinstance(value, str):
        return value
    try:
        return parse_fraction(value)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise UsageError(f"{label} {value.strip()!r} is not a number; write a budget like 16/255 or 0.0625.") from None


def attack_param(key: str, check: Parser) -> Parser:
    """An attack parameter: its type first, then the attacks' own bounds (:func:`validate_params`)."""

    def parse(value: object, label: str) -> object:
        value = check(value, label)
        validate_params({key: value}, lambda _: label)
        return value

    return parse


def whole_any(value: object, label: str) -> object:
    """A whole number whose bounds another check holds (an attack's :func:`validate_params`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{label} must be a whole number (got {shown(value)}).")
    return value


def real(value: object, label: str) -> object:
    """A number whose bounds another check holds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{label} must be a number (got {shown(value)}).")
    return value
