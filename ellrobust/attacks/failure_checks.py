"""Signs that a gradient attack silently failed, read from the model itself (AutoAttack's ``checks.py``).

Row-level sanity checks (:mod:`.sanity_checks`) see only accuracies. These four need the model and a
batch of images, so they run where the attack stage has both (the failure probe of
:mod:`ellrobust.measures.failure_probe`) and hand their findings to the sanity checks as plain data:

* **randomised outputs**: two forward passes of the same images differ (AutoAttack: the L2 distance of
  the L2-normalised logits above 1e-4, or a prediction that flips). Gradients of a random model are
  samples; an attack needs their expectation (EOT, ``eot-pgd``).
* **probabilities, not logits**: every output in [0, 1] and every row summing to 1 (AutoAttack's
  ``check_range_output``). The cross-entropy of a softmax saturates and its gradients vanish.
* **zero input gradients**: images whose cross-entropy gradient with respect to the pixels is exactly
  zero (AutoAttack's ``check_zero_gradients``): a quantised input, a hard threshold, a saturated loss.
* **a loss that never moved**: a few PGD steps (no random start, so only the gradient can move
  anything) that leave an image's loss where it was. A zero gradient is one cause; a gradient that
  points nowhere useful (shattered, obfuscated) is another that the third check cannot see.

Every forward pass here is strict fp32 (:func:`~ellrobust.core.precision.precision_scope`): the
findings describe the model, not a precision's rounding. The loss is measured on the images' clean
predictions, which are the true labels of the clean-correct images the attack stage attacks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ellrobust.core.precision import Precision, precision_scope

#: AutoAttack's ``alpha`` of ``check_randomized``: the largest distance between two passes' normalised logits.
RANDOMISED_TOLERANCE = 1e-4
#: AutoAttack's ``alpha`` of ``check_range_output``: how far outputs may stray from a distribution's bounds.
PROBABILITY_TOLERANCE = 1e-5
#: Steps of the loss trace; each moves every pixel by ``eps / 4`` along the gradient's sign.
TRACE_STEPS = 5
#: A loss "moved" when it changed by more than this (relative to 1 + |loss|): fp32 noise is far below it.
LOSS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Findings:
    """What the checks found on one batch; counts are images.

    Attributes:
        images: the images probed.
        randomised: the largest L2 distance between two passes' L2-normalised logits (0: deterministic).
        flipped: images whose predicted class differs between the two passes.
        probabilities: every output is a probability distribution.
        zero_gradient: images whose input gradient of the cross-entropy is exactly zero.
        flat_loss: images whose loss did not move over :data:`TRACE_STEPS` PGD steps.
    """

    images: int
    randomised: float
    flipped: int
    probabilities: bool
    zero_gradient: int
    flat_loss: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images).float()


def randomised_outputs(model: nn.Module, images: torch.Tensor) -> tuple[float, int]:
    """The largest distance between two passes' normalised logits, and the images whose class flips."""
    with torch.no_grad():
        first, second = _logits(model, images), _logits(model, images)
    unit = [t / (t.norm(dim=1, keepdim=True) + 1e-10) for t in (first, second)]
    distance = float((unit[0] - unit[1]).norm(dim=1).max()) if len(images) else 0.0
    return distance, int((first.argmax(1) != second.argmax(1)).sum())


def probability_outputs(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether every output lies in [0, 1] and every row sums to 1 (a softmax head)."""
    with torch.no_grad():
        out = _logits(model, images)
    tol = PROBABILITY_TOLERANCE
    return bool(out.max() < 1 + tol and out.min() > -tol and ((out.sum(-1) - 1).abs() < tol).all())


def _losses(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image cross-entropy and its input gradient."""
    x = images.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(_logits(model, x), labels, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def zero_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    """Images whose input gradient of the cross-entropy is exactly zero."""
    _, grad = _losses(model, images, labels)
    return int((grad.flatten(1).abs().sum(1) == 0).sum())


def flat_losses(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> int:
    """Images whose loss never moved over :data:`TRACE_STEPS` L∞ PGD steps of ``eps / 4`` (no random start)."""
    start, _ = _losses(model, images, labels)
    adv, moved = images.detach(), torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for _ in range(TRACE_STEPS):
        loss, grad = _losses(model, adv, labels)
        moved |= (loss - start).abs() > LOSS_TOLERANCE * (1 + start.abs())
        adv = (images + (adv + eps / 4 * grad.sign() - images).clamp(-eps, eps)).clamp(0, 1)
    loss, _ = _losses(model, adv, labels)
    moved |= (loss - start).abs() > LOSS_TOLERANCE * (1 + start.abs())
    return int((~moved).sum())


def probe_failures(model: nn.Module, images: torch.Tensor, *, eps: float) -> Findings:
    """Run the four checks on ``images`` (labels: the model's clean predictions), in strict fp32.

    ``eps`` is the L∞ budget of the loss trace; a budget of 0 (or below 1/255) is raised to 1/255 so
    that the trace can move at all. ``model`` is probed as it stands: a module left in train mode
    keeps its dropout, which is the point of the randomness check.
    """
    with precision_scope(Precision.FP32, images.device):
        randomised, flipped = randomised_outputs(model, images)
        probabilities = probability_outputs(model, images)
        with torch.no_grad():
            labels = _logits(model, images).argmax(1)
        zero = zero_gradients(model, images, labels)
        flat = flat_losses(model, images, labels, max(float(eps), 1 / 255))
    return Findings(len(images), randomised, flipped, probabilities, zero, flat)


def merged(findings: list[dict]) -> dict[str, object]:
    """Findings of several batches (or ranks) as one: counts add up, the distance is the largest."""
    if not findings:
        return {}
    return {
        "images": sum(int(f["images"]) for f in findings),
        "randomised": max(float(f["randomised"]) for f in findings),
        "flipped": sum(int(f["flipped"]) for f in findings),
        "probabilities": all(bool(f["probabilities"]) for f in findings),
        "zero_gradient": sum(int(f["zero_gradient"]) for f in findings),
        "flat_loss": sum(int(f["flat_loss"]) for f in findings),
    }
