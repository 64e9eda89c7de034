"""Minimal-norm answers (FMN, bisection) against closed forms, and on the shipped digits ViT.

A linear classifier ``f(x) = W x + b`` has an exact untargeted minimal norm: the distance to the
nearest class boundary, ε* = min_{j≠y} (f_y − f_j) / ‖w_y − w_j‖_q with q the dual norm (L1 for L∞,
L2 for L2). That is the answer in the [0, 1] box only when the unconstrained minimiser stays inside
it, so the points sit in the middle of the box, their minimal perturbations are small, and
:func:`linear_problem` checks the minimisers are inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from ellrobust.attacks import MinimalResult, bisect, fmn, registry_attack
from ellrobust.attacks.minimal_answers import conclude
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import fp32_predictions
from ellrobust.data import load_dataset
from ellrobust.models import load_model

CLASSES = 10
SHAPE = (3, 8, 8)
#: Closed-form distances are float64 from a float32 model: logits round at ~1e-7, and a point that
#: float32 calls adversarial can sit this far inside the exact boundary.
FLOAT_SLACK = 1e-6
#: FMN's ε* may exceed the exact minimum by this much, relatively (it converges to ~1e-4 here).
FMN_RTOL = 0.01


@dataclass(frozen=True)
class LinearProblem:
    model: nn.Module
    weight: torch.Tensor  # float64 (K, D)
    bias: torch.Tensor  # float64 (K,)
    x: torch.Tensor
    y: torch.Tensor
    dist: dict[str, torch.Tensor]  # norm -> (N, K) distance to each class's boundary, inf at the label

    def exact(self, norm: str) -> torch.Tensor:
        return self.dist[norm].min(1).values


def _distances(weight, bias, x, y):
    f = x.flatten(1).double() @ weight.T + bias
    diff = weight[y].unsqueeze(1) - weight.unsqueeze(0)  # (N, K, D): w_y − w_j
    out = {}
    for norm, q in (("Linf", 1), ("L2", 2)):
        d = (f.gather(1, y[:, None]) - f) / diff.norm(p=q, dim=2)
        d[torch.arange(len(x)), y] = float("inf")
        out[norm] = d
    return out


def linear_problem(unambiguous: bool) -> LinearProblem:
    """A fixed linear 10-class model on 3×8×8 images near 0.5, with labels it predicts.

    ``unambiguous`` keeps the points whose second-nearest class boundary is ≥ 20 % farther than the
    nearest in both norms: FMN is a local method (it follows the most likely other class), and where
    two boundaries are nearly as close it may settle on the farther one.
    """
    torch.manual_seed(0)
    linear = nn.Linear(SHAPE[0] * SHAPE[1] * SHAPE[2], CLASSES)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = 0.5 + 0.1 * (torch.rand(64, *SHAPE) - 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
    dist = _distances(weight, bias, x, y)
    if unambiguous:
        ratio = {n: d.sort(1).values for n, d in dist.items()}
        keep = torch.stack([(r[:, 1] / r[:, 0]) > 1.2 for r in ratio.values()]).all(0)
        x, y = x[keep][:12], y[keep][:12]
        dist = {n: d[keep][:12] for n, d in dist.items()}
    # the unconstrained minimisers stay inside the box, so the closed form is the box's answer
    for norm, d in dist.items():
        j = d.argmin(1)
        direction = weight[j] - weight[y]
        step = direction.sign() if norm == "Linf" else direction / direction.norm(dim=1, keepdim=True)
        minimiser = x.flatten(1).double() + d.min(1).values[:, None] * step
        assert float(minimiser.min()) > 0 and float(minimiser.max()) < 1
    return LinearProblem(model, weight, bias, x, y, dist)


@pytest.fixture(scope="module")
def clear() -> LinearProblem:
    problem = linear_problem(unambiguous=True)
    assert len(problem.x) == 12
    return problem


@pytest.fixture(scope="module")
def ambiguous() -> LinearProblem:
    return linear_problem(unambiguous=False)


def exact_attack(problem: LinearProblem, norm: str):
    """The optimal fixed-budget attack on the linear model: the best of the per-class optimal steps."""

    def attack(model, images, labels, eps):
        x = images.flatten(1).double()
        diff = problem.weight.unsqueeze(0) - problem.weight[labels].unsqueeze(1)  # (n, K, D): w_j − w_y
        step = diff.sign() if norm == "Linf" else diff / diff.norm(dim=2, keepdim=True).clamp(min=1e-12)
        logits = x @ problem.weight.T + problem.bias
        gain = logits - logits.gather(1, labels[:, None]) + eps * (diff * step).sum(2)  # f_j − f_y after the step
        gain[torch.arange(len(x)), labels] = float("-inf")
        best = step[torch.arange(len(x)), gain.argmax(1)]
        return (x + eps * best).clamp(0, 1).float().view_as(images)

    return attack


def check_result(result: MinimalResult, model, x, y) -> None:
    """What every result promises: fp32 verdicts it reproduces, norms it measured, clean where unbroken."""
    assert result.eps_star.dtype == torch.float64 and result.x_adv.dtype == torch.float32
    assert float(result.x_adv.min()) >= 0 and float(result.x_adv.max()) <= 1
    assert torch.equal(fp32_predictions(model, result.x_adv), result.adv_pred)
    broken = ~result.censored & (result.eps_star > 0)
    assert bool((result.adv_pred[broken] != y[broken]).all())
    delta = (result.x_adv.double() - x.double()).flatten(1)
    measured = delta.abs().amax(1) if result.norm == "Linf" else delta.norm(dim=1)
    assert torch.equal(measured[~result.censored], result.eps_star[~result.censored])
    assert torch.equal(result.x_adv[result.censored], x[result.censored])
    assert bool((result.eps_star[result.censored] == result.eps_max).all())


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fmn_finds_the_closed_form_minimum(clear, norm):
    result = fmn(clear.model, clear.x, clear.y, norm=norm, steps=100, eps_max=1.0)
    check_result(result, clear.model, clear.x, clear.y)
    exact = clear.exact(norm)
    assert not bool(result.censored.any())
    assert bool((result.eps_star >= exact - FLOAT_SLACK).all()), "an adversarial example below the true minimum"
    assert float((result.eps_star / exact - 1).max()) <= FMN_RTOL
    assert torch.equal(result.adv_pred, clear.dist[norm].argmin(1))


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_fmn_lands_on_the_boundary_of_the_class_it_finds(ambiguous, norm):
    """Where two class boundaries are nearly as close, FMN may take the farther one, but it reaches it.

    No image is left unbroken: the paper's ε rule alone stalls on the boundary of a linear model (in
    L2 it leaves 3 of these 64 images unbroken; see :mod:`ellrobust.attacks.fast_minimum_norm`).
    """
    result = fmn(ambiguous.model, ambiguous.x, ambiguous.y, norm=norm, steps=100, eps_max=1.0)
    assert not bool(result.censored.any())
    reached = ambiguous.dist[norm].gather(1, result.adv_pred[:, None]).squeeze(1)
    assert bool((result.eps_star >= ambiguous.exact(norm) - FLOAT_SLACK).all())
    assert float((result.eps_star / reached - 1).abs().max()) <= 1e-3


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_bisection_brackets_the_closed_form_and_agrees_with_fmn(clear, norm):
    exact = clear.exact(norm)
    result = bisect(exact_attack(clear, norm), clear.model, clear.x, clear.y, norm=norm, eps_max=2 * float(exact.max()))
    check_result(result, clear.model, clear.x, clear.y)
    assert result.resolution == 1 / 255 / 16 and not bool(result.censored.any())
    assert bool((result.eps_star >= exact - FLOAT_SLACK).all())
    assert bool((result.eps_star <= exact + result.resolution + FLOAT_SLACK).all())
    fast = fmn(clear.model, clear.x, clear.y, norm=norm, steps=100, eps_max=1.0)
    assert bool(((fast.eps_star - result.eps_star).abs() <= result.resolution + FMN_RTOL * exact).all())


def test_bisection_with_a_registered_attack(clear):
    """APGD-T from the registry, at a coarse resolution: within one resolution of the exact minimum here."""
    exact = clear.exact("Linf")
    attack = registry_attack("apgd-t", num_classes=CLASSES, params={"steps": 20, "target_classes": CLASSES - 1})
    assert attack.norm == "Linf"
    result = bisect(
        attack, clear.model, clear.x, clear.y, norm=attack.norm, eps_max=2 * float(exact.max()), resolution=1 / 255 / 4
    )
    check_result(result, clear.model, clear.x, clear.y)
    assert bool((result.eps_star >= exact - FLOAT_SLACK).all())
    assert bool((result.eps_star <= exact + result.resolution).all())


def test_misclassified_images_have_zero_eps_and_censoring_is_recorded(clear):
    x, y, exact = clear.x, clear.y.clone(), clear.exact("Linf")
    y[:3] = (y[:3] + 1) % CLASSES  # the model no longer gets these right
    eps_max = float(exact[3:].median())
    attacks = {
        "fmn": lambda: fmn(clear.model, x, y, norm="Linf", steps=100, eps_max=eps_max),
        "bisect": lambda: bisect(exact_attack(clear, "Linf"), clear.model, x, y, norm="Linf", eps_max=eps_max),
    }
    clear_cut = (exact[3:] / eps_max - 1).abs() > 0.05  # FMN's ε* is within 1 % of the exact one
    for name, run in attacks.items():
        result = run()
        check_result(result, clear.model, x, y)
        assert bool((result.eps_star[:3] == 0).all()) and not bool(result.censored[:3].any()), name
        assert torch.equal(result.x_adv[:3], x[:3]) and torch.equal(result.adv_pred[:3], clear.y[:3]), name
        expected = exact[3:] > eps_max
        assert torch.equal(result.censored[3:][clear_cut], expected[clear_cut]), name
        assert 0 < int(expected[clear_cut].sum()) < int(clear_cut.sum())
        assert result.eps_max == eps_max


def test_a_candidate_the_final_verdict_does_not_confirm_is_not_an_answer(clear):
    """``conclude`` judges every candidate again: one marked found but not adversarial counts as censored."""
    x, y = clear.x[:4], clear.y[:4]
    found = torch.tensor([True, True, False, True])
    candidates = x.clone()
    candidates[0] = exact_attack(clear, "Linf")(clear.model, x[:1], y[:1], 2 * float(clear.exact("Linf")[0]))[0]
    candidates[1] = (x[1] + 0.001).clamp(0, 1)  # inside the budget, not adversarial
    result = conclude(clear.model, x, y, candidates, found, norm="Linf", eps_max=0.1)
    check_result(result, clear.model, x, y)
    assert result.censored.tolist() == [False, True, True, True]
    assert float(result.eps_star[0]) > 0 and torch.equal(result.x_adv[1], x[1])


def test_fmn_verdicts_are_fp32_whatever_the_iterations_ran_in(clear):
    result = fmn(clear.model, clear.x, clear.y, norm="L2", steps=50, eps_max=1.0, precision="bf16")
    check_result(result, clear.model, clear.x, clear.y)
    assert bool((result.eps_star >= clear.exact("L2") - FLOAT_SLACK).all())


def test_the_model_is_in_eval_mode_during_the_attack_and_restored_after():
    seen = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(12, 3)

        def forward(self, x):
            seen.append(self.training)
            return self.linear(x.flatten(1))

    model = Recorder().train()
    x = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    fmn(model, x, y, norm="Linf", steps=3)
    bisect(lambda m, images, labels, eps: images, model, x, y, norm="Linf", eps_max=0.1)  # never breaks one
    assert seen and not any(seen) and model.training


def test_bad_requests_are_refused_in_one_line(clear):
    x, y = clear.x, clear.y
    cases = [
        (lambda: fmn(clear.model, x, y, norm="L1"), "fmn supports norm Linf or L2, not 'L1'"),
        (lambda: bisect(exact_attack(clear, "Linf"), clear.model, x, y, norm="L0"), "bisect supports norm Linf or L2"),
        (lambda: fmn(clear.model, x, y, steps=0), "--steps must be a positive integer"),
        (lambda: fmn(clear.model, x * 2, y), r"in \[0, 1\]"),
        (lambda: fmn(clear.model, x, y, eps_max=-1.0), "eps_max must be a positive"),
        (
            lambda: bisect(exact_attack(clear, "Linf"), clear.model, x, y, norm="Linf", eps_max=0.1, resolution=0.2),
            "resolution",
        ),
        (
            lambda: bisect(exact_attack(clear, "Linf"), clear.model, x, y, norm="L2", eps_max=0.05),
            "stay within its budget",
        ),
        (lambda: registry_attack("pgd", num_classes=CLASSES, params={"steps": -1}), "--steps"),
        (lambda: registry_attack("no-such-attack", num_classes=CLASSES), "no-such-attack"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            call()
        assert "\n" not in str(info.value), message


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    x = torch.stack([data.dataset[i][0] for i in range(8)])
    y = torch.stack([torch.as_tensor(data.dataset[i][1]) for i in range(8)])
    return x, y


def test_on_the_shipped_vit_minimal_norms_do_not_exceed_a_pgd_success(digits):
    """What PGD-10 breaks at 8/255, FMN (20 steps) and the PGD bisection break at ε* ≤ 8/255.

    The bisection's bound holds by construction: its first step is the same attack (PGD-10 without
    random start, so deterministic) at the same budget, so whatever PGD breaks at 8/255 is broken at
    hi = 8/255 and ε* ≤ hi. FMN's bound is empirical, and the point of the test: an FMN that needs
    more than PGD's budget for an image PGD breaks is no minimal-norm attack.
    """
    x, y = digits
    torch.manual_seed(0)
    model = load_model("deit-elliptical")
    budget = 8 / 255
    pgd = registry_attack("pgd", num_classes=CLASSES, params={"steps": 10, "random_start": False})
    pgd_broken = fp32_predictions(model, pgd(model, x, y, budget)) != y
    assert int(pgd_broken.sum()) >= 6

    fast = fmn(model, x, y, norm="Linf", steps=20)
    check_result(fast, model, x, y)
    assert bool((fast.eps_star[pgd_broken] <= budget).all()) and not bool(fast.censored[pgd_broken].any())

    search = bisect(pgd, model, x, y, norm="Linf", eps_max=budget, resolution=1 / 255)
    check_result(search, model, x, y)
    assert not bool(search.censored[pgd_broken].any())
    assert bool((search.eps_star[pgd_broken] <= budget * (1 + 1e-5) + 1e-6).all())
