"""transformers' ViT and DeiT folders as ellrobust's ViT: ``-m hf:DIR``, ``-m vit-elliptical -c DIR``.

A folder saved by ``save_pretrained`` of ``ViTForImageClassification``, ``DeiTForImageClassification``
or ``DeiTForImageClassificationWithTeacher`` holds ``config.json`` and its weights
(``model.safetensors``, else ``pytorch_model.bin`` read weights-only). This module reads both by
itself, without transformers and without any code from the folder, and rewrites the weights into
timm's layout (the query, key and value projections fused into ``attn.qkv``), so that the folder
builds ellrobust's ViT, and its elliptical twin from the same weights, like any timm checkpoint.

The metadata it returns says what the shapes do not: the heads, the LayerNorms' epsilon and the
normalisation (``preprocessor_config.json``'s ``image_mean``/``image_std``, else ImageNet's). A
configuration ellrobust's ViT would compute differently is refused in one line naming the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ellrobust.core.errors import CheckpointError
from ellrobust.models.checkpoint import mismatch_report, read_checkpoint
from ellrobust.models.vit import IMAGENET_MEAN, IMAGENET_STD

#: The classifiers this module converts, by ``architectures[0]`` of config.json: the weights' prefix,
#: and each classifier's name in the file with its name in timm's layout.
ARCHITECTURES: dict[str, tuple[str, dict[str, str]]] = {
    "ViTForImageClassification": ("vit", {"classifier": "head"}),
    "DeiTForImageClassification": ("deit", {"classifier": "head"}),
    "DeiTForImageClassificationWithTeacher": (
        "deit",
        {"cls_classifier": "head", "distillation_classifier": "head_dist"},
    ),
}
#: Weight files, in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: A block's modules: transformers' name -> timm's (the query, key and value are fused apart).
BLOCK_NAMES = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def is_transformers_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a ``config.json``: what ``-c DIR`` reads as a transformers model."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_transformers_folder(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """A transformers ViT/DeiT folder's weights in timm's layout, and the metadata its shapes lack.

    Returns:
        The state dict (timm's key names) and the metadata :func:`~ellrobust.models.infer.infer_config`
        reads: ``num_heads``, ``norm_eps``, ``mean``, ``std``, and the ``transformers_class``.

    Raises:
        CheckpointError: no config.json or weights, an unsupported class or configuration (naming the
            field), or weights that do not fit the configuration (naming the keys).
    """
    folder = Path(folder)
    label = f"transformers folder {str(folder)!r}"
    config = _json(folder / "config.json", label)
    cls = _supported_class(config, label)
    heads = _check_config(config, label)
    state, _ = read_checkpoint(_weights_file(folder, label))
    prefix, classifiers = ARCHITECTURES[cls]
    qkv_bias = config.get("qkv_bias", True) is not False
    timm_state = _to_timm(state, prefix, classifiers, config["num_hidden_layers"], qkv_bias=qkv_bias, label=label)
    width = timm_state["patch_embed.proj.weight"].shape[0]
    if width != config["hidden_size"]:
        raise CheckpointError(
            f"{label}: its weights are {width} wide, not config.json's hidden_size {config['hidden_size']}."
        )
    mean, std = _normalisation(folder, label)
    meta = {"num_heads": heads, "norm_eps": float(config.get("layer_norm_eps", 1e-12)), "mean": mean, "std": std}
    return timm_state, {**meta, "transformers_class": cls}


def _json(path: Path, label: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{label}: {path.name} is not readable JSON ({type(exc).__name__}); re-save it."
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{label}: {path.name} holds no JSON object; re-save it with save_pretrained.")
    return data


def _supported_class(config: Mapping, label: str) -> str:
    names = config.get("architectures") or []
    cls = names[0] if isinstance(names, list) and names else None
    if cls not in ARCHITECTURES:
        raise CheckpointError(
            f"{label}: config.json's architectures {names!r} is not supported; "
            f"ellrobust converts {', '.join(ARCHITECTURES)}."
        )
    return cls


def _side(config: Mapping, field: str, label: str) -> int:
    """A square size field (``image_size``, ``patch_size``): an int or two equal ints."""
    value = config.get(field)
    sides = list(value) if isinstance(value, list | tuple) else [value]
    if not sides or len(set(sides)) != 1 or not isinstance(sides[0], int) or isinstance(sides[0], bool):
        raise CheckpointError(f"{label}: config.json's {field} {value!r} is not supported (square sizes only).")
    return sides[0]


def _check_config(config: Mapping, label: str) -> int:
    """Refuse, naming the field, what ellrobust's ViT cannot compute the same way; return the heads."""

    def refuse(field: str, why: str) -> CheckpointError:
        return CheckpointError(f"{label}: config.json's {field} {config.get(field)!r} is not supported ({why}).")

    if config.get("hidden_act", "gelu") != "gelu":
        raise refuse("hidden_act", "ellrobust's ViT uses the exact GELU, 'gelu'")
    if config.get("num_channels", 3) != 3:
        raise refuse("num_channels", "ellrobust's datasets are RGB")
    image, patch = _side(config, "image_size", label), _side(config, "patch_size", label)
    if patch <= 0 or image % patch:
        raise refuse("image_size", f"not a multiple of patch_size {patch}")
    depth = config.get("num_hidden_layers")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
        raise refuse("num_hidden_layers", "a positive number of blocks")
    width, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if not isinstance(heads, int) or not isinstance(width, int) or heads <= 0 or width % heads:
        raise refuse("num_attention_heads", f"must divide hidden_size {width}")
    if config.get("head_dim", width // heads) != width // heads:
        raise refuse("head_dim", "ellrobust's heads split hidden_size evenly")
    hidden = config.get("intermediate_size")
    if not isinstance(hidden, int) or int(width * (hidden / width)) != hidden:
        raise refuse("intermediate_size", f"not a width ratio ellrobust's ViT represents for hidden_size {width}")
    eps = config.get("layer_norm_eps", 1e-12)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
        raise refuse("layer_norm_eps", "a LayerNorm epsilon is in (0, 1)")
    return heads


def _weights_file(folder: Path, label: str) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    sharded = [p.name for p in folder.glob("*.index.json")]
    why = f"sharded weights ({sharded[0]}) are not supported" if sharded else "neither is there"
    raise CheckpointError(f"{label} has no {' or '.join(WEIGHT_FILES)} ({why}); re-save it with save_pretrained.")


def _to_timm(
    state: Mapping[str, torch.Tensor],
    prefix: str,
    classifiers: Mapping[str, str],
    depth: int,
    *,
    qkv_bias: bool,
    label: str,
) -> dict[str, torch.Tensor]:
    """transformers' key layout -> timm's; a key left over or missing is an error naming it."""
    rest = dict(state)
    out = {}
    embed = f"{prefix}.embeddings."
    renames = {
        f"{embed}cls_token": "cls_token",
        f"{embed}distillation_token": "dist_token",
        f"{embed}position_embeddings": "pos_embed",
        f"{embed}patch_embeddings.projection.weight": "patch_embed.proj.weight",
        f"{embed}patch_embeddings.projection.bias": "patch_embed.proj.bias",
        f"{prefix}.layernorm.weight": "norm.weight",
        f"{prefix}.layernorm.bias": "norm.bias",
    }
    for name, timm_name in classifiers.items():
        renames |= {f"{name}.weight": f"{timm_name}.weight", f"{name}.bias": f"{timm_name}.bias"}
    for i in range(depth):
        layer = f"{prefix}.encoder.layer.{i}."
        for name, timm_name in BLOCK_NAMES.items():
            renames |= {f"{layer}{name}.{p}": f"blocks.{i}.{timm_name}.{p}" for p in ("weight", "bias")}
        out |= _fused_qkv(rest, f"{layer}attention.attention.", f"blocks.{i}.attn.qkv.", qkv_bias, label)
    missing = sorted(k for k in renames if k not in rest and not k.endswith("distillation_token"))
    out |= {timm: rest.pop(k) for k, timm in renames.items() if k in rest}
    if missing or rest:
        report = mismatch_report(missing, sorted(rest), [])
        raise CheckpointError(f"{label}: its weights do not fit its config.json ({report}); re-save the folder.")
    return out


def _fused_qkv(
    rest: dict[str, torch.Tensor], src: str, dst: str, qkv_bias: bool, label: str
) -> dict[str, torch.Tensor]:
    """One block's query, key and value projections as timm's fused ``qkv`` (zero biases without ``qkv_bias``)."""
    names = [f"{src}{p}.weight" for p in ("query", "key", "value")]
    absent = [n for n in names if n not in rest]
    if absent:
        raise CheckpointError(f"{label}: its weights lack {absent[0]}; re-save the folder.")
    weight = torch.cat([rest.pop(n) for n in names], dim=0)  # (3C, C): timm's q, k, v order
    biases = [f"{src}{p}.bias" for p in ("query", "key", "value")]
    if qkv_bias:
        bias = torch.cat([rest.pop(b) for b in biases], dim=0) if all(b in rest for b in biases) else None
        if bias is None:
            raise CheckpointError(f"{label}: its weights lack the query/key/value biases that qkv_bias says exist.")
    else:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype)  # no bias computes as a zero bias
    return {f"{dst}weight": weight, f"{dst}bias": bias}


def _normalisation(folder: Path, label: str) -> tuple[list[float], list[float]]:
    """``preprocessor_config.json``'s image_mean/std (identity without ``do_normalize``), else ImageNet's."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    cfg = _json(path, label)
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-12:
        raise CheckpointError(
            f"{label}: preprocessor_config.json's rescale_factor {cfg.get('rescale_factor')!r} is not supported "
            "(ellrobust's images are pixels / 255)."
        )
    if not cfg.get("do_normalize", True):
        return [0.0] * 3, [1.0] * 3
    return _three(cfg, "image_mean", IMAGENET_MEAN, label), _three(cfg, "image_std", IMAGENET_STD, label)


def _three(cfg: Mapping, field: str, default: tuple[float, ...], label: str) -> list[float]:
    """A per-channel field of preprocessor_config.json (one number stands for all three channels)."""
    value = cfg.get(field, default)
    values = [value] * 3 if isinstance(value, int | float) else value
    if not isinstance(values, list | tuple) or len(values) != 3 or not all(isinstance(x, int | float) for x in values):
        raise CheckpointError(f"{label}: preprocessor_config.json's {field} {value!r} is not 3 numbers.")
    return [float(x) for x in values]
