"""``--labels true|predicted``: what a fixed-budget attack aims at, and what then counts as robust."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ellrobust
from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.engine.runner import EvalConfig

#: Few images, one budget, two attacks (so that a worst-case row exists).
FAST = {"n": 24, "eps": "8/255", "batch_size": 24, "attacks": {"fgsm": None, "pgd": {"steps": 2}}}
CONSTANT_CLASS = 3


class Constant(nn.Module):
    """Predicts class 3 whatever the image: most images misclassified, and no attack changes a prediction.

    The logits depend on the image with weight zero, so attacks get a (zero) gradient and run as usual.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.one_hot(torch.tensor(CONSTANT_CLASS), 10).float()
        return logits.expand(len(images), -1) + 0 * images.flatten(1).sum(1, keepdim=True)


class Flat(nn.Module):
    """A linear model on the pixels (seeded): small attacks change some of its predictions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 * 32 * 32, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images.flatten(1))


def _attack_rows(table, metric="robust_accuracy"):
    rows = table[(table.metric == metric) & table.eps.notna() & (table.method != "sanity-pgd-large-eps")]
    assert not rows.empty
    return rows


@pytest.fixture(scope="module")
def constant_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    return {
        labels: ellrobust.evaluate({"constant": Constant()}, out=root / labels, labels=labels, **FAST)
        for labels in ("true", "predicted")
    }


def test_predicted_labels_count_an_unchanged_wrong_prediction_as_robust(constant_runs):
    predicted, true = constant_runs["predicted"], constant_runs["true"]
    clean = float(true.table[true.table.metric == "clean_accuracy"].value.iloc[0])
    assert clean < 0.5  # class 3 only: most clean images are wrong
    robust = _attack_rows(predicted.table)
    assert set(robust.method) == {"fgsm", "pgd", "worst-case"}
    assert (robust.value == 1.0).all()  # every prediction survives, the wrong ones included
    assert (_attack_rows(predicted.table, "n_attacked").value == FAST["n"]).all()  # every image attacked
    clean_correct = true.examples[true.examples.method == "clean"].set_index("index").correct.astype(bool)
    attacked = predicted.examples[predicted.examples.method == "pgd"].set_index("index")
    misclassified = attacked[~clean_correct.loc[attacked.index]]
    assert len(misclassified) > 0 and misclassified.correct.astype(bool).all()  # wrong clean, yet robust
    # true labels: robust only where the clean image is right, and only those attacked
    robust_true = _attack_rows(true.table)
    assert robust_true.value.tolist() == pytest.approx([clean] * len(robust_true))
    assert (_attack_rows(true.table, "n_attacked").value == round(clean * FAST["n"])).all()


def test_the_label_mode_is_in_the_predicted_rows_params_and_absent_from_the_true_ones(constant_runs):
    for row in _attack_rows(constant_runs["predicted"].table).itertuples():
        assert json.loads(row.params)["labels"] == "predicted", row
    for row in _attack_rows(constant_runs["true"].table).itertuples():
        assert "labels" not in json.loads(row.params), row  # the default's rows keep their keys


def test_run_json_records_the_label_mode(constant_runs):
    for labels, results in constant_runs.items():
        assert json.loads((results.run_dir / "run.json").read_text())["config"]["labels"] == labels


def test_the_report_says_which_labels_were_attacked(constant_runs, tmp_path):
    from ellrobust.report.writer import write_report

    for labels, results in constant_runs.items():
        report = write_report([results.run_dir], tmp_path / labels).read_text()
        setup = next(line for line in report.splitlines() if line.startswith("- **labels**"))
        assert setup.startswith(f"- **labels**: {labels}")
    assert "robust accuracy can exceed clean accuracy" in setup  # predicted, the last one


def test_robust_le_clean_is_checked_under_true_labels_only(constant_runs):
    checks = {labels: set(r.table.metric) for labels, r in constant_runs.items()}
    assert "sanity_robust_le_clean" in checks["true"]
    assert "sanity_robust_le_clean" not in checks["predicted"]


def test_predicted_labels_judge_each_image_against_its_clean_prediction(tmp_path):
    settings = {**FAST, "eps": "0.5/255,1/255"}  # budgets that change some of its predictions, not all
    results = ellrobust.evaluate({"flat": Flat()}, out=tmp_path / "r", labels="predicted", sanity=False, **settings)
    ex, table = results.examples, results.table
    clean = ex[ex.method == "clean"].set_index("index").prediction
    survived = {}
    for eps in (0.5 / 255, 1 / 255):
        fgsm = ex[(ex.method == "fgsm") & (ex.eps - eps).abs().lt(1e-12)].set_index("index")
        unchanged = (fgsm.prediction == clean.loc[fgsm.index]).astype(int)
        assert fgsm.correct.astype(int).tolist() == unchanged.tolist()
        assert 0 < unchanged.sum() < len(unchanged)  # the attack changed some predictions, not all
        survived[eps] = int(unchanged.sum())
    # nested budgets: the larger one attacks only the images whose prediction survived the smaller one
    attacked = table[(table.metric == "n_attacked") & (table.method == "fgsm") & (table.eps - 1 / 255).abs().lt(1e-12)]
    assert attacked.value.tolist() == [survived[0.5 / 255]] and survived[1 / 255] <= survived[0.5 / 255]


def test_a_bad_label_mode_is_one_line(runner, tmp_path):
    result = runner.invoke(app, ["eval", "-m", "deit-nano", "--n", "4", "--labels", "guess", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: --labels must be one of true, predicted (got 'guess')."], result.output


def test_minimal_norm_methods_refuse_predicted_labels():
    from ellrobust.attacks import make_request

    with pytest.raises(UsageError, match="--labels predicted applies to fixed-budget attacks; fmn"):
        EvalConfig(models=("deit-nano",), attacks=(make_request("fmn"),), labels="predicted")
    assert EvalConfig(models=("deit-nano",), labels="Predicted").labels == "predicted"


def test_a_suite_sets_the_label_mode_and_a_bad_one_is_one_line(tmp_path):
    from ellrobust.request.suites import load_suite

    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('labels = "predicted"\n[[attack]]\nname = "fgsm"\n')
    bad.write_text('labels = "yes"\n[[attack]]\nname = "fgsm"\n')
    assert load_suite(good).labels == "predicted"
    with pytest.raises(UsageError, match=r"--labels must be one of true, predicted \(got 'yes'\)"):
        load_suite(bad)
