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
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ellrobust.core.determinism import deterministic_mode
from ellrobust.core.distributed import init_distributed, local_world_size
from ellrobust.core.files import RunLock, atomic_write, check_destination
from ellrobust.core.version import __version__
from ellrobust.core.workers import WorkerPool, auto_workers
from ellrobust.corruptions.protocol import resolve_protocol
from ellrobust.data import LoadedDataset, image_store, load_dataset, select_indices
from ellrobust.data.imagenet_o import split_ood
from ellrobust.data.selection import IndexList, read_index_file
from ellrobust.engine.model_loading import file_sha256, load_models, model_records
from ellrobust.engine.provenance import compile_record, environment, unit_timings
from ellrobust.engine.unit_store import UnitStore
from ellrobust.measures import Stage, ordered_stages
from ellrobust.measures.paired import derive
from ellrobust.measures.primary_claims import PRIMARIES
from ellrobust.models import compiled as compiled_attention
from ellrobust.request.config import EvalConfig
from ellrobust.results import SCHEMA_VERSION, Provenance, Row, examples_frame, save_examples, save_table
from ellrobust.results import table as results_table
from ellrobust.run.context import LoadedModel, ProgressEvent, ProgressFn, RunContext, no_progress, seed_everything
from ellrobust.run.units import Unit, UnitResult, unit_seed

__all__ = ["EvalConfig", "Evaluation", "RunContext", "RunResult", "Unit", "UnitResult", "load_models"]


#: The parts of a unit's identity that some stages give (:meth:`~ellrobust.measures.stage.Stage.identity`),
#: None for every other unit: every unit's identity has the same fields, so its seed, and with it every
#: random start and SPSA direction, is the one 0.4 drew (the same numbers as the CI baseline).
STAGE_PARTS = ("corruption_protocol", "collapse")


@dataclass
class RunResult:
    table: object  # pandas.DataFrame
    examples: object  # pandas.DataFrame
    sanity: list[dict]
    run_dir: Path
    computed: int
    reused: int
    models: dict[str, dict]  # run.json's ``models`` (on every rank: the verdict needs to know which is elliptical)


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

    def identity(self, unit: Unit, stage: Stage, ctx: RunContext) -> str:
        """A hash of everything a unit's numbers depend on, and of what its stage measures beside them:
        its key on disk (another set of probes or other kernels: not the same unit)."""
        return _digest(
            {
                **self._numbers(unit, stage, ctx),
                "deterministic": self.config.deterministic,
                **stage.observers(unit, ctx),
            }
        )

    def seed_identity(self, unit: Unit, stage: Stage, ctx: RunContext) -> str:
        """The hash a unit's seed comes from: what its numbers depend on, without what is measured beside
        them (:meth:`~ellrobust.measures.stage.Stage.observers`) or the kernels, so that an attack gives
        the same images and the same robust accuracy with or without its probes."""
        return _digest(self._numbers(unit, stage, ctx))

    def _numbers(self, unit: Unit, stage: Stage, ctx: RunContext) -> dict:
        """What a unit's numbers depend on: its models and data, the run's seed, and its stage's part."""
        models = list(ctx.models.values()) if unit.model == "*" else [ctx.models[unit.model]]
        return {
            "unit": asdict(unit),
            "checkpoints": {m.name: m.digest for m in models} if unit.model == "*" else models[0].digest,
            "architectures": {m.name: m.architecture() for m in models},
            "data": ctx.data.digest,
            "split": ctx.data.split,
            "indices": ctx.indices_digest,
            "seed": self.config.seed,
            "corruption_source": self.config.corruption_source,
            **dict.fromkeys(STAGE_PARTS),
            **stage.identity(unit, ctx),
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
        for stage in ordered_stages():  # e.g. compile numba's glass_blur once, for every worker
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
        stages = [make_stage() for make_stage in ordered_stages()]
        for stage in stages:
            planned = [(unit, self.identity(unit, stage, ctx)) for unit in stage.units(ctx)]
            # every rank takes rank 0's answer, so all ranks agree on what is reused
            saved = [dist.broadcast(units.load(key, unit) if dist.is_main else None) for unit, key in planned]
            stage.prepare(ctx, [unit for (unit, _), result in zip(planned, saved, strict=True) if result is None])
            for (unit, key), result in zip(planned, saved, strict=True):
                if result is None:
                    seed = unit_seed(cfg.seed, self.seed_identity(unit, stage, ctx))
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
            described = self._describe(ctx, started, finished, compile_record(self._compile_start))
            atomic_write(self.run_dir / "run.json", json.dumps(described, indent=1, default=str) + "\n")
        dist.barrier()
        return RunResult(table, examples, sanity, self.run_dir, computed, reused, model_records(ctx))

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
            "primaries": PRIMARIES,  # each claim's primary endpoint, fixed in the code before any number
            "models": model_records(ctx),
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
                {"label": unit.label, "precision": unit.precision or None, **unit_timings(result.extra)}
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
            out["class_map"] = {"path": self.config.class_map, "sha256": file_sha256(self.config.class_map)}
        if ctx.data.class_indices_1k is not None:
            masked = [m.name for m in ctx.models.values() if "logits_kept" in m.architecture()]
            out["class_indices_1k"] = {"indices": list(ctx.data.class_indices_1k), "masked_models": masked}
        return out


def _digest(ident: dict) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
