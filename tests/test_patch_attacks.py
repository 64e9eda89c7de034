"""Patch attacks against a model that only reads one known patch, and the patch threat model's rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ellrobust.attacks import ATTACKS, make_request, perturb, perturbation_norm
from ellrobust.attacks.patch_fool import select_patches
from ellrobust.attacks.patches import patch_size, patches_touched
from ellrobust.core.errors import UsageError
from ellrobust.models import load_model
from ellrobust.models.vit import BlockOutput

SIDE, GRID, KNOWN = 4, 4, 5  # 16-pixel images, 16 patches of 4 pixels; the model reads patch 5 alone


class OnePatch(nn.Module):
    """Class 1 when patch :data:`KNOWN` is bright on average, else 0; every query attends to that patch."""

    depth, num_prefix_tokens = 2, 1

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.patch_size = (SIDE, SIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row, col = divmod(KNOWN, GRID)
        mean = x[..., row * SIDE : (row + 1) * SIDE, col * SIDE : (col + 1) * SIDE].mean(dim=(1, 2, 3))
        return torch.stack([0.5 - mean, mean - 0.5], dim=1) * 20

    def iter_blocks(self, x: torch.Tensor):
        B, N = len(x), 1 + GRID * GRID
        q = torch.ones(B, 1, N, 1)
        k = torch.zeros(B, 1, N, 1)
        k[:, :, 1 + KNOWN] = 5.0
        tokens = torch.zeros(B, N, 1)
        for _ in range(self.depth):
            yield BlockOutput(x=tokens, attn_out=tokens, attn_in=tokens, q=q, k=k, v=k, m=None)


@pytest.fixture(scope="module")
def known():
    """Images classified by their known patch: dim (class 0) or bright (class 1), the rest random."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, GRID * SIDE, GRID * SIDE, generator=g)
    y = torch.arange(16) % 2
    row, col = divmod(KNOWN, GRID)
    x[..., row * SIDE : (row + 1) * SIDE, col * SIDE : (col + 1) * SIDE] = (0.2 + 0.6 * y.float()).view(-1, 1, 1, 1)
    model = OnePatch()
    assert bool((model(x).argmax(1) == y).all())
    return model, x, y


def _broken(model, name, params, x, y) -> torch.Tensor:
    adv = perturb(model, make_request(name, params), x, y, eps=1.0, num_classes=2, seed=0)
    assert float(perturbation_norm(adv, x, "patch", SIDE).max()) <= 1.0
    assert adv.min() >= 0 and adv.max() <= 1
    return model(adv).argmax(1) != y


def test_attention_aware_selection_finds_the_known_patch(known):
    model, x, _ = known
    assert select_patches(model, x, 1, 4, "patch-fool").flatten().tolist() == [KNOWN] * len(x)


@pytest.mark.parametrize(
    "name, params",
    [("patch-fool", {"steps": 20}), ("attention-fool", {"steps": 20}), ("patch", {"positions": 128, "steps": 20})],
)
def test_every_patch_attack_breaks_every_image_with_one_patch(known, name, params):
    model, x, y = known
    assert bool(_broken(model, name, params, x, y).all())


def test_a_random_patch_position_breaks_far_fewer(known):
    model, x, y = known
    assert float(_broken(model, "patch", {"positions": 1, "steps": 10}, x, y).float().mean()) <= 0.5


def test_patch_fool_attacks_the_patches_it_reports(known):
    model, x, y = known
    adv = perturb(model, make_request("patch-fool", {"steps": 5}), x, y, eps=1.0, num_classes=2, seed=0)
    assert patches_touched(adv, x, SIDE) == [[KNOWN]] * len(x)


def test_the_patch_size_is_read_from_the_model_and_a_model_without_patches_is_refused():
    assert patch_size(load_model("deit")) == 4 and patch_size(OnePatch()) == SIDE
    with pytest.raises(UsageError, match="has no patches"):
        patch_size(nn.Linear(3, 2))
    patches_only = nn.Module()
    patches_only.patch_embed = OnePatch().patch_embed
    with pytest.raises(UsageError, match="exposes no tokens"):
        ATTACKS.get("attention-fool").factory(patches_only, 1.0, dict(make_request("attention-fool").params), 2, 0)


def test_a_patch_budget_is_a_whole_number_of_patches():
    with pytest.raises(UsageError, match="whole number of patches"):
        ATTACKS.get("patch").factory(load_model("deit"), 8 / 255, dict(make_request("patch").params), 10, 0)
