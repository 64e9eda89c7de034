"""ellrobust's Patch-Fool against the transcription of the official code (``benchmarks/patch_fool_official.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from ellrobust.attacks import make_request, perturb
from ellrobust.attacks.patch_fool import attention_loss, pcgrad, select_patches
from ellrobust.attacks.patches import patch_mask, patches_touched, token_model
from ellrobust.data import load_dataset
from ellrobust.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("patch_fool_official", ROOT / "benchmarks" / "patch_fool_official.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


official = _benchmark()


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits").dataset
    x = torch.stack([data[i][0] for i in range(6)])
    y = torch.tensor([int(data[i][1]) for i in range(6)])
    return x, y


@pytest.fixture(scope="module", params=["deit", "deit-elliptical"])
def model(request):
    return load_model(request.param)


def _normalised(x: torch.Tensor) -> torch.Tensor:
    mu, std = official._stats(x)
    return (x - mu) / std


def test_the_official_forward_is_the_models_own_on_normalised_input(model, digits):
    x, _ = digits
    with torch.no_grad():
        logits, atten = official.official_forward(model, _normalised(x))
        torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    assert len(atten) == model.depth and atten[0].shape[-1] == 1 + 64


@pytest.mark.parametrize("count", [1, 2, 4])
def test_official_and_ellrobust_select_the_same_patches(model, digits, count):
    x, _ = digits
    with torch.no_grad():
        _, atten = official.official_forward(model, _normalised(x))
    chosen = official.official_selection(atten, model.num_prefix_tokens, count, 4)
    assert chosen.tolist() == select_patches(model, x, count, 4, "patch-fool").tolist()


def test_the_attention_losses_and_their_gradients_agree(model, digits):
    x, _ = digits
    target = torch.tensor([0, 7, 20, 35, 50, 63])
    prefix = model.num_prefix_tokens
    x_official = x.clone().requires_grad_(True)
    _, atten = official.official_forward(model, _normalised(x_official))
    x_ours = x.clone().requires_grad_(True)
    _, blocks = token_model(model, "patch-fool").forward_blocks(x_ours)
    for layer in range(1, model.depth // 2):  # the official layers 1 .. depth // 2 - 1
        theirs = official.official_attention_loss(atten[layer], target, prefix)
        ours = attention_loss(blocks[layer], target + prefix).mean()  # the official loss is a batch mean
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        g_theirs = torch.autograd.grad(theirs, x_official, retain_graph=True)[0]
        g_ours = torch.autograd.grad(ours, x_ours, retain_graph=True)[0]
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-3, atol=1e-7)


def test_the_official_pcgrad_projects_only_at_unit_norm_and_ellrobusts_at_any_scale():
    g = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    a = torch.randn(8, 30, generator=torch.Generator().manual_seed(1))
    unit = g / g.norm(dim=1, keepdim=True)
    sim = torch.nn.functional.cosine_similarity(a, unit, dim=1)
    assert bool((sim < 0).any() and (sim >= 0).any())
    torch.testing.assert_close(official.official_pcgrad(a.clone(), unit, sim), pcgrad(a, unit))
    torch.testing.assert_close(pcgrad(a, 3 * unit), pcgrad(a, unit))
    scaled = official.official_pcgrad(a.clone(), 3 * unit, sim)
    assert not torch.allclose(scaled[sim < 0], pcgrad(a, unit)[sim < 0])
    torch.testing.assert_close(scaled[sim >= 0], a[sim >= 0])


def test_the_transcription_attacks_the_patches_it_selected_and_only_those(model, digits):
    x, y = digits
    settings = official.OfficialSettings(train_attack_iters=2)
    adv, chosen = official.official_patch_fool(model, x, y, 2, settings=settings)
    assert adv.min() >= 0 and adv.max() <= 1
    assert [sorted(t) for t in patches_touched(adv, x, 4)] == [sorted(c) for c in chosen.tolist()]


def test_one_step_without_attention_loss_moves_the_pixels_as_ellrobust_does(digits):
    """Same start, one Adam step on cross-entropy alone: the official 0.22 in normalised units is
    ellrobust's 0.05 in pixels, up to 0.22 · std_c − 0.05 (< 0.001)."""
    model = load_model("deit")
    x, y = digits
    settings = official.OfficialSettings(train_attack_iters=1, atten_loss_weight=0.0)
    theirs, chosen = official.official_patch_fool(model, x, y, 1, settings=settings, seed=0)
    torch.manual_seed(0)
    ours = perturb(
        model, make_request("patch-fool", {"steps": 1, "attention_weight": 0.0}), x, y, eps=1.0, num_classes=10, seed=0
    )
    mask = patch_mask(chosen, 8, 4).expand_as(x).bool()
    torch.manual_seed(0)
    start = torch.rand_like(x)
    with torch.no_grad():
        fooled_at_start = model(torch.where(mask, start, x)).argmax(1) != y  # ellrobust keeps that start
    kept = mask & ~fooled_at_start.view(-1, 1, 1, 1)
    assert int(kept.sum()) > 0
    assert float((ours - start)[kept].abs().median()) > 0.04  # the step moved the pixels
    close = ((ours - theirs)[kept].abs() < 2e-3).float().mean()
    assert float(close) > 0.95  # the rest: Adam's eps on vanishing gradients, at two gradient scales
