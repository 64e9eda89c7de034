"""Minimal-norm answers per image: the smallest perturbation found that breaks it, and the curve they give.

A fixed-budget attack answers "is this image broken at ε?" once per budget; a minimal-norm attack
answers "from which ε on is it broken?" once per image, and every robust-accuracy curve follows from
those answers without attacking again (:func:`ellrobust.stats.minimal_budgets.robust_curve`). Two attacks give them:
:func:`~.fast_minimum_norm.fmn` (one optimisation per image) and :func:`~.bisection.bisect` (a binary
search over a fixed-budget attack, slower but exact up to its resolution for that attack).

This module holds what both share: the result type, its assembly from the attacks' candidates with
the final fp32 verdict, the validation of their common arguments, and the curve.

The rules every answer follows:

* ``eps_star`` is the norm of ``x_adv − images`` as measured (float64 from the float32 images), never
  the budget an attack was asked for, and an image counts as broken only when a strict fp32 forward
  (:func:`~ellrobust.core.precision.fp32_predictions`) of ``x_adv`` differs from its label;
* an image the model gets wrong clean has ``eps_star`` 0 and ``x_adv`` the clean image;
* an image no adversarial example within ``eps_max`` was found for is *censored*: ``eps_star`` is
  ``eps_max`` and ``x_adv`` the clean image. Its true ε* is only known to be above ``eps_max``, which
  is why :func:`~ellrobust.stats.minimal_budgets.robust_curve` refuses budgets beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.core.precision import fp32_predictions
from ellrobust.stats.minimal_budgets import within

NORMS = ("Linf", "L2")

#: Largest norm searched when none is given: twice the largest default budget of the registry in that
#: norm (8/255 for L∞ attacks, 0.5 for L2), so every default curve is covered with room to spare.
DEFAULT_EPS_MAX = {"Linf": 16 / 255, "L2": 1.0}

#: One sixteenth of a grey level: below what an 8-bit image can show, so a curve read off the bisected
#: ε* is as fine as any budget grid anyone writes in /255 units.
DEFAULT_RESOLUTION = 1 / 255 / 16


@dataclass(frozen=True)
class MinimalResult:
    """Per-image minimal-norm answers of one attack on one batch.

    Attributes:
        eps_star: float64 ``(N,)``: the measured norm of ``x_adv − images``; 0 for images misclassified
            clean; ``eps_max`` for censored images.
        censored: bool ``(N,)``: no adversarial example within ``eps_max`` was found (ε* > ``eps_max``
            as far as this attack can tell).
        x_adv: float32 ``(N, C, H, W)`` in [0, 1]: the adversarial image at ``eps_star``, or the clean
            image for censored and clean-misclassified images.
        adv_pred: int64 ``(N,)``: the class a strict fp32 forward of ``x_adv`` predicts (the batch as a
            whole, so the same forward on ``x_adv`` gives the same classes).
        norm: ``"Linf"`` or ``"L2"``, in [0, 1] pixel units.
        eps_max: the largest norm searched.
        resolution: for a bisection, the width of the bracket each uncensored ε* was narrowed to: the
            attack failed at some budget ≥ ``eps_star − resolution``; None for FMN, which has no bracket.
    """

    eps_star: torch.Tensor
    censored: torch.Tensor
    x_adv: torch.Tensor
    adv_pred: torch.Tensor
    norm: str
    eps_max: float
    resolution: float | None = None


def check_norm(attack: str, norm: str) -> None:
    """A one-line :class:`UsageError` for a norm the minimal-norm attacks do not search."""
    if norm not in NORMS:
        raise UsageError(f"{attack} supports norm Linf or L2, not {norm!r}; pass norm='Linf' or norm='L2'.")


def check_batch(attack: str, images: torch.Tensor, labels: torch.Tensor, eps_max: float) -> None:
    """Reject what would make the answers meaningless: images off [0, 1], mismatched labels, a bad eps_max."""
    if images.ndim != 4 or labels.shape != (len(images),):
        raise UsageError(
            f"{attack} takes images (N, C, H, W) and labels (N,); got {tuple(images.shape)} and {tuple(labels.shape)}."
        )
    if len(images) and (float(images.min()) < 0 or float(images.max()) > 1):
        raise UsageError(f"{attack} takes images in [0, 1] pixel units (models normalise inside); rescale them.")
    if not (isinstance(eps_max, (int, float)) and math.isfinite(eps_max) and eps_max > 0):
        raise UsageError(f"{attack}: eps_max must be a positive finite number (got {eps_max!r}).")


def perturbation_norms(x_adv: torch.Tensor, images: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image norm of ``x_adv − images`` in float64: the subtraction itself adds no rounding."""
    delta = (x_adv.double() - images.double()).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(p=2, dim=1)


def conclude(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    candidates: torch.Tensor,
    found: torch.Tensor,
    *,
    norm: str,
    eps_max: float,
    resolution: float | None = None,
) -> MinimalResult:
    """The result from each image's best candidate, judged once more by fp32 forwards of the whole batch.

    ``found`` marks the rows of ``candidates`` the attack judged adversarial. Every verdict here is a
    forward of all N images (the attacks judge whole batches too): a row's fp32 logits do not depend on
    the other rows, but a kernel may block its work differently for another batch size, and a
    candidate that sits on the decision boundary, as minimal-norm ones do, could flip with it. A row
    that is not adversarial in the final forward counts as not found: an answer is never one the
    reported ``x_adv`` does not reproduce.
    """
    clean_pred = fp32_predictions(model, images)
    wrong_clean = clean_pred != labels
    norms = perturbation_norms(candidates, images, norm)
    keep = found & ~wrong_clean & within(norms, eps_max)
    x_adv = torch.where(keep.view(-1, 1, 1, 1), candidates, images)
    adv_pred = fp32_predictions(model, x_adv)
    flipped = keep & (adv_pred == labels)
    if bool(flipped.any()):
        keep &= ~flipped
        x_adv = torch.where(flipped.view(-1, 1, 1, 1), images, x_adv)
        adv_pred = torch.where(flipped, clean_pred, adv_pred)
    censored = ~keep & ~wrong_clean
    eps_star = torch.where(keep, norms, torch.zeros_like(norms))
    eps_star = torch.where(censored, torch.full_like(norms, float(eps_max)), eps_star)
    return MinimalResult(
        eps_star=eps_star,
        censored=censored,
        x_adv=x_adv.float().detach(),
        adv_pred=adv_pred,
        norm=norm,
        eps_max=float(eps_max),
        resolution=resolution,
    )
