"""The evaluation engine: runs a plan over models × methods, one resumable unit at a time.

Data flow, one direction only::

    dataset ─► models ─► stages (clean, attacks, corruptions, collapse, OOD) ─► units ─► results table

A *unit* is the smallest piece of work that is saved: (model, method, params, eps/severity, m_grad).
Its key is a hash of everything that determines its numbers (checkpoint digest, data digest, the
selected images, parameters, seed), so re-running a command with the same ``--out`` skips finished
units, and changing one setting re-runs only what it affects. Each unit is seeded from its key, so a
resumed run gives the same table as an uninterrupted one.

Nothing here prints: progress goes through a callback, and the CLI renders it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ellrobust.core.determinism import deterministic_mode
from ellrobust.core.distributed import init_distributed, local_world_size
from ellrobust.core.errors import UsageError
from ellrobust.core.files import RunLock, atomic_write, check_destination
from ellrobust.core.readback import DamagedFileError, read_json
from ellrobust.core.version import __version__
from ellrobust.core.workers import WorkerPool, auto_workers
from ellrobust.corruptions.protocol import resolve_protocol
from ellrobust.data import LoadedDataset, image_store, load_dataset, select_indices
from ellrobust.data.imagenet_o import split_ood
from ellrobust.data.selection import IndexList, read_index_file
from ellrobust.measures import AttackStage, CleanStage, CollapseStage, CorruptionStage, MinimalStage, OODStage
from ellrobust.measures.collapse_probe import token_models
from ellrobust.measures.paired import derive
from ellrobust.models import compiled as compiled_attention
from ellrobust.models import load_model, state_dict_digest
from ellrobust.models.any_module import as_classifier
from ellrobust.models.external import split_prefix
from ellrobust.models.masked import mask_logits
from ellrobust.models.zoo import default_checkpoint, infers_architecture, is_elliptical_name
from ellrobust.request.config import EvalConfig, collapse_key
from ellrobust.results import SCHEMA_VERSION, Provenance, Row, examples_frame, save_examples, save_table
from ellrobust.results import table as results_table
from ellrobust.results.adversarial_images import ADVERSARIAL_DIR, CLEAN_FILE
from ellrobust.run.context import LoadedModel, ProgressEvent, ProgressFn, RunContext, no_progress, seed_everything
from ellrobust.run.units import Unit, UnitResult, unit_seed

__all__ = ["STAGES", "EvalConfig", "Evaluation", "RunContext", "RunResult", "Unit", "UnitResult", "load_models"]

#: The stages of a run, in the order they run: clean first (every later stage may read its outcomes).
STAGES = (CleanStage, AttackStage, MinimalStage, CorruptionStage, CollapseStage, OODStage)


class UnitStore:
    """Finished units on disk, one JSON file each, written atomically.

    A unit is reused only when its file reads back whole and every file it names (its adversarial
    images) is there with the size it had when the unit was saved; anything else is recomputed, so a
    damaged run folder mends itself with the same command.
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "units"

    def path(self, key: str, unit: Unit) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{unit.stage}_{unit.model}_{unit.method}")[:60]
        return self.dir / f"{slug}-{key[:16]}.json"

    def load(self, key: str, unit: Unit) -> UnitResult | None:
        path = self.path(key, unit)
        if not path.is_file():
            return None
        try:
            data = read_json(path, "unit file")
        except DamagedFileError:
            return None  # a damaged unit file is simply recomputed
        if data.get("key") != key:
            return None
        try:
            result = self._result(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a unit file this version cannot read is recomputed too
        return result if self._files_intact(result.extra) else None

    def _files_intact(self, extra: dict) -> bool:
        """Whether every file the unit names is on disk with its recorded size."""
        sizes = extra.get("file_sizes", {})
        for name in unit_files(extra):
            path = self.dir.parent / name
            if not path.is_file() or (name in sizes and path.stat().st_size != sizes[name]):
                return False
        return True

    @staticmethod
    def _result(data: dict) -> UnitResult:
        """A unit file's content as a result (raises on a missing field or one of the wrong type)."""
        if not isinstance(data["extra"], dict):
            raise TypeError("extra is not an object")
        return UnitResult(
            rows=[Row(**r) for r in data["rows"]],
            outcomes=_bits(data["outcomes"]),
            values=data["values"],
            extra=data["extra"],
            predictions=data["predictions"],
            linf=data["linf"],
            l2=data["l2"],
            transfer=data["transfer"],
            transfer_predictions=data["transfer_predictions"],
            eps_star=data["eps_star"],  # minimal-norm units only
            censored=_bits(data["censored"]),
            confidence=data["confidence"],  # clean and corruption units only
            top5=_bits(data["top5"]),
        )

    def save(self, key: str, unit: Unit, result: UnitResult) -> None:
        names = unit_files(result.extra)
        if names:  # what resuming checks before it reuses the unit
            result.extra["file_sizes"] = {name: (self.dir.parent / name).stat().st_size for name in names}
        payload = {
            "key": key,
            "unit": asdict(unit),
            "rows": [row.as_dict() for row in result.rows],
            "outcomes": _bit_strings(result.outcomes),
            "values": result.values,
            "extra": result.extra,
            "predictions": result.predictions,
            "linf": result.linf,
            "l2": result.l2,
            "transfer": result.transfer,
            "transfer_predictions": result.transfer_predictions,
            "eps_star": result.eps_star,
            "censored": _bit_strings(result.censored),
            "confidence": result.confidence,
            "top5": _bit_strings(result.top5),
        }
        atomic_write(self.path(key, unit), json.dumps(payload, sort_keys=True) + "\n")


def _bit_strings(bits: dict[str, list[int]]) -> dict[str, str]:
    """Per-image 0/1 lists as strings of digits: a unit file stays small and readable."""
    return {m: "".join(str(int(v)) for v in vals) for m, vals in bits.items()}


def _bits(strings: dict[str, str]) -> dict[str, list[int]]:
    """The per-image 0/1 lists a unit file stores as strings of digits."""
    return {m: [int(c) for c in bits] for m, bits in strings.items()}


@dataclass
class RunResult:
    table: object  # pandas.DataFrame
    examples: object  # pandas.DataFrame
    sanity: list[dict]
    run_dir: Path
    computed: int
    reused: int
    models: dict[str, dict]  # run.json's ``models`` (on every rank: the verdict needs to know which is elliptical)


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
            weights = _weights_source(config.architecture(i), ckpt, data, config.seed)
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
        )


