"""CI regression checks: compare a run's results with a stored baseline, metric by metric.

The baseline is a JSON list of the same flat records ``ellrobust eval --json`` prints, reduced to the
fields that identify and describe a number (:data:`BASELINE_FIELDS`), sorted and pretty-printed so a
change to it reads well in a code review.

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
  p-values, ``detectable_difference``, ``n_required``) and ``n_attacked`` are not compared: they
  follow from the numbers that are, and a p-value moves a lot with tiny changes. They must still be
  present.

``tolerance`` replaces the first two rules with one absolute tolerance for every compared number.
A baseline row the run lacks is a regression (the run measures less than before); rows only in
the run are counted as new. A baseline for other models, data or ``n`` is a usage error, not a
pass: its numbers would not say anything about this run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pandas as pd

from ellrobust.errors import UsageError
from ellrobust.files import atomic_write
from ellrobust.report.frame import format_eps
from ellrobust.report.markdown import Align, Table, escape, table
from ellrobust.results import KEY_FIELDS as ROW_KEY_FIELDS
from ellrobust.results import migrate_records, records
from ellrobust.results import row_key as results_row_key

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


class Kind(StrEnum):
    """How a metric is compared."""

    BINOMIAL = "binomial"  # an accuracy-like fraction: 3 binomial standard errors at n
    SCALED = "scaled"  # any other number: 5 % of its size, at least 0.05
    FLAG = "flag"  # a sanity check: pass must stay pass
    SKIP = "skip"  # derived from compared rows: presence only


class Direction(StrEnum):
    """Which way a metric gets worse."""

    HIGHER_IS_BETTER = "higher is better"
    LOWER_IS_BETTER = "lower is better"
    EITHER = "either way"


@dataclass(frozen=True)
class Rule:
    """The comparison rule of one metric."""

    kind: Kind
    direction: Direction = Direction.EITHER


_HIGHER, _LOWER = Direction.HIGHER_IS_BETTER, Direction.LOWER_IS_BETTER
RULES: dict[str, Rule] = {
    "clean_accuracy": Rule(Kind.BINOMIAL, _HIGHER),
    "robust_accuracy": Rule(Kind.BINOMIAL, _HIGHER),
    "corruption_accuracy": Rule(Kind.BINOMIAL, _HIGHER),
    "corruption_error": Rule(Kind.BINOMIAL, _LOWER),
    "ce": Rule(Kind.SCALED, _LOWER),
    "mce": Rule(Kind.SCALED, _LOWER),
    "relative_mce": Rule(Kind.SCALED, _LOWER),
    "token_cosine": Rule(Kind.SCALED, _LOWER),  # higher: tokens more alike, more collapsed
    "attention_entropy": Rule(Kind.SCALED, _HIGHER),  # entropy collapse is the failure mode
    "effective_rank": Rule(Kind.SCALED, _HIGHER),
    "accuracy_difference": Rule(Kind.SKIP),
    "difference_ci_low": Rule(Kind.SKIP),
    "difference_ci_high": Rule(Kind.SKIP),
    "mcnemar_p": Rule(Kind.SKIP),
    "mcnemar_p_adjusted": Rule(Kind.SKIP),
    "detectable_difference": Rule(Kind.SKIP),
    "n_required": Rule(Kind.SKIP),
    "n_attacked": Rule(Kind.SKIP),
}

#: Endings of statistics derived from compared numbers (intervals, paired differences): presence only.
DERIVED_SUFFIXES = ("_ci_low", "_ci_high", "_difference")


def rule_for(metric: str) -> Rule:
    """The rule of a metric; sanity flags by prefix, derived statistics by suffix, unknown metrics scaled and two-sided."""
    if metric.startswith("sanity_"):
        return Rule(Kind.FLAG, _HIGHER)
    if metric.endswith(DERIVED_SUFFIXES):
        return Rule(Kind.SKIP)
    return RULES.get(metric, Rule(Kind.SCALED))


class Status(StrEnum):
    """The outcome of one comparison; REGRESSION and MISSING fail the check."""

    PASS = "pass"
    IMPROVED = "improved"
    REGRESSION = "regression"
    MISSING = "missing"
    SKIPPED = "skipped"


Key = tuple[str, str, str, str, float | None, int | None, int | None, str, str, str]


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


def write_baseline(df: pd.DataFrame, path: Path) -> int:
    """Write a baseline from a run's table, one record per object, fields in a fixed order; returns the count."""
    rows = baseline_records(df)
    atomic_write(Path(path), json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    return len(rows)


def read_baseline(path: Path) -> list[dict]:
    """Read and validate a baseline file (a JSON list of records with at least the key fields and a value)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"no baseline at {str(path)!r}; write one from a run with `ellrobust check RUN --baseline {path} --update`."
        )
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise UsageError(f"baseline {str(path)!r} is not valid JSON ({exc}); rewrite it with --update.") from None
    required = {"model", "metric", "value", "n", "dataset"}
    if not isinstance(data, list) or not all(isinstance(r, dict) and required <= r.keys() for r in data):
        raise UsageError(
            f"baseline {str(path)!r} is not a list of result records with {', '.join(sorted(required))}; rewrite it with --update."
        )
    data = migrate_records(data)  # a baseline of an older version, in the current shape
    keys = [row_key(r) for r in data]
    if len(set(keys)) != len(keys):
        raise UsageError(f"baseline {str(path)!r} holds the same measurement twice; rewrite it with --update.")
    return data


# --- comparison ---------------------------------------------------------------------------------


def setup_of(rows: list[dict], fields: tuple[str, ...] = SETUP_FIELDS) -> dict:
    """The setup a list of records describes: each setup field's values, and the models."""
    setup = {f: sorted({_text(r.get(f)) for r in rows}) for f in fields}
    setup["models"] = sorted({_text(r.get("model")) for r in rows} - {""})
    return setup


def _describe(setup: dict) -> str:
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
            f"the baseline was recorded for {_describe(want)}, the run has {_describe(have)}; record a new baseline with --update."
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


# --- the markdown summary -----------------------------------------------------------------------


def _value(rule: Rule, value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    return f"{value * 100:.1f} %" if rule.kind is Kind.BINOMIAL else f"{value:.4g}"


def _change(c: Comparison) -> str:
    if c.run is None or c.rule.kind in (Kind.SKIP, Kind.FLAG) or math.isnan(c.run) or math.isnan(c.baseline):
        return ""
    diff = c.run - c.baseline
    return f"{diff * 100:+.1f} pp" if c.rule.kind is Kind.BINOMIAL else f"{diff:+.4g}"


def _allowed(c: Comparison) -> str:
    if c.tolerance is None:
        return {Kind.FLAG: "must pass", Kind.SKIP: "not compared"}.get(c.rule.kind, "")
    amount = f"{c.tolerance * 100:.1f} pp" if c.rule.kind is Kind.BINOMIAL else f"{c.tolerance:.3g}"
    return {Direction.HIGHER_IS_BETTER: f"drop ≤ {amount}", Direction.LOWER_IS_BETTER: f"rise ≤ {amount}"}.get(
        c.rule.direction, f"±{amount}"
    )


def comparison_table(comparisons: tuple[Comparison, ...]) -> Table:
    """The comparisons as a markdown table: what, baseline, run, change, allowed drop, status."""
    rows = []
    for c in comparisons:
        model, base_model, method, params, eps, severity, layer, m_grad, precision, metric = c.key
        where = ", ".join(
            part
            for part in (
                method,
                f"ε {format_eps(eps)}" if eps is not None else "",
                f"severity {severity}" if severity is not None else "",
                f"layer {layer}" if layer is not None else "",
                f"m_grad {m_grad}" if m_grad else "",
                precision if precision and precision != "fp32" else "",
                f"vs {base_model}" if base_model else "",
            )
            if part
        )
        rows.append(
            (
                c.status.value,
                metric,
                model,
                where,
                _value(c.rule, c.baseline),
                _value(c.rule, c.run),
                _change(c),
                _allowed(c),
            )
        )
    headers = ("status", "metric", "model", "where", "baseline", "run", "change", "allowed change")
    return Table(headers, tuple(rows), (Align.LEFT,) * 4 + (Align.RIGHT,) * 4)


def summary_markdown(result: CheckResult, run_name: str, baseline_name: str) -> str:
    """A markdown summary for a CI job page: verdict, counts, failures, improvements, all rows folded."""
    counts = {s: sum(c.status is s for c in result.comparisons) for s in Status}
    failures, improved = result.failures, tuple(c for c in result.comparisons if c.status is Status.IMPROVED)
    verdict = (
        "✅ no regression" if result.passed else f"❌ {len(failures)} regression{'s' if len(failures) != 1 else ''}"
    )
    rule = (
        f"absolute tolerance {result.tolerance:g} for every compared number"
        if result.tolerance is not None
        else "accuracies may drop by 3 binomial standard errors at the run's n; other numbers by 5 % (at least 0.05)"
    )
    parts = [
        f"## ellrobust check: {verdict}",
        f"Run {escape(run_name)} against baseline {escape(baseline_name)}: {escape(_describe(result.setup))}. "
        f"Rule: {rule}; sanity checks must keep passing; paired statistics are not compared.",
        f"{len(result.comparisons)} baseline rows: "
        + ", ".join(f"{counts[s]} {s.value}" for s in Status)
        + f"; {result.new_rows} new in the run.",
    ]
    if failures:
        parts += ["### Regressions", table(comparison_table(failures))]
    if improved:
        parts += [
            "### Improvements beyond the tolerance",
            "Consider recording them with `--update`.",
            table(comparison_table(improved)),
        ]
    parts += ["<details><summary>All comparisons</summary>", table(comparison_table(result.comparisons)), "</details>"]
    return "\n\n".join(parts) + "\n"
