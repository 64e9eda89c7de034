"""The elliptical metric m, seen: its mean and spread per layer (and head), on clean and adversarial images.

``m`` is what elliptical attention scales its queries by; the rows must be exactly the statistics of
the ``m`` the model's own blocks compute, exist only for elliptical layers, and come for the clean
images and for every attack's adversarial images of a run with ``--collapse``.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from ellrobust.cli import app
from ellrobust.measures.collapse_probe import CollapseConfig, Feature, MetricKey, collapse_metrics
from ellrobust.models import load_model
from ellrobust.report import collapse_plots
from ellrobust.results import ELLIPTICAL_METRICS, Metric
from ellrobust.verdict.results_view import prepare


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("per_head", [False, True])
def test_m_rows_are_the_statistics_of_the_blocks_own_m(digits, per_head):
    model = load_model("deit-elliptical").eval()
    config = CollapseConfig(feature=Feature.ATTENTION, per_head=per_head)
    layers = config.resolve_layers(model.depth)
    found = collapse_metrics(model, digits, config, layers)
    with torch.no_grad():
        blocks = list(model.iter_blocks(digits))
    for layer, block in enumerate(blocks):
        keys = {k for k in found if k.layer == layer and k.metric in ELLIPTICAL_METRICS}
        if block.m is None:  # layer 0 keeps standard attention
            assert not keys
            continue
        m = block.m.float().squeeze(-2)  # (B, H, D)
        assert bool(((m > 0) & (m <= 1)).all())
        mean, spread = m.mean(-1), m.std(-1, correction=0)
        assert torch.allclose(found[MetricKey(Metric.ELLIPTICAL_M_MEAN, layer)], mean.mean(-1))
        assert torch.allclose(found[MetricKey(Metric.ELLIPTICAL_M_SPREAD, layer)], spread.mean(-1))
        if per_head:
            for head in range(m.shape[1]):
                assert torch.allclose(found[MetricKey(Metric.ELLIPTICAL_M_MEAN, layer, head)], mean[:, head])
    assert any(b.m is None for b in blocks) and any(b.m is not None for b in blocks)


def test_standard_attention_has_no_m(digits):
    model = load_model("deit").eval()
    config = CollapseConfig()
    found = collapse_metrics(model, digits, config, config.resolve_layers(model.depth))
    assert found and not [k for k in found if k.metric in ELLIPTICAL_METRICS]


def test_eval_reports_m_on_clean_and_adversarial_images(runner, tmp_path):
    out = tmp_path / "run"
    args = [
        "eval",
        "-m",
        "deit-elliptical",
        "-m",
        "deit",
        "-n",
        "16",
        "--attack",
        "fgsm",
        "--eps",
        "8/255",
        "--details",
    ]
    result = runner.invoke(app, [*args, "--collapse", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Elliptical metric m: mean over coordinates" in result.output
    df = pd.read_csv(out / "results.csv")
    rows = df[df.metric == Metric.ELLIPTICAL_M_MEAN.value]
    assert set(rows.model) == {"deit-elliptical"}
    assert set(rows.method) == {"collapse", "fgsm"}  # clean images, and the attack's adversarial images
    per_layer = rows[rows.method == "collapse"].dropna(subset=["layer"])
    assert sorted(per_layer.layer.astype(int)) == [1, 2, 3, 4, 5]  # the elliptical layers
    summary = rows[(rows.method == "collapse") & rows.layer.isna()]
    assert json.loads(summary.params.iloc[0])["layers"] == [3, 4, 5]
    assert ((rows.value > 0) & (rows.value <= 1)).all()
    report = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "figures" / "elliptical_m.png").is_file()
    assert "figures/elliptical_m.png" in (tmp_path / "report" / "report.md").read_text()
    figure = collapse_plots.elliptical_m_figure(prepare(df, "run"))
    assert len(figure.axes) == 2  # mean and spread, one column for the one attack
    (legend,) = figure.legends  # one legend below the panels, one entry per set of images
    assert sorted(t.get_text() for t in legend.get_texts()) == ["clean images", "ε 8/255"]
