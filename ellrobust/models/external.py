"""Classifiers from other libraries as baselines: ``-m timm:NAME`` and ``-m torchvision:NAME``.

(``hf:DIR`` registers in :mod:`.zoo`, ``robustbench:NAME`` in :mod:`.robustbench_zoo`.)

A prefix names a library (a registry: ``PREFIXES``); the rest of the model name is that library's
own name for an architecture, e.g. ``timm:vit_base_patch16_224.augreg_in21k_ft_in1k`` or
``torchvision:resnet50``. The library builds the architecture without weights (nothing is
downloaded) and the weights come from a local file, read by the same safe reader and loaded as
strictly as ellrobust's own checkpoints. The library's network is wrapped so that it keeps
ellrobust's contract (:mod:`ellrobust.models.base`): it takes [0, 1] images and normalises them
itself, with the mean and std of the model's pretrained configuration (timm's ``pretrained_cfg``,
torchvision's weight enum) unless ``--mean/--std`` say otherwise.

These models are baselines: none of them is elliptical, so ``m_grad`` never applies. timm's
VisionTransformers also expose their blocks' tokens for the collapse probe.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry
from ellrobust.models.checkpoint import load_strict, read_checkpoint
from ellrobust.models.vit import BlockOutput, Normalize

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class ExternalRequest:
    """What to build: the library's model name and the settings that override its pretrained config.

    Attributes:
        name: the library's name for the architecture (after the prefix).
        checkpoint: local weights, or None for the library's random initialisation.
        num_classes: classifier size; None keeps the library's default.
        img_size: the side of the images the model will take; None: its pretrained config's. Models
            with a fixed input size (ViTs) are built for it.
        mean, std: normalisation; None: the pretrained config's.
        model_dir: the folder of a model zoo's weights (``--model-dir``; ``robustbench:``).
    """

    name: str
    checkpoint: str | os.PathLike | None = None
    num_classes: int | None = None
    img_size: int | None = None
    mean: Triple | None = None
    std: Triple | None = None
    model_dir: str | os.PathLike | None = None


@dataclass(frozen=True)
class ModelPrefix:
    """A library whose classifiers ``-m PREFIX:NAME`` evaluates.

    ``weights``: for a prefix whose models carry their weights without ``--checkpoint`` (``hf:DIR``,
    ``robustbench:NAME``), where a request's weights are read from (run.json's ``weights``).
    """

    prefix: str
    description: str
    example: str
    build: Callable[[ExternalRequest], nn.Module]
    weights: Callable[[ExternalRequest], str] | None = None


PREFIXES: Registry[ModelPrefix] = Registry("model prefix")


class ExternalClassifier(nn.Module):
    """A library's classifier behind ellrobust's contract: [0, 1] images in, logits out, never elliptical.

    Args:
        net: the library's model, taking normalised images.
        library: ``timm`` or ``torchvision``.
        name: the library's name for the architecture.
        mean, std: the normalisation applied inside the model.
        input_size: the side of the images it takes (None: any).
        num_classes: its classifier size.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        library: str,
        name: str,
        mean: Triple,
        std: Triple,
        input_size: int | None,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.library = library
        self.name = name
        self.mean, self.std = tuple(mean), tuple(std)
        self._input_size = input_size
        self.num_classes = num_classes

    @property
    def is_elliptical(self) -> bool:
        return False

    @property
    def input_size(self) -> int | None:
        return self._input_size

    def describe(self) -> dict:
        return {
            "library": self.library,
            "name": self.name,
            "class": type(self.net).__name__,
            "num_classes": self.num_classes,
            "img_size": self._input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "params": sum(p.numel() for p in self.net.parameters()),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, S, S) -> logits (B, num_classes)."""
        return self.net(self.normalize(images))


class TimmTokens:
    """The token protocol of a wrapper around a timm ``VisionTransformer`` (``self.net``) that
    normalises its [0, 1] images itself (``self.normalize``): one definition for a ``-m timm:NAME``
    model and for a timm module handed to ``ellrobust.evaluate``."""

    net: nn.Module
    normalize: nn.Module

    @property
    def depth(self) -> int:
        return len(self.net.blocks)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.net.num_prefix_tokens)

    def iter_blocks(self, images: torch.Tensor) -> Iterator[BlockOutput]:
        return iter_timm_blocks(self.net, self.normalize(images))


class TimmVisionTransformer(TimmTokens, ExternalClassifier):
    """A timm ``VisionTransformer`` whose blocks' tokens the collapse probe reads.

    :meth:`iter_blocks` runs timm's own modules in timm's order (patch embedding, prefix tokens
    and positions, ``norm_pre``, each block, ``norm``) and keeps each block's residual stream, its
    attention branch, and the queries, keys and values of its attention (one more ``attn.qkv`` on
    the block's normed input: the fused attention does not return them). Only timm's standard
    ``Block`` with its standard ``Attention`` qualifies (:func:`timm_has_tokens`), so that the block
    written out here is the block timm runs; ``tests/test_external_models.py`` checks the final
    tokens against ``forward_features``.
    """

    def forward_blocks(self, images: torch.Tensor) -> tuple[torch.Tensor, list[BlockOutput]]:
        """Every block's outputs kept, and the final normed tokens (timm's ``forward_features``)."""
        outs = list(self.iter_blocks(images))
        return self.net.norm(outs[-1].x), outs


def iter_timm_blocks(net: nn.Module, images: torch.Tensor) -> Iterator[BlockOutput]:
    """The blocks of a timm VisionTransformer (:func:`timm_has_tokens`), in timm's order.

    ``images`` are what ``net`` takes (normalised). Shared by :class:`TimmVisionTransformer` and a timm
    ViT given to ``ellrobust.evaluate`` as a module (:mod:`.module`).
    """
    x = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(images))))  # (B, N, C)
    for blk in net.blocks:
        h = blk.norm1(x)
        attn = blk.attn
        B, N, _ = h.shape
        q, k, v = attn.qkv(h).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)  # (B, H, N, D) each, as the attention uses them
        a = blk.drop_path1(blk.ls1(attn(h)))
        x = x + a
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        yield BlockOutput(x=x, attn_out=a, attn_in=h, q=q, k=k, v=v, m=None)


def timm_has_tokens(net: nn.Module) -> bool:
    """Whether ``net`` is a timm VisionTransformer made of timm's standard blocks (see
    :class:`TimmVisionTransformer`)."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(net, VisionTransformer):
        return False
    return all(
        type(b) is Block and type(b.attn) is Attention and getattr(b.attn, "gate", None) is None for b in net.blocks
    )


