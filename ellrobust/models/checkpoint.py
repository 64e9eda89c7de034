"""Safe checkpoint I/O: weights-only reading, strict matching with a key report, safetensors output.

What the research code got wrong and this module refuses to repeat: ``load_state_dict(strict=False)``
(a key mismatch silently leaves a random model) and full unpickling of downloaded files (arbitrary
code execution). Pickled files are read with ``torch.load(weights_only=True)``; a file that needs
more is refused, and ``ellrobust convert --trust`` turns it into safetensors once, on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ellrobust.core.errors import CheckpointError
from ellrobust.core.files import default_mode

#: Keys under which training scripts (DeiT's, the official Elliptical Attention code's) nest weights.
NESTED_KEYS = ("model", "state_dict", "model_state_dict")
#: The classifiers of ellrobust's ViT (``head_dist``: DeiT's distillation head).
HEAD_MODULES = ("head", "head_dist")


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a state dict and its metadata from ``.safetensors`` or a pickled ``.pth``/``.pt`` file.

    Accepts a raw state dict or one nested under ``model``/``state_dict`` (the DeiT training-script
    format), with or without DistributedDataParallel's ``module.`` prefix.

    Args:
        path: the checkpoint file.
        trust: allow full unpickling. Only ``ellrobust convert --trust`` sets it; unpickling runs
            whatever code the file names.

    Returns:
        The state dict and the string metadata (empty for pickled files).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist or is not a file; pass the path of a .safetensors or .pth file."
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is not a readable safetensors file ({exc}); re-export it."
            ) from None
    else:
        meta = {}
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
        except pickle.UnpicklingError as exc:
            if trust:
                raise CheckpointError(f"checkpoint {str(path)!r} could not be unpickled ({exc}).") from None
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds Python objects beyond tensors and was refused (loading it would run "
                f"code from the file). If you trust its source, convert it once: "
                f"`ellrobust convert {path} {path.with_suffix('.safetensors')} --trust`."
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is truncated or not a PyTorch file ({type(exc).__name__}); "
                "re-download or re-save it."
            ) from None
        for key in NESTED_KEYS:
            if isinstance(obj, dict) and _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
        if not _is_state_dict(obj):
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds no state dict (expected tensors, possibly under one of {NESTED_KEYS})."
            )
        state = obj
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, meta


def resample_pos_embed(pos_embed: torch.Tensor, num_patches: int, num_prefix: int = 1) -> torch.Tensor:
    """Bicubically resample (1, P + g², C) position embeddings to another square grid, the P prefix rows kept."""
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    old = int(round(grid.shape[1] ** 0.5))
    new = int(round(num_patches**0.5))
    if old * old != grid.shape[1] or new * new != num_patches:
        raise CheckpointError(
            f"cannot resample position embeddings from {grid.shape[1]} to {num_patches} patches (not square grids)."
        )
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False, antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, -1).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, reset_head: bool = False, source: str = "checkpoint"
) -> None:
    """Load ``state`` into ellrobust's ViT strictly; any mismatch raises with the full key report.

    Position embeddings of another grid size are resampled. A classifier of another size is an
    error unless ``reset_head`` is set, in which case the model keeps its freshly initialised head(s).
    """
    own = model.state_dict()
    state = dict(state)
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        if state["pos_embed"].shape[-1] == own["pos_embed"].shape[-1]:
            cfg = model.cfg
            prefix = cfg.num_prefix_tokens if cfg.class_pos_embed else 0
            state["pos_embed"] = resample_pos_embed(state["pos_embed"], cfg.num_patches, prefix)
    if reset_head:
        for key in (k for k in own if k.split(".")[0] in HEAD_MODULES):
            state[key] = own[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = _shape_mismatches(own, state)
    if missing or unexpected or shapes:
        heads_only = shapes and all(s.split(".")[0] in HEAD_MODULES for s in shapes) and not (missing or unexpected)
        fix = (
            " Its classifier has another number of classes than the dataset: evaluate it on a dataset of its"
            " classes, or fine-tune a new classifier with `ellrobust train --reset-head`."
            if heads_only
            else " Check --model matches the checkpoint's architecture."
        )
        raise CheckpointError(f"{source} does not fit the model ({mismatch_report(missing, unexpected, shapes)}).{fix}")
    model.load_state_dict(state, strict=True)


def load_strict(
    module: nn.Module, state: dict[str, torch.Tensor], *, source: str = "checkpoint", fix: str = ""
) -> None:
    """Load ``state`` into any module strictly; any mismatch raises with the same key report as :func:`load_weights`.

    Missing and unexpected keys are the module's own verdict (``load_state_dict`` with its loading
    hooks, e.g. BatchNorm's ``num_batches_tracked`` of old checkpoints), so nothing the module accepts
    is refused and nothing it would leave uninitialised passes.

    Args:
        module: the model to fill.
        state: the weights.
        source: how the message names the weights.
        fix: a sentence appended to the message (what to check).
    """
    shapes = _shape_mismatches(module.state_dict(), state)
    if shapes:
        own = module.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    else:
        result = module.load_state_dict(state, strict=False)
        missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not fit the model ({mismatch_report(missing, unexpected, shapes)})."
            f"{' ' + fix if fix else ''}"
        )


def _shape_mismatches(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    return sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )


def mismatch_report(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    """``missing keys: …; unexpected keys: …; wrong shapes: …`` (each abbreviated), for one-line errors."""
    parts = []
    if missing:
        parts.append(f"missing keys: {_abbrev(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_abbrev(unexpected)}")
    if shapes:
        parts.append(f"wrong shapes: {_abbrev(shapes)}")
    return "; ".join(parts)


def _abbrev(items: list[str], limit: int = 6) -> str:
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def state_dict_digest(model: nn.Module) -> str:
    """A short sha256 over the model's parameters (names, shapes, bytes): identifies exactly these weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


def save_safetensors(
    state: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, object] | None = None
) -> Path:
    """Write ``state`` atomically as safetensors; metadata values are JSON-encoded strings."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    tensors = _untied({k: v.detach().cpu().contiguous() for k, v in state.items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _untied(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor with memory of its own: safetensors refuses tied weights (a head sharing the embedding's)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        out[name] = tensor.clone() if ptr in seen else tensor
        if ptr is not None:
            seen.add(ptr)
    return out


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, trust: bool) -> Path:
    """Turn any checkpoint into safetensors. Full unpickling happens only with ``trust=True``."""
    state, meta = read_checkpoint(src, trust=trust)
    return save_safetensors(state, dst, {**meta, "converted_from": Path(src).name})