def _head_size(build: str, checkpoint: str | None, data: LoadedDataset) -> int | None:
    """The classifier size to build: the dataset's classes, but on a dataset of some ImageNet classes
    (ImageNet-R, -A) a checkpoint's own head and another library's default (1000 classes, masked later).

    A randomly initialised ellrobust ViT gets the dataset's classes there too: it knows no ImageNet class.
    """
    if data.class_indices_1k is None or (checkpoint is None and not split_prefix(build)):
        return data.num_classes
    return None


#: ImageNet-1k's classes: what a model gives on a dataset of some of them before its logits are masked.
IMAGENET_1K = 1000


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


def _weights_source(name: str, checkpoint: str | None, data: LoadedDataset, seed: int) -> str:
    if checkpoint is not None:
        return str(checkpoint)
    shipped = default_checkpoint(name, dataset=data.spec.name, default_arch=data.spec.default_arch)
    return f"shipped: {shipped.filename}" if shipped else f"random initialisation (seed {seed})"


class Evaluation:
    """Runs an :class:`EvalConfig` into a run folder and returns the assembled results.

    ``modules`` are models the caller built, by their names in the config (``ellrobust.evaluate``):
    they are not part of the request, which stays plain data, and each is identified like every other
    model, by the digest of its weights and its ``describe()`` (:func:`load_models`).
    """

    def __init__(
        self,
        config: EvalConfig,
        run_dir: str | Path,
        progress: ProgressFn = no_progress,
        command: str | None = None,
        modules: Mapping[str, torch.nn.Module] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.command = command  # the command line that asked for the run, recorded in run.json
        self.modules = dict(modules or {})
        self.startup: dict[str, float] = {}
        self.listed: IndexList | None = None  # the images of --indices, once the dataset is loaded
        self._compile_start = compiled_attention.STATS.snapshot()

    def identity(self, unit: Unit, ctx: RunContext) -> str:
        """A hash of everything a unit's numbers depend on: its key on disk."""
        return _digest(self._identity(unit, ctx))

    def seed_identity(self, unit: Unit, ctx: RunContext) -> str:
        """The hash a unit's seed comes from: its identity without what is measured beside the attack.

        Collapse on the adversarial images, the saved images and the transferred verdicts read an
        attack's images without changing them, and deterministic kernels change no random number; so
        none of them may change the attack's random numbers (random starts, SPSA's directions), and an
        attack gives the same images, the same robust accuracy, with or without them.
        """
        ident = self._identity(unit, ctx)
        if unit.stage != "collapse":
            ident["collapse"] = None
        for name in ("deterministic", "save_adversarial", "transfer"):
            del ident[name]
        return _digest(ident)

    def _identity(self, unit: Unit, ctx: RunContext) -> dict:
        models = list(ctx.models.values()) if unit.model == "*" else [ctx.models[unit.model]]
        attack = unit.stage == "attack"
        return {
            "unit": asdict(unit),
            "checkpoints": {m.name: m.digest for m in models} if unit.model == "*" else models[0].digest,
            "architectures": {m.name: m.architecture() for m in models},
            "data": ctx.data.digest,
            "split": ctx.data.split,
            "indices": ctx.indices_digest,
            "seed": self.config.seed,
            "corruption_source": self.config.corruption_source,
            "corruption_protocol": ctx.corruption_protocol if unit.stage == "corruption" else None,
            # attack units also measure collapse on their adversarial images when it is requested
            "collapse": collapse_key(self.config.collapse) if unit.stage in ("attack", "collapse") else None,
            # other kernels, maybe other last bits: not the same unit
            "deterministic": self.config.deterministic,
            # a unit computed without its images cannot give them later
            "save_adversarial": attack and self.config.save_adversarial,
            # the models that judge the unit's images are part of its numbers
            "transfer": {m.name: m.digest for m in ctx.models.values() if m.name != unit.model}
            if attack and self.config.transfer
            else None,
        }

    def run(self) -> RunResult:
        """Run every unit not already on disk, then assemble and save the table (rank 0 writes).

        Nothing touches CUDA before the run's worker pool has forked: the models load on the CPU, the
        process group is gloo (:func:`~ellrobust.core.distributed.init_distributed`), and each rank binds
        its GPU and moves the models there only after the fork.
        """
        cfg = self.config
        check_destination(self.run_dir, "--out", folder=True)
        dist = init_distributed(cfg.device)
        started = time.time()
        self._compile_start = compiled_attention.STATS.snapshot()  # the models' input check compiles too
        try:
            with (
                deterministic_mode(cfg.deterministic),
                RunLock(self.run_dir) if dist.is_main else contextlib.nullcontext(),
            ):
                tick = time.perf_counter()
                data = load_dataset(cfg.dataset, cfg.split, cfg.data_root, cfg.image_size, cfg.class_map)
                self.listed = read_index_file(cfg.indices, data.dataset) if cfg.indices is not None else None
                among = self.listed.indices if self.listed is not None else None
                # out-of-distribution images (imagenet-o) are stored after the selection, for the OOD stage alone
                indices, ood_indices = split_ood(data.dataset, select_indices(len(data), cfg.n, cfg.seed, among))
                self.startup["index_s"] = time.perf_counter() - tick
                # The models are loaded on the CPU before any image is decoded: a model that cannot run
                # (a bad checkpoint, another input size) fails in seconds, not after decoding the data.
                # Forked workers share their pages untouched.
                tick = time.perf_counter()
                models = load_models(cfg, data, "cpu", self.modules)
                self.startup["models_s"] = time.perf_counter() - tick
                store, pool = self._open_store(data, indices + ood_indices, dist)
                try:
                    with pool:
                        dist.bind_device(cfg.device)  # the run's first CUDA call: every fork is behind us
                        return self._run(data, indices, models, store, pool, dist, started, ood_indices)
                finally:
                    store.close()
        finally:
            dist.leave()

    def _open_store(self, data: LoadedDataset, indices: list[int], dist):
        """Decode the selected images once into the run's store; return it with the run's one worker pool.

        The pools fork after the store's memory exists (so workers share it) and while the models are
        still on the CPU (so workers never hold a CUDA context). Under torchrun the node's first rank
        decodes for the whole node while its other ranks wait, so it decodes with the workers of every
        rank of the node, in a pool of its own that ends before the run's pool forks.
        """
        cfg = self.config
        tick = time.perf_counter()
        decodes = not isinstance(data.dataset, TensorDataset)
        workers = cfg.workers if cfg.workers is not None else auto_workers(decodes, local_world_size())
        plan = image_store.plan_for(
            cfg.cache_dir, self.run_dir, cfg.memory_budget_gb, shared_file=dist.enabled and decodes
        )
        writer = not plan.shared_file or dist.local_rank == 0
        store = None
        try:  # Ctrl-C or SIGTERM from here on: the run's temporary store file goes too, wherever it lands
            if writer:
                store, todo = image_store.allocate(data.dataset, indices, data.digest, data.spec.pixel_dtype, plan)
            else:
                dist.barrier()  # the node's first rank has decoded the images into the shared file
                store = image_store.open_complete(
                    plan.path(image_store.store_key(data.digest, indices, data.spec.pixel_dtype)),
                    data.spec.pixel_dtype,
                )
                todo = []
            return store, self._fill_store(data, indices, dist, store, todo, plan, workers, tick)
        except BaseException:
            if store is not None:
                store.close()
            raise

    def _fill_store(self, data, indices, dist, store, todo, plan, workers, tick) -> WorkerPool:
        """Decode what the store still lacks; returns the run's worker pool (see :meth:`_open_store`)."""
        cfg = self.config
        writer = not plan.shared_file or dist.local_rank == 0
        size = int(store.image_shape[-1])
        protocol = resolve_protocol(cfg.corruption_protocol, size).value
        for stage in STAGES:  # e.g. compile numba's glass_blur once, for every worker
            stage.before_workers(cfg, size, protocol)
        shared = {"dataset": data.dataset, "store": store, "indices": indices}
        label = f"decode {len(indices)} images"
        progress = self.progress if dist.is_main else no_progress
        if todo:
            progress(ProgressEvent("start", label, total=len(todo)))
        decoders = workers * local_world_size() if plan.shared_file else workers
        if todo and plan.shared_file:
            with WorkerPool(decoders, shared) as node_pool:
                image_store.fill(store, todo, node_pool, lambda k: progress(ProgressEvent("advance", label, advance=k)))
        pool = WorkerPool(workers, shared)
        if todo and not plan.shared_file:
            try:
                image_store.fill(store, todo, pool, lambda k: progress(ProgressEvent("advance", label, advance=k)))
            except BaseException:
                pool.close()
                raise
        if todo:
            progress(ProgressEvent("end", label))
        if plan.shared_file and writer:
            dist.barrier()
        self.startup.update(
            decode_s=time.perf_counter() - tick,
            decoded_images=store.decoded,
            workers=workers,
            decode_workers=decoders if todo else 0,
            store=store.location,
        )
        return pool

    def _run(
        self,
        data: LoadedDataset,
        indices: list[int],
        models: dict[str, LoadedModel],
        store,
        pool: WorkerPool,
        dist,
        started: float,
        ood_indices: list[int],
    ) -> RunResult:
        cfg = self.config
        for lm in models.values():
            lm.module.to(dist.device(cfg.device))
        ctx = RunContext(
            cfg,
            data,
            indices,
            models,
            self.progress if dist.is_main else no_progress,
            dist,
            store=store,
            pool=pool,
            run_dir=self.run_dir,
            ood_indices=ood_indices,
        )
        units = UnitStore(self.run_dir)
        all_rows: list[Row] = []
        finished: list[tuple[Unit, UnitResult]] = []
        computed = reused = 0
        stages = [make_stage() for make_stage in STAGES]
        for stage in stages:
            planned = [(unit, self.identity(unit, ctx)) for unit in stage.units(ctx)]
            # every rank takes rank 0's answer, so all ranks agree on what is reused
            saved = [dist.broadcast(units.load(key, unit) if dist.is_main else None) for unit, key in planned]
            stage.prepare(ctx, [unit for (unit, _), result in zip(planned, saved, strict=True) if result is None])
            for (unit, key), result in zip(planned, saved, strict=True):
                if result is None:
                    seed = unit_seed(cfg.seed, self.seed_identity(unit, ctx))
                    seed_everything(seed)
                    tick, compiling = time.perf_counter(), compiled_attention.STATS.compile_seconds
                    result = stage.run(unit, ctx, seed)
                    result.extra["seconds"] = time.perf_counter() - tick
                    if compiled_attention.STATS.compile_seconds > compiling:  # compiles are timed apart from the work
                        result.extra["compile_seconds"] = compiled_attention.STATS.compile_seconds - compiling
                    if dist.is_main:
                        units.save(key, unit, result)
                    computed += 1
                else:
                    ctx.progress(ProgressEvent("end", unit.label, cached=True))
                    reused += 1
                result = stage.finish(unit, result, ctx)
                ctx.results[unit] = result
                all_rows.extend(result.rows)
                finished.append((unit, result))
        for stage in stages:
            all_rows.extend(stage.derive(ctx, list(all_rows)))
        derived, sanity, outcomes = derive(ctx, finished, all_rows)
        all_rows.extend(derived)
        table = results_table(all_rows, self._provenance(ctx))
        examples = examples_frame([o for o in outcomes if o.method != "worst-case"], ctx.indices)
        if dist.is_main:
            save_table(table, self.run_dir)
            save_examples(examples, self.run_dir)
            described = self._describe(ctx, started, finished, _compile_record(self._compile_start))
            atomic_write(self.run_dir / "run.json", json.dumps(described, indent=1, default=str) + "\n")
        dist.barrier()
        return RunResult(table, examples, sanity, self.run_dir, computed, reused, _model_records(ctx))

    def _provenance(self, ctx: RunContext) -> dict[str, Provenance]:
        """Each model's provenance: its checkpoint digest and the run's data, images, seed and versions."""
        common = dict(
            dataset=ctx.data.spec.name, split=ctx.data.split, n=len(ctx.indices), seed=self.config.seed,
            ellrobust_version=__version__, torch_version=torch.__version__,
        )  # fmt: skip
        return {name: Provenance(checkpoint=lm.digest, **common) for name, lm in ctx.models.items()}

    def _describe(
        self, ctx: RunContext, started: float, finished: list[tuple[Unit, UnitResult]], attention: dict
    ) -> dict:
        """run.json: the request, the models, the data, the environment, how the attention ran, and where the
        time went."""
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "config": self.config.to_dict(),
            "models": _model_records(ctx),
            "dataset": {
                "name": ctx.data.spec.name,
                "split": ctx.data.split,
                "digest": ctx.data.digest,
                "n": len(ctx.indices),
                "num_classes": ctx.data.num_classes,
                **self._data_choices(ctx),
                **({"n_ood": len(ctx.ood_indices)} if ctx.ood_indices else {}),  # imagenet-o: beside the n in-dist.
            },
            "corruption_protocol": ctx.corruption_protocol if self.config.corruptions else None,
            "environment": {**environment(), "world_size": ctx.dist.world_size},
            "startup": self.startup,
            "attention": attention,
            "worker_deaths": ctx.pool.deaths,  # workers that died and whose tasks a fresh worker ran again
            "wall_time_s": time.time() - started,
            "unit_seconds": sum(float(r.extra.get("seconds", 0.0)) for _, r in finished),
            "units": [
                {"label": unit.label, "precision": unit.precision or None, **_timings(result.extra)}
                for unit, result in finished
            ],
        }

    def _data_choices(self, ctx: RunContext) -> dict:
        """run.json's record of how the images were chosen and labelled, where the request chose it:
        the ``--indices`` file, the ``--class-map`` file, and
        the ImageNet-1k logits a 1000-class model was masked to."""
        out: dict[str, object] = {}
        if self.listed is not None:
            out["indices_file"] = self.listed.record()
        if self.config.class_map is not None:
            out["class_map"] = {"path": self.config.class_map, "sha256": _file_sha256(self.config.class_map)}
        if ctx.data.class_indices_1k is not None:
            masked = [m.name for m in ctx.models.values() if "logits_kept" in m.architecture()]
            out["class_indices_1k"] = {"indices": list(ctx.data.class_indices_1k), "masked_models": masked}
        return out


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def _model_records(ctx: RunContext) -> dict[str, dict]:
    """Each model's digest, weights, ellipticity, tokens and architecture: run.json's ``models``."""
    return {
        m.name: {
            "checkpoint": m.digest, "weights": m.weights, "elliptical": m.elliptical, "tokens": m.tokens,
            "config": m.architecture(),
        }
        for m in ctx.models.values()
    }  # fmt: skip


