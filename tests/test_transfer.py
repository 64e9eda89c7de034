"""``--transfer``: every model's adversarial images judged by the other models of the run.

One run of the shipped digits models with ``--transfer --save-adversarial`` is shared: its transfer
rows must exist in both directions, agree with the per-example table, and be reproduced by running the
target on the source's saved images; the worst case must count the transferred images; the sanity
check must fail when a transferred attack beats the white-box one.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ellrobust import load_model
from ellrobust.attacks.sanity_checks import sanity_rows
from ellrobust.cli import app
from ellrobust.results import Metric, Row, load_examples, load_results
from ellrobust.results.adversarial_images import find_adversarial, load_adversarial

MODELS = ("deit-elliptical", "deit")
EPS = (2 / 255, 8 / 255)
ARGS = [
    "eval", "-m", "deit-elliptical", "-m", "deit", "-n", "40", "--batch-size", "16", "--details",
    "--attack", "pgd,fgsm", "--steps", "3", "--eps", "2/255,8/255", "--transfer",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("transfer") / "run"
    result = CliRunner().invoke(app, [*ARGS, "--save-adversarial", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Transfer: accuracy (%) of each target" in result.output
    return out


def _transferred(table: pd.DataFrame) -> pd.DataFrame:
    rows = table[table.metric == Metric.TRANSFER_ACCURACY.value].copy()
    rows["source"] = [json.loads(p)["source"] for p in rows.params]
    return rows


def test_transfer_rows_exist_in_both_directions_for_every_attack_and_budget(run):
    rows = _transferred(load_results(run))
    found = {(r.model, r.source, r.method, round(r.eps * 255)) for r in rows.itertuples()}
    expected = {(t, s, m, e) for s in MODELS for t in MODELS if t != s for m in ("pgd", "fgsm") for e in (2, 8)}
    assert found == expected
    assert rows.m_grad.isna().all() or (rows.m_grad.fillna("") == "").all()  # the target takes no gradient
    elliptical_source = rows[rows.source == "deit-elliptical"]
    assert all(json.loads(p)["source_m_grad"] == "detach" for p in elliptical_source.params)
    assert {"transfer_accuracy_ci_low", "transfer_accuracy_ci_high"} <= set(load_results(run).metric)


def test_transfer_rows_are_the_examples_and_the_source_images_reproduce_them(run):
    table, examples = load_results(run), load_examples(run)
    for r in _transferred(table).itertuples():
        mine = examples[(examples.model == r.model) & (examples.params == r.params) & np.isclose(examples.eps, r.eps)]
        assert len(mine) == 40 and mine.correct.mean() == pytest.approx(r.value)
        source_mode = json.loads(r.params).get("source_m_grad", "")
        (path,) = find_adversarial(run, model=r.source, method=r.method, eps=r.eps, m_grad=source_mode)
        saved = load_adversarial(path)
        model = load_model(r.model).eval()
        with torch.no_grad():
            said = model(torch.from_numpy(saved.x_adv)).argmax(1).numpy()
        mine = mine.set_index("index").loc[saved.index]
        assert np.array_equal(said, mine.prediction.to_numpy()), (r.model, r.source, r.method, r.eps)
        assert np.array_equal(said == saved.label, mine.correct.to_numpy().astype(bool))


def test_the_worst_case_counts_the_transferred_images(run):
    table, examples = load_results(run), load_examples(run)
    for model, mode in (("deit-elliptical", "detach"), ("deit", "")):
        for eps in EPS:
            at = examples[(examples.model == model) & np.isclose(examples.eps, eps)]
            measured = at[(at.m_grad == mode) | at.params.str.contains('"source"')]
            assert measured.params.nunique() == 4  # pgd, fgsm, and both transferred from the other model
            survives_all = measured.groupby("index").correct.min()
            worst = table[(table.model == model) & (table.method == "worst-case") & np.isclose(table.eps, eps)]
            worst = worst[(worst.metric == "robust_accuracy") & (worst.m_grad.fillna("") == mode)]
            assert json.loads(worst.params.iloc[0])["attacks"] == ["fgsm", "fgsm transferred", "pgd", "pgd transferred"]
            assert worst.value.iloc[0] == pytest.approx(survives_all.mean())


def test_the_sanity_check_passes_here_and_fails_when_a_transfer_beats_the_white_box(run):
    table = load_results(run)
    checks = table[table.metric == Metric.sanity("transfer_not_stronger").value]
    assert set(checks.model) == set(MODELS) and (checks.value == 1).all()
    params = json.dumps({"source": "b", "steps": 3})
    rows = [
        Row("a", Metric.CLEAN_ACCURACY, 1.0, "clean"),
        Row("a", Metric.ROBUST_ACCURACY, 0.8, "pgd", json.dumps({"steps": 3}), 8 / 255, precision="fp32"),
        Row("a", Metric.TRANSFER_ACCURACY, 0.5, "pgd", params, 8 / 255, precision="fp32"),
    ]
    ctx = SimpleNamespace(indices=list(range(40)), data=SimpleNamespace(num_classes=10))
    (flag,) = [r for r in sanity_rows(ctx, rows, []) if r.metric is Metric.sanity("transfer_not_stronger")]
    assert flag.value == 0.0 and "pgd from b 0.500 < white-box 0.800" in flag.params


def test_the_report_has_the_transfer_matrix(run, tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Transfer between the models" in text and "| source / target | deit-elliptical | deit |" in text


def test_transfer_needs_two_models(runner):
    result = runner.invoke(app, ["eval", "-m", "deit", "-n", "8", "--attack", "fgsm", "--transfer"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--transfer" in lines[0] and "add a second --model" in lines[0], lines


def test_what_is_measured_beside_an_attack_leaves_its_numbers_alone(run, tmp_path):
    """--transfer, --save-adversarial and --collapse read the attack's images; its random starts are the same."""
    from typer.testing import CliRunner

    plain = tmp_path / "plain"
    result = CliRunner().invoke(app, [*[a for a in ARGS if a != "--transfer"], "--collapse", "--out", str(plain)])
    assert result.exit_code == 0, result.output

    def white_box(folder: Path) -> pd.Series:
        table = load_results(folder)
        rows = table[(table.metric == "robust_accuracy") & table.method.isin(["pgd", "fgsm"])]
        return rows.set_index(["model", "method", "eps", "m_grad"]).value.sort_index()

    pd.testing.assert_series_equal(white_box(run), white_box(plain))


