"""Attacks run one after another on what the previous ones left robust (AutoAttack's scheme).

A cascade attacks the images its model classifies correctly with the first attack, judges the
results, and hands only the images still classified correctly to the next attack; an image counts
as broken by the first attack that fools the model. Judgements are strict fp32 forward passes
(:func:`ellrobust.core.precision.precision_scope` with ``fp32``) whatever precision the attacks'
iterations run in, so a lower precision can weaken the cascade but never let a later attack skip an
image that is not broken.

Each component is timed and counted, so a run can say where its time went:
``info["components"][name] = {"seconds", "attacked", "broken"}`` for this batch, in cascade order,
with every component listed (``attacked`` 0 when nothing was left to attack).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ellrobust.core.precision import Precision, fp32_predictions, precision_scope


class Attack(Protocol):
    """What every registered attack builds: ``run`` maps [0, 1] images to adversarial [0, 1] images."""

    def run(
        self, images: torch.Tensor, labels: torch.Tensor, *, precision: Precision | str = ..., info: dict | None = ...
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class Torchattack:
    """A torchattacks attack behind :class:`Attack`: its iterations in the requested precision."""

    attack: object  # a torchattacks.Attack

    def run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        precision: Precision | str = Precision.FP32,
        info: dict | None = None,
    ) -> torch.Tensor:
        self.attack.set_model_training_mode(model_training=False)
        with precision_scope(precision, images.device):
            return self.attack(images, labels).detach()


class Float32Logits(nn.Module):
    """``model`` with float32 logits under any autocast, for the attacks' losses and bookkeeping.

    Under bf16 autocast a model returns bfloat16 logits. Losses computed from them in bfloat16 keep 8
    bits, and torchattacks' APGD-T hands its losses to NumPy, which has no bfloat16 (a TypeError that
    stopped every ``apgd-t``, ``apgd`` and ``autoattack`` unit in bf16). The cast is a no-op in fp32.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float()


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the enclosed attack (dropout off, norms frozen), its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Cascade:
    """Named attacks run in order, each on the images all earlier ones left robust.

    Args:
        model: the model all components attack (its fp32 forward passes judge every image).
        components: (name, attack) pairs, in the order they run.
    """

    model: nn.Module
    components: Sequence[tuple[str, Attack]]

    def run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        precision: Precision | str = Precision.FP32,
        info: dict | None = None,
    ) -> torch.Tensor:
        """The adversarial images (clean where no component broke the image); fills ``info["components"]``."""
        device = images.device
        with evaluating(self.model):
            images, labels = images.detach(), labels.detach()
            adv = images.clone()
            robust = fp32_predictions(self.model, images) == labels
            stats: dict[str, dict[str, float | int]] = {}
            for name, attack in self.components:
                _sync(device)
                start = time.perf_counter()
                todo = torch.where(robust)[0]
                broken = 0
                if len(todo):
                    out = attack.run(images[todo], labels[todo], precision=precision)
                    fooled = fp32_predictions(self.model, out) != labels[todo]
                    hit = todo[fooled]
                    adv[hit] = out[fooled]
                    robust[hit] = False
                    broken = int(fooled.sum())
                _sync(device)
                stats[name] = {"seconds": time.perf_counter() - start, "attacked": len(todo), "broken": broken}
        if info is not None:
            info.setdefault("components", {}).update(stats)
        return adv
