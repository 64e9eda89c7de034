"""Fast Minimum-Norm attack (FMN): each image's smallest adversarial perturbation, in one optimisation.

Pintor, Roli, Brendel, Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
Constraints", NeurIPS 2021 (arXiv 2102.12827), Algorithm 1, untargeted, for the L∞ and L2 norms.
Ported from adv-lib's ``adv_lib/attacks/fast_minimum_norm.py`` (Jérôme Rony, a co-author of FMN; adv-lib
0.2.8, BSD 3-Clause License, Copyright (c) 2020 Jérôme Rony; that file itself adapted from the authors'
reference, github.com/maurapintor/Fast-Minimum-Norm-FMN-Attack, MIT License, Copyright (c) 2021 Maura
Pintor). The same iterates: normalised-gradient steps on the logit margin, projected onto an L∞/L2 ball
of radius ε and the [0, 1] box, with ε adapted every step: shrunk by (1 − γ) towards the best norm
while the iterate is adversarial, grown by (1 + γ) once one was found and the iterate is not, and,
before any was found, set to the current norm plus the linearised distance to the boundary
(margin / ‖∇margin‖ in the dual norm; here with a floor, see below). The step size α and γ follow
cosine annealing, from ``alpha_init`` to ``alpha_final`` (``alpha_init / 100`` by default) and from
``gamma`` to ``gamma_final``.

What differs from adv-lib, and why:

* **Every verdict is a strict fp32 forward** (:func:`~ellrobust.core.precision.fp32_predictions`) of the
  iterate, not the argmax of the gradient pass's logits: the iterates of FMN sit on the decision
  boundary by design, so a verdict from a bf16 pass, or from a kernel chosen differently with autograd
  on, could count an image as broken that a plain fp32 forward does not. It costs one forward pass
  without autograd per step (about a third of a step); the gradient passes may run in a lower
  ``precision``, which can then only weaken the attack.
* **The L2 projection is a projection**, δ · min(1, ε/‖δ‖), as in the paper and the authors' reference
  (Foolbox's ``clip_lp_norms``). adv-lib 0.2.8 writes ``δ.mul_(ε / ‖δ‖).clamp_(max=1)``, which
  rescales every δ onto the sphere of radius ε, inside the ball too, and clamps pixels instead of the
  factor: by our reading a misplaced parenthesis.
* **Before the first adversarial iterate, ε grows by at least (1 + ``gamma_final``) a step**: ε =
  max(‖δ‖ + |margin| / ‖∇margin‖_q, ε_prev · (1 + γ_final)), where the paper and adv-lib have the first
  term alone (ε's first value is theirs). Where the model is linear around the iterate (exactly so
  for a linear model, piecewise so for ReLU networks) their step lands *on* the boundary, float
  rounding decides the verdict, and when it says "not adversarial" the distance left is ≈ 0, so ε
  stays at ‖δ‖ and the iterate never moves again: on a linear 10-class model on 3×8×8 images adv-lib
  0.2.8's L2 FMN left 1 to 12 of 32 images unbroken this way (seeds 0–5), this port none. The floor is
  the smallest relative change the schedule ever makes, so it binds only where ε barely moves: on the
  shipped digits ViT (L∞, 64 images at 100 steps, 16 at 20) this port's ε* equal adv-lib's exactly.
* The best norm starts at +∞ rather than at the norm of the farthest point of the box, so an
  adversarial iterate is always recorded; ε is still clipped to that farthest norm, as in adv-lib.
* Images misclassified clean are not special-cased: their first iterate (δ = 0) is adversarial, ε
  drops to 0 and they stay at δ = 0. They stay in the batch so that every verdict is a forward of the
  same N images (see :func:`~.minimal.conclude`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ellrobust.attacks.attack_request import validate_params
from ellrobust.attacks.cascade import Float32Logits, evaluating
from ellrobust.attacks.minimal_answers import (
    DEFAULT_EPS_MAX,
    MinimalResult,
    check_batch,
    check_norm,
    conclude,
    perturbation_norms,
)
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision, fp32_predictions, precision_scope

#: The dual norm's p, for the distance to the linearised boundary: |margin| / ‖∇margin‖_q.
_DUAL = {"Linf": 1.0, "L2": 2.0}


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logit_label − max other logit`` per row: positive while the label is still the prediction."""
    true = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, labels.unsqueeze(1), float("-inf")).amax(1)
    return true - others


@dataclass(frozen=True)
class Schedule:
    """Algorithm 1's cosine annealing: the step length α and ε's relative change γ at step ``i``."""

    steps: int
    alpha_init: float
    alpha_final: float
    gamma_init: float
    gamma_final: float

    def _cosine(self, i: int) -> float:
        return (1 + math.cos(math.pi * i / self.steps)) / 2

    def alpha(self, i: int) -> float:
        return self.alpha_final + (self.alpha_init - self.alpha_final) * self._cosine(i)

    def gamma(self, i: int) -> float:
        return self.gamma_final + (self.gamma_init - self.gamma_final) * self._cosine(i)


