"""Any ``torch.nn.Module`` as a model of a run: what ``ellrobust.evaluate`` does with a module it is given.

A researcher's own network (an Elliptical-FAN, a Swin, a CNN from a notebook) rarely knows ellrobust's
:class:`~ellrobust.models.base.Classifier` contract. :func:`as_classifier` gives it one without asking
anything of its class:

* it takes float NCHW images in [0, 1] and returns logits; a module that expects normalised input
  gets its ``mean``/``std`` as a :class:`~ellrobust.models.vit.Normalize` layer *inside* the
  wrapper, as timm models do (:mod:`.external`), so attacks still work in [0, 1] pixels and every
  eps stays in pixel units;
* ``is_elliptical`` is False unless the module has an ``is_elliptical`` attribute that says so (it
  then needs ``set_m_grad(mode)``, the contract of every elliptical model); ``input_size`` is the
  module's ``input_size`` attribute if it declares one (:func:`declared_size`), else None (any size:
  the one-image check at loading tells);
* it exposes tokens for the collapse probe (:class:`~ellrobust.models.base.TokenModel`) when the
  module does (``depth``, ``num_prefix_tokens``, ``iter_blocks``), and for a timm VisionTransformer
  made of timm's standard blocks, read the way ``-m timm:NAME`` reads them;
* ``describe()`` names the module's class, its normalisation and its parameter count: with the
  digest of its weights, that is the model's identity in every unit key and in run.json.

A module that already satisfies the contract (ellrobust's own ViT, a model from
:func:`~ellrobust.models.zoo.load_model`, a user class with ``is_elliptical``, ``input_size`` and
``describe``) is used as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.models.base import Classifier, NetTokens, has_tokens
from ellrobust.models.external import TimmTokens, timm_has_tokens
from ellrobust.models.vit import Normalize

Triple = tuple[float, float, float]

#: ``library`` in ``describe()`` of a wrapped module: it came from the caller, not from a registry.
LIBRARY = "module"


class ModuleClassifier(nn.Module):
    """A caller's module behind the :class:`~ellrobust.models.base.Classifier` contract.

    Args:
        net: the caller's module, taking images as it expects them (normalised when ``mean`` is given).
        mean, std: the normalisation ``net`` expects, applied inside the wrapper; None: ``net`` takes
            [0, 1] images itself.
    """

    def __init__(self, net: nn.Module, *, mean: Triple | None = None, std: Triple | None = None) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std) if mean is not None else nn.Identity()
        self.net = net
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None

    @property
    def is_elliptical(self) -> bool:
        return bool(getattr(self.net, "is_elliptical", False))

    @property
    def input_size(self) -> int | None:
        return declared_size(self.net)

    def set_m_grad(self, mode: str) -> None:
        """Whether attacks differentiate through the elliptical metric: the module's own switch."""
        self.net.set_m_grad(mode)

    def describe(self) -> dict:
        cls = type(self.net)
        return {
            "library": LIBRARY,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "img_size": self.input_size,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "elliptical": self.is_elliptical,
            "params": sum(p.numel() for p in self.net.parameters()),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, S, S) -> logits (B, num_classes)."""
        return self.net(self.normalize(images))


class ModuleTokenClassifier(NetTokens, ModuleClassifier):
    """A wrapped module that exposes its blocks' tokens itself (a :class:`~ellrobust.models.base.TokenModel`)."""

    def net_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(images)


class TimmModuleClassifier(TimmTokens, ModuleClassifier):
    """A timm VisionTransformer given as a module: its tokens read as ``-m timm:NAME`` reads them."""


def as_classifier(module: object, name: str, *, mean: Triple | None = None, std: Triple | None = None) -> nn.Module:
    """``module`` as a model of a run, in eval mode: itself if it is a Classifier, else wrapped.

    Eval mode is what every evaluation measures (dropout off, batch norm on its running statistics);
    ``ellrobust.evaluate`` restores each submodule's mode when the run ends. The parameters'
    ``requires_grad`` is left as it is: attacks take gradients with respect to the images only
    (``torch.autograd.grad``), so no parameter's ``.grad`` is ever written, and the numbers do not
    depend on it.

    Args:
        module: what the caller gave.
        name: the model's name in the run, for messages.
        mean, std: the normalisation ``module`` expects (both or neither).

    Raises:
        UsageError: ``module`` is not an ``nn.Module``; a Classifier is given a normalisation (it
            takes [0, 1] images by contract); only one of mean and std; an elliptical module without
            ``set_m_grad``; an ``input_size`` that is not a positive whole number.
    """
    if not isinstance(module, nn.Module):
        raise not_a_model(name, module)
    if isinstance(module, Classifier):
        if mean is not None or std is not None:
            raise UsageError(
                f"model {name!r} ({type(module).__name__}) already has the Classifier contract: "
                "it takes [0, 1] images and "
                "normalises them itself; drop its mean and std."
            )
        return module.eval()
    if (mean is None) != (std is None):
        raise UsageError(f"model {name!r}: give both mean and std (the normalisation its module expects), or neither.")
    if has_tokens(module):
        wrapper = ModuleTokenClassifier
    elif type(module).__module__.startswith("timm.") and timm_has_tokens(module):
        wrapper = TimmModuleClassifier
    else:
        wrapper = ModuleClassifier
    model = wrapper(module, mean=mean, std=std)
    if model.is_elliptical and not callable(getattr(module, "set_m_grad", None)):
        raise UsageError(
            f"model {name!r} says it is elliptical (is_elliptical) but has no set_m_grad(mode); "
            "add one (mode 'detach' or "
            "'full': whether attacks differentiate through its metric) or drop is_elliptical."
        )
    try:
        declared_size(module)
    except ValueError:
        raise UsageError(
            f"model {name!r} declares input_size {module.input_size!r}; "
            "make it the side of its square images in pixels "
            "(224, or a shape such as (3, 224, 224)), or None for any size."
        ) from None
    return model.eval()


def declared_size(module: nn.Module) -> int | None:
    """The side of the images ``module`` says it takes: its ``input_size`` attribute, else None.

    Codebases write it as a side (224) or as a shape ((3, 224, 224), as timm's configs do); both are
    read. Raises ValueError for anything else (a non-square shape, a string, a negative side).
    """
    size = getattr(module, "input_size", None)
    if size is None:
        return None
    sides = [size] if isinstance(size, int) else list(size)[-2:] if isinstance(size, tuple | list) else [None]
    if len(set(sides)) != 1 or not isinstance(sides[0], int) or isinstance(sides[0], bool) or sides[0] <= 0:
        raise ValueError(size)
    return sides[0]


def not_a_model(name: str, value: object) -> UsageError:
    """The one line for a value that is no model: what it is, and what a model can be."""
    if isinstance(value, type):
        return UsageError(
            f"model {name!r} is the class {value.__name__}, not a model; pass an instance, {value.__name__}(...)."
        )
    kind = type(value).__name__
    return UsageError(
        f"model {name!r} is {'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}, not a model; give a registered name "
        "(see `ellrobust models`), a checkpoint path, "
        "or a torch.nn.Module that takes float (B, 3, S, S) images in [0, 1]."
    )
