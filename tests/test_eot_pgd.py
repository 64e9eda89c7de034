"""EOT-PGD: registered with its number of samples as a parameter, and stronger than PGD on a random model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ellrobust.attacks import ATTACKS, make_request, perturb
from ellrobust.data import load_dataset
from ellrobust.models import load_model


class NoisyInput(nn.Module):
    """Gaussian noise on the input in every mode: a randomised model whose each pass is one sample."""

    def __init__(self, inner: nn.Module, sigma: float) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + self.sigma * torch.randn_like(x))


def test_eot_pgd_takes_its_samples_as_torchattacks_eot_iter():
    request = make_request("eot-pgd", {"samples": 3, "steps": 4})
    attack = ATTACKS.get("eot-pgd").factory(nn.Linear(1, 1), 2 / 255, dict(request.params), 10, 0)
    assert (attack.attack.eot_iter, attack.attack.steps, attack.attack.alpha) == (3, 4, 0.25 * 2 / 255)


@pytest.mark.slow
def test_eot_pgd_is_stronger_than_pgd_with_the_same_steps_on_a_randomised_model():
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(24)])
    y = torch.tensor([data.dataset[i][1] for i in range(24)])
    model = NoisyInput(load_model("deit"), sigma=0.1)

    def expected_accuracy(adv: torch.Tensor) -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return sum(float((model(adv).argmax(1) == y).float().mean()) for _ in range(20)) / 20

    accuracy = {}
    for name, params in (("pgd", {"steps": 5}), ("eot-pgd", {"steps": 5, "samples": 8})):
        torch.manual_seed(0)
        adv = perturb(model, make_request(name, params), x, y, eps=2 / 255, num_classes=10, seed=0)
        accuracy[name] = expected_accuracy(adv)
    assert accuracy["eot-pgd"] < accuracy["pgd"] < expected_accuracy(x)