def _project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """``delta`` projected onto the ball of radius ``eps`` (one radius per row), in the given norm."""
    radius = eps.view(-1, *[1] * (delta.ndim - 1)).to(delta.dtype)
    if norm == "Linf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    lengths = delta.flatten(1).norm(p=2, dim=1).clamp(min=1e-12).view_as(radius)
    return delta * (radius / lengths).clamp(max=1)


def fmn(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "Linf",
    steps: int = 100,
    eps_max: float | None = None,
    alpha_init: float = 1.0,
    alpha_final: float | None = None,
    gamma: float = 0.05,
    gamma_final: float = 0.001,
    precision: Precision | str = Precision.FP32,
) -> MinimalResult:
    """Untargeted FMN on a batch of [0, 1] images: per image the smallest adversarial norm it finds.

    Args:
        model: a classifier that normalises its inputs inside; in eval mode during the attack.
        images: float ``(N, C, H, W)`` in [0, 1].
        labels: int64 ``(N,)``.
        norm: ``"Linf"`` or ``"L2"``, in [0, 1] pixel units.
        steps: iterations (one gradient pass and one fp32 verdict each). adv-lib defaults to 10, the
            paper's experiments run 100 to 1000; 100 here.
        eps_max: images whose best adversarial norm is above it are censored. FMN itself is unbounded
            (ε is clipped only to the box), so this does not steer the search; default
            :data:`DEFAULT_EPS_MAX`.
        alpha_init, alpha_final: the step's L2 length at the first and the last step (cosine annealing;
            ``alpha_final`` defaults to ``alpha_init / 100``). adv-lib's and Foolbox's default, 1.0.
        gamma, gamma_final: the relative change of ε at the first and the last step (0.05 → 0.001 in
            the paper and adv-lib).
        precision: the precision of the gradient passes; verdicts are fp32 whatever it is.

    Returns:
        a :class:`~.minimal.MinimalResult` with ``resolution`` None. FMN's ε* is an upper bound of
        each image's true minimal norm: the perturbation it reports is adversarial.
    """
    check_norm("fmn", norm)
    eps_max = DEFAULT_EPS_MAX[norm] if eps_max is None else eps_max
    check_batch("fmn", images, labels, eps_max)
    validate_params({"steps": steps})
    alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
    for name, value in (("alpha_init", alpha_init), ("alpha_final", alpha_final)):
        if not value > 0:
            raise UsageError(f"fmn: {name} must be positive (got {value!r}).")
    if not 0 < gamma_final <= gamma < 1:
        raise UsageError(f"fmn: gamma must satisfy 0 < gamma_final ≤ gamma < 1 (got {gamma_final!r}, {gamma!r}).")
    schedule = Schedule(steps, alpha_init, alpha_final, gamma, gamma_final)
    x, y = images.detach().float(), labels.detach()
    with evaluating(model):
        best_adv, found = _iterate(model, x, y, norm, schedule, precision)
        return conclude(model, x, y, best_adv, found, norm=norm, eps_max=eps_max)


def _iterate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    schedule: Schedule,
    precision: Precision | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's loop: the best adversarial iterate per image and whether one was found."""
    n = len(x)
    rows = (n, *[1] * (x.ndim - 1))
    attacked = Float32Logits(model)
    worst_norm = perturbation_norms(torch.maximum(x, 1 - x), torch.zeros_like(x), norm).float()
    delta = torch.zeros_like(x)
    eps = torch.full((n,), math.inf, device=x.device)
    best_norm = torch.full((n,), math.inf, device=x.device)
    best_adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    for i in range(schedule.steps):
        alpha, gamma = schedule.alpha(i), schedule.gamma(i)
        adv = x + delta
        is_adv = fp32_predictions(model, adv) != y
        delta_norm = delta.flatten(1).abs().amax(1) if norm == "Linf" else delta.flatten(1).norm(p=2, dim=1)
        step = delta.clone().requires_grad_(True)
        with torch.enable_grad(), precision_scope(precision, x.device):
            loss = -logit_margin(attacked(x + step), y)  # ascent on loss = descent on the margin
            (grad,) = torch.autograd.grad(loss.sum(), step)
        loss, grad = loss.detach().float(), grad.float()

        better = is_adv & (delta_norm < best_norm)
        found |= is_adv
        best_norm = torch.where(better, delta_norm, best_norm)
        best_adv = torch.where(better.view(rows), adv, best_adv)

        floor = torch.where(eps.isinf(), 0.0, eps * (1 + schedule.gamma_final))  # ε's first value is the paper's
        to_boundary = loss.abs() / grad.flatten(1).norm(p=_DUAL[norm], dim=1).clamp(min=1e-12)
        eps = torch.where(
            is_adv,
            torch.minimum(eps * (1 - gamma), best_norm),
            torch.where(found, eps * (1 + gamma), torch.maximum(delta_norm + to_boundary, floor)),
        )
        eps = torch.minimum(eps, worst_norm)

        grad_length = grad.flatten(1).norm(p=2, dim=1).clamp(min=1e-12).view(rows)
        delta = _project(delta + alpha * grad / grad_length, eps, norm)
        delta = (x + delta).clamp(0, 1) - x
    return best_adv, found
