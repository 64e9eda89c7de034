"""Minimal budgets inside ``ellrobust eval``: FMN and bisection as a stage, its rows, tests, verdict and checks.

One small run of the shipped digits models (FMN at 10 steps with a small eps_max, so that some images
are censored, beside 3-step PGD) is shared by the tests; everything is checked against the per-example
table the run wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ellrobust.attacks import ATTACKS, make_request
from ellrobust.attacks.bisection import DEFAULT_RESOLUTION
from ellrobust.cli import app
from ellrobust.results import load_examples

EPS_MAX = 6 / 255
GRID = (1 / 255, 2 / 255, 4 / 255)
SUITE = f"""
description = "fmn beside pgd"

[[attack]]
name = "fmn"
steps = 10
eps_max = {EPS_MAX!r}

[[attack]]
name = "pgd"
steps = 3
"""
ARGS = ["eval", "-m", "deit-elliptical", "-m", "deit", "-n", "32", "--batch-size", "16", "--eps", "1/255,2/255,4/255"]


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("minimal")
    suite = folder / "suite.toml"
    suite.write_text(SUITE)
    out = folder / "run"
    result = _invoke([*ARGS, "--suite", str(suite), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (folder / "stdout.txt").write_text(result.output)
    return out


@pytest.fixture(scope="module")
def table(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "results.csv", keep_default_na=False, na_values={"eps": [""], "value": [""]})


@pytest.fixture(scope="module")
def examples(run: Path) -> pd.DataFrame:
    return load_examples(run)


def _stars(examples: pd.DataFrame, model: str) -> pd.DataFrame:
    """One line per image of ``model``'s FMN measurement (its grid lines repeat ε* and censoring)."""
    fmn = examples[(examples.method == "fmn") & (examples.model == model)]
    return fmn.drop_duplicates("index").set_index("index").sort_index()


def test_registry_lists_minimal_methods():
    assert ATTACKS.get("fmn").is_minimal
    assert ATTACKS.get("bisect-apgd").is_minimal and ATTACKS.get("bisect-pgd").norm == "Linf"
    assert not any(ATTACKS.get(name).is_minimal for name in ("pgd", "apgd", "square"))
    assert make_request("bisect-pgd").params["resolution"] == DEFAULT_RESOLUTION
    assert make_request("fmn", {"norm": "L2"}).params["eps_max"] == 1.0  # the norm's default eps_max
    result = _invoke(["attacks", "--json"])
    names = [a["name"] for a in json.loads(result.output)["attacks"]]
    assert {"fmn", "bisect-pgd", "bisect-apgd"} <= set(names) and "bisect-fmn" not in names


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--attack", "fmn", "--norm", "L1"], "--norm must be Linf or L2"),
        (["--attack", "bisect-nope"], "unknown attack 'bisect-nope'"),
        (["--attack", "bisect-fmn"], "unknown attack 'bisect-fmn'"),
        (["--attack", "fmn", "--eps", "32/255"], "above eps_max"),
    ],
)
def test_bad_input_is_one_line(tmp_path, extra, needle):
    result = _invoke(["eval", "-m", "deit", "-n", "4", *extra, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_rows_at_grid_match_examples(table, examples):
    for model in ("deit-elliptical", "deit"):
        stars = _stars(examples, model)
        rows = table[(table.method == "fmn") & (table.model == model) & (table.metric == "robust_accuracy")]
        assert sorted(rows.eps.round(12)) == sorted(round(e, 12) for e in GRID)
        for _, row in rows.iterrows():
            expected = ((stars.eps_star > row.eps * (1 + 1e-5) + 1e-6) | (stars.censored == 1)).mean()
            assert row.value == pytest.approx(expected)
            at = examples[(examples.method == "fmn") & (examples.model == model) & np.isclose(examples.eps, row.eps)]
            assert at.correct.mean() == pytest.approx(row.value)
        median = table[(table.method == "fmn") & (table.model == model) & (table.metric == "eps_star_median")]
        assert median.value.iloc[0] == pytest.approx(np.median(stars.eps_star))
        assert json.loads(median.params.iloc[0])["eps_max"] == pytest.approx(EPS_MAX)


def test_censoring_and_misclassified(table, examples):
    censored_any = 0
    for model in ("deit-elliptical", "deit"):
        stars = _stars(examples, model)
        n_censored = table[(table.method == "fmn") & (table.model == model) & (table.metric == "n_censored")]
        assert n_censored.value.iloc[0] == stars.censored.sum()
        assert np.allclose(stars.eps_star[stars.censored == 1], EPS_MAX)
        censored_any += int(stars.censored.sum())
        clean = examples[(examples.method == "clean") & (examples.model == model)].set_index("index").sort_index()
        wrong = clean.index[clean.correct == 0]
        assert (stars.loc[wrong, "eps_star"] == 0).all() and (stars.loc[wrong, "censored"] == 0).all()
        assert (stars.loc[clean.index[clean.correct == 1], "eps_star"] > 0).all()
        assert examples[examples.method != "fmn"].eps_star.isna().all()
    assert censored_any > 0  # eps_max is small enough that some images survive it


def test_resume_reuses_units(run, tmp_path):
    suite = tmp_path / "suite.toml"
    suite.write_text(SUITE)
    result = _invoke([*ARGS, "--suite", str(suite), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "0 units computed" in result.output
