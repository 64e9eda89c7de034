"""ImageNet-O: AUROC and AUPR as scikit-learn computes them, DeLong's intervals and paired test, the run end to end.

The reference for the metrics is scikit-learn (``roc_auc_score``, ``average_precision_score``, what
Hendrycks et al.'s ``get_measures`` calls, OOD positive with the score −MSP); DeLong's structural
components are checked against their O(n²) definition and his paired standard error against a
seeded paired bootstrap. The run is a pair of tiny folders laid out as the release is (``val/<wnid>``
with every ImageNet-O class folder, ``imagenet-o/<wnid>``), 16 px, two tiny linear models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

import ellrobust
from ellrobust.cli import app
from ellrobust.core.errors import UsageError
from ellrobust.data import load_dataset
from ellrobust.data.imagenet_o import split_ood
from ellrobust.data.shifts import class_list
from ellrobust.report import tables
from ellrobust.report.writer import write_report
from ellrobust.results import Metric
from ellrobust.results.ood_scores import load_scores
from ellrobust.stats.inference import holm_adjust
from ellrobust.stats.ood_detection import (
    auroc,
    auroc_interval,
    average_precision,
    delong,
    paired_auroc,
    structural_components,
)
from ellrobust.verdict.results_view import prepare


def _sample(seed: int, n: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two correlated scores of the same images (B noisier than A) and OOD flags; ``ties`` rounds them coarsely."""
    rng = np.random.default_rng(seed)
    ood = rng.random(n) < 0.35
    signal = ood + rng.normal(0, 1.2, n)
    a, b = signal + rng.normal(0, 0.5, n), signal + rng.normal(0, 1.0, n)
    if ties:
        a, b = np.round(a * 2) / 2, np.round(b * 2) / 2
    return a, b, ood


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_aupr_equal_scikit_learn(seed, ties):
    a, _, ood = _sample(seed, ties=ties)
    assert ties == (len(np.unique(a)) < len(a) / 4)  # the tied case really is tied
    assert auroc(a, ood) == pytest.approx(roc_auc_score(ood, a), abs=1e-14)
    assert average_precision(a, ood) == pytest.approx(average_precision_score(ood, a), abs=1e-14)


def test_all_tied_scores_and_msp_saturation():
    """Every score tied (an MSP saturated at 1 for all images): AUROC ½ and AUPR the OOD share, as scikit-learn."""
    ood = np.array([1, 0, 0, 1, 0], dtype=bool)
    scores = -np.ones(5)
    assert auroc(scores, ood) == roc_auc_score(ood, scores) == 0.5
    assert average_precision(scores, ood) == pytest.approx(average_precision_score(ood, scores)) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="both"):
        auroc(scores, np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="not finite"):
        paired_auroc(scores, np.r_[scores[:4], np.nan], ood)


