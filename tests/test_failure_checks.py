"""Attack-failure checks: each triggered by a model built for it, each silent on the shipped models."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ellrobust
from ellrobust.attacks.failure_checks import probe_failures
from ellrobust.data import load_dataset
from ellrobust.models import load_model
from ellrobust.results import Metric

CHECKS = ("deterministic_outputs", "logits_not_probabilities", "nonzero_gradients", "loss_moves")


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    data = load_dataset("digits")
    return torch.stack([data.dataset[i][0] for i in range(16)])


@pytest.fixture(scope="module")
def deit() -> nn.Module:
    return load_model("deit")


class Rounded(nn.Module):
    """``torch.round`` in front: every input gradient is exactly zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x))


class Misdirected(nn.Module):
    """Reads the image's centre without a gradient and its border only through a vanishing term: every
    input gradient is non-zero, yet it moves only pixels that do not matter, so the loss never moves."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        border = torch.ones_like(x[:1])
        border[..., 4:-4, 4:-4] = 0
        logits = self.inner((x * (1 - border)).detach())
        classes = torch.arange(logits.shape[1], dtype=logits.dtype)
        return logits + 1e-9 * (x * border).flatten(1).sum(1, keepdim=True) * classes


def test_a_dropout_model_left_in_train_mode_is_randomised(deit, digits):
    model = nn.Sequential(deit, nn.Dropout(0.5)).train()
    found = probe_failures(model, digits, eps=2 / 255)
    assert found.randomised > 1e-4 and found.flipped > 0


def test_a_softmax_head_gives_probabilities(deit, digits):
    found = probe_failures(nn.Sequential(deit, nn.Softmax(dim=1)), digits, eps=2 / 255)
    assert found.probabilities
    assert not probe_failures(deit, digits, eps=2 / 255).probabilities


def test_round_in_front_zeroes_every_gradient_and_freezes_the_loss(deit, digits):
    found = probe_failures(Rounded(deit), digits, eps=2 / 255)
    assert found.zero_gradient == len(digits) and found.flat_loss == len(digits)


def test_a_loss_that_never_moves_is_seen_where_gradients_are_not_zero(deit, digits):
    found = probe_failures(Misdirected(deit), digits, eps=2 / 255)
    assert found.zero_gradient == 0 and found.flat_loss == len(digits)


SHIPPED = [("deit", "detach"), ("deit-elliptical", "detach"), ("deit-elliptical", "full")]


@pytest.mark.parametrize("name, m_grad", SHIPPED)
def test_every_check_is_silent_on_the_shipped_models(name, m_grad, digits):
    model = load_model(name)
    model.set_m_grad(m_grad)
    found = probe_failures(model, digits, eps=2 / 255)
    assert (found.randomised, found.flipped, found.probabilities, found.zero_gradient, found.flat_loss) == (
        0.0,
        0,
        False,
        0,
        0,
    )


class NoisyLogits(nn.Module):
    """Noise on the logits in every mode: randomised even after ``eval()``, as a random defence is."""

    def __init__(self, inner: nn.Module, scale: float) -> None:
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        return logits + self.scale * torch.randn_like(logits)


def _failure_rows(results) -> dict[tuple[str, str], tuple[float, str]]:
    rows = results.table[results.table["method"] == "sanity"]
    wanted = rows[rows["metric"].isin([Metric.sanity(c).value for c in CHECKS])]
    return {(r.model, r.metric): (r.value, json.loads(r.params)["detail"]) for r in wanted.itertuples()}


@pytest.mark.slow
def test_a_run_writes_the_named_rows_and_advises_eot_pgd_for_a_random_model(tmp_path, deit):
    results = ellrobust.evaluate(
        {"deit": "deit", "noisy": NoisyLogits(deit, 3.0), "round": Rounded(deit)},
        attacks={"pgd": {"steps": 2}},
        eps="2/255",
        n=16,
        out=tmp_path / "run",
    )
    rows = _failure_rows(results)
    for check in CHECKS:
        assert rows[("deit", Metric.sanity(check).value)][0] == 1.0
    value, detail = rows[("noisy", Metric.sanity("deterministic_outputs"))]
    assert value == 0.0 and "eot-pgd" in detail
    assert rows[("round", Metric.sanity("nonzero_gradients"))][0] == 0.0
    assert rows[("round", Metric.sanity("loss_moves"))][0] == 0.0
