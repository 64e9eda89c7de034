"""The models of a run: built from names, checkpoints or modules, checked against the data, described for run.json."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

from ellrobust.core.errors import UsageError
from ellrobust.data import LoadedDataset
from ellrobust.measures.collapse_probe import token_models
from ellrobust.models import load_model, state_dict_digest
from ellrobust.models.any_module import as_classifier
from ellrobust.models.external import ExternalRequest, split_prefix
from ellrobust.models.masked import mask_logits
from ellrobust.models.zoo import default_checkpoint, infers_architecture, is_elliptical_name
from ellrobust.request.config import EvalConfig
from ellrobust.run.context import LoadedModel, RunContext

#: ImageNet-1k's classes: what a model gives on a dataset of some of them before its logits are masked.
IMAGENET_1K = 1000


def load_models(
    config: EvalConfig, data: LoadedDataset, device: str, modules: Mapping[str, torch.nn.Module] | None = None
) -> dict[str, LoadedModel]:
    """Load every model of the run for the dataset (its classes, its image size, its default size).

    Every model sees the run's images: ellrobust's ViTs are built for their size (position embeddings
    resampled); another library's model takes the size ``--img-size`` states, else its pretrained
    config's, and a model that takes another size than the run's images is an error naming both.

    Args:
        config: the request; each model is built from :meth:`EvalConfig.architecture`.
        data: the run's dataset.
        device: where the models go once loaded and checked.
        modules: models the caller built (``ellrobust.evaluate``), by name: each is used as its
            model instead of building one, behind the Classifier contract
            (:func:`~ellrobust.models.any_module.as_classifier`, with the model's ``mean``/``std``), and
            checked like every other model.

    On a dataset of some of ImageNet's classes (ImageNet-R, -A: ``data.class_indices_1k``) a model
    that gives 1000 logits is evaluated on those classes' logits (:mod:`ellrobust.models.masked`);
    one that gives the dataset's own count is used as it is. The weights' digest is the model's own.
    """
    models = {}
    modules = modules or {}
    stray = [name for name in modules if name not in config.models]
    if stray:
        names = ", ".join(map(repr, stray))
        raise UsageError(f"modules given for {names}, which the request does not name; name each among its models.")
    checkpoints = config.checkpoints or (None,) * len(config.models)
    builds = [config.architecture(i) for i, name in enumerate(config.models) if name not in modules]
    if config.heads and not any(infers_architecture(build) for build in builds):
        raise UsageError(
            "--heads applies to `-m vit` and `-m vit-elliptical` (architectures read from a checkpoint); "
            "no --model here is one."
        )
    for i, (name, ckpt) in enumerate(zip(config.models, checkpoints, strict=True)):
        if name in modules:
            mean, std = config.option_for("mean", i), config.option_for("std", i)
            module = as_classifier(modules[name], name, mean=mean, std=std)
            weights = MODULE_WEIGHTS
        else:
            module = _build(config, i, ckpt, data)
            weights = _weights_source(config.architecture(i), ckpt, data, config)
        outputs = _check_input(name, module, data)
        digest = state_dict_digest(module)
        if outputs != data.num_classes:  # ImageNet-1k logits, masked to the dataset's classes
            module = mask_logits(module, data.class_indices_1k)
        module = module.to(device)
        models[name] = LoadedModel(name, module, digest, weights)
    if config.collapse is not None:
        token_models({name: lm.module for name, lm in models.items()})  # no model to probe: refused before any work
    return models


#: run.json's ``weights`` of a model the caller gave as a module: its weights are the module's own.
MODULE_WEIGHTS = "in-memory module"


def _build(config: EvalConfig, index: int, checkpoint: str | None, data: LoadedDataset) -> torch.nn.Module:
    """The ``index``-th model of the request, built from its architecture and checkpoint for the run's data."""
    build = config.architecture(index)
    ell = config.layers_for(index, is_elliptical_name(build, default_arch=data.spec.default_arch))
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: no CUDA call before the workers fork
        torch.manual_seed(config.seed)  # a randomly initialised architecture is the same in every run
        return load_model(
            build,
            checkpoint=checkpoint,
            num_classes=_head_size(build, checkpoint, data),
            dataset=data.spec.name,
            default_arch=data.spec.default_arch,
            img_size=config.image_size if split_prefix(build) else data.spec.image_size,
            elliptical_layers=ell,
            heads=config.option_for("heads", index, infers_architecture(build)),
            mean=config.option_for("mean", index),
            std=config.option_for("std", index),
            model_dir=config.model_dir,
        )


def _head_size(build: str, checkpoint: str | None, data: LoadedDataset) -> int | None:
    """The classifier size to build: the dataset's classes, but on a dataset of some ImageNet classes
    (ImageNet-R, -A) a checkpoint's own head and another library's default (1000 classes, masked later).

    A randomly initialised ellrobust ViT gets the dataset's classes there too: it knows no ImageNet class.
    """
    if data.class_indices_1k is None or (checkpoint is None and not split_prefix(build)):
        return data.num_classes
    return None


def _check_input(name: str, module: torch.nn.Module, data: LoadedDataset) -> int:
    """Refuse, before any work, a model that cannot take the run's images or gives the wrong number of logits.

    Returns the model's number of logits: the dataset's classes, or ImageNet-1k's on a dataset of
    some of them (``data.class_indices_1k``), which the caller then masks.
    """
    size = data.spec.image_size
    if module.input_size is not None and module.input_size != size:
        fix = (
            f"pass --img-size {module.input_size} (image folders are resized and cropped to it)"
            if data.spec.resizable
            else f"pass --img-size {size} if its weights were trained on {size} px images"
        )
        raise UsageError(
            f"model {name!r} takes {module.input_size} px images "
            f"but the run's images ({data.spec.name}) are {size} px; {fix}."
        )
    try:
        with torch.no_grad():
            logits = module(torch.zeros(1, 3, size, size))
    except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
        message = " ".join(str(exc).split())  # one line, also for libraries whose messages span several
        raise UsageError(f"model {name!r} cannot take {size} px images ({type(exc).__name__}: {message}).") from None
    if not isinstance(logits, torch.Tensor):
        raise UsageError(
            f"model {name!r} returns a {type(logits).__name__} for one image, not a tensor of logits; "
            f"make its forward return the (B, {data.num_classes}) logits alone."
        )
    if data.class_indices_1k is not None and tuple(logits.shape) in ((1, data.num_classes), (1, IMAGENET_1K)):
        return int(logits.shape[1])
    if data.class_indices_1k is not None:
        raise UsageError(
            f"model {name!r} returns {tuple(logits.shape)} for one image, neither (1, {IMAGENET_1K}) ImageNet logits "
            f"(masked to the {data.num_classes} classes of {data.spec.name}) nor (1, {data.num_classes})."
        )
    if tuple(logits.shape) != (1, data.num_classes):
        raise UsageError(
            f"model {name!r} returns {tuple(logits.shape)} for one image, not (1, {data.num_classes}) logits for the "
            f"{data.num_classes} classes of {data.spec.name}."
        )
    return data.num_classes


def _weights_source(name: str, checkpoint: str | None, data: LoadedDataset, config: EvalConfig) -> str:
    """run.json's ``weights`` of a model: its checkpoint, the weights its name carries (``hf:DIR``,
    ``robustbench:NAME``), the shipped checkpoint, or the seed of its random initialisation."""
    if checkpoint is not None:
        return str(checkpoint)
    external = split_prefix(name)
    if external is not None and external[0].weights is not None:
        return external[0].weights(ExternalRequest(external[1], model_dir=config.model_dir))
    shipped = default_checkpoint(name, dataset=data.spec.name, default_arch=data.spec.default_arch)
    return f"shipped: {shipped.filename}" if shipped else f"random initialisation (seed {config.seed})"


def file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def model_records(ctx: RunContext) -> dict[str, dict]:
    """Each model's digest, weights, ellipticity, tokens and architecture: run.json's ``models``."""
    return {
        m.name: {
            "checkpoint": m.digest, "weights": m.weights, "elliptical": m.elliptical, "tokens": m.tokens,
            "config": m.architecture(),
        }
        for m in ctx.models.values()
    }  # fmt: skip
