"""ellrobust's ViT built from a checkpoint's shapes: ``-m vit -c FILE`` and ``-m vit-elliptical -c FILE``.

A timm/DeiT state dict says almost everything about its architecture: the width and patch size (the
patch projection), the depth (the block indices), the image size (the number of position
embeddings), the MLP ratio and the classes. It does not say the number of heads (the fused qkv
projection is the same matrix for any split into heads): that comes from ``--heads`` or from the
metadata that ``ellrobust train`` writes (or, for a transformers folder, its ``config.json``:
:mod:`ellrobust.models.huggingface`). Everything that is not a plain ViT/DeiT (with DeiT's
distillation token and DeiT-III's LayerScale) is refused by name, before any weight is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ellrobust.core.errors import CheckpointError, UsageError, quote
from ellrobust.models.architectures import MODELS
from ellrobust.models.vit import ViTConfig


@dataclass(frozen=True)
class Unsupported:
    """A ViT variant ``-m vit`` cannot build, recognised from the checkpoint's keys."""

    what: str
    present: Callable[[set[str]], bool]


def _any(pattern: str) -> Callable[[set[str]], bool]:
    regex = re.compile(pattern)
    return lambda keys: any(regex.search(k) for k in keys)


#: What is recognised and refused, in the words of the error message (timm's parameter names).
UNSUPPORTED: tuple[Unsupported, ...] = (
    Unsupported("register tokens (reg_token)", _any(r"^reg_token$")),
    Unsupported("no class token (cls_token)", lambda keys: "cls_token" not in keys),
    Unsupported("query/key norms (q_norm, k_norm)", _any(r"\.attn\.[qk]_norm\.")),
    Unsupported("a norm on the attention output (attn.norm)", _any(r"\.attn\.norm\.")),
    Unsupported("a norm inside the MLP (mlp.norm)", _any(r"\.mlp\.norm\.")),
    Unsupported("gated MLPs (SwiGLU)", _any(r"\.mlp\.(fc1_g|fc1_x|w12|w3)\.")),
    Unsupported(
        "BEiT-style attention (q_bias, v_bias, relative positions)", _any(r"\.attn\.(q_bias|v_bias|relative_position)")
    ),
    Unsupported("separate q, k, v projections (no attn.qkv)", _any(r"\.attn\.(q|k|v)_proj\.")),
    Unsupported(
        "a qkv projection without bias",
        lambda keys: "blocks.0.attn.qkv.weight" in keys and "blocks.0.attn.qkv.bias" not in keys,
    ),
    Unsupported(
        "norms without bias (RMSNorm)",
        lambda keys: "blocks.0.norm1.weight" in keys and "blocks.0.norm1.bias" not in keys,
    ),
    Unsupported("a norm before the blocks (norm_pre)", _any(r"^norm_pre\.")),
    Unsupported("a norm in the patch embedding (patch_embed.norm)", _any(r"^patch_embed\.norm\.")),
    Unsupported("a global-pool head (fc_norm)", _any(r"^fc_norm\.")),
    Unsupported("an attention-pool head (attn_pool)", _any(r"^attn_pool\.")),
    Unsupported("rotary position embeddings (rope)", _any(r"(^|\.)rope\.")),
    Unsupported("no classifier (head)", lambda keys: "head.weight" not in keys),
)

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def infer_config(
    state: Mapping[str, torch.Tensor], meta: Mapping[str, object], *, heads: int | None, source: str, hint: str = ""
) -> ViTConfig:
    """The :class:`ViTConfig` of a plain ViT/DeiT state dict (no elliptical layers: the caller sets them).

    Args:
        state: the checkpoint's weights, timm's key layout.
        meta: the checkpoint's metadata (JSON-decoded): its ``num_heads`` (or those of its registered
            ``arch``) when present.
        heads: ``--heads``; required unless the metadata records the heads, and must agree with it.
        source: how messages name the checkpoint.
        hint: appended to the message about unsupported variants (where to go instead).

    Raises:
        CheckpointError: the checkpoint is not a ViT this builder supports (one line naming every
            unsupported feature found), or its shapes do not fit together.
        UsageError: the heads are unknown, contradict the metadata, or do not divide the width.
    """
    keys = set(state)
    if "patch_embed.proj.weight" not in keys or "pos_embed" not in keys or not any(_BLOCK.match(k) for k in keys):
        raise CheckpointError(
            f"{source} is not a ViT state dict (no patch_embed.proj, pos_embed or blocks.N keys); "
            "`-m vit` builds timm-style ViT/DeiT checkpoints."
        )
    found = [u.what for u in UNSUPPORTED if u.present(keys)]
    if found:
        raise CheckpointError(f"{source} is a ViT variant `-m vit` does not support: {', '.join(found)}.{hint}")
    _check_limits(state, source)
    width, in_chans, patch, patch_w = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(_BLOCK.match(k).group(1)) for k in keys if _BLOCK.match(k))
    distilled = "dist_token" in keys
    prefix = 1 + int(distilled)
    tokens = state["pos_embed"].shape[1]
    grid, class_pos_embed = _grid(tokens, prefix)
    if patch != patch_w or grid is None:
        raise CheckpointError(
            f"{source}: non-square patches or position grid ({patch}×{patch_w} patches, {tokens} position embeddings) "
            "are not supported."
        )
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in keys else 4 * width
    config = {
        "img_size": grid * patch,
        "patch_size": patch,
        "in_chans": in_chans,
        "num_classes": state["head.weight"].shape[0],
        "embed_dim": width,
        "depth": depth,
        "num_heads": _heads(meta, heads, width, source),
        "mlp_ratio": hidden / width,
        "distilled": distilled,
        "layer_scale": "blocks.0.ls1.gamma" in keys,
        "class_pos_embed": class_pos_embed,
        "dist_head": not distilled or "head_dist.weight" in keys,
        "norm_eps": _norm_eps(meta, source),
    }
    if in_chans != 3:
        raise CheckpointError(f"{source} takes {in_chans}-channel images; ellrobust's datasets are RGB (3 channels).")
    cfg = ViTConfig(**config)
    if cfg.mlp_hidden != hidden:
        raise CheckpointError(
            f"{source}: an MLP of {hidden} for width {width} is not a ratio ellrobust's ViT can represent."
        )
    return cfg