def test_each_model_on_the_others_images_is_a_paired_comparison_in_holms_family(run):
    table, examples = load_results(run), load_examples(run)
    crossed = table.params.str.contains('"transfer": "crossed"')
    paired = table[(table.metric == "accuracy_difference") & crossed]
    found = {(m, round(e * 255)) for m, e in zip(paired.method, paired.eps, strict=True)}
    assert found == {(m, e) for m in ("pgd", "fgsm") for e in (2, 8)}
    given = examples.params.map(json.loads)
    examples = examples.assign(source=given.map(lambda p: p.get("source", "")))
    for r in paired.itertuples():
        at = examples[(examples.method == r.method) & np.isclose(examples.eps, r.eps)]
        on_b = at[(at.model == "deit-elliptical") & (at.source == "deit")]
        on_a = at[(at.model == "deit") & (at.source == "deit-elliptical")]
        assert len(on_a) == len(on_b) == 40
        assert r.value == pytest.approx(on_b.correct.mean() - on_a.correct.mean())
    family = table[(table.metric == "mcnemar_p_adjusted") & (table.model == "deit-elliptical")]
    raw = table[(table.metric == "mcnemar_p") & (table.model == "deit-elliptical")]
    assert len(family) == len(raw) and len(family) > len(paired)  # adjusted together with the white-box tests
