"""The model zoo: short names, shipped checkpoints and :func:`load_model`, over the registered architectures.

The architectures themselves are :mod:`.registry` (variants as data); this module builds them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from torch import nn

from ellrobust.core.errors import UsageError
from ellrobust.core.registry import unknown_choice
from ellrobust.models.architectures import MODELS
from ellrobust.models.checkpoint import load_weights, read_checkpoint
from ellrobust.models.external import PREFIXES, ExternalRequest, ModelPrefix, split_prefix
from ellrobust.models.huggingface import is_transformers_folder, read_transformers_folder
from ellrobust.models.infer import infer_config
from ellrobust.models.vit import MGrad, VisionTransformer

#: Short names resolve to the dataset's default size of the baseline or elliptical twin.
SHORT_NAMES = {"deit": "", "deit-elliptical": "-elliptical"}


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


#: Names that build ellrobust's ViT from a checkpoint's shapes (:mod:`ellrobust.models.infer`), and
#: whether the result is elliptical: ``vit-elliptical`` is the elliptical twin of any plain ViT.
INFERRED = {"vit": False, "vit-elliptical": True}


def resolve_name(name: str, *, default_arch: str = "deit-micro") -> str:
    """Map a short name (``deit``, ``deit-elliptical``) to an architecture; check any other name exists."""
    if name in SHORT_NAMES:
        return default_arch + SHORT_NAMES[name]
    if name not in MODELS:
        choices = list(SHORT_NAMES) + MODELS.names() + list(INFERRED) + [f"{p}:NAME" for p in PREFIXES.names()]
        raise UsageError(unknown_choice("model", name, choices) + " List them with `ellrobust models`.")
    return name


def is_elliptical_name(name: str, *, default_arch: str = "deit-micro") -> bool:
    """Whether ``name`` builds an elliptical model (before building it): what ``--elliptical-layers`` applies to."""
    if split_prefix(name) is not None:
        return False
    if name in INFERRED:
        return INFERRED[name]
    return MODELS.get(resolve_name(name, default_arch=default_arch)).elliptical


def is_model_name(name: str) -> bool:
    """Whether :func:`load_model` takes ``name`` as a model's name, not as a file.

    A short name, an architecture, ``vit``/``vit-elliptical``, or ``PREFIX:NAME`` of a registered
    library (the library itself then says whether it has NAME).
    """
    prefix, sep, _ = name.partition(":")
    return name in SHORT_NAMES or name in MODELS or name in INFERRED or (bool(sep) and prefix in PREFIXES)


def checkpoint_architecture(checkpoint: str | os.PathLike) -> str:
    """The name that builds a checkpoint given without one: ellrobust's ViT from its shapes (``-m vit -c FILE``).

    ``vit-elliptical`` when the file's metadata records elliptical layers (``ellrobust train`` writes
    them), else ``vit``: official elliptical checkpoints record none, so they are named explicitly.
    Only a safetensors header is read here; :func:`load_model` reads the weights and reports a file
    that is missing or unreadable.
    """
    path = Path(checkpoint)
    if path.suffix != ".safetensors" or not path.is_file():
        return "vit"
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            layers = _maybe_json((f.metadata() or {}).get("elliptical_layers"))
    except (SafetensorError, OSError, ValueError):
        return "vit"
    return "vit-elliptical" if isinstance(layers, list) and layers else "vit"


def infers_architecture(name: str) -> bool:
    """Whether ``name`` builds its architecture from the checkpoint (``vit``, ``vit-elliptical``): what
    ``--heads`` applies to."""
    return name in INFERRED


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
    heads: int | None = None,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    model_dir: str | os.PathLike | None = None,
) -> nn.Module:
    """Build a model, in eval mode, that takes [0, 1] images and returns logits.

    ``load_model("deit-elliptical")`` returns the shipped trained model for the embedded dataset
    (likewise ``"deit"``); an architecture name without ``checkpoint`` is randomly initialised.
    ``load_model("vit", checkpoint=..., heads=6)`` builds ellrobust's ViT from the checkpoint's
    shapes; ``load_model("timm:resnet50", checkpoint=...)`` wraps a timm (or ``torchvision:``)
    classifier (:mod:`ellrobust.models.external`). A transformers ViT/DeiT folder is a checkpoint
    like a file (``load_model("vit-elliptical", checkpoint=DIR)``: its elliptical twin), and
    ``hf:DIR`` names the plain ViT it holds.

    Args:
        name: an architecture (``ellrobust models``), a short name resolved to ``default_arch``,
            ``vit``/``vit-elliptical``, or ``PREFIX:NAME`` of another library.
        checkpoint: weights to load strictly (``.safetensors``, weights-only ``.pth``, or a transformers
            ViT/DeiT folder: :mod:`ellrobust.models.huggingface`).
        num_classes: classifier size; defaults to the checkpoint's, else the architecture's.
        img_size: input size; position embeddings of a checkpoint are resampled to it (ellrobust's
            ViTs); another library's model is built for it (None: its pretrained config's).
        m_grad: ``"detach"`` (the paper) or ``"full"`` (gradients flow through the metric ``m``).
        dataset: whose shipped checkpoint a short name picks up when ``checkpoint`` is None.
        default_arch: the baseline architecture that short names resolve to.
        elliptical_layers: which blocks are elliptical (elliptical models only); None: the
            checkpoint's metadata, else every block after the first.
        reset_head: keep a fresh classifier when the checkpoint's has another size.
        heads: attention heads of ``vit``/``vit-elliptical`` (not in a checkpoint's shapes).
        mean, std: normalisation inside the model, overriding the checkpoint's metadata or the
            pretrained config.
        model_dir: the folder of a model zoo's weights (``robustbench:NAME``).
    """
    external = split_prefix(name)
    if external is not None:
        _refuse_vit_options(name, elliptical_layers, reset_head, heads)
        entry, library_name = external
        return entry.build(ExternalRequest(library_name, checkpoint, num_classes, img_size, mean, std, model_dir))
    if heads is not None and name not in INFERRED:
        raise UsageError(f"--heads applies to `-m vit` and `-m vit-elliptical` (the heads of {name!r} are known).")
    if name in INFERRED:
        if checkpoint is None:
            raise UsageError(
                f"-m {name} builds the ViT from a checkpoint's shapes; pass its weights with -c FILE (--checkpoint)."
            )
        state, meta = _read(checkpoint)
        hint = f" Evaluate it as a baseline with `-m timm:NAME -c {checkpoint}`."
        cfg = infer_config(state, meta, heads=heads, source=f"checkpoint {str(checkpoint)!r}", hint=hint)
        elliptical, label = INFERRED[name], name
    else:
        label = resolve_name(name, default_arch=default_arch)
        spec = MODELS.get(label)
        if checkpoint is None:
            shipped = default_checkpoint(name, dataset=dataset, default_arch=default_arch)
            checkpoint = shipped.path if shipped else None
        state, meta = _read(checkpoint) if checkpoint is not None else ({}, {})
        cfg, elliptical = spec.config, spec.elliptical
    if elliptical_layers is not None and not elliptical:
        raise UsageError(
            f"model {label!r} is not elliptical; pick its elliptical twin ('-elliptical') to set elliptical layers."
        )
    changes = {"m_grad": MGrad(m_grad), "num_classes": num_classes, "img_size": img_size, "mean": mean, "std": std}
    try:
        cfg = replace(cfg, **_settings(cfg, state, meta, changes, elliptical, elliptical_layers))
    except ValueError as exc:
        raise UsageError(f"invalid settings for model {label!r}: {exc}.") from None
    model = VisionTransformer(cfg, initialize=checkpoint is None or reset_head)
    if checkpoint is not None:
        load_weights(model, state, reset_head=reset_head, source=f"checkpoint {str(checkpoint)!r}")
    return model.eval()


def _refuse_vit_options(name: str, elliptical_layers, reset_head: bool, heads: int | None) -> None:
    """Another library's model takes none of the options that only ellrobust's ViTs have."""
    if elliptical_layers is not None:
        raise UsageError(
            f"model {name!r} is a baseline and has no elliptical layers; "
            "the elliptical twin of a ViT checkpoint is `-m vit-elliptical -c FILE`."
        )
    if reset_head or heads is not None:
        raise UsageError(
            f"model {name!r}: {'--reset-head' if reset_head else '--heads'} applies to ellrobust's ViTs only."
        )


def _settings(cfg, state: dict, meta: dict, given: dict, elliptical: bool, layers) -> dict[str, object]:
    """The changes to an architecture's config: what the caller ``given`` (None: not given), else what
    the checkpoint's shapes and metadata record, else the architecture's own."""
    changes: dict[str, object] = {"m_grad": given["m_grad"]}
    if given["num_classes"] is not None:
        changes["num_classes"] = given["num_classes"]
    elif "head.weight" in state:
        changes["num_classes"] = state["head.weight"].shape[0]
    if given["img_size"] is not None:
        changes["img_size"] = given["img_size"]
    recorded = meta.get("elliptical_layers")
    if layers is not None:
        changes["elliptical_layers"] = tuple(layers)
    elif elliptical and isinstance(recorded, list) and recorded:
        changes["elliptical_layers"] = tuple(int(i) for i in recorded)  # as trained (`ellrobust train` records them)
    elif elliptical:
        changes["elliptical_layers"] = tuple(range(1, cfg.depth))
    for key in ("mean", "std"):
        if given[key] is not None:
            changes[key] = tuple(given[key])
        elif key in meta:
            changes[key] = tuple(meta[key])
    return changes


def _read(checkpoint: str | os.PathLike) -> tuple[dict, dict[str, object]]:
    """A checkpoint's state dict and its metadata with JSON values decoded (a transformers folder converted)."""
    if is_transformers_folder(checkpoint):
        return read_transformers_folder(checkpoint)
    state, meta = read_checkpoint(checkpoint)
    return state, {k: _maybe_json(v) for k, v in meta.items()}


def build_hf(req: ExternalRequest) -> nn.Module:
    """``hf:DIR``: the plain ViT of a transformers folder, ``-m vit -c DIR`` under the folder's name."""
    if req.checkpoint is not None:
        raise UsageError(f"model 'hf:{req.name}' holds its weights; drop its --checkpoint.")
    if not is_transformers_folder(req.name):
        raise UsageError(
            f"model 'hf:{req.name}': {req.name!r} is not a folder with a config.json; "
            "pass the folder that transformers' save_pretrained wrote."
        )
    return load_model(
        "vit", checkpoint=req.name, num_classes=req.num_classes, img_size=req.img_size, mean=req.mean, std=req.std
    )


PREFIXES.add(
    "hf",
    ModelPrefix(
        "hf",
        "a transformers ViT/DeiT folder (config.json + weights) as ellrobust's ViT, no transformers needed; "
        "its elliptical twin: -m vit-elliptical -c DIR",
        "-m hf:./deit-small-hf",
        build_hf,
        weights=lambda req: req.name,
    ),
)
