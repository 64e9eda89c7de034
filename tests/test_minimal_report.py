"""The minimal budgets ε* in the terminal and the report: the ε* table, its section, the robustness curve.

One small run of the shipped digits models (FMN at 10 steps with a small eps_max, so that some images
are censored, beside 3-step PGD), with ``--report``; the table and the curve are checked against the
per-example table and the rows the run wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from minimal_suite import EPS_MAX, GRID, SUITE
from typer.testing import CliRunner

from ellrobust.cli import app
from ellrobust.report import curve_plots, tables
from ellrobust.report.legend import build_labels
from ellrobust.report.number_format import format_budget, format_budget_interval, format_p
from ellrobust.results import Metric, load_examples, load_results
from ellrobust.stats.minimal_budgets import robust_curve, within
from ellrobust.verdict.results_view import Lookup, prepare

ARGS = [
    "eval",
    "-m",
    "deit-elliptical",
    "-m",
    "deit",
    "-n",
    "16",
    "--batch-size",
    "16",
    "--eps",
    "1/255,2/255,4/255",
    "--details",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("minimal-report")
    suite = folder / "suite.toml"
    suite.write_text(SUITE)
    out = folder / "run"
    result = CliRunner().invoke(app, [*ARGS, "--suite", str(suite), "--out", str(out), "--report"])
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.fixture(scope="module")
def frame(run) -> pd.DataFrame:
    return prepare(load_results(run[0]))


@pytest.fixture(scope="module")
def table(frame):
    found = tables.eps_star_table(frame, build_labels(frame))
    assert found is not None
    return found


def _stars(run_dir: Path, model: str) -> pd.DataFrame:
    examples = load_examples(run_dir)
    fmn = examples[(examples.method == "fmn") & (examples.model == model)]
    return fmn.drop_duplicates("index").set_index("index").sort_index()


def test_table_medians_are_those_of_the_examples(run, table):
    (row,) = table.rows
    cells = dict(zip(table.headers, row, strict=True))
    assert (cells["A"], cells["B"], cells["method"]) == ("deit-elliptical", "deit", "fmn")
    for model, side in (("deit-elliptical", "A"), ("deit", "B")):
        stars = _stars(run[0], model)
        censored = int(stars["censored"].sum())
        bound = "≥ " if censored >= (len(stars) + 1) // 2 else ""
        expected = f"{bound}{format_budget(float(np.median(stars['eps_star'])), unit=False)} ({censored})"
        assert cells[f"median ε* {side} (censored)"] == expected


def test_table_statistics_are_the_rows(frame, table):
    cells = dict(zip(table.headers, table.rows[0], strict=True))
    lookup = Lookup(frame)
    (diff,) = frame[(frame.metric == Metric.EPS_STAR_DIFFERENCE.value) & frame.baseline.ne("")].to_dict("records")
    low, high = lookup(diff, Metric.EPS_STAR_DIFFERENCE.ci_low), lookup(diff, Metric.EPS_STAR_DIFFERENCE.ci_high)
    hl = format_budget(diff["value"], signed=True, unit=False)
    assert cells["HL A − B (95 % CI)"] == f"{hl} ({format_budget_interval(low, high)})"
    assert cells["sign p"] == format_p(lookup(diff, Metric.EPS_STAR_SIGN_P))
    assert cells["Holm p"] == format_p(lookup(diff, Metric.EPS_STAR_SIGN_P_ADJUSTED))
    assert cells["Wilcoxon p"] == format_p(lookup(diff, Metric.EPS_STAR_WILCOXON_P))
    assert str(cells["survives Holm"]) in ("no", "yes (A)", "yes (B)")


def test_eval_prints_the_table(run, table):
    output = run[1]
    assert "Minimal budgets ε*" in output
    assert "median ε* A" in output and table.rows[0][3].split(" (")[0] in output


def test_report_has_the_section_and_the_figure(run):
    report = (run[0] / "report.md").read_text()
    assert "## Minimal budgets ε\\*" in report
    assert "Hodges–Lehmann" in report and "censored" in report
    assert "figures/robustness_curve.png" in report
    assert (run[0] / "figures" / "robustness_curve.png").stat().st_size > 0


def test_curve_at_the_grid_is_the_fmn_rows(run, frame):
    """The figure's curves are read from ε*: at the run's grid they are the fmn robust_accuracy rows."""
    budgets = curve_plots.minimal_budgets(load_examples(run[0]).assign(run=""))
    assert {key[1] for key in budgets} == {"deit-elliptical", "deit"}
    rows = frame[(frame.metric == Metric.ROBUST_ACCURACY.value) & (frame.method == "fmn") & frame.baseline.eq("")]
    for (_, model, *_), (stars, censored, eps_max) in budgets.items():
        assert eps_max == pytest.approx(EPS_MAX)
        mine = rows[rows.model == model].sort_values("eps")
        curve = robust_curve(stars.to_numpy(), censored.to_numpy(), np.array(GRID), eps_max=eps_max)
        np.testing.assert_allclose(mine["eps"], GRID)
        np.testing.assert_allclose(curve, mine["value"])
    figure = curve_plots.robustness_curve_figure(frame, load_examples(run[0]).assign(run=""))
    assert figure is not None and len(figure.axes) == 2


def test_worst_case_curve_counts_an_image_broken_by_any_method_at_or_below_eps(run):
    """The dotted curve: an image is broken at ε once FMN's ε* or a PGD budget at or below ε broke it."""
    examples = load_examples(run[0]).assign(run="")
    worst = curve_plots.worst_case_budgets(examples, curve_plots.minimal_budgets(examples))
    assert {key[1] for key in worst} == {"deit-elliptical", "deit"}
    below_fmn = False
    for (_, model, _, _, norm), (stars, censored, eps_max, names) in worst.items():
        assert (names, norm, eps_max) == (("fmn", "pgd"), "Linf", pytest.approx(EPS_MAX))
        fmn = _stars(run[0], model)
        pgd = examples[(examples.method == "pgd") & (examples.model == model)]
        for eps in GRID:
            by_pgd = set(pgd.loc[(pgd.eps <= eps) & (pgd.correct == 0), "index"])
            by_fmn = set(fmn.index[~fmn.censored.astype(bool) & within(fmn.eps_star.to_numpy(), eps)])
            curve = robust_curve(stars.to_numpy(), censored.to_numpy(), np.array([eps]), eps_max=eps_max)[0]
            assert curve == pytest.approx(1 - len(by_pgd | by_fmn) / len(fmn))
            below_fmn |= len(by_pgd - by_fmn) > 0
    assert below_fmn  # the suite's weak FMN is beaten by PGD somewhere: the worst case lies below it there
