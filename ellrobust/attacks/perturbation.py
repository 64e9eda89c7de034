"""Running an attack on a batch: :func:`perturb`, the one entry point every stage and test calls.

It owns what no single attack should: validating the request, wrapping the model so that decisions
are fp32 (:class:`~.cascade.Float32Logits`), and the restarts of an attack that has none of its own
(``restarts_in_perturb`` in its definition: PGD, whose torchattacks version lacks them).
"""

from __future__ import annotations

import torch
from torch import nn

from ellrobust.attacks.attack_request import AttackRequest, validate_request
from ellrobust.attacks.cascade import Float32Logits
from ellrobust.attacks.patches import PATCH_NORM, patch_area
from ellrobust.core.precision import Precision, fp32_predictions


def perturb(
    model: nn.Module,
    request: AttackRequest,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    num_classes: int,
    seed: int,
    precision: Precision | str = Precision.FP32,
    info: dict | None = None,
) -> torch.Tensor:
    """Attack a batch of [0, 1] images; returns adversarial images in [0, 1].

    The attack's iterations run in ``precision``; every decision this function or a cascade makes
    about which images to attack again is a strict fp32 forward pass, so a lower precision can only
    weaken the attack. ``info``, if given, receives the attack's diagnostics for this batch: cascades
    (``autoattack``, ``apgd``) ``info["components"][name] = {"seconds", "attacked", "broken"}``, SPSA
    ``info["spsa_images_per_forward"]``.

    Restarts of an attack whose definition sets ``restarts_in_perturb`` (PGD: torchattacks' has none)
    are run here: an example stays adversarial once any restart fools the model.
    """
    validate_request(request, num_classes)
    p = dict(request.params)
    attack = request.definition.factory(Float32Logits(model), eps, p, num_classes, seed)
    restarts = int(p.get("restarts", 1)) if request.definition.restarts_in_perturb else 1
    adv = attack.run(images, labels, precision=precision, info=info)
    for _ in range(restarts - 1):
        fooled = fp32_predictions(model, adv) != labels
        if bool(fooled.all()):
            break
        again = attack.run(images, labels, precision=precision, info=info)
        adv = torch.where(fooled.view(-1, 1, 1, 1), adv, again)
    return adv.detach()


def perturbation_norm(adv: torch.Tensor, images: torch.Tensor, norm: str, patch: int | None = None) -> torch.Tensor:
    """Per-example size of the perturbation in the attack's norm; ``patch`` (the model's patch side) for
    the patch norm, whose size is the changed area in patches (:func:`~.patches.patch_area`)."""
    if norm == PATCH_NORM:
        if patch is None:
            raise ValueError("the patch norm needs the model's patch size")
        return patch_area(adv, images, patch)
    delta = (adv - images).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(p=2, dim=1)
