"""SPSA (Uesato et al. 2018) with its forward passes sized to the memory that is free.

The algorithm is advertorch's, as torchattacks ships it: per iteration, ``samples`` Rademacher
directions ``v`` (each shared by every image of the batch), the finite difference of the marginal
loss ``f(x + δv) − f(x − δv)`` along each, the gradient estimate ``Σ_v (f(x + δv) − f(x − δv)) /
(2δv) / samples``, one Adam step on the perturbation, then the L∞ and [0, 1] clamp. It costs
2 × samples × steps forward passes per image.

torchattacks evaluates ``max_batch_size`` directions × the whole image batch in one pass: 64 × 128 =
8192 images of 224 px at the default settings, more than a 16 GB GPU holds. Here an iteration draws
all its directions first, so the estimate does not depend on how the work is cut (up to the order of
floating-point sums), and evaluates the (direction, image) pairs in passes of as many images as the
free memory holds (:mod:`ellrobust.attacks.memory`), halving on CUDA OOM. ``max_batch_size`` keeps
torchattacks' meaning as an upper bound: at most that many directions per pass.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ellrobust.attacks.cascade import evaluating
from ellrobust.attacks.memory import PassSize, images_per_pass
from ellrobust.core.precision import Precision, precision_scope


def objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What SPSA minimises, per image: minus advertorch's marginal loss (largest other logit − true logit)."""
    logits = logits.float()
    top, classes = torch.topk(logits, 2, dim=-1)
    true = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    other = torch.where(classes[:, 0] == labels, top[:, 1], top[:, 0])
    return -(other - true)


class SPSA:
    """SPSA, L∞, untargeted.

    Args:
        model: maps [0, 1] images to logits.
        eps: L∞ budget.
        delta: finite-difference step.
        lr: Adam's learning rate on the perturbation.
        steps: iterations.
        samples: directions per iteration.
        max_batch_size: at most this many directions in one pass (torchattacks' parameter).
        seed: seeds the directions.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        delta: float,
        lr: float,
        steps: int,
        samples: int,
        max_batch_size: int,
        seed: int,
    ):
        self.model = model
        self.eps, self.delta, self.lr = float(eps), float(delta), float(lr)
        self.steps, self.samples, self.max_batch_size = int(steps), int(samples), int(max_batch_size)
        self.seed = int(seed)

    def run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        precision: Precision | str = Precision.FP32,
        info: dict | None = None,
    ) -> torch.Tensor:
        """Attack ``images`` in [0, 1]; records ``info["spsa_images_per_forward"]``."""
        with evaluating(self.model):
            adv, used = self._run(images.detach(), labels.detach(), precision)
        if info is not None:
            info["spsa_images_per_forward"] = used
        return adv

    def _run(self, x: torch.Tensor, y: torch.Tensor, precision: Precision | str) -> tuple[torch.Tensor, int]:
        n = len(x)
        if n == 0:
            return x.clone(), 0
        pairs = self.samples * n  # (direction, image); each costs two images in a pass, x + δv and x − δv
        image_bytes = x[0].numel() * x.element_size()
        per_forward = images_per_pass(
            self.model,
            x,
            grad=False,
            extra_bytes_per_image=2 * image_bytes,
            upper=2 * min(self.samples, self.max_batch_size) * n,
            precision=precision,
        )
        size = PassSize(max(1, per_forward // 2))
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        dx = torch.zeros_like(x)
        dx.grad = torch.zeros_like(dx)
        optimizer = torch.optim.Adam([dx], lr=self.lr)
        for _ in range(self.steps):
            optimizer.zero_grad()
            # as torchattacks: bernoulli_() · 2 − 1, one direction for every image of the batch
            v = torch.empty((self.samples, *x.shape[1:]), device=x.device, dtype=x.dtype).bernoulli_(
                0.5, generator=generator
            )
            v = v.mul_(2.0).sub_(1.0)
            parts = size.map(partial(self._differences, x + dx, y, v, precision), pairs)
            df = torch.cat(parts).view(self.samples, n)  # f(x + δv) − f(x − δv), direction-major
            # Σ over directions of df / (2δv), as one product: v = ±1, so dividing by v is multiplying by it
            grad = torch.einsum("sn,sd->nd", df / (2.0 * self.delta), v.flatten(1)).view_as(x)
            dx.grad = grad / self.samples
            optimizer.step()
            with torch.no_grad():
                clamped = torch.clamp(x + torch.clamp(dx, min=-self.eps, max=self.eps), min=0, max=1)
                dx += clamped - x - dx
        return (x + dx).detach(), 2 * min(size.limit, pairs)

    def _differences(
        self, adv: torch.Tensor, y: torch.Tensor, v: torch.Tensor, precision: Precision | str, start: int, stop: int
    ) -> torch.Tensor:
        """``f(x + δv) − f(x − δv)`` for pairs ``start:stop`` (pair = direction × images + image), in one pass."""
        pairs = torch.arange(start, stop, device=adv.device)
        direction, image = pairs // len(adv), pairs % len(adv)
        step = self.delta * v[direction]
        points = torch.cat((adv[image] + step, adv[image] - step))
        with torch.no_grad(), precision_scope(precision, adv.device):
            logits = self.model(points)
        loss = objective(logits, torch.cat((y[image], y[image])))
        return loss[: len(pairs)] - loss[len(pairs) :]
