"""Top-5 accuracy and calibration errors: against torchmetrics, the paper's calib_err, and on a real run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_calibration_error

import ellrobust
from ellrobust.measures.paired import calibration_rows
from ellrobust.report import paired_tables, tables
from ellrobust.results import Metric, Outcomes
from ellrobust.stats.calibration import (
    MIN_CALIBRATION_IMAGES,
    Calibration,
    max_softmax,
    rms_calibration_error,
    top_k_hits,
)
from ellrobust.verdict.results_view import prepare

CLASSES = 10


def reference_calib_err(confidence: np.ndarray, correct: np.ndarray, beta: int = 100) -> float:
    """A transcription of ``calib_err(confidence, correct, p='2', beta=100)`` from
    hendrycks/natural-adv-examples, ``calibration_tools.py`` (Apache-2.0), the paper's RMS error."""
    idxs = np.argsort(confidence)
    confidence, correct = confidence[idxs], correct[idxs]
    bins = [[i * beta, (i + 1) * beta] for i in range(len(confidence) // beta)]
    bins[-1] = [bins[-1][0], len(confidence)]
    cerr = 0.0
    for i in range(len(bins) - 1):
        bin_confidence = confidence[bins[i][0] : bins[i][1]]
        bin_correct = correct[bins[i][0] : bins[i][1]]
        difference = np.abs(np.nanmean(bin_confidence) - np.nanmean(bin_correct))
        cerr += len(bin_confidence) / len(confidence) * np.square(difference)
    return float(np.sqrt(cerr))


def random_logits(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, CLASSES, generator=g) * (1 + seed), torch.randint(0, CLASSES, (n,), generator=g)


def probabilities(confidence: np.ndarray, correct: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """Probability vectors whose max is ``confidence``, on the label where ``correct``, else on another class:
    what torchmetrics needs to see the same (confidence, correct) pairs as the per-example table."""
    n = confidence.size
    predicted = np.where(correct, labels, (labels + 1) % CLASSES)
    probs = np.repeat(((1 - confidence) / (CLASSES - 1))[:, None], CLASSES, axis=1)
    probs[np.arange(n), predicted] = confidence
    return torch.from_numpy(probs).float()


@pytest.mark.parametrize("seed", range(4))
def test_top5_and_ece_equal_torchmetrics_on_random_logits(seed):
    logits, labels = random_logits(seed, 300 + 97 * seed)
    top5 = top_k_hits(logits, labels).float().mean().item()
    assert top5 == pytest.approx(
        multiclass_accuracy(logits, labels, CLASSES, top_k=5, average="micro").item(), abs=1e-6
    )
    correct = (logits.argmax(1) == labels).numpy()
    ece = Calibration(max_softmax(logits).numpy(), correct).ece()
    expected = multiclass_calibration_error(logits, labels, CLASSES, n_bins=15, norm="l1").item()
    assert ece == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("seed", "n"), [(0, 200), (1, 250), (2, 1000), (3, 1234)])
def test_rms_equals_the_papers_calib_err(seed, n):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.1, 1.0, n)
    correct = (rng.uniform(size=n) < confidence**2).astype(float)
    assert rms_calibration_error(confidence, correct) == pytest.approx(reference_calib_err(confidence, correct), 1e-12)
    assert rms_calibration_error(confidence, correct, bin_size=37) == pytest.approx(
        reference_calib_err(confidence, correct, beta=37), 1e-12
    )


def test_weights_are_the_resampled_images():
    rng = np.random.default_rng(5)
    confidence, correct = rng.uniform(0.1, 1.0, 400), rng.uniform(size=400) < 0.7
    rows = rng.integers(0, 400, 400)
    weighted = Calibration(confidence, correct)
    weights = np.bincount(rows, minlength=400)
    resampled = Calibration(confidence[rows], correct[rows])
    assert weighted.ece(weights) == pytest.approx(resampled.ece(), abs=1e-12)
    assert weighted.rms(weights) == pytest.approx(resampled.rms(), abs=1e-12)


def test_fewer_than_five_classes_make_every_image_a_top5_hit_and_nan_logits_none():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0], [float("nan"), 0.0, 0.0]])
    assert top_k_hits(logits, torch.tensor([0, 2, 1])).tolist() == [True, True, False]
    assert math.isnan(Calibration(max_softmax(logits).numpy(), [1, 1, 0]).ece())


def outcomes(model: str, confidence: np.ndarray, correct: np.ndarray) -> Outcomes:
    top5 = correct | (confidence < 0.5)
    return Outcomes(model=model, method="clean", columns={"correct": correct, "confidence": confidence, "top5": top5})


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, n)
    return confidence, rng.uniform(size=n) < confidence - 0.2  # overconfident by about 0.2


