"""Patch-Fool (Fu et al., ICLR 2022): the patches the model attends to most, rewritten freely.

Follows the official code (RICE-EIC/Patch-Fool, ``main.py``, vanilla Patch-Fool: ``--patch_select Attn
--attack_mode Attention --sparse_pixel_num 0``):

* **Selection**: the attention probabilities of one layer (``attention_layer``, the official
  ``--atten_select 4``), averaged over heads and over queries: the attention each patch *receives*;
  prefix tokens dropped; the ``k`` largest are attacked.
* **Loss**: cross-entropy, plus for every layer ``1 .. depth // 2 − 1`` an attention loss: the mean over all
  queries (the class token's included) of ``log`` of the head-averaged attention to the first selected
  patch. Each layer's gradient is projected off the cross-entropy's gradient when the two disagree
  (PCGrad, cosine < 0) and added with weight ``attention_weight`` (official 0.002).
* **Optimisation**: the selected patches are zeroed and replaced by a uniform random start, then Adam
  ascends the loss (``steps`` 250, learning rate decayed by 0.95 every 10 steps), pixels clamped to [0, 1].

Differs, and why:

* Pixels, not normalised tensors: the official Adam learning rate 0.22 is in ImageNet-normalised units;
  ``lr`` 0.05 is about 0.22 × ImageNet's std, in [0, 1] pixels (ellrobust normalises inside the model).
* The official PCGrad (``utils.py``) divides the dot product by ‖g_ce‖ instead of ‖g_ce‖²: its projection
  is not a projection unless ‖g_ce‖ = 1, and how much it removes scales with the gradient (the batch
  size, the input's units). The projection here is the one PCGrad defines, the same at any scale.
* An image keeps the first iterate that fools the model (the official code keeps the last iterate):
  later steps can only lose a success, never gain one. A fooled image then leaves the batch, so the
  losses are summed per image where the official code averages over the batch: Adam's steps do not
  change with the gradient's scale, and each image's steps stay its own.
* The attention of an elliptical layer is the one it computes, ``softmax((q ⊙ m) kᵀ / √D)``: ``m`` carries
  gradient under ``--m-grad full`` and none under ``detach`` (the paper's).
* Any patch size (read from the model), any depth; the attention layer is clipped to the model's depth.
  A model of 2 or 3 blocks, where the official layers ``1 .. depth // 2 − 1`` are none, keeps layer 1's
  attention loss: without one, Patch-Fool would be plain cross-entropy on the selected patches.

``benchmarks/patch_fool_official.py`` transcribes the official code line by line and compares the two on
the shipped digits models.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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


def attention_probabilities(block: BlockOutput) -> torch.Tensor:
    """The block's attention, (B, H, N, N): ``softmax(q kᵀ / √D)`` with the queries it used (``⊙ m`` if elliptical)."""
    return torch.softmax(block.q @ block.k.transpose(-2, -1) / math.sqrt(block.q.shape[-1]), dim=-1)


def received_attention(model: nn.Module, images: torch.Tensor, layer: int, attack: str) -> torch.Tensor:
    """(B, patches): the attention each patch receives at ``layer``, averaged over heads and queries."""
    tokens = token_model(model, attack)
    layer = min(layer, tokens.depth - 1)
    with torch.no_grad():
        for i, block in enumerate(tokens.iter_blocks(images)):
            if i == layer:
                return attention_probabilities(block).mean(dim=1).mean(dim=-2)[:, tokens.num_prefix_tokens :]
    raise AssertionError("unreachable: layer < depth")


def select_patches(model: nn.Module, images: torch.Tensor, count: int, layer: int, attack: str) -> torch.Tensor:
    """(B, count) token indices of the patches that receive the most attention at ``layer``."""
    return received_attention(model, images, layer, attack).argsort(dim=1, descending=True)[:, :count]


def attention_loss(block: BlockOutput, target: torch.Tensor) -> torch.Tensor:
    """(B,): per image, the mean over every query (prefix tokens' included) of ``log`` of the head-averaged
    attention it pays to token ``target`` (B,): the official per-layer loss before its batch mean."""
    attention = attention_probabilities(block).mean(dim=1)  # (B, N, N)
    picked = attention.gather(2, target.view(-1, 1, 1).expand(-1, attention.shape[1], 1))
    return picked.clamp_min(1e-30).log().mean(dim=(1, 2))


def pcgrad(attention: torch.Tensor, ce: torch.Tensor) -> torch.Tensor:
    """``attention`` (B, P) without its component against ``ce`` where the two disagree (cosine < 0)."""
    dot = (attention * ce).sum(1, keepdim=True)
    projected = attention - dot / ce.pow(2).sum(1, keepdim=True).clamp_min(1e-30) * ce
    return torch.where(dot < 0, projected, attention)


class PatchFool:
    """Patch-Fool on ``eps`` patches (see the module docstring)."""

    def __init__(self, model: nn.Module, eps: float, p: dict, attack: str = "patch-fool") -> None:
        self.model, self.attack = model, attack
        self.count = budget_patches(eps)
        self.side = patch_size(model)
        self.tokens = token_model(model, attack)
        self.steps, self.lr = int(p["steps"]), float(p["lr"])
        self.layer, self.weight = int(p["attention_layer"]), float(p["attention_weight"])

    def _gradient(self, x: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor, labels, target) -> tuple:
        """The ascent direction on ``delta`` and the iterate's logits."""
        delta = delta.detach().requires_grad_(True)
        final, blocks = logits_and_blocks(self.tokens, self.model, x * (1 - mask) + delta * mask)
        logits = final.float()
        ce = F.cross_entropy(logits, labels, reduction="sum")
        layers = range(1, max(2, self.tokens.depth // 2))
        grads = torch.autograd.grad([ce], [delta], retain_graph=True)[0]
        flat_ce = grads.flatten(1)
        total = flat_ce.clone()
        for i in layers:
            loss = attention_loss(blocks[i], target).sum()
            if loss.requires_grad:  # attention that no pixel moves (a constant key) has no gradient to add
                g = torch.autograd.grad([loss], [delta], retain_graph=True)[0].flatten(1)
                total += self.weight * pcgrad(g, flat_ce)
        return total.view_as(delta), logits.detach()

    def run(self, images, labels, *, precision: Precision | str = Precision.FP32, info: dict | None = None):
        x = images.detach()
        indices = select_patches(self.model, x, self.count, self.layer, self.attack)
        grid = x.shape[-1] // self.side
        mask = patch_mask(indices, grid, self.side)
        target = indices[:, 0] + self.tokens.num_prefix_tokens
        delta = torch.rand_like(x)
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        opt = torch.optim.Adam([delta.requires_grad_(True)], lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.95)
        with precision_scope(precision, x.device):
            for _ in range(self.steps):
                active = torch.nonzero(~done).flatten()
                if active.numel() == 0:
                    break
                grad, logits = self._gradient(x[active], delta[active], mask[active], labels[active], target[active])
                iterate = x[active] * (1 - mask[active]) + delta[active].detach() * mask[active]
                record_fooled(best, done, active, iterate, logits, labels[active])
                opt.zero_grad()
                delta.grad = torch.zeros_like(delta).index_copy_(0, active, -grad)
                opt.step()
                schedule.step()
                with torch.no_grad():
                    delta.clamp_(0, 1)
        final = (x * (1 - mask) + delta.detach() * mask).clamp(0, 1)
        best[~done] = final[~done]
        if info is not None:
            info["patch_size"] = self.side
        return best.detach()
