"""The registered architectures: ellrobust's DeiT family, each size baseline and elliptical, as data.

Below both :mod:`.zoo` (which builds and loads them) and :mod:`.infer` (which reads the heads of a
checkpoint's registered ``arch``), so neither has to import the other for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ellrobust.core.registry import Registry
from ellrobust.models.vit import ViTConfig


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
    d, h = c.embed_dim, c.mlp_hidden
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + (2 * d if c.layer_scale else 0)
    embed = c.in_chans * c.patch_size**2 * d + d + c.num_prefix_tokens * d + c.pos_embed_tokens * d
    heads = (1 + int(c.distilled and c.dist_head)) * (d * c.num_classes + c.num_classes)
    return embed + c.depth * block + 2 * d + heads


_SIZES = {
    # name: (img, patch, width, depth, heads, classes, description)
    "deit-nano": (32, 8, 32, 3, 2, 10, "test-sized DeiT for 32 px images (fast unit tests)"),
    "deit-micro": (32, 4, 96, 6, 3, 10, "CPU-sized DeiT for 32 px images (the embedded default)"),
    "deit-tiny": (224, 16, 192, 12, 3, 1000, "DeiT-Tiny (Touvron et al. 2021)"),
    "deit-small": (224, 16, 384, 12, 6, 1000, "DeiT-Small (Touvron et al. 2021)"),
    "deit-base": (224, 16, 768, 12, 12, 1000, "DeiT-Base (Touvron et al. 2021)"),
}


def _family(sizes: Mapping[str, tuple]) -> Registry[ModelSpec]:
    """Each size and its elliptical twin (elliptical attention in every block after the first, as in the paper)."""
    registry: Registry[ModelSpec] = Registry("model")
    for name, (img, patch, width, depth, heads, classes, desc) in sizes.items():
        base = ViTConfig(
            img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads, num_classes=classes
        )
        registry.add(name, ModelSpec(name, base, desc))
        ell = replace(base, elliptical_layers=tuple(range(1, depth)))
        ell_desc = f"{desc}, elliptical attention in layers 1–{depth - 1}"
        registry.add(f"{name}-elliptical", ModelSpec(f"{name}-elliptical", ell, ell_desc))
    return registry


MODELS: Registry[ModelSpec] = _family(_SIZES)
