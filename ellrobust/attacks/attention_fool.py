"""Attention-Fool (Lovisotto et al., CVPR 2022): a patch that pulls every query's attention onto itself.

"Give me your attention: dot-product attention considered harmful for adversarial patch robustness"
attacks the dot product itself. Softmax gradients vanish once attention saturates, so the loss is taken
*before* the softmax, on the query–key logits of every layer ``l`` and head ``h``.

Follows the paper (Sec. 5 and 6.1, as far as they could be checked, see below):

* **Logits**: ``B̃ = Q̃ K̃ᵀ / √D`` with queries and keys normalised per image and head by their mean row
  norm, ``Q̃ = Q / ((1/n) ‖Q‖₁,₂)`` (likewise ``K̃``), so that the logits of heads and layers of very
  different scales are commensurable before they are compared.
* **L_kq**: for the adversarial patch's key token ``j*``, ``L_kq^{hl}`` is the mean over all ``n``
  queries ``i`` (prefix tokens and the patch's own included) of ``B̃_{i j*}``; ``kq_queries = "class"``
  gives the paper's ``L_kq*``, the class token's query alone.
* **Aggregation**: a smooth maximum (log-sum-exp) over the heads of a layer, then over the layers, so
  the attack may win in whichever head and layer it can.
* **Objective**: ``cross-entropy + kq_weight · L_kq`` (weight 1), ascended by signed gradient steps
  whose size decays from ``step_size`` (8/255) to 0 on a cosine schedule over ``steps`` (250), the pixels
  of the patch free in [0, 1] from a uniform random start. ``momentum`` β > 0 is the paper's
  "+Mom" variant: the step follows the sign of ``m ← β m + (1 − β) g / ‖g‖₂``.

Differs, and why:

* **Placement**: the paper attacks a patch at a fixed position; here it goes on the patches that
  receive the most attention (Patch-Fool's selection, :func:`~.patch_fool.select_patches`), so that
  the two attention attacks differ only in their losses. Several patches: ``L_kq^{hl}`` is the mean
  over the patches' key tokens (the paper attacks one token).
* **Elliptical layers**: the logits are those the layer computes, its queries already multiplied by
  ``m`` (:meth:`~ellrobust.models.vit.VisionTransformer.iter_blocks`), so the loss goes through the
  elliptical metric. ``--m-grad full`` lets gradients flow through ``m`` too (the adaptive attack);
  ``detach`` is the paper's metric, computed without gradient.
* **Stopping**: an image keeps the first iterate that fools the model and leaves the batch then
  (every image's loss, momentum and steps are its own); the paper runs every step.

Defaults are the paper's recipe with momentum (its strongest variant). Tuned on the digits models (50
images, one patch), no variant tried was stronger on both models: no momentum, ``L_kq*``, ``kq_weight``
0, 0.1 or 10, a step size of 4/255, 16/255 or 0.1, or the selection layer 0, 2 or 5 (those that won on
one model lost on the other, by a few images each).

Checked against: the paper's text was not reachable from this project; the formulas above were
checked against a public reproduction that transcribes them from the paper (SujashB/Attention-Fool,
``utils.py``: the ‖·‖₁,₂ normalisation, ``L_kq`` and ``L_kq*``, log-sum-exp over heads then layers,
cosine-decayed PGD at 8/255 for 250 steps, normalised momentum β = 0.9). Its weight of 1 on ``L_kq``
and the cosine decay are that reproduction's reading (it marks the schedule as unconfirmed).

A timm VisionTransformer is read through the token interface the collapse probe uses; a model without
tokens is refused in one line.
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
from ellrobust.core.errors import UsageError
from ellrobust.core.precision import Precision, precision_scope
from ellrobust.models.vit import BlockOutput

#: The queries ``L_kq`` averages over: every token (the paper's ``L_kq``) or the class token (``L_kq*``).
QUERIES = ("all", "class")


def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, H, N, D) divided per image and head by its mean row norm ``(1/N) ‖x‖₁,₂`` (the paper's Sec. 5)."""
    return x / x.norm(dim=-1).mean(dim=-1).clamp_min(1e-12)[..., None, None]


def kq_loss(blocks: list[BlockOutput], keys: torch.Tensor, query: int | None = None) -> torch.Tensor:
    """Per image, ``L_kq``: log-sum-exp over layers of log-sum-exp over heads of the mean normalised logit.

    Args:
        blocks: every block's outputs; ``q`` are the queries the layer used (``⊙ m`` if elliptical).
        keys: (B, k) the patch's key tokens; the logit is averaged over them.
        query: None to average over every query (``L_kq``), or one token's index (``L_kq*``: 0, the class token).

    Returns:
        (B,) the loss of each image, in float32.
    """
    per_layer = []
    for block in blocks:
        q, k = normalise_rows(block.q.float()), normalise_rows(block.k.float())
        index = keys.view(keys.shape[0], 1, -1, 1).expand(-1, k.shape[1], -1, k.shape[-1])
        k = k.gather(2, index)  # (B, H, k, D): the patch's keys
        if query is not None:
            q = q[:, :, query : query + 1]
        logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, queries, k), pre-softmax
        per_layer.append(torch.logsumexp(logits.mean(dim=(-2, -1)), dim=1))  # smooth max over heads
    return torch.logsumexp(torch.stack(per_layer, dim=1), dim=1)  # smooth max over layers


