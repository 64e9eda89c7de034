"""What the models said under attack, and the adversarial images themselves (``--save-adversarial``).

One small run of the shipped digits models (PGD and FGSM at two nested budgets) is shared by the
tests: the per-example table must record each image's predicted class and perturbation sizes, and
the saved files must reproduce exactly those predictions when the models are run on them again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ellrobust import load_model
from ellrobust.cli import app
from ellrobust.results import Outcomes, examples_frame, load_examples, save_examples
from ellrobust.results.adversarial_images import (
    ADVERSARIAL_DIR,
    adversarial_files,
    find_adversarial,
    load_adversarial,
)

EPS = (2 / 255, 8 / 255)
ARGS = [
    "eval", "-m", "deit-elliptical", "-m", "deit", "-n", "40", "--batch-size", "16",
    "--attack", "pgd,fgsm", "--steps", "3", "--eps", "2/255,8/255", "--no-sanity",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("adv") / "run"
    result = CliRunner().invoke(app, [*ARGS, "--save-adversarial", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def examples(run) -> pd.DataFrame:
    return load_examples(run)


def _measurement(examples: pd.DataFrame, model: str, method: str, eps: float | None = None) -> pd.DataFrame:
    rows = examples[(examples.model == model) & (examples.method == method)]
    if eps is not None:
        rows = rows[np.isclose(rows.eps, eps)]
    return rows.set_index("index")


def _predict(model_name: str, x: np.ndarray) -> np.ndarray:
    model = load_model(model_name).eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def test_every_measurement_records_predictions_and_attacks_record_their_sizes(examples):
    assert examples["prediction"].notna().all()
    attacked = examples[examples.eps.notna()]
    assert attacked[["linf", "l2"]].notna().all().all()
    assert (attacked.linf <= attacked.eps + 1e-6).all()  # L∞ attacks stay in their ball
    assert examples[examples.eps.isna()][["linf", "l2"]].isna().all().all()  # clean images have no perturbation
    for model in ("deit", "deit-elliptical"):
        clean = _measurement(examples, model, "clean")
        wrong = clean.index[clean.correct == 0]
        for eps in EPS:
            pgd = _measurement(examples, model, "pgd", eps)
            assert (pgd.loc[wrong, "prediction"] == clean.loc[wrong, "prediction"]).all()  # not attacked
            assert (pgd.loc[wrong, ["linf", "l2"]] == 0).all().all()
            broken = pgd.correct == 0
            assert (pgd.linf[broken & ~pgd.index.isin(wrong)] > 0).all()


def test_an_image_fooled_at_the_smaller_budget_keeps_that_image_at_the_larger(run, examples):
    small = _measurement(examples, "deit", "pgd", EPS[0])
    large = _measurement(examples, "deit", "pgd", EPS[1])
    clean = _measurement(examples, "deit", "clean")
    fooled = small.index[(small.correct == 0) & (clean.correct == 1)]
    assert len(fooled) > 0
    assert (
        (large.loc[fooled, ["prediction", "linf", "l2"]] == small.loc[fooled, ["prediction", "linf", "l2"]]).all().all()
    )
    files = [load_adversarial(find_adversarial(run, model="deit", method="pgd", eps=e)[0]) for e in EPS]
    positions = np.flatnonzero(np.isin(files[0].index, fooled))
    assert np.array_equal(files[1].x_adv[positions], files[0].x_adv[positions])


def test_saved_images_reproduce_the_recorded_predictions(run, examples):
    paths = adversarial_files(run)
    named = {
        u["adversarial_file"] for u in json.loads((run / "run.json").read_text())["units"] if "adversarial_file" in u
    }
    assert named == {str(p.relative_to(run)) for p in paths}  # run.json names every file
    assert len(paths) == 2 * 2 * 2  # pgd and fgsm × 2 budgets × 2 models
    for path in paths:
        saved = load_adversarial(path)
        rows = _measurement(examples, saved.model, saved.method, saved.eps)
        rows = rows[rows.m_grad.fillna("") == saved.m_grad].loc[saved.index]
        assert saved.x_adv.dtype == np.float32 and saved.x_adv.min() >= 0 and saved.x_adv.max() <= 1
        assert np.array_equal(_predict(saved.model, saved.x_adv), saved.prediction), path.name
        assert np.array_equal(saved.prediction, rows.prediction.to_numpy()), path.name
        assert np.array_equal(saved.prediction == saved.label, rows.correct.to_numpy().astype(bool)), path.name
        clean = _measurement(examples, saved.model, "clean").loc[saved.index]
        untouched = (clean.correct == 0).to_numpy()
        assert np.array_equal(saved.prediction[untouched], clean.prediction.to_numpy()[untouched])


def test_a_run_with_its_images_resumes_and_one_without_does_not_reuse_its_units(run, tmp_path):
    from typer.testing import CliRunner

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    again = CliRunner().invoke(app, [*ARGS, "--save-adversarial", "--out", str(copy)])
    assert again.exit_code == 0 and "(0 units computed" in again.output, again.output
    without = CliRunner().invoke(app, [*ARGS, "--out", str(copy)])  # other keys: the attacks run again
    assert without.exit_code == 0 and "(8 units computed, 2 reused)" in without.output, without.output


def test_a_full_disk_for_the_images_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    real = shutil.disk_usage

    def usage(path):
        total, used, free = real(path)
        return type(real(path))(total, used, 1024 if Path(path).name == ADVERSARIAL_DIR else free)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    out = tmp_path / "run"
    small = ["eval", "-m", "deit", "-n", "8", "--attack", "fgsm", "--eps", "2/255", "--no-sanity"]
    result = CliRunner().invoke(app, [*small, "--save-adversarial", "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "(--save-adversarial)" in lines[0] and "free" in lines[0], lines
    assert not list((out / ADVERSARIAL_DIR).glob("*")) and not list(out.rglob("*.tmp"))


def test_the_examples_table_keeps_predictions_and_sizes(tmp_path):
    outcomes = [
        Outcomes(model="a", method="clean", columns={"correct": [1, 0], "prediction": [3, 5]}),
        Outcomes(
            model="a",
            method="pgd",
            eps=2 / 255,
            columns={"correct": [0, 0], "prediction": [1, 5], "linf": [0.007, 0.0], "l2": [0.1, 0.0]},
        ),
        Outcomes(model="a", method="fog", severity=1, columns={"correct": [1, 1]}),  # no predictions recorded
    ]
    save_examples(examples_frame(outcomes, [10, 11]), tmp_path)
    back = load_examples(tmp_path)
    assert back.prediction.tolist()[:4] == [3, 5, 1, 5] and back.prediction.iloc[4:].isna().all()
    assert back.linf.tolist()[2:4] == [0.007, 0.0] and back.linf.iloc[[0, 1, 4, 5]].isna().all()
    with pytest.raises(ValueError, match="prediction has 1 values for 2 images"):
        Outcomes(model="a", method="clean", columns={"correct": [1, 0], "prediction": [3]})


def test_the_clean_images_are_saved_once_and_the_report_shows_a_gallery(run, examples, tmp_path):
    from typer.testing import CliRunner

    from ellrobust.results.adversarial_images import load_clean

    clean = load_clean(run)
    saved = load_adversarial(find_adversarial(run, model="deit", method="fgsm", eps=EPS[0])[0])
    assert np.array_equal(clean["index"], saved.index) and np.array_equal(clean["label"], saved.label)
    wrong = (_measurement(examples, "deit", "clean").loc[saved.index].correct == 0).to_numpy()
    assert np.array_equal(saved.x_adv[wrong], clean["x"][wrong])  # not attacked: the clean image
    assert np.abs(saved.x_adv - clean["x"]).reshape(len(wrong), -1).max(1).max() <= EPS[0] + 1e-6
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "figures" / "gallery.png").is_file()
    assert "figures/gallery.png" in (tmp_path / "report" / "report.md").read_text()
