"""Attention-Fool (Lovisotto et al., CVPR 2022): a patch that pulls every query's attention onto itself.

"Give me your attention: dot-product attention considered harmful for adversarial patch robustness"
attacks the dot product itself. Softmax gradients vanish once attention saturates, so the loss is taken
*before* the softmax: the query–key logits ``B = q kᵀ / √D`` of every layer and head. For the adversarial
patch's key tokens ``j*``, ``L_kq^{l,h}`` is the mean over queries ``i`` of ``B_{i j*}`` (the mean over
the patch's tokens when it covers several); heads and layers are combined by a smooth maximum
(log-sum-exp), so the attack may win in whichever layer and head it can. The objective is
``cross-entropy + kq_weight · L_kq``, ascended by signed gradient steps (PGD with the pixels of the
patch free in [0, 1]).

Elliptical attention replaces the dot product by ``(q ⊙ m) kᵀ``: the logits here are those the layer
computes (its queries already multiplied by ``m``, :meth:`~ellrobust.models.vit.VisionTransformer.iter_blocks`),
so the loss goes through the elliptical metric. With ``--m-grad full`` gradients flow through ``m`` too
(the adaptive attack); ``detach`` is the paper's metric, computed without gradient. A timm
VisionTransformer is read through the token interface the collapse probe uses; a model without tokens
is refused in one line.

Where the patch goes: the paper places its patch at given positions; here it goes on the patches that
receive the most attention (Patch-Fool's selection, :func:`~.patch_fool.select_patches`), so that the
two attention attacks differ only in their losses. An image keeps the first iterate that fools the model,
and leaves the batch then (every image's steps are its own).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ellrobust.attacks.patch_fool import select_patches
from ellrobust.attacks.patches import (
    budget_patches,
    logits_and_blocks,
    patch_mask,
    patch_size,
    record_fooled,
    token_model,
)
from ellrobust.core.precision import Precision, precision_scope
from ellrobust.models.vit import BlockOutput


def kq_loss(blocks: list[BlockOutput], keys: torch.Tensor) -> torch.Tensor:
    """Per image, the smooth maximum over layers and heads of the mean query–key logit to ``keys`` (B, k) tokens."""
    per_layer = []
    for block in blocks:
        index = keys.view(keys.shape[0], 1, -1, 1).expand(-1, block.k.shape[1], -1, block.k.shape[-1])
        k = block.k.gather(2, index)  # (B, H, k, D): the patch's keys
        logits = block.q @ k.transpose(-2, -1) / math.sqrt(block.q.shape[-1])  # (B, H, N, k), pre-softmax
        per_layer.append(torch.logsumexp(logits.float().mean(dim=(-2, -1)), dim=1))  # smooth max over heads
    return torch.logsumexp(torch.stack(per_layer, dim=1), dim=1)  # smooth max over layers


class AttentionFool:
    """Attention-Fool on ``eps`` patches (see the module docstring)."""

    def __init__(self, model: nn.Module, eps: float, p: dict) -> None:
        self.model = model
        self.count = budget_patches(eps)
        self.side = patch_size(model)
        self.tokens = token_model(model, "attention-fool")
        self.steps, self.step_size = int(p["steps"]), float(p["step_size"])
        self.weight, self.layer = float(p["kq_weight"]), int(p["attention_layer"])

    def run(self, images, labels, *, precision: Precision | str = Precision.FP32, info: dict | None = None):
        x = images.detach()
        indices = select_patches(self.model, x, self.count, self.layer, "attention-fool")
        mask = patch_mask(indices, x.shape[-1] // self.side, self.side)
        keys = indices + self.tokens.num_prefix_tokens
        delta = torch.rand_like(x)
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with precision_scope(precision, x.device):
            for _ in range(self.steps):
                active = torch.nonzero(~done).flatten()
                if active.numel() == 0:
                    break
                part = delta[active].requires_grad_(True)
                iterate = x[active] * (1 - mask[active]) + part * mask[active]
                final, blocks = logits_and_blocks(self.tokens, self.model, iterate)
                logits = final.float()
                loss = F.cross_entropy(logits, labels[active], reduction="sum")
                loss = loss + self.weight * kq_loss(blocks, keys[active]).sum()
                (grad,) = torch.autograd.grad(loss, part)
                record_fooled(best, done, active, iterate.detach(), logits.detach(), labels[active])
                delta[active] = (part.detach() + self.step_size * grad.sign()).clamp(0, 1)
        final = (x * (1 - mask) + delta * mask).clamp(0, 1)
        best[~done] = final[~done]
        if info is not None:
            info["patch_size"] = self.side
        return best.detach()
