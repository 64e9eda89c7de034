"""Minimal norms by bisection: a fixed-budget attack run at shrinking budgets, per image, to a resolution.

For an attack that only answers "broken at ε?", ε* is found by binary search: attack every image
at ``eps_max`` (those still robust are censored), then halve each broken image's bracket [lo, hi]
(broken at hi, not at lo) until it is at most ``resolution`` wide. ε* is the measured norm of the
adversarial image found at the final hi, so ε* ≤ hi ≤ lo + resolution where the attack found nothing
at lo: ε* is at most one resolution above a budget at which this attack fails, as far as a search
that assumes success is monotone in ε can tell. A stochastic attack is not monotone
exactly (PGD's random start can fail at ε and succeed below it); the search then reports a budget
where it did succeed, never one where it did not.

Budgets are per image, attacks take one per call: each round runs the attack once per distinct
midpoint, on the images that share it (midpoints are dyadic fractions of ``eps_max``, so round k has at
most 2^k of them). Every verdict is an fp32 forward of the whole batch, as in
:func:`~.minimal.conclude`.

:func:`registry_attack` turns any registered attack (:data:`~.registry.ATTACKS`) into the callable
this search takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ellrobust.attacks.attack_request import AttackRequest, make_request, validate_request
from ellrobust.attacks.cascade import evaluating
from ellrobust.attacks.minimal_answers import (
    DEFAULT_EPS_MAX,
    DEFAULT_RESOLUTION,
    MinimalResult,
    check_batch,
    check_norm,
    conclude,
    perturbation_norms,
)
from ellrobust.attacks.perturbation import perturb
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision, fp32_predictions
from ellrobust.stats.minimal_budgets import within

#: ``attack_fn(model, images, labels, eps) -> x_adv``: a fixed-budget attack, [0, 1] images in and out.
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class RegistryAttack:
    """A registered attack at a budget the caller picks per call: the ``attack_fn`` :func:`bisect` takes.

    Runs through :func:`~.perturbation.perturb`, so its request is validated and its decisions are
    fp32 like every other run's. ``norm`` is the attack's norm, to pass on to :func:`bisect`.
    """

    request: AttackRequest
    num_classes: int
    seed: int = 0
    precision: Precision | str = Precision.FP32
    norm: str = field(init=False)

    def __post_init__(self) -> None:
        validate_request(self.request, self.num_classes)
        object.__setattr__(self, "norm", self.request.norm)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        return perturb(
            model,
            self.request,
            images,
            labels,
            eps=eps,
            num_classes=self.num_classes,
            seed=self.seed,
            precision=self.precision,
        )


def registry_attack(
    name: str,
    *,
    num_classes: int,
    params: Mapping[str, object] | None = None,
    seed: int = 0,
    precision: Precision | str = Precision.FP32,
) -> RegistryAttack:
    """The registered attack ``name`` with ``params`` overriding its defaults, as an ``attack_fn``.

    E.g. ``registry_attack("pgd", num_classes=10, params={"steps": 10})``. Rejects an unknown name or a
    bad parameter in one line before any work.
    """
    return RegistryAttack(make_request(name, params), num_classes, seed, precision)


def bisect(
    attack_fn: AttackFn,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str,
    eps_max: float | None = None,
    resolution: float = DEFAULT_RESOLUTION,
) -> MinimalResult:
    """Per image, the smallest budget at which ``attack_fn`` breaks it, to within ``resolution``.

    Args:
        attack_fn: ``attack_fn(model, images, labels, eps) -> x_adv``, a fixed-budget attack whose
            perturbations stay within ``eps`` in ``norm`` (checked: one that leaves its budget is refused).
        model: a classifier that normalises its inputs inside; in eval mode during the search.
        images, labels: float ``(N, C, H, W)`` in [0, 1] and int64 ``(N,)``.
        norm: the attack's norm, ``"Linf"`` or ``"L2"`` (a :class:`RegistryAttack` has it as ``.norm``).
        eps_max: the first budget; images it does not break are censored. Default
            :data:`~.fast_minimum_norm.DEFAULT_EPS_MAX` for the norm.
        resolution: the width each broken image's bracket is narrowed to, in the norm's units:
            ⌈log2(eps_max / resolution)⌉ rounds after the first (8 for 16/255 at 1/255/16).

    Returns:
        a :class:`~.minimal.MinimalResult` with ``resolution`` set.
    """
    check_norm("bisect", norm)
    eps_max = DEFAULT_EPS_MAX[norm] if eps_max is None else eps_max
    check_batch("bisect", images, labels, eps_max)
    if not (isinstance(resolution, (int, float)) and 0 < resolution < eps_max):
        raise UsageError(f"bisect: resolution must be in (0, eps_max = {eps_max:.6g}) (got {resolution!r}).")
    x, y = images.detach().float(), labels.detach()
    with evaluating(model):
        correct = fp32_predictions(model, x) == y
        lo = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        hi = torch.full_like(lo, float(eps_max))
        best = x.clone()
        broken = _attack_round(attack_fn, model, x, y, hi, correct, best, norm)
        active = broken & _narrowable(lo, hi, resolution)
        while bool(active.any()):
            mid = (lo + hi) / 2
            hit = _attack_round(attack_fn, model, x, y, mid, active, best, norm)
            hi = torch.where(hit, mid, hi)
            lo = torch.where(active & ~hit, mid, lo)
            active = broken & _narrowable(lo, hi, resolution)
        return conclude(model, x, y, best, broken, norm=norm, eps_max=eps_max, resolution=float(resolution))


def _narrowable(lo: torch.Tensor, hi: torch.Tensor, resolution: float) -> torch.Tensor:
    """The brackets still wider than ``resolution`` whose midpoint float64 can tell from both ends.

    A resolution below the spacing of float64 numbers near a bracket (``1e-20`` at ε = 0.03) could never
    be reached: halving would give back an end of the bracket forever, so such a bracket stops where
    float64 stops, about 52 halvings from ``eps_max``.
    """
    mid = (lo + hi) / 2
    return (hi - lo > resolution) & (mid > lo) & (mid < hi)


def _attack_round(
    attack_fn: AttackFn,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: torch.Tensor,
    todo: torch.Tensor,
    best: torch.Tensor,
    norm: str,
) -> torch.Tensor:
    """Attack the ``todo`` images at their own ``eps``; the ones broken get their ``best`` row replaced.

    The attack runs once per distinct budget; the verdict is one fp32 forward of all N rows.
    """
    candidates = x.clone()
    for budget in torch.unique(eps[todo]).tolist():
        group = torch.where(todo & (eps == budget))[0]
        out = attack_fn(model, x[group], y[group], budget).detach().float()
        if out.shape != x[group].shape:
            raise UsageError(f"bisect: attack_fn returned shape {tuple(out.shape)} for images {tuple(x[group].shape)}.")
        norms = perturbation_norms(out, x[group], norm)
        if not bool(within(norms, budget).all()):
            raise UsageError(
                f"bisect: attack_fn returned perturbations of {norm} norm up to {float(norms.max()):.6g} at eps "
                f"{budget:.6g}; it must stay within its budget in the norm passed (norm={norm!r})."
            )
        candidates[group] = out
    hit = todo & (fp32_predictions(model, candidates) != y)
    best[hit] = candidates[hit]
    return hit