def _direct_components(scores: np.ndarray, ood: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's V₁₀ and V₀₁ from their definition: ψ(x, y) = 1 if x > y, ½ if x = y, over every pair (O(n²))."""
    x, y = scores[ood], scores[~ood]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
def test_delong_matches_the_direct_structural_components(ties):
    a, b, ood = _sample(3, n=200, ties=ties)
    v10, v01 = structural_components(np.vstack([a, b]), ood)
    for row, scores in enumerate((a, b)):
        d10, d01 = _direct_components(scores, ood)
        np.testing.assert_allclose(v10[row], d10, atol=1e-12)
        np.testing.assert_allclose(v01[row], d01, atol=1e-12)
    # the paired variance from the direct components, DeLong's formula written out
    (x_a, y_a), (x_b, y_b) = _direct_components(a, ood), _direct_components(b, ood)
    m, n = len(x_a), len(y_a)
    var = np.var(x_a - x_b, ddof=1) / m + np.var(y_a - y_b, ddof=1) / n
    cmp = paired_auroc(a, b, ood)
    assert cmp.difference == pytest.approx(roc_auc_score(ood, a) - roc_auc_score(ood, b), abs=1e-14)
    assert (cmp.ci_high - cmp.ci_low) / 2 == pytest.approx(1.959963984540054 * np.sqrt(var), rel=1e-10)
    assert delong(a, ood).aurocs[0] == pytest.approx(roc_auc_score(ood, a), abs=1e-14)
    low, high = auroc_interval(a, ood)
    assert low < roc_auc_score(ood, a) < high


def test_identical_models_differ_by_exactly_zero():
    a, _, ood = _sample(4)
    for other in (a, 3 * a + 1):  # the same scores, or the same order of the images: the same AUROC
        cmp = paired_auroc(a, other, ood)
        assert (cmp.difference, cmp.ci_low, cmp.ci_high, cmp.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_delong_standard_error_agrees_with_a_paired_bootstrap():
    """The paired SE of DeLong and of 2000 seeded paired (stratified) bootstrap resamples, within Monte-Carlo error."""
    a, b, ood = _sample(5, n=400)
    cmp = paired_auroc(a, b, ood)
    se_delong = (cmp.ci_high - cmp.ci_low) / (2 * 1.959963984540054)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(ood), np.flatnonzero(~ood)
    draws = 2000
    picks = np.hstack([rng.choice(pos, (draws, len(pos))), rng.choice(neg, (draws, len(neg)))])
    m = len(pos)

    def aucs(scores: np.ndarray) -> np.ndarray:
        ranks = rankdata(scores[picks], axis=1)
        return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * len(neg))

    se_boot = np.std(aucs(a) - aucs(b), ddof=1)
    monte_carlo = se_boot / np.sqrt(2 * (draws - 1))  # the standard error of a standard deviation
    assert abs(se_boot - se_delong) < 4 * monte_carlo + se_delong / m
    # and the two-sided p from the normal approximation is what the interval says
    assert (cmp.p_value < 0.05) == (cmp.ci_low > 0 or cmp.ci_high < 0)


# --- the run -----------------------------------------------------------------------------------------------


def _png(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _imagenet_o_root(root: Path, *, with_val: bool = True) -> Path:
    """``val/`` with a folder for each ImageNet-O class (and one other), images in a few; ``imagenet-o/`` with 8."""
    rng = np.random.default_rng(0)
    wnids = class_list("imagenet_o")
    if with_val:
        for wnid in (*wnids, "n00000001"):
            (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
        for wnid in (*wnids[:5], "n00000001"):  # the last is no ImageNet-O class: not in distribution here
            for k in range(3):
                _png(root / "val" / wnid / f"ILSVRC2012_val_{k}.png", rng)
    for wnid in wnids[20:24]:
        for k in range(2):
            _png(root / "imagenet-o" / wnid / f"ood_{k}.png", rng)
    return root


class Linear(nn.Module):
    """A seeded linear classifier of 16 px images over the val folder's 201 classes (``broken``: NaN weights)."""

    def __init__(self, seed: int, broken: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(3 * 16 * 16, 201)
        if broken:
            self.linear.bias.data[:] = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * self.linear(x.flatten(1))


def test_imagenet_o_pair_end_to_end(tmp_path):
    root = _imagenet_o_root(tmp_path / "data")

    def run():
        models = {"a": Linear(0), "b": Linear(1), "nan": Linear(2, broken=True)}
        options = {"data_root": str(root), "image_size": 16, "attacks": "none", "workers": 0}
        return ellrobust.evaluate(models, data="imagenet-o", out=tmp_path / "run", **options)

    result = run()
    table = result.table
    value = {
        (r.model, r.baseline if isinstance(r.baseline, str) else "", r.metric): r.value for r in table.itertuples()
    }
    # the in-distribution images are the 15 val images of ImageNet-O's classes: the usual clean rows
    assert set(table["n"]) == {15}
    assert len(result.examples) == 3 * 15
    scores = load_scores(result.run_dir)
    assert len(scores) == 3 * (15 + 8) and scores.groupby("model")["ood"].sum().tolist() == [8, 8, 8]
    # NaN logits (a model named "nan", read back as a name): the statistics are NaN, the run goes on, and
    # the NaN p is no member of Holm's family
    assert scores.loc[scores["model"] == "nan", "msp"].isna().all()
    assert np.isnan(value[("nan", "", Metric.OOD_AUROC)]) and np.isnan(value[("a", "nan", Metric.OOD_AUROC_DELONG_P)])
    assert np.isnan(value[("a", "nan", Metric.OOD_AUROC_DELONG_P_ADJUSTED)])
    per_model = {}
    for model, rows in scores[scores["model"] != "nan"].groupby("model"):
        ood, msp = rows["ood"].to_numpy().astype(bool), rows["msp"].to_numpy()
        assert ((msp > 1 / 200 - 1e-9) & (msp <= 1)).all()  # a softmax over ImageNet-O's 200 logits
        per_model[model] = (msp, ood)
        assert value[(model, "", Metric.OOD_AUROC)] == pytest.approx(roc_auc_score(ood, -msp), abs=1e-12)
        assert value[(model, "", Metric.OOD_AUPR)] == pytest.approx(average_precision_score(ood, -msp), abs=1e-12)
        assert value[(model, "", Metric.OOD_AUROC.ci_low)] <= value[(model, "", Metric.OOD_AUROC)]
        assert value[(model, "", Metric.OOD_AUROC)] <= value[(model, "", Metric.OOD_AUROC.ci_high)]
    cmp = paired_auroc(-per_model["a"][0], -per_model["b"][0], per_model["a"][1])
    assert value[("a", "b", Metric.OOD_AUROC.difference)] == pytest.approx(cmp.difference, abs=1e-12)
    assert value[("a", "b", Metric.OOD_AUROC.difference.ci_low)] == pytest.approx(cmp.ci_low, abs=1e-12)
    assert value[("a", "b", Metric.OOD_AUROC_DELONG_P)] == pytest.approx(cmp.p_value, abs=1e-12)
    # secondary families of their own: clean accuracy's McNemar and the OOD DeLong test are each alone
    assert value[("a", "b", Metric.MCNEMAR_P_ADJUSTED)] == pytest.approx(value[("a", "b", Metric.MCNEMAR_P)])
    assert value[("a", "b", Metric.OOD_AUROC_DELONG_P_ADJUSTED)] == pytest.approx(holm_adjust([cmp.p_value])[0])
    # the tables of the terminal and the report, and the report itself
    frame = prepare(table)
    per_model, paired = tables.ood_table(frame), tables.ood_difference_table(frame)
    assert [row[0] for row in per_model.rows] == ["a", "b", "nan"]
    assert [row[:2] for row in paired.rows] == [("a", "b"), ("a", "nan"), ("b", "nan")]
    report = write_report([result.run_dir], tmp_path / "report").read_text()
    assert "Out-of-distribution detection (ImageNet-O)" in report and "DeLong" in report
    # resumed: every unit is reused and the table is the same
    again = run()
    assert again.computed == 0 and again.table["value"].equals(table["value"])


def test_the_dataset_is_listed(runner):
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0 and "imagenet-o" in result.output


def test_missing_in_distribution_folder_is_one_line(runner, tmp_path):
    root = _imagenet_o_root(tmp_path / "data", with_val=False)
    args = ["eval", "-m", "deit-tiny", "--data", "imagenet-o", "--data-root", str(root), "--attack", "none"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no val/ folder" in lines[0]
    assert "Traceback" not in result.output


def test_a_validation_folder_without_imagenet_o_classes_is_refused(tmp_path):
    root = _imagenet_o_root(tmp_path / "data", with_val=False)
    _png(root / "val" / "n01440764" / "a.png", np.random.default_rng(0))
    with pytest.raises(UsageError, match="no class folder for 200 of ImageNet-O's 200 classes"):
        load_dataset("imagenet-o", root=root, image_size=16)


def test_a_selection_is_cut_into_both_sets_and_needs_both():
    class Flagged:
        ood = np.array([False, False, True, True])

    assert split_ood(Flagged(), [0, 2, 3]) == ([0], [2, 3])
    assert split_ood(object(), [0, 2]) == ([0, 2], [])  # no OOD images: the whole selection
    with pytest.raises(UsageError, match="hold no out-of-distribution image; raise --n"):
        split_ood(Flagged(), [0, 1])
