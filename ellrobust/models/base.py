"""What the engine asks of a model, whatever built it: ellrobust's ViT, a timm or a torchvision classifier.

Every model is an ``nn.Module`` that takes float [0, 1] images (B, 3, S, S) and returns logits (its
normalisation is a layer inside it) and answers the :class:`Classifier` questions. A model whose
tokens can be probed for collapse is also a :class:`TokenModel`. Protocols, not a base class: the
engine checks capabilities, and ellrobust's ViT and the wrappers of other libraries stay unrelated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

    from ellrobust.models.vit import BlockOutput


@runtime_checkable
class Classifier(Protocol):
    """The contract of every model of a run.

    Attributes:
        is_elliptical: whether some attention layer is elliptical; only then does ``m_grad`` apply,
            and the model must also have ``set_m_grad(mode)``.
        input_size: the side of the images the model takes, or None when any size works.
    """

    @property
    def is_elliptical(self) -> bool: ...

    @property
    def input_size(self) -> int | None: ...

    def describe(self) -> dict:
        """The architecture as JSON-ready data, including which library built it (``library``).

        Part of every unit's identity and of run.json: the weights' digest alone does not identify
        a model (the same weights with other elliptical layers compute other logits).
        """
        ...


@runtime_checkable
class TokenModel(Protocol):
    """A transformer whose blocks' tokens the collapse probe can read.

    Attributes:
        depth: the number of blocks.
        num_prefix_tokens: tokens before the patches (class, distillation, register tokens): what
            ``--no-cls`` leaves out.
    """

    @property
    def depth(self) -> int: ...

    @property
    def num_prefix_tokens(self) -> int: ...

    def iter_blocks(self, images: torch.Tensor) -> Iterator[BlockOutput]:
        """[0, 1] images -> one :class:`BlockOutput` per block, in order, each computed when it is asked for."""
        ...


def has_tokens(module: object) -> bool:
    """Whether ``module`` exposes its blocks' tokens (a :class:`TokenModel`)."""
    return isinstance(module, TokenModel)


class NetTokens:
    """A wrapper's :class:`TokenModel` face when the module it wraps (``self.net``) has one.

    A wrapper (a normalisation in front, a mask of the logits behind) changes neither the blocks nor
    their tokens: ``depth``, ``num_prefix_tokens`` and ``iter_blocks`` are the wrapped module's, on the
    images the wrapper hands it (:meth:`net_input`: the images themselves unless overridden).
    """

    net: TokenModel

    def net_input(self, images: torch.Tensor) -> torch.Tensor:
        return images

    @property
    def depth(self) -> int:
        return int(self.net.depth)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.net.num_prefix_tokens)

    def iter_blocks(self, images: torch.Tensor) -> Iterator[BlockOutput]:
        return self.net.iter_blocks(self.net_input(images))
