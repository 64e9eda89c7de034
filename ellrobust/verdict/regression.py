"""CI regression checks: compare a run's results with a stored baseline, metric by metric.

The baseline is a JSON object: the command that regenerates it, the ellrobust version and results
schema that wrote it, and ``records``, the same flat records ``ellrobust eval --json`` prints, reduced
to the fields that identify and describe a number (:data:`BASELINE_FIELDS`), sorted and pretty-printed
so a change to it reads well in a code review. A baseline of another schema is refused, never converted.

How each metric is compared (a *drop* is a change in the worse direction; changes in the better
direction never fail, but those beyond the tolerance are reported as improvements):

* accuracies and error rates (``clean_accuracy``, ``robust_accuracy``, ``corruption_accuracy``,
  ``corruption_error``): a run on ``n`` images estimates an accuracy ``p`` only up to sampling noise,
  so a drop fails when it exceeds three binomial standard errors at the run's ``n``,
  ``3·sqrt(p̃(1−p̃)/n)``, with the Agresti–Coull ``p̃ = (p·n + 2)/(n + 4)`` of the baseline value, so
  that a baseline of exactly 0 or 1 still allows a few images of noise.
* other numbers (``ce``, ``mce``, ``relative_mce``, ``token_cosine``, ``attention_entropy``,
  ``effective_rank``, and metrics this version does not know): 5 % of the baseline value, at least
  0.05 absolute, i.e. ``0.05·max(1, |baseline|)``. This fits ratios near 1 (CE), cosines in [0, 1]
  and ranks in the hundreds alike. Unknown metrics fail on a change in either direction.
* sanity checks (``sanity_*``): a check that passed in the baseline must pass in the run.
* derived statistics (paired differences and their intervals, every ``*_ci_low/high``, the McNemar
  p-values, ``detectable_difference``, ``n_required``, ``holm_family_size``) and ``n_attacked`` are not compared: they
  follow from the numbers that are, and a p-value moves a lot with tiny changes. They must still be
  present.

``tolerance`` replaces the first two rules with one absolute tolerance for every compared number.
A baseline row the run lacks is a regression (the run measures less than before); rows only in
the run are counted as new. A baseline for other models, data or ``n`` is a usage error, not a
pass: its numbers would not say anything about this run.

:func:`compare` returns data (a :class:`CheckResult` of typed :class:`Comparison` s); the markdown
summary a CI job prints is written from it by :mod:`ellrobust.report.check_summary`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd

from ellrobust.core.errors import UsageError, quote
from ellrobust.core.files import atomic_write
from ellrobust.core.readback import DamagedFileError, read_json
from ellrobust.core.version import __version__
from ellrobust.results import KEY_FIELDS as ROW_KEY_FIELDS
from ellrobust.results import SCHEMA_VERSION, check_schema, records
from ellrobust.results import row_key as results_row_key
from ellrobust.results.metrics import Direction, Kind, declared

#: The fields a baseline record keeps, in this order (the key fields, the setup, the value).
BASELINE_FIELDS = (
    "model", "baseline", "dataset", "split", "n", "seed", "method", "params",
    "eps", "severity", "layer", "m_grad", "precision", "metric", "value", "checkpoint",
)  # fmt: skip
#: Fields that must match between run and baseline for the comparison to mean anything.
SETUP_FIELDS = ("dataset", "split", "n", "seed")
#: Fields that identify a number within one setup.
KEY_FIELDS = (*ROW_KEY_FIELDS, "metric")

SIGMAS = 3.0
RELATIVE = 0.05


@dataclass(frozen=True)
class Rule:
    """The comparison rule of one metric."""

    kind: Kind
    direction: Direction = Direction.EITHER


#: Endings of statistics derived from compared numbers (intervals, paired differences): presence only.
DERIVED_SUFFIXES = ("_ci_low", "_ci_high", "_difference")


def rule_for(metric: str) -> Rule:
    """The rule of a metric: what its declaration says (:func:`ellrobust.results.declare_metric`); sanity
    flags by prefix; an undeclared name (an older or newer ellrobust's) by suffix, else scaled and two-sided."""
    if metric.startswith("sanity_"):
        return Rule(Kind.FLAG, Direction.HIGHER_IS_BETTER)
    definition = declared(metric)
    if definition is not None:
        return Rule(definition.compare, definition.better)
    if metric.endswith(DERIVED_SUFFIXES):
        return Rule(Kind.SKIP)
    return Rule(Kind.SCALED)


class Status(StrEnum):
    """The outcome of one comparison; REGRESSION and MISSING fail the check."""

    PASS = "pass"
    IMPROVED = "improved"
    REGRESSION = "regression"
    MISSING = "missing"
    SKIPPED = "skipped"


#: A row's identity: :func:`ellrobust.results.row_key` with the metric, in :data:`KEY_FIELDS` order.
Key = tuple[object, ...]


@dataclass(frozen=True)
class Comparison:
    """One baseline number against the run's.

    Attributes:
        key: The row's identity, in :data:`KEY_FIELDS` order.
        baseline: The baseline's value.
        run: The run's value; ``None`` when the run lacks the row.
        tolerance: How far it may move in the worse direction; ``None`` when not compared.
        rule: The rule that applied.
        status: The outcome.
    """

    key: Key
    baseline: float
    run: float | None
    tolerance: float | None
    rule: Rule
    status: Status

    @property
    def fields(self) -> dict[str, object]:
        """The key as field → value (model, baseline, method, ..., metric)."""
        return dict(zip(KEY_FIELDS, self.key, strict=True))

    @property
    def metric(self) -> str:
        return self.key[-1]

    @property
    def failed(self) -> bool:
        return self.status in (Status.REGRESSION, Status.MISSING)


@dataclass(frozen=True)
class CheckResult:
    """Every comparison, plus how many rows the run has that the baseline lacks.

    Attributes:
        comparisons: One per baseline row, in the baseline's (sorted) order.
        new_rows: Rows only in the run (not a failure; ``--update`` adds them).
        setup: The shared setup (dataset, split, n, seed, models) for the summary.
        tolerance: The absolute tolerance given by the user, if any.
    """

    comparisons: tuple[Comparison, ...]
    new_rows: int
    setup: dict
    tolerance: float | None

    @property
    def failures(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if c.failed)

    @property
    def passed(self) -> bool:
        return not self.failures


# --- records and keys ---------------------------------------------------------------------------


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value: object) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _integer(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def row_key(record: dict) -> Key:
    """The identity of a record (:func:`ellrobust.results.row_key` with its metric)."""
    return results_row_key(record, with_metric=True)


def _sort_key(key: Key) -> tuple:
    """Keys sort with ``None`` before any number, so the baseline's order never depends on the run."""
    return tuple((v is not None, v if v is not None else 0) if not isinstance(v, str) else (True, v) for v in key)


def baseline_records(df: pd.DataFrame) -> list[dict]:
    """A run's table as baseline records: :data:`BASELINE_FIELDS` only, sorted by key."""
    rows = [{f: r.get(f) for f in BASELINE_FIELDS} for r in records(df)]
    return sorted(rows, key=lambda r: _sort_key(row_key(r)))


def write_baseline(df: pd.DataFrame, path: Path, command: str) -> int:
    """Write a baseline from a run's table, one record per object, fields in a fixed order; returns the count.

    ``command`` regenerates the baseline; it heads the file so that whoever meets a baseline this
    version refuses knows how to write it again.
    """
    rows = baseline_records(df)
    document = {
        "command": command,
        "ellrobust_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "records": rows,
    }
    atomic_write(Path(path), json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return len(rows)


#: The fix for a baseline that cannot be read: write it again from a good run.
REWRITE = "rewrite it with `ellrobust check RUN --baseline FILE --update`"


def _number_or_null(value: object) -> bool:
    """Whether a baseline field holds what :func:`write_baseline` writes for a number (null for a missing one)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def read_baseline(path: Path) -> list[dict]:
    """Read and validate a baseline file (its records, each with at least the key fields and a value).

    Raises:
        UsageError: no such file, not JSON, written with another results schema, or records that
            are not result records.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"no baseline at {str(path)!r}; write one from a run with `ellrobust check RUN --baseline {path} --update`."
        )
    document = read_json(path, "baseline", REWRITE, kind=object)
    _check_baseline_schema(document, path)
    data = document["records"]
    required = {"model", "metric", "value", "n", "dataset"}
    if not all(isinstance(r, dict) and required <= r.keys() for r in data):
        raise DamagedFileError(
            f"baseline {quote(path)} is not a list of result records with {', '.join(sorted(required))}; {REWRITE}."
        )
    wrong = next((r for r in data if not _number_or_null(r["value"]) or not _number_or_null(r["n"])), None)
    if wrong is not None:
        field = "value" if not _number_or_null(wrong["value"]) else "n"
        raise DamagedFileError(
            f"baseline {quote(path)} gives {field} {quote(wrong[field], 60)} for {quote(wrong['metric'], 60)} "
            f"of {quote(wrong['model'], 60)}, not a number; {REWRITE}."
        )
    keys = [row_key(r) for r in data]
    if len(set(keys)) != len(keys):
        raise UsageError(f"baseline {str(path)!r} holds the same measurement twice; rewrite it with --update.")
    return data


def _check_baseline_schema(document: object, path: Path) -> None:
    """Refuse a baseline of another results schema, naming the version that wrote it.

    A baseline without a header (a bare list of records) records no schema; its records may still
    name the ellrobust that wrote them.
    """
    if isinstance(document, dict) and "records" in document:
        fix = "regenerate the baseline with the command at its top"
        check_schema(f"baseline {str(path)!r}", document.get("schema_version"), document.get("ellrobust_version"), fix)
        return
    first = document[0] if isinstance(document, list) and document and isinstance(document[0], dict) else {}
    fix = f"regenerate the baseline: run the evaluation again, then `ellrobust check RUN --baseline {path} --update`"
    check_schema(f"baseline {str(path)!r}", None, first.get("ellrobust_version"), fix)


# --- comparison ---------------------------------------------------------------------------------


def setup_of(rows: list[dict], fields: tuple[str, ...] = SETUP_FIELDS) -> dict:
    """The setup a list of records describes: each setup field's values, and the models."""
    setup = {f: sorted({_text(r.get(f)) for r in rows}) for f in fields}
    setup["models"] = sorted({_text(r.get("model")) for r in rows} - {""})
    return setup


def describe_setup(setup: dict) -> str:
    """``models a, b on digits (split test, n 40, seed 0)``: a setup in words, for messages and summaries."""
    details = ", ".join(f"{f} {'/'.join(setup[f])}" for f in SETUP_FIELDS if f in setup and f != "dataset")
    return f"models {', '.join(setup['models'])} on {'/'.join(setup['dataset'])} ({details})"


def binomial_tolerance(p: float, n: int) -> float:
    """Three standard errors of an accuracy near ``p`` measured on ``n`` images (Agresti–Coull-adjusted)."""
    adjusted = (p * n + 2) / (n + 4)
    return SIGMAS * math.sqrt(adjusted * (1 - adjusted) / n)


def tolerance_for(rule: Rule, baseline: float, n: int | None, absolute: float | None) -> float | None:
    """How far a metric may move in its worse direction; ``None`` for rules that do not compare numbers."""
    if rule.kind in (Kind.SKIP, Kind.FLAG):
        return None
    if absolute is not None:
        return absolute
    if rule.kind is Kind.BINOMIAL and n:
        return binomial_tolerance(min(max(baseline, 0.0), 1.0), n)
    return RELATIVE * max(1.0, abs(baseline))


def _status(rule: Rule, baseline: float, run: float | None, tolerance: float | None) -> Status:
    if run is None:
        return Status.MISSING
    if rule.kind is Kind.SKIP:
        return Status.SKIPPED
    if rule.kind is Kind.FLAG:
        return Status.REGRESSION if baseline >= 1 and not run >= 1 else Status.PASS
    if math.isnan(baseline) or math.isnan(run):
        return Status.PASS if math.isnan(baseline) and math.isnan(run) else Status.REGRESSION
    sign = {Direction.HIGHER_IS_BETTER: 1.0, Direction.LOWER_IS_BETTER: -1.0}.get(rule.direction)
    change = run - baseline
    if sign is None:
        return Status.REGRESSION if abs(change) > tolerance else Status.PASS
    if sign * change < -tolerance:
        return Status.REGRESSION
    return Status.IMPROVED if sign * change > tolerance else Status.PASS


def compare(run: pd.DataFrame, baseline: list[dict], tolerance: float | None = None) -> CheckResult:
    """Compare every baseline record with the run's table.

    Raises:
        UsageError: The baseline describes another setup (models, dataset, split, n or seed), or
            ``tolerance`` is negative.
    """
    if tolerance is not None and not tolerance >= 0:
        raise UsageError(f"--tolerance must be a non-negative number (got {tolerance}).")
    run_rows = records(run)
    fields = tuple(f for f in SETUP_FIELDS if any(f in r for r in baseline))  # split and seed are optional
    have, want = setup_of(run_rows, fields), setup_of(baseline, fields)
    if have != want:
        raise UsageError(
            f"the baseline was recorded for {describe_setup(want)}, the run has {describe_setup(have)}; "
            "record a new baseline with --update."
        )
    by_key = {row_key(r): r for r in run_rows}
    comparisons = []
    for record in sorted(baseline, key=lambda r: _sort_key(row_key(r))):
        key = row_key(record)
        rule = rule_for(key[-1])
        base = _number(record["value"])
        base = math.nan if base is None else base
        found = by_key.get(key)
        value = None if found is None else (_number(found["value"]) if found["value"] is not None else math.nan)
        tol = tolerance_for(rule, base, _integer(found["n"]) if found else None, tolerance)
        comparisons.append(Comparison(key, base, value, tol, rule, _status(rule, base, value, tol)))
    new_rows = len(set(by_key) - {row_key(r) for r in baseline})
    return CheckResult(tuple(comparisons), new_rows, have, tolerance)