def cosine_step(step_size: float, t: int, steps: int) -> float:
    """The step size at step ``t`` of ``steps``: ``step_size`` decayed to 0 on a half cosine."""
    return step_size * 0.5 * (1 + math.cos(math.pi * t / steps))


def _checked(p: dict) -> tuple[int, float, float, float, str]:
    """The attack's parameters, each refused in one line when no attack could use it."""
    steps, step_size = int(p["steps"]), float(p["step_size"])
    weight, momentum, queries = float(p["kq_weight"]), float(p["momentum"]), str(p["kq_queries"])
    if not step_size > 0 or not math.isfinite(step_size):
        raise UsageError(f"attention-fool: step_size must be a positive number of [0, 1] pixels (got {step_size:g}).")
    if not 0 <= momentum < 1:
        raise UsageError(f"attention-fool: momentum must be in [0, 1), such as 0.9 (got {momentum:g}).")
    if not weight >= 0 or not math.isfinite(weight):
        raise UsageError(f"attention-fool: kq_weight must be a number ≥ 0 (got {weight:g}).")
    if queries not in QUERIES:
        raise UsageError(f"attention-fool: kq_queries must be one of {', '.join(QUERIES)} (got {queries!r}).")
    return steps, step_size, weight, momentum, queries


class AttentionFool:
    """Attention-Fool on ``eps`` patches (see the module docstring)."""

    def __init__(self, model: nn.Module, eps: float, p: dict) -> None:
        self.model = model
        self.count = budget_patches(eps)
        self.side = patch_size(model)
        self.tokens = token_model(model, "attention-fool")
        self.steps, self.step_size, self.weight, self.momentum, queries = _checked(p)
        self.layer = int(p["attention_layer"])
        self.query = None if queries == "all" else 0
        if self.query is not None and self.tokens.num_prefix_tokens == 0:
            raise UsageError(
                "attention-fool: kq_queries = 'class' needs a class token; this model has none: use 'all'."
            )

    def objective(self, iterate: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> tuple:
        """Per image, ``cross-entropy + kq_weight · L_kq`` at ``iterate``, and the logits (float32)."""
        final, blocks = logits_and_blocks(self.tokens, self.model, iterate)
        logits = final.float()
        loss = F.cross_entropy(logits, labels, reduction="none")
        if self.weight:
            loss = loss + self.weight * kq_loss(blocks, keys, self.query)
        return loss, logits

    def _direction(self, grad: torch.Tensor, velocity: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The ``active`` images' ascent direction: the gradient, or its normalised momentum (updated in place)."""
        if not self.momentum:
            return grad
        unit = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        velocity[active] = self.momentum * velocity[active] + (1 - self.momentum) * unit
        return velocity[active]

    def run(self, images, labels, *, precision: Precision | str = Precision.FP32, info: dict | None = None):
        """The adversarial images; ``info`` gets ``patch_size`` and each image's objective at its first and last step
        (``objective_first``, ``objective_last``: NaN for an image never attacked), so a caller sees the loss move."""
        x = images.detach()
        indices = select_patches(self.model, x, self.count, self.layer, "attention-fool")
        mask = patch_mask(indices, x.shape[-1] // self.side, self.side)
        keys = indices + self.tokens.num_prefix_tokens
        delta, velocity = torch.rand_like(x), torch.zeros_like(x)
        best = x.clone()
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        first, last = torch.full((2, len(x)), math.nan, device=x.device)
        with precision_scope(precision, x.device):
            for t in range(self.steps):
                active = torch.nonzero(~done).flatten()
                if active.numel() == 0:
                    break
                part = delta[active].requires_grad_(True)
                iterate = x[active] * (1 - mask[active]) + part * mask[active]
                loss, logits = self.objective(iterate, labels[active], keys[active])
                (grad,) = torch.autograd.grad(loss.sum(), part)
                last[active] = loss.detach()
                first[active] = torch.where(first[active].isnan(), loss.detach(), first[active])
                record_fooled(best, done, active, iterate.detach(), logits.detach(), labels[active])
                step = cosine_step(self.step_size, t, self.steps) * self._direction(grad, velocity, active).sign()
                delta[active] = (part.detach() + step).clamp(0, 1)
        final = (x * (1 - mask) + delta * mask).clamp(0, 1)
        best[~done] = final[~done]
        if info is not None:
            info.update(patch_size=self.side, objective_first=first.cpu(), objective_last=last.cpu())
        return best.detach()