def _compile_record(start: dict) -> dict:
    """How this run's elliptical attention ran: compiled or eager, and the graphs it compiled (run.json ``attention``).

    ``compile_mode`` is ``ELLROBUST_COMPILE_ATTENTION`` (auto: compiled on CUDA only); the counts are this
    run's (the process's counters minus what they were when the run's units began).
    """
    now = compiled_attention.STATS.snapshot()
    counts = {k: now[k] - start[k] for k in ("graphs", "compile_seconds", "compiled_calls", "eager_calls")}
    return {
        "compile_mode": compiled_attention.compile_mode().value,
        "backend": os.environ.get(compiled_attention.BACKEND_ENV, compiled_attention.DEFAULT_BACKEND),
        "compiled": counts["compiled_calls"] > 0,
        **counts,
        "fallback": now["fallback"],
    }


#: Unit diagnostics that run.json lists per unit (time, work done, how attacks spent it, files written).
_TIMING_KEYS = (
    "seconds",
    "compile_seconds",
    "n_attacked",
    "components",
    "spsa_images_per_forward",
    "generated_images",
    "data_seconds",
    "model_seconds",
    "adversarial_file",
)


def unit_files(extra: dict) -> list[str]:
    """The files (relative to the run folder) a unit's results rely on: its adversarial images and the clean ones."""
    name = extra.get("adversarial_file")
    return [name, f"{ADVERSARIAL_DIR}/{CLEAN_FILE}"] if isinstance(name, str) else []


def _digest(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _timings(extra: dict) -> dict:
    return {k: extra[k] for k in _TIMING_KEYS if k in extra}


def environment() -> dict:
    """Versions and hardware, recorded in every run folder."""
    env = {
        "ellrobust": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import torchattacks

        env["torchattacks"] = torchattacks.__version__
    except Exception:  # pragma: no cover - optional in exotic installs
        env["torchattacks"] = None
    env["torchvision"] = importlib.metadata.version("torchvision")
    try:
        env["timm"] = importlib.metadata.version("timm")  # the builder of timm: models; without importing it
    except importlib.metadata.PackageNotFoundError:
        env["timm"] = None
    return env