def values(rows, model: str, baseline: str = "") -> dict[str, float]:
    return {r.metric.value: r.value for r in rows if r.model == model and r.baseline == baseline}


def test_bootstrap_is_seeded_contains_the_estimate_and_claims_nothing_at_tiny_n():
    big = [outcomes("a", *synthetic(600, 0))]
    first, again = calibration_rows(7, ["a"], big), calibration_rows(7, ["a"], big)
    assert first == again
    assert values(calibration_rows(8, ["a"], big), "a") != values(first, "a")  # the seed matters
    found = values(first, "a")
    for metric in (Metric.CALIBRATION_ERROR, Metric.RMS_CALIBRATION_ERROR):
        assert found[metric.ci_low] < found[metric] < found[metric.ci_high]
    tiny = values(calibration_rows(7, ["a"], [outcomes("a", *synthetic(MIN_CALIBRATION_IMAGES - 1, 1))]), "a")
    assert not math.isnan(tiny[Metric.CALIBRATION_ERROR])
    assert math.isnan(tiny[Metric.RMS_CALIBRATION_ERROR])  # fewer than two bins of 100
    assert all(math.isnan(tiny[m]) for m in tiny if m.endswith(("_ci_low", "_ci_high")))


def test_identical_models_differ_by_zero():
    data = synthetic(300, 2)
    rows = calibration_rows(0, ["a", "b"], [outcomes("a", *data), outcomes("b", *data)])
    paired = values(rows, "a", "b")
    assert paired[Metric.TOP5_MCNEMAR_P] == 1.0
    for metric in (Metric.TOP5_ACCURACY, Metric.CALIBRATION_ERROR, Metric.RMS_CALIBRATION_ERROR):
        assert paired[metric.difference] == 0.0
    for metric in (Metric.CALIBRATION_ERROR, Metric.RMS_CALIBRATION_ERROR):
        assert paired[metric.difference.ci_low] == paired[metric.difference.ci_high] == 0.0
    assert paired[Metric.TOP5_ACCURACY.difference.ci_low] < 0 < paired[Metric.TOP5_ACCURACY.difference.ci_high]


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration") / "run"
    return ellrobust.evaluate(
        ["deit", "deit-elliptical"], n=MIN_CALIBRATION_IMAGES, attacks=[], out=out, batch_size=100, workers=0
    )


def test_a_real_runs_rows_follow_from_its_examples(shipped_run):
    table, examples = shipped_run.table, shipped_run.examples
    clean = examples[examples["method"] == "clean"]
    for model, rows in clean.groupby("model"):
        found = {
            m: float(
                table[(table["model"] == model) & table["baseline"].isna() & (table["metric"] == m)]["value"].iloc[0]
            )
            for m in ("top5_accuracy", "calibration_error", "rms_calibration_error", "calibration_error_ci_low")
        }
        confidence, correct = rows["confidence"].to_numpy(float), rows["correct"].to_numpy(bool)
        assert found["top5_accuracy"] == pytest.approx(rows["top5"].astype(int).mean())
        labels = np.zeros(len(rows), dtype=np.int64)  # the class is immaterial: only (confidence, correct) count
        preds = probabilities(confidence, correct, labels)
        expected = multiclass_calibration_error(preds, torch.from_numpy(labels), CLASSES, n_bins=15, norm="l1")
        assert found["calibration_error"] == pytest.approx(expected.item(), abs=1e-6)
        assert found["rms_calibration_error"] == pytest.approx(reference_calib_err(confidence, correct.astype(float)))
        assert math.isfinite(found["calibration_error_ci_low"])  # n = MIN_CALIBRATION_IMAGES: an interval is claimed
    paired = table[table["baseline"].notna()]
    assert {"top5_accuracy_difference", "calibration_error_difference", "top5_mcnemar_p"} <= set(paired["metric"])
    assert not (paired["metric"] == "top5_mcnemar_p_adjusted").any()  # outside Holm's family


def test_the_tables_show_top5_and_calibration(shipped_run):
    frame = prepare(shipped_run.table)
    assert "top-5 (%)" in tables.clean_table(frame).headers
    errors = paired_tables.calibration_table(frame)
    assert [row[:2] for row in errors.rows] == [("clean", "deit"), ("clean", "deit-elliptical")]
    assert all("(" in cell for row in errors.rows for cell in row[3:]) and not errors.caption  # intervals at n = 200
    assert "top-5 (%)" in errors.headers
    differences = paired_tables.calibration_difference_table(frame)
    assert [row[:3] for row in differences.rows] == [("deit", "deit-elliptical", "clean")]
    small = prepare(shipped_run.table.assign(n=MIN_CALIBRATION_IMAGES - 1))
    assert paired_tables.calibration_table(small).caption  # says why intervals are missing below the minimum
    assert paired_tables.calibration_table(small, corruptions=True) is None  # no corruption in this run
