"""The markdown summary of ``ellrobust check``: the verdict, the counts, the failures and every comparison.

:func:`ellrobust.verdict.regression.compare` returns the comparisons as data; this module writes them for a CI job
page (``>> "$GITHUB_STEP_SUMMARY"``), with the neutral table model and the markdown back end the
report uses, so every cell is escaped and numbers read as they do in the report.
"""

from __future__ import annotations

import math

from ellrobust.report.number_format import format_eps, format_int, format_level, format_pct, format_pp
from ellrobust.report.render_markdown import escape, table
from ellrobust.report.table_model import Align, Table
from ellrobust.verdict.regression import (
    RELATIVE,
    SIGMAS,
    CheckResult,
    Comparison,
    Direction,
    Kind,
    Rule,
    Status,
    describe_setup,
)


def _value(rule: Rule, value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    return f"{format_pct(value)} %" if rule.kind is Kind.BINOMIAL else f"{value:.4g}"


def _change(c: Comparison) -> str:
    if c.run is None or c.rule.kind in (Kind.SKIP, Kind.FLAG) or math.isnan(c.run) or math.isnan(c.baseline):
        return ""
    diff = c.run - c.baseline
    return f"{format_pp(diff)} pp" if c.rule.kind is Kind.BINOMIAL else f"{diff:+.4g}"


def _allowed(c: Comparison) -> str:
    if c.tolerance is None:
        return {Kind.FLAG: "must pass", Kind.SKIP: "not compared"}.get(c.rule.kind, "")
    amount = f"{format_pct(c.tolerance)} pp" if c.rule.kind is Kind.BINOMIAL else f"{c.tolerance:.3g}"
    return {Direction.HIGHER_IS_BETTER: f"drop ≤ {amount}", Direction.LOWER_IS_BETTER: f"rise ≤ {amount}"}.get(
        c.rule.direction, f"±{amount}"
    )


def _where(c: Comparison) -> str:
    """``pgd, ε 8/255, m_grad detach, vs deit``: what the number measures, beyond its model and metric."""
    f = c.fields
    parts = (
        str(f["method"]),
        f"ε {format_eps(f['eps'])}" if f["eps"] is not None else "",
        f"severity {format_int(f['severity'])}" if f["severity"] is not None else "",
        f"layer {format_int(f['layer'])}" if f["layer"] is not None else "",
        f"m_grad {f['m_grad']}" if f["m_grad"] else "",
        str(f["precision"]) if f["precision"] and f["precision"] != "fp32" else "",
        f"vs {f['baseline']}" if f["baseline"] else "",
    )
    return ", ".join(part for part in parts if part)


def comparison_name(c: Comparison) -> str:
    """``robust_accuracy of deit (pgd, ε 8/255, m_grad detach)``: which number a comparison is about."""
    where = _where(c)
    return f"{c.metric} of {c.fields['model']}" + (f" ({where})" if where else "")


def comparison_message(c: Comparison) -> str:
    """One line on a comparison, with the numbers of its summary row: ``regression: 50.0 % → 30.0 % (-20.0 pp;
    allowed drop ≤ 10.6 pp)``."""
    if c.status is Status.MISSING:
        return f"missing: the baseline has {_value(c.rule, c.baseline)}, the run lacks this row"
    if c.status is Status.SKIPPED:
        return "skipped: a derived statistic, compared by presence only"
    detail = "; ".join(part for part in (_change(c), _allowed(c)) if part)
    return f"{c.status.value}: {_value(c.rule, c.baseline)} → {_value(c.rule, c.run)}" + (
        f" ({detail})" if detail else ""
    )


def comparison_table(comparisons: tuple[Comparison, ...]) -> Table:
    """The comparisons as a neutral table: status, metric, model, where, baseline, run, change, allowed change."""
    rows = tuple(
        (
            c.status.value,
            c.metric,
            str(c.fields["model"]),
            _where(c),
            _value(c.rule, c.baseline),
            _value(c.rule, c.run),
            _change(c),
            _allowed(c),
        )
        for c in comparisons
    )
    headers = ("status", "metric", "model", "where", "baseline", "run", "change", "allowed change")
    return Table(headers, rows, (Align.LEFT,) * 4 + (Align.RIGHT,) * 4)


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
        else f"accuracies may drop by {SIGMAS:g} binomial standard errors at the run's n; other numbers by "
        f"{format_level(RELATIVE)} (at least {RELATIVE:g})"
    )
    parts = [
        f"## ellrobust check: {verdict}",
        f"Run {escape(run_name)} against baseline {escape(baseline_name)}: {escape(describe_setup(result.setup))}. "
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
