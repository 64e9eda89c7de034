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
from minimal_suite import EPS_MAX, GRID, SUITE
from scipy.stats import binomtest
from typer.testing import CliRunner

from ellrobust.attacks import ATTACKS, make_request
from ellrobust.attacks.bisection import DEFAULT_RESOLUTION
from ellrobust.cli import app
from ellrobust.results import load_examples
from ellrobust.stats.inference import holm_adjust
from ellrobust.verdict.rules import claims as verdict_claims

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
        (["--attack", "fmn", "--eps-max", "16"], "--eps-max 16 is outside (0, 1]"),
        (["--attack", "bisect-fgsm", "--resolution", "fine"], "--resolution 'fine' is not a number"),
        (["--attack", "bisect-fgsm", "--eps-max", "1/255", "--resolution", "2/255"], "must be below --eps-max"),
    ],
)
def test_bad_input_is_one_line(tmp_path, extra, needle):
    result = _invoke(["eval", "-m", "deit", "-n", "4", *extra, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_search_options_from_the_command_line(tmp_path):
    """--eps-max and --resolution reach the minimal-norm methods' params (and the rows); others ignore them."""
    args = ["eval", "-m", "deit", "-n", "4", "--steps", "2", "--eps", "1/255", "--json", "--no-sanity"]
    extra = ["--attack", "fmn,bisect-fgsm,fgsm", "--eps-max", "8/255", "--resolution", "1/255/4"]
    result = _invoke([*args, *extra, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.stdout) if r["metric"] == "robust_accuracy"]
    params = {r["method"]: json.loads(r["params"]) for r in rows}
    assert params["fmn"]["eps_max"] == params["bisect-fgsm"]["eps_max"] == pytest.approx(8 / 255)
    assert params["bisect-fgsm"]["resolution"] == pytest.approx(1 / 1020) and "resolution" not in params["fmn"]
    assert "eps_max" not in params["fgsm"]


def test_a_norm_changed_to_l2_takes_the_l2_budgets():
    """``--attack apgd --norm L2`` without --eps runs at L2 budgets, not at the dataset's L∞ ones."""
    l2 = make_request("pgd-l2").default_eps
    assert l2 is not None and min(l2) >= 0.1
    assert make_request("apgd", {"norm": "L2"}).default_eps == l2
    assert make_request("fmn", {"norm": "L2"}).default_eps == l2
    assert make_request("apgd").default_eps is None  # L∞: the dataset's budgets


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


def _pair_rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return table[(table.metric == metric) & (table.model == "deit-elliptical") & (table.baseline == "deit")]


def test_paired_sign_test_matches_examples(table, examples):
    a, b = _stars(examples, "deit-elliptical"), _stars(examples, "deit")
    d = a.eps_star.to_numpy() - b.eps_star.to_numpy()
    k, n = int((d > 0).sum()), int((d != 0).sum())
    sign_p = _pair_rows(table, "eps_star_sign_p")
    assert len(sign_p) == 1 and sign_p.method.iloc[0] == "fmn"
    assert sign_p.value.iloc[0] == pytest.approx(binomtest(k, n, 0.5).pvalue if n else 1.0)
    adjusted = _pair_rows(table, "eps_star_sign_p_adjusted").value.iloc[0]
    assert adjusted >= sign_p.value.iloc[0]
    family = [*_pair_rows(table, "mcnemar_p").value, sign_p.value.iloc[0]]
    assert adjusted == pytest.approx(holm_adjust(family)[-1])  # one Holm family with the McNemar p's
    estimate = _pair_rows(table, "eps_star_difference").value.iloc[0]
    low = _pair_rows(table, "eps_star_difference_ci_low").value.iloc[0]
    high = _pair_rows(table, "eps_star_difference_ci_high").value.iloc[0]
    assert low <= estimate <= high
    assert len(_pair_rows(table, "eps_star_wilcoxon_p")) == 1


def _worst_case(examples: pd.DataFrame, model: str, m_grad: str) -> np.ndarray:
    """Each image's worst-case budget by hand: 0 if wrong clean, else the smallest of FMN's ε* and the smallest
    PGD budget that broke it; never broken: EPS_MAX (censored)."""
    mine = examples[(examples.model == model) & (examples.m_grad.fillna("") == m_grad)]
    clean = examples[(examples.model == model) & (examples.method == "clean")].set_index("index").sort_index()
    stars = _stars(mine, model)
    pgd = mine[mine.method == "pgd"]
    out = []
    for i in clean.index:
        if not clean.loc[i, "correct"]:
            out.append(0.0)
            continue
        found = [float(stars.loc[i, "eps_star"])] if not stars.loc[i, "censored"] else []
        broken = pgd[(pgd["index"] == i) & (pgd.correct == 0)]
        found += [float(broken.eps.min())] if len(broken) else []
        out.append(min(found) if found else EPS_MAX)
    return np.asarray(out)


def test_the_robustness_primary_is_the_sign_test_on_worst_case_budgets(run, table, examples):
    e, b = _worst_case(examples, "deit-elliptical", "detach"), _worst_case(examples, "deit", "")
    d = e - b
    k, n = int((d > 1e-12).sum()), int((np.abs(d) > 1e-12).sum())
    rows = table[(table.method == "primary") & (table.m_grad == "detach")]
    assert json.loads(rows.params.iloc[0])["claim"] == "adversarial robustness"
    assert "fmn, pgd" in json.loads(rows.params.iloc[0])["what"]
    p = rows[rows.metric == "primary_p"].value.iloc[0]
    assert p == pytest.approx(binomtest(k, n, 0.5).pvalue if n else 1.0)
    assert rows[rows.metric == "primary_n"].value.iloc[0] == len(d)  # every image; the sign test drops ties
    claims = verdict_claims(pd.read_csv(run / "results.csv"), {"deit-elliptical": True, "deit": False})
    assert [c.name for c in claims] == ["adversarial robustness"]
    stdout = " ".join((run.parent / "stdout.txt").read_text().split())
    assert "adversarial robustness, deit-elliptical vs deit: sign test on the worst-case L∞ budget" in stdout


def test_sanity_and_worst_case(table):
    sanity = table[table.metric == "sanity_minimal_norm_not_beaten"]
    assert set(sanity.model) == {"deit-elliptical", "deit"}
    for _, row in sanity.iterrows():
        detail = json.loads(row.params)["detail"]
        assert row.value == 1 or ("pgd broke" in detail and "fmn" in detail)
    worst = table[(table.method == "worst-case") & (table.metric == "robust_accuracy")]
    assert all(json.loads(p)["attacks"] == ["fmn", "pgd"] for p in worst.params)
    for model in ("deit-elliptical", "deit"):
        for eps in GRID:
            at = table[(table.model == model) & np.isclose(table.eps, eps) & (table.metric == "robust_accuracy")]
            assert at[at.method == "worst-case"].value.iloc[0] <= at[at.method != "worst-case"].value.min()
