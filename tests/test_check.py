"""``ellrobust check``: regressions fail, sampling noise passes, other setups are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ellrobust.cli import app
from ellrobust.core.version import __version__
from ellrobust.results import SCHEMA_VERSION, load_results, save_table, to_frame
from ellrobust.verdict.regression import Kind, Status, binomial_tolerance, compare, read_baseline, rule_for

N = 200
MODELS = ("deit-nano", "deit-nano-elliptical")


def rows(**changes: float) -> list[dict]:
    """A small but varied results table; ``changes`` overrides values by a short row name."""
    base = {"dataset": "synthetic", "split": "test", "n": N, "seed": 0, "params": "{}"}
    named = {
        "clean": {"model": MODELS[1], "method": "clean", "metric": "clean_accuracy", "value": 0.8},
        "clean_base": {"model": MODELS[0], "method": "clean", "metric": "clean_accuracy", "value": 0.75},
        "pgd": {"model": MODELS[1], "method": "pgd", "params": '{"steps": 10}', "eps": 8 / 255, "m_grad": "detach",
                "metric": "robust_accuracy", "value": 0.5},
        "cosine": {"model": MODELS[1], "method": "collapse", "layer": 2, "precision": "fp32", "metric": "token_cosine",
                   "value": 0.4},
        "p": {"model": MODELS[1], "baseline": MODELS[0], "method": "clean", "metric": "mcnemar_p", "value": 0.3},
        "sanity": {"model": MODELS[1], "method": "sanity", "params": '{"detail": "ok"}', "m_grad": "detach",
                   "precision": "fp32", "metric": "sanity_robust_le_clean", "value": 1.0},
    }  # fmt: skip
    return [{**base, **row, **({"value": changes[name]} if name in changes else {})} for name, row in named.items()]


def make_run(path: Path, table: list[dict]) -> Path:
    """A run folder as ``ellrobust eval`` leaves it, as far as ``check`` reads it."""
    path.mkdir(parents=True, exist_ok=True)
    save_table(to_frame(table), path)
    (path / "run.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION}))
    return path


@pytest.fixture
def baseline(tmp_path: Path, runner) -> Path:
    run = make_run(tmp_path / "base-run", rows())
    path = tmp_path / "baseline.json"
    result = runner.invoke(app, ["check", str(run), "--baseline", str(path), "--update"])
    assert result.exit_code == 0, result.output
    return path


def check(runner, run: Path, baseline: Path, *extra: str):
    return runner.invoke(app, ["check", str(run), "--baseline", str(baseline), *extra])


def test_identical_results_pass(tmp_path, runner, baseline):
    result = check(runner, make_run(tmp_path / "run", rows()), baseline)
    assert result.exit_code == 0, result.output
    assert "no regression" in result.output
    assert result.output.startswith("## ellrobust check")


def test_drop_beyond_sampling_noise_fails_and_names_the_metric(tmp_path, runner, baseline):
    result = check(runner, make_run(tmp_path / "run", rows(pgd=0.3)), baseline)
    assert result.exit_code == 1
    regressions = result.output.split("### Regressions")[1].split("<details>")[0]
    assert "robust_accuracy" in regressions and "pgd" in regressions and "8/255" in regressions


def test_drop_within_sampling_noise_passes(tmp_path, runner, baseline):
    assert 0.04 < binomial_tolerance(0.5, N)  # 3 standard errors at n = 200 are about 0.106
    result = check(runner, make_run(tmp_path / "run", rows(pgd=0.46, clean=0.77)), baseline)
    assert result.exit_code == 0, result.output


def test_absolute_tolerance_overrides_the_noise_rule(tmp_path, runner, baseline):
    result = check(runner, make_run(tmp_path / "run", rows(pgd=0.46)), baseline, "--tolerance", "0.01")
    assert result.exit_code == 1
    assert "robust_accuracy" in result.output


def test_improvement_passes_and_is_reported(tmp_path, runner, baseline):
    result = check(runner, make_run(tmp_path / "run", rows(pgd=0.7)), baseline)
    assert result.exit_code == 0
    assert "### Improvements" in result.output


@pytest.mark.parametrize(
    ("changes", "fails"),
    [
        ({"cosine": 0.5}, True),  # more collapse beyond 0.05
        ({"cosine": 0.42}, False),
        ({"cosine": 0.2}, False),  # less collapse is never a regression
        ({"sanity": 0.0}, True),  # a sanity check that starts failing
        ({"p": 0.001}, False),  # p-values are not compared
    ],
)
def test_rules_for_other_metrics(tmp_path, runner, baseline, changes, fails):
    result = check(runner, make_run(tmp_path / "run", rows(**changes)), baseline)
    assert result.exit_code == (1 if fails else 0), result.output


def test_sanity_detail_text_does_not_break_matching(tmp_path, runner, baseline):
    table = rows()
    table[-1]["params"] = '{"detail": "a different wording, 0.123"}'
    assert check(runner, make_run(tmp_path / "run", table), baseline).exit_code == 0


def test_missing_row_is_a_regression(tmp_path, runner, baseline):
    table = [r for r in rows() if r["metric"] != "token_cosine"]
    result = check(runner, make_run(tmp_path / "run", table), baseline)
    assert result.exit_code == 1
    assert "missing" in result.output and "token_cosine" in result.output


@pytest.mark.parametrize("field", ["n", "model", "dataset"])
def test_mismatched_setup_is_a_usage_error(tmp_path, runner, baseline, field):
    table = rows()
    for r in table:
        r[field] = {"n": 100, "model": "deit-micro", "dataset": "digits"}[field]
    result = check(runner, make_run(tmp_path / "run", table), baseline)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error:")


def test_missing_baseline_file_is_a_usage_error(tmp_path, runner):
    result = check(runner, make_run(tmp_path / "run", rows()), tmp_path / "nope.json")
    assert result.exit_code == 2 and "--update" in result.output


def test_update_round_trip_is_sorted_readable_and_stable(tmp_path, runner, baseline):
    text = baseline.read_text()
    assert text.startswith('{\n  "command": ')  # the command that regenerates it heads the file
    document = json.loads(text)
    assert document["schema_version"] == SCHEMA_VERSION and document["ellrobust_version"] == __version__
    assert document["command"].endswith(f"ellrobust check {tmp_path / 'base-run'} --baseline {baseline} --update")
    records = document["records"]
    assert {"model", "method", "eps", "severity", "layer", "metric", "value", "n", "params", "m_grad"} <= records[
        0
    ].keys()
    assert [r["metric"] for r in records] == [r["metric"] for r in read_baseline(baseline)]
    # The same results in another row order give the same records.
    again = tmp_path / "again.json"
    run = make_run(tmp_path / "shuffled", rows()[::-1])
    assert runner.invoke(app, ["check", str(run), "--baseline", str(again), "--update"]).exit_code == 0
    assert json.loads(again.read_text())["records"] == records
    assert check(runner, run, again).exit_code == 0


def test_the_command_at_the_top_is_the_runs_own_then_the_update(tmp_path, runner):
    run = make_run(tmp_path / "run", rows())
    (run / "run.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "command": "ellrobust eval -m x"}))
    path = tmp_path / "baseline.json"
    assert check(runner, run, path, "--update").exit_code == 0
    expected = f"ellrobust eval -m x > /dev/null && ellrobust check {run} --baseline {path} --update"
    assert json.loads(path.read_text())["command"] == expected


def test_compare_returns_typed_comparisons(tmp_path, baseline):
    result = compare(load_results(make_run(tmp_path / "run", rows(pgd=0.3))), read_baseline(baseline))
    by_metric = {c.metric: c for c in result.comparisons}
    assert by_metric["robust_accuracy"].status is Status.REGRESSION
    assert by_metric["mcnemar_p"].status is Status.SKIPPED
    assert by_metric["clean_accuracy"].status is Status.PASS
    assert not result.passed and result.new_rows == 0


@pytest.mark.parametrize("header", [True, False])
def test_a_baseline_of_another_schema_is_refused_in_one_line(tmp_path, runner, baseline, header):
    """A baseline with an older schema in its header, or a bare list of records as 0.4 wrote them."""
    document = json.loads(baseline.read_text())
    old = tmp_path / "old.json"
    if header:
        old.write_text(json.dumps({**document, "ellrobust_version": "0.4.0", "schema_version": SCHEMA_VERSION - 1}))
        fix = "regenerate the baseline with the command at its top."
    else:
        old.write_text(json.dumps([{**r, "ellrobust_version": "0.4.0"} for r in document["records"]]))
        fix = f"then `ellrobust check RUN --baseline {old} --update`."
    result = check(runner, make_run(tmp_path / "run", rows()), old)
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"error: baseline '{old}' was written by ellrobust 0.4.0 (")
    assert f"ellrobust {__version__} reads schema {SCHEMA_VERSION} only: " in result.output
    assert result.output.rstrip().endswith(fix)


def test_rules():
    assert rule_for("robust_accuracy").kind is Kind.BINOMIAL
    assert rule_for("sanity_anything").kind is Kind.FLAG
    assert rule_for("difference_ci_low").kind is Kind.SKIP
    assert rule_for("some_future_metric").kind is Kind.SCALED
    assert binomial_tolerance(1.0, 64) > 0  # a perfect baseline still allows some noise


def test_real_run_round_trip(tmp_path, runner):
    """A run written by the engine (CSV round trip included) checks clean against its own baseline."""
    run = tmp_path / "run"
    args = [
        "eval",
        "-m",
        "deit-nano",
        "-m",
        "deit-nano-elliptical",
        "-d",
        "synthetic",
        "--attack",
        "fgsm",
        "--eps",
        "8/255",
        "--n",
        "16",
        "--out",
        str(run),
    ]
    assert runner.invoke(app, args).exit_code == 0
    path = tmp_path / "baseline.json"
    assert check(runner, run, path, "--update").exit_code == 0
    result = check(runner, run, path)
    assert result.exit_code == 0, result.output
    assert "0 regression" in result.output