def _import_timm():
    try:
        import timm
    except ImportError:
        raise UsageError("timm models need the timm package: pip install 'ellrobust[timm]'.") from None
    return timm


def _unknown(library: str, name: str, names: list[str], listing: str) -> UsageError:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(f'{library}:{c}') for c in close)}?" if close else ""
    return UsageError(f"unknown {library} model {name!r}.{hint} List them with `{listing}`.")


def _square(size: tuple[int, ...] | list[int] | int | None) -> int | None:
    """An input size from a library's config: the side of a square image, else None."""
    if size is None:
        return None
    sides = [size] if isinstance(size, int) else list(size)[-2:]
    return int(sides[0]) if len(set(sides)) == 1 else None


def _normalisation(req: ExternalRequest, label: str, mean: Triple | None, std: Triple | None) -> tuple[Triple, Triple]:
    """``--mean/--std`` when given, else the pretrained config's; neither is an error naming the flags."""
    mean, std = req.mean or mean, req.std or std
    if mean is None or std is None:
        raise UsageError(
            f"model {label!r} has no pretrained configuration to take its normalisation from; pass --mean and --std."
        )
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _load_checkpoint(model: ExternalClassifier, req: ExternalRequest, label: str) -> ExternalClassifier:
    if req.checkpoint is not None:
        state, _ = read_checkpoint(req.checkpoint)
        fix = (
            f"Check that {label!r} is the checkpoint's architecture "
            "(and --img-size, if the weights were trained at another size)."
        )
        load_strict(model.net, state, source=f"checkpoint {str(req.checkpoint)!r}", fix=fix)
    return model.eval()


