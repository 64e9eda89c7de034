"""The plain adversarial patch: squares of free pixels at the worst of several positions, per image.

A budget of ``k`` patches is ``k`` squares of the model's patch size, placed anywhere (not on the token
grid: a square may straddle four tokens), their pixels free in [0, 1]. ``positions`` random placements
are tried per image; each is optimised by PGD inside the squares (``steps`` signed steps of
``step_size`` from a uniform random start), and an image keeps the first iterate that fools the model,
else the placement whose final cross-entropy is the largest. A fooled image leaves the batch (its steps
are its own), and the later placements try only the images not yet fooled. It needs no attention and no tokens, only
the patch size, so it runs on any ViT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ellrobust.attacks.patches import budget_patches, patch_size, record_fooled
from ellrobust.core.precision import Precision, precision_scope


def square_masks(count: int, side: int, size: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """(batch, 1, size, size) masks of ``count`` random ``side``-pixel squares each (top-left uniform)."""
    corners = torch.randint(0, size - side + 1, (batch, count, 2), generator=generator)
    mask = torch.zeros(batch, 1, size, size)
    for b in range(batch):
        for row, col in corners[b].tolist():
            mask[b, :, row : row + side, col : col + side] = 1
    return mask


class PatchAttack:
    """``eps`` squares at the worst of ``positions`` placements per image (see the module docstring)."""

    def __init__(self, model: nn.Module, eps: float, p: dict, seed: int) -> None:
        self.model = model
        self.count = budget_patches(eps)
        self.side = patch_size(model)
        self.positions, self.steps, self.step_size = int(p["positions"]), int(p["steps"]), float(p["step_size"])
        self.seed = seed

    def _placement(self, x, labels, mask, best, done) -> tuple[torch.Tensor, torch.Tensor]:
        """PGD inside ``mask`` on the images not yet fooled (``done`` and ``best`` updated in place): the
        final iterate and its per-image loss (for the images fooled on the way, of no further use)."""
        delta = torch.rand_like(x)
        for _ in range(self.steps):
            active = torch.nonzero(~done).flatten()
            if active.numel() == 0:
                break
            part = delta[active].requires_grad_(True)
            iterate = x[active] * (1 - mask[active]) + part * mask[active]
            logits = self.model(iterate).float()
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels[active], reduction="sum"), part)
            record_fooled(best, done, active, iterate.detach(), logits.detach(), labels[active])
            delta[active] = (part.detach() + self.step_size * grad.sign()).clamp(0, 1)
        final = x * (1 - mask) + delta * mask
        loss = torch.full((len(x),), -float("inf"), device=x.device)
        active = torch.nonzero(~done).flatten()
        if active.numel():
            with torch.no_grad():
                loss[active] = F.cross_entropy(self.model(final[active]).float(), labels[active], reduction="none")
        return final, loss

    def run(self, images, labels, *, precision: Precision | str = Precision.FP32, info: dict | None = None):
        x = images.detach()
        size = x.shape[-1]
        generator = torch.Generator().manual_seed(self.seed)
        best, worst = x.clone(), x.clone()
        worst_loss = torch.full((len(x),), -float("inf"), device=x.device)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with precision_scope(precision, x.device):
            for _ in range(self.positions):
                mask = square_masks(self.count, self.side, size, len(x), generator).to(x.device)
                final, loss = self._placement(x, labels, mask, best, done)
                better = loss > worst_loss
                worst[better], worst_loss[better] = final[better].detach(), loss[better]
        best[~done] = worst[~done]
        if info is not None:
            info["patch_size"] = self.side
        return best.clamp(0, 1).detach()
