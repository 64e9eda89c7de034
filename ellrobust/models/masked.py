"""A 1000-class ImageNet model evaluated on a dataset of fewer ImageNet classes: its logits of those classes.

ImageNet-R and ImageNet-A hold 200 of ImageNet's 1000 classes. Their reference evaluation
(Hendrycks et al.'s ``eval.py``, and timm's ``--class-map``/``imagenet_r_indices.txt``) keeps the
model's logits of the 200 classes, ``net(x)[:, indices_in_1k]``, and predicts the argmax among them:
a model is not blamed for a class the dataset cannot contain. :class:`MaskedLogits` is that selection
as a module, so that everything downstream sees a 200-class model: accuracy, every statistic, and
the attacks, which see the masked model that the reference code evaluates and take their gradients
through the selection (an untargeted attack must push the prediction to another of the 200 classes,
not to one that the dataset does not have).

The wrapper keeps its model's contract: ellipticity, ``m_grad``, input size, tokens for the collapse
probe; ``describe()`` adds the kept classes, so the mask is part of every unit's identity and of
run.json. The indices are a non-persistent buffer (they follow the model to its device and stay
out of its state dict: the weights' digest is the model's own).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ellrobust.models.base import NetTokens, has_tokens


class MaskedLogits(nn.Module):
    """``net``'s logits at ``indices``, in that order: label ``k`` of the dataset is ``net``'s class ``indices[k]``."""

    def __init__(self, net: nn.Module, indices: Sequence[int]) -> None:
        super().__init__()
        self.net = net
        self.kept = tuple(int(i) for i in indices)
        self.register_buffer("indices", torch.tensor(self.kept, dtype=torch.long), persistent=False)

    @property
    def is_elliptical(self) -> bool:
        return bool(self.net.is_elliptical)

    @property
    def input_size(self) -> int | None:
        return self.net.input_size

    def set_m_grad(self, mode: str) -> None:
        self.net.set_m_grad(mode)

    def describe(self) -> dict:
        return {**self.net.describe(), "logits_kept": list(self.kept)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, S, S) -> the kept logits (B, len(indices))."""
        return self.net(images).index_select(1, self.indices)


class MaskedTokenLogits(NetTokens, MaskedLogits):
    """A masked model whose blocks' tokens the collapse probe reads from the model itself."""


def mask_logits(net: nn.Module, indices: Sequence[int]) -> MaskedLogits:
    """``net`` behind :class:`MaskedLogits` (with its tokens when it has them)."""
    return (MaskedTokenLogits if has_tokens(net) else MaskedLogits)(net, indices)
