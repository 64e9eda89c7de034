"""Running a registered minimal-norm method (``fmn``, ``bisect-<attack>``) on a batch: its search by name.

The registry (:mod:`.registry`) holds each method as data (:attr:`AttackDef.minimal
<.registry.AttackDef.minimal>` names its search, :attr:`~.registry.AttackDef.bisects` the attack a
bisection runs); the searches themselves live here, so the registry imports no attack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ellrobust.attacks.bisection import bisect, registry_attack
from ellrobust.attacks.definitions import AttackDef
from ellrobust.attacks.fast_minimum_norm import fmn
from ellrobust.attacks.minimal_answers import MinimalResult

#: The parameters of a bisection's search itself, beside those of the attack it bisects.
SEARCH_PARAMS = ("eps_max", "resolution")


def _fmn(definition: AttackDef, model, images, labels, params, num_classes, seed, precision) -> MinimalResult:
    norm, steps, eps_max = str(params["norm"]), int(params["steps"]), float(params["eps_max"])
    return fmn(model, images, labels, norm=norm, steps=steps, eps_max=eps_max, precision=precision)


def _bisect(definition: AttackDef, model, images, labels, params, num_classes, seed, precision) -> MinimalResult:
    own = {k: v for k, v in params.items() if k not in SEARCH_PARAMS}
    attack = registry_attack(definition.bisects, num_classes=num_classes, params=own, seed=seed, precision=precision)
    eps_max, resolution = float(params["eps_max"]), float(params["resolution"])
    return bisect(attack, model, images, labels, norm=attack.norm, eps_max=eps_max, resolution=resolution)


#: Each search by the name :attr:`AttackDef.minimal <.registry.AttackDef.minimal>` gives it.
SEARCHES: Mapping[str, Callable[..., MinimalResult]] = {"fmn": _fmn, "bisect": _bisect}


def solve(
    definition: AttackDef,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    params: Mapping[str, object],
    *,
    num_classes: int,
    seed: int,
    precision: str,
) -> MinimalResult:
    """Each image's minimal budget under the minimal-norm method ``definition`` with its resolved ``params``."""
    return SEARCHES[definition.minimal](definition, model, images, labels, params, num_classes, seed, precision)