#: Sane upper limits of a ViT's shapes, far above any published one (ViT-22B: depth 48, width 6144):
#: a checkpoint beyond them is damaged or not a ViT, and is refused before a single layer is allocated.
LIMITS = {"depth": 1024, "width": 65536, "classes": 1_000_000, "patch": 4096, "MLP width": 1_048_576}


def _check_limits(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse, naming the key, a shape beyond :data:`LIMITS` (``blocks.999999.norm1.weight``: a million blocks)."""
    found = [(k, "depth", int(m.group(1)) + 1) for k in state if (m := _BLOCK.match(k))]
    shape = state["patch_embed.proj.weight"].shape
    if len(shape) != 4:
        raise CheckpointError(f"{source}: patch_embed.proj.weight has shape {tuple(shape)}, not a 4-d convolution.")
    found += [("patch_embed.proj.weight", "width", shape[0]), ("patch_embed.proj.weight", "patch", shape[-1])]
    if "head.weight" in state:
        found.append(("head.weight", "classes", state["head.weight"].shape[0]))
    if "blocks.0.mlp.fc1.weight" in state:
        found.append(("blocks.0.mlp.fc1.weight", "MLP width", state["blocks.0.mlp.fc1.weight"].shape[0]))
    for key, what, value in found:
        if value > LIMITS[what]:
            raise CheckpointError(
                f"{source}: the key {quote(key)} means a {what} of {value:,}, above the {LIMITS[what]:,} any ViT "
                "has; the checkpoint is damaged or holds a stray key: remove the key or pass the right checkpoint."
            )


def _grid(tokens: int, prefix: int) -> tuple[int | None, bool]:
    """The side of the square patch grid, and whether the prefix tokens have position embeddings."""
    for count, with_prefix in ((tokens - prefix, True), (tokens, False)):
        side = int(round(max(count, 0) ** 0.5))
        if side > 0 and side * side == count:
            return side, with_prefix
    return None, True


def _norm_eps(meta: Mapping[str, object], source: str) -> float:
    """The LayerNorms' epsilon the metadata records (a converted transformers folder's), else timm's."""
    eps = meta.get("norm_eps", ViTConfig.norm_eps)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        raise CheckpointError(f"{source}: its metadata's norm_eps {eps!r} is not a LayerNorm epsilon in (0, 1).")
    return float(eps)


def _heads(meta: Mapping[str, object], heads: int | None, width: int, source: str) -> int:
    """``--heads``, else the metadata's; they must agree when both are known, and divide the width."""
    recorded = meta.get("num_heads")
    if recorded is None and isinstance(meta.get("arch"), str) and meta["arch"] in MODELS:
        recorded = MODELS.get(meta["arch"]).config.num_heads  # checkpoints of a registered architecture
    if heads is not None and recorded is not None and heads != recorded:
        raise UsageError(
            f"--heads {heads} contradicts {source}, whose metadata records {recorded} heads; drop --heads."
        )
    chosen = heads if heads is not None else recorded
    if chosen is None:
        usual = f" (timm's ViT/DeiT sizes use 64 channels per head: --heads {width // 64})" if width % 64 == 0 else ""
        raise UsageError(
            f"the number of attention heads is not in the shapes of {source} (width {width}); pass --heads{usual}."
        )
    if not isinstance(chosen, int) or chosen <= 0 or width % chosen:
        raise UsageError(f"--heads {chosen} does not divide the width {width} of {source}; pick a divisor of {width}.")
    return chosen