def build_timm(req: ExternalRequest) -> nn.Module:
    """A timm classifier (``timm.create_model(name, pretrained=False)``) with local weights."""
    timm = _import_timm()
    from timm.models import get_pretrained_cfg, split_model_name_tag

    label = f"timm:{req.name}"
    arch, _ = split_model_name_tag(req.name)
    if not timm.is_model(arch):
        raise _unknown("timm", req.name, timm.list_models(), 'python -c "import timm; print(timm.list_models())"')
    try:
        cfg = get_pretrained_cfg(req.name)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise UsageError(
            f"model {label!r}: {exc} "
            f"List the tags with `python -c \"import timm; print(timm.list_pretrained('{arch}*'))\"`."
        ) from None
    pretrained_size = _square(cfg.input_size) if cfg is not None else None
    mean, std = _normalisation(req, label, cfg.mean if cfg else None, cfg.std if cfg else None)
    kwargs: dict[str, object] = {"pretrained": False}
    if req.num_classes is not None:
        kwargs["num_classes"] = req.num_classes
    fixed = bool(cfg is not None and cfg.fixed_input_size)
    if fixed and req.img_size is not None and req.img_size != pretrained_size:
        kwargs["img_size"] = req.img_size  # a ViT's position embeddings are built for one grid
    try:
        net = timm.create_model(req.name, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise UsageError(f"timm could not build {label!r} with {kwargs} ({type(exc).__name__}: {exc}).") from None
    input_size = req.img_size or pretrained_size
    num_classes = int(getattr(net, "num_classes", req.num_classes or 0))
    wrapper = TimmVisionTransformer if timm_has_tokens(net) else ExternalClassifier
    model = wrapper(
        net, library="timm", name=req.name, mean=mean, std=std, input_size=input_size, num_classes=num_classes
    )
    return _load_checkpoint(model, req, label)


def build_torchvision(req: ExternalRequest) -> nn.Module:
    """A torchvision classifier (``torchvision.models.get_model(name, weights=None)``) with local weights.

    The pretrained configuration is the default weight enum's transforms (crop size, mean, std):
    metadata that ships with torchvision, so reading it downloads nothing.
    """
    from torchvision import models

    label = f"torchvision:{req.name}"
    names = models.list_models(module=models)  # the classifiers (detection, segmentation, video live in submodules)
    if req.name not in names:
        raise _unknown(
            "torchvision", req.name, names, 'python -c "import torchvision; print(torchvision.models.list_models())"'
        )
    try:
        transforms = models.get_model_weights(req.name).DEFAULT.transforms()
        mean, std, size = tuple(transforms.mean), tuple(transforms.std), _square(transforms.crop_size)
    except (ValueError, AttributeError, TypeError):
        mean = std = size = None
    mean, std = _normalisation(req, label, mean, std)
    kwargs: dict[str, object] = {"weights": None}
    if req.num_classes is not None:
        kwargs["num_classes"] = req.num_classes
    try:
        net = models.get_model(req.name, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"torchvision could not build {label!r} with {kwargs} ({type(exc).__name__}: {exc})."
        ) from None
    num_classes = req.num_classes or _classes_of(net)
    model = ExternalClassifier(
        net,
        library="torchvision",
        name=req.name,
        mean=mean,
        std=std,
        input_size=req.img_size or size,
        num_classes=num_classes,
    )
    return _load_checkpoint(model, req, label)


def _classes_of(net: nn.Module) -> int:
    """The classifier size of a torchvision model: the output size of its last linear layer."""
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return int(linear[-1].out_features) if linear else 0


PREFIXES.add(
    "timm",
    ModelPrefix(
        "timm",
        "any timm classifier as a baseline, built without weights (pip install 'ellrobust[timm]'); "
        "timm ViTs expose tokens for collapse",
        "-m timm:deit_small_patch16_224 -c deit_small.safetensors",
        build_timm,
    ),
)
PREFIXES.add(
    "torchvision",
    ModelPrefix(
        "torchvision",
        "any torchvision classifier (torchvision.models) as a baseline, built without weights",
        "-m torchvision:resnet50 -c resnet50.pth",
        build_torchvision,
    ),
)


def split_prefix(name: str) -> tuple[ModelPrefix, str] | None:
    """``(prefix, library name)`` of a prefixed model name, None for ellrobust's own names."""
    prefix, sep, rest = name.partition(":")
    if not sep:
        return None
    entry = PREFIXES.get(prefix)
    if not rest:
        raise UsageError(f"model {name!r} names no {prefix} model; write {entry.example.split()[1]!r}.")
    return entry, rest
