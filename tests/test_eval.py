"""`ellrobust eval` end to end on tiny models: results table, pairing, m_grad, sanity, resume, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ellrobust.cli import app
from ellrobust.results import METRICS, load_results

TINY = ["--data", "synthetic", "-m", "deit-nano", "-m", "deit-nano-elliptical", "--n", "24", "--batch-size", "8"]
#: The shipped trained models on the embedded digits: attacks have correct images to work on.
SHIPPED = ["-m", "deit", "-m", "deit-elliptical", "--n", "24", "--batch-size", "12"]


def run_cli(runner, *args: str):
    result = runner.invoke(app, list(args))
    return result


def test_eval_writes_the_tidy_table_and_pairs(runner, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        runner,
        "eval",
        *SHIPPED,
        "--attack",
        "fgsm,pgd",
        "--eps",
        "2/255,8/255",
        "--steps",
        "3",
        "--m-grad",
        "both",
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    df = pd.DataFrame(rows)
    assert {"model", "dataset", "metric", "value", "checkpoint", "eps", "m_grad", "params", "n", "seed"} <= set(
        df.columns
    )
    clean = df[df.metric == "clean_accuracy"]
    assert set(clean.model) == {"deit", "deit-elliptical"}
    assert (clean.value > 0.9).all()
    robust = df[(df.metric == "robust_accuracy") & (df.method == "pgd")]
    # the baseline runs once (m_grad ''), the elliptical model once per mode
    assert sorted(robust[robust.model == "deit"].m_grad.unique()) == [""]
    assert sorted(robust[robust.model == "deit-elliptical"].m_grad.unique()) == ["detach", "full"]
    assert (robust[robust.eps > 0.03].value < 0.5).all()  # 8/255 breaks these small models
    assert robust.value.between(0, 1).all()
    for model, acc in clean.set_index("model").value.items():
        assert (df[(df.model == model) & (df.metric == "robust_accuracy")].value <= acc + 1e-12).all()
    worst = df[(df.method == "worst-case") & (df.metric == "robust_accuracy")]
    assert len(worst) == 2 * 3  # 2 eps × (baseline + two elliptical modes)
    paired = df[df.metric == "accuracy_difference"]
    assert {"clean", "fgsm", "pgd", "worst-case"} <= set(paired.method)
    assert (df[df.metric == "mcnemar_p"].value.between(0, 1)).all()
    sanity = df[df.method == "sanity"]
    assert {
        "sanity_perturbation_within_eps",
        "sanity_inside_unit_range",
        "sanity_robust_le_clean",
        "sanity_pgd_le_fgsm",
        "sanity_large_eps_reaches_chance",
    } <= set(sanity.metric)
    assert (sanity[sanity.metric == "sanity_perturbation_within_eps"].value == 1).all()
    assert (out / "results.csv").is_file() and (out / "examples.csv.gz").is_file() and (out / "run.json").is_file()
    examples = pd.read_csv(out / "examples.csv.gz")
    assert set(examples.correct.unique()) <= {0, 1}
    assert len(load_results(out)) == len(df)
    unknown = {m for m in df.metric if m not in METRICS and not m.startswith("sanity_")}
    assert not unknown, f"metric names outside the documented contract: {unknown}"


def test_default_out_is_named_after_the_request_and_resumes(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["eval", *TINY, "--attack", "fgsm", "--eps", "4/255"]
    first = run_cli(runner, *args)
    assert first.exit_code == 0, first.output
    runs = list((tmp_path / "reports" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("synthetic-")
    again = run_cli(runner, *args)
    assert "0 units computed" in again.stderr
    other = run_cli(runner, *args[:-1], "8/255")
    assert other.exit_code == 0 and len(list((tmp_path / "reports" / "runs").iterdir())) == 2


def test_same_seed_same_table_and_rerun_reuses_units(runner, tmp_path):
    args = ["eval", *TINY, "--attack", "pgd", "--eps", "4/255", "--steps", "2"]
    a = run_cli(runner, *args, "--out", str(tmp_path / "a"))
    b = run_cli(runner, *args, "--out", str(tmp_path / "b"))
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()
    again = run_cli(runner, *args, "--out", str(tmp_path / "a"))
    assert "0 units computed" in again.stderr
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-m", "deit-elliptcal"], "Did you mean 'deit-elliptical'"),
        (["-m", "deit", "--attack", "pgdd"], "Did you mean 'pgd'"),
        (["-m", "deit", "--attack", "pgd", "--eps", "8"], "outside [0, 1]"),
        (["-m", "deit", "--attack", "pgd", "--eps", "-1/255"], "outside [0, 1]"),
        (["-m", "deit", "--attack", "pgd", "--eps", "eight"], "not a number"),
        (["-m", "deit", "--attack", "pgd", "--eps", ""], "--eps is empty"),
        (["-m", "deit", "--attack", "pgd", "--steps", "0"], "--steps must be a positive integer"),
        (["-m", "deit", "--attack", "pgd", "--n", "0"], "--n must be a positive"),
        (["-m", "deit", "--data", "imagenet"], "unknown dataset"),
        (["-m", "deit", "--m-grad", "sometimes"], "--m-grad must be one of"),
        (["-m", "deit", "--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_bad_input_is_one_line_exit_2(runner, tmp_path, args, needle):
    result = run_cli(runner, "eval", *args, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_empty_n_is_a_usage_error(runner, tmp_path):
    result = run_cli(runner, "eval", "-m", "deit", "--n", "", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_clean_only_with_attack_none(runner, tmp_path):
    result = run_cli(runner, "eval", *TINY, "--attack", "none", "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    metrics = {r["metric"] for r in json.loads(result.stdout)}
    assert "clean_accuracy" in metrics and "robust_accuracy" not in metrics
