"""The model zoo: registered architectures (variants as data), short names and shipped checkpoints."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from ellrobust.errors import UsageError
from ellrobust.models.checkpoint import load_weights, read_checkpoint
from ellrobust.models.vit import MGrad, VisionTransformer, ViTConfig
from ellrobust.registry import Registry, unknown_choice


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: a name, its config, and a line for ``ellrobust models``."""

    name: str
    config: ViTConfig
    description: str

    @property
    def elliptical(self) -> bool:
        return bool(self.config.elliptical_layers)

    def num_params(self) -> int:
        return _count(self.config)


def _count(c: ViTConfig) -> int:
    """Exact parameter count of the architecture, without building it."""
    d, h = c.embed_dim, int(c.embed_dim * c.mlp_ratio)
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    embed = c.in_chans * c.patch_size**2 * d + d + d + (c.num_patches + 1) * d
    return embed + c.depth * block + 2 * d + d * c.num_classes + c.num_classes


MODELS: Registry[ModelSpec] = Registry("model")

#: Short names resolve to the dataset's default size of the baseline or elliptical twin.
SHORT_NAMES = {"deit": "", "deit-elliptical": "-elliptical"}

_SIZES = {
    # name: (img, patch, width, depth, heads, classes, description)
    "deit-nano": (32, 8, 32, 3, 2, 10, "test-sized DeiT for 32 px images (fast unit tests)"),
    "deit-micro": (32, 4, 96, 6, 3, 10, "CPU-sized DeiT for 32 px images (the embedded default)"),
    "deit-tiny": (224, 16, 192, 12, 3, 1000, "DeiT-Tiny (Touvron et al. 2021)"),
    "deit-small": (224, 16, 384, 12, 6, 1000, "DeiT-Small (Touvron et al. 2021)"),
    "deit-base": (224, 16, 768, 12, 12, 1000, "DeiT-Base (Touvron et al. 2021)"),
}


def _register_family() -> None:
    for name, (img, patch, width, depth, heads, classes, desc) in _SIZES.items():
        base = ViTConfig(img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads, num_classes=classes)
        MODELS.add(name, ModelSpec(name, base, desc))
        ell = replace(base, elliptical_layers=tuple(range(1, depth)))
        MODELS.add(f"{name}-elliptical", ModelSpec(f"{name}-elliptical", ell, f"{desc}, elliptical attention in layers 1–{depth - 1}"))


_register_family()


@dataclass(frozen=True)
class ShippedCheckpoint:
    """A trained checkpoint that ships inside the package."""

    dataset: str
    arch: str
    filename: str

    @property
    def path(self) -> Path:
        return Path(str(resources.files("ellrobust.models") / "weights" / self.filename))

    def metadata(self) -> dict[str, object]:
        if not self.path.is_file():
            return {}
        _, meta = read_checkpoint(self.path)
        return {k: _maybe_json(v) for k, v in meta.items()}


SHIPPED: tuple[ShippedCheckpoint, ...] = (
    ShippedCheckpoint("digits", "deit-micro", "digits-deit-micro.safetensors"),
    ShippedCheckpoint("digits", "deit-micro-elliptical", "digits-deit-micro-elliptical.safetensors"),
)


def _maybe_json(value: str) -> object:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def shipped_checkpoint(dataset: str, arch: str) -> ShippedCheckpoint | None:
    for ck in SHIPPED:
        if ck.dataset == dataset and ck.arch == arch and ck.path.is_file():
            return ck
    return None


def default_checkpoint(name: str, *, dataset: str, default_arch: str) -> ShippedCheckpoint | None:
    """The shipped checkpoint a short name stands for on ``dataset``, if any (architectures have none)."""
    if name not in SHORT_NAMES:
        return None
    return shipped_checkpoint(dataset, resolve_name(name, default_arch=default_arch))


def resolve_name(name: str, *, default_arch: str = "deit-micro") -> str:
    """Map a short name (``deit``, ``deit-elliptical``) to an architecture; check any other name exists."""
    if name in SHORT_NAMES:
        return default_arch + SHORT_NAMES[name]
    if name not in MODELS:
        raise UsageError(unknown_choice("model", name, list(SHORT_NAMES) + MODELS.names()) + " List them with `ellrobust models`.")
    return name


def load_model(
    name: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    m_grad: MGrad | str = MGrad.DETACH,
    dataset: str = "digits",
    default_arch: str = "deit-micro",
    elliptical_layers: tuple[int, ...] | None = None,
    reset_head: bool = False,
):
    """Build a model, in eval mode, that takes [0, 1] images and returns logits.

    ``load_model("deit-elliptical")`` returns the shipped trained model for the embedded dataset
    (likewise ``"deit"``); an architecture name without ``checkpoint`` is randomly initialised.

    Args:
        name: an architecture (``ellrobust models``) or a short name resolved to ``default_arch``.
        checkpoint: weights to load strictly (``.safetensors`` or weights-only ``.pth``).
        num_classes: classifier size; defaults to the checkpoint's, else the architecture's.
        img_size: input size; position embeddings of a checkpoint are resampled to it.
        m_grad: ``"detach"`` (the paper) or ``"full"`` (gradients flow through the metric ``m``).
        dataset: whose shipped checkpoint a short name picks up when ``checkpoint`` is None.
        default_arch: the baseline architecture that short names resolve to.
        elliptical_layers: override which blocks are elliptical (elliptical architectures only).
        reset_head: keep a fresh classifier when the checkpoint's has another size.
    """
    arch = resolve_name(name, default_arch=default_arch)
    spec = MODELS.get(arch)
    if checkpoint is None:
        shipped = default_checkpoint(name, dataset=dataset, default_arch=default_arch)
        checkpoint = shipped.path if shipped else None
    state, meta = read_checkpoint(checkpoint) if checkpoint is not None else ({}, {})
    meta = {k: _maybe_json(v) for k, v in meta.items()}
    cfg = spec.config
    changes: dict[str, object] = {"m_grad": MGrad(m_grad)}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    elif "head.weight" in state:
        changes["num_classes"] = state["head.weight"].shape[0]
    if img_size is not None:
        changes["img_size"] = img_size
    if elliptical_layers is not None:
        if not spec.elliptical:
            raise UsageError(f"model {arch!r} is not elliptical; pick its '-elliptical' twin to set elliptical layers.")
        changes["elliptical_layers"] = tuple(elliptical_layers)
    for key in ("mean", "std"):
        if key in meta:
            changes[key] = tuple(meta[key])
    try:
        cfg = replace(cfg, **changes)
    except ValueError as exc:
        raise UsageError(f"invalid settings for model {arch!r}: {exc}.") from None
    model = VisionTransformer(cfg, initialize=checkpoint is None or reset_head)
    if checkpoint is not None:
        load_weights(model, state, reset_head=reset_head, source=f"checkpoint {str(checkpoint)!r}")
    return model.eval()
