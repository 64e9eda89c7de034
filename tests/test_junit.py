"""``ellrobust check --junit FILE``: JUnit XML that junitparser reads, with the counts of check's own summary."""

from __future__ import annotations

import re

import pytest
from test_check import MODELS, check, make_run, rows

from ellrobust.cli import app

junitparser = pytest.importorskip("junitparser")


def summary_counts(output: str) -> dict[str, int]:
    """``6 baseline rows: 4 pass, 0 improved, 1 regression, 0 missing, 1 skipped; 0 new`` as numbers."""
    line = re.search(r"(\d+) baseline rows: (.*?); (\d+) new in the run", output)
    counts = {status: int(k) for k, status in re.findall(r"(\d+) (\w+)", line.group(2))}
    return {"rows": int(line.group(1)), "new": int(line.group(3)), **counts}


def suite_of(path):
    suites = list(junitparser.JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    return suites[0]


@pytest.fixture
def baseline(tmp_path, runner):
    path = tmp_path / "baseline.json"
    result = runner.invoke(
        app, ["check", str(make_run(tmp_path / "base-run", rows())), "--baseline", str(path), "--update"]
    )
    assert result.exit_code == 0, result.output
    return path


def test_a_run_failing_one_rule_gives_the_summarys_counts(tmp_path, runner, baseline):
    junit = tmp_path / "ci" / "check.xml"
    result = check(runner, make_run(tmp_path / "run", rows(pgd=0.3)), baseline, "--junit", str(junit))
    assert result.exit_code == 1
    counts = summary_counts(result.stdout)
    assert counts["regression"] == 1 and counts["skipped"] == 1
    suite = suite_of(junit)
    assert suite.tests == counts["rows"] == len(list(suite))
    assert suite.failures == counts["regression"] + counts["missing"]
    assert suite.skipped == counts["skipped"] and suite.errors == 0
    failed = [case for case in suite if case.result and isinstance(case.result[0], junitparser.Failure)]
    assert len(failed) == 1
    failure = failed[0].result[0]
    assert failure.type == "regression"
    regression = result.stdout.split("### Regressions")[1].split("<details>")[0]
    row = [cell.strip() for cell in regression.strip().splitlines()[-1].strip("|").split("|")]
    baseline_value, run_value, change, allowed = row[4:]  # the summary's cells, as its table writes them
    assert failure.message == f"regression: {baseline_value} → {run_value} ({change}; {allowed})"
    assert failure.message.startswith("regression: 50.0 % → 30.0 % (-20.0 pp; drop ≤ ")
    assert failed[0].name.endswith(f"robust_accuracy of {MODELS[1]} (pgd, ε 8/255, m_grad detach)")
    skipped = [case for case in suite if case.is_skipped]
    assert [case.classname for case in skipped] == ["ellrobust.check.mcnemar_p"]
    assert len({case.name for case in suite}) == suite.tests


def test_a_passing_run_and_a_missing_row(tmp_path, runner, baseline):
    junit = tmp_path / "check.xml"
    assert check(runner, make_run(tmp_path / "run", rows()), baseline, "--junit", str(junit)).exit_code == 0
    suite = suite_of(junit)
    assert suite.failures == 0 and suite.skipped == 1 and suite.tests == len(rows())
    lacking = [r for r in rows() if r["metric"] != "token_cosine"]
    result = check(runner, make_run(tmp_path / "short", lacking), baseline, "--junit", str(junit))
    assert result.exit_code == 1
    failure = next(case.result[0] for case in suite_of(junit) if case.result and not case.is_skipped)
    assert failure.type == "missing" and failure.message.startswith("missing: the baseline has 0.4")


def test_hostile_model_names_stay_well_formed_xml(tmp_path, runner):
    hostile = "a<b>&\"c'</testcase>"
    table = [{**r, "model": hostile if r["model"] == MODELS[1] else r["model"]} for r in rows()]
    path = tmp_path / "baseline.json"
    assert (
        runner.invoke(
            app, ["check", str(make_run(tmp_path / "b", table)), "--baseline", str(path), "--update"]
        ).exit_code
        == 0
    )
    junit = tmp_path / "check.xml"
    assert check(runner, make_run(tmp_path / "run", table), path, "--junit", str(junit)).exit_code == 0
    assert any(hostile in case.name for case in suite_of(junit))


def test_junit_with_update_is_a_usage_error(tmp_path, runner, baseline):
    result = check(runner, make_run(tmp_path / "run", rows()), baseline, "--update", "--junit", str(tmp_path / "x.xml"))
    assert result.exit_code == 2
    assert result.output.startswith("error: --junit") and "Traceback" not in result.output
    assert not (tmp_path / "x.xml").exists()
