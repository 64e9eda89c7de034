"""The evaluation engine: runs a plan over models × methods, one resumable unit at a time.

Data flow, one direction only::

    dataset ─► models ─► stages (clean, attacks, corruptions, collapse) ─► units ─► results table

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
import platform
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from itertools import combinations
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ellrobust.data import LoadedDataset, load_dataset, select_indices
from ellrobust.distributed import DistInfo, batches, init_distributed
from ellrobust.errors import UsageError
from ellrobust.models import load_model, state_dict_digest
from ellrobust.models.zoo import default_checkpoint
from ellrobust.registry import Registry
from ellrobust.results import SCHEMA_VERSION, RunLock, atomic_write, save_table, to_frame
from ellrobust.version import __version__

#: ``--m-grad``: detach (the paper), full (adaptive), or both side by side.
M_GRAD_CHOICES = ("detach", "full", "both")


@dataclass(frozen=True)
class EvalConfig:
    """Everything a run depends on. Frozen: the engine never mutates the request."""

    models: tuple[str, ...]
    checkpoints: tuple[str | None, ...] = ()
    dataset: str = "digits"
    data_root: str | None = None
    split: str | None = None
    n: int | None = None
    seed: int = 0
    batch_size: int = 128
    attacks: tuple = ()  # AttackRequest, ...
    eps: tuple[float, ...] | None = None  # None: the dataset's (or the L2 attack's) defaults
    m_grad: str = "detach"
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    corruption_source: str | None = None  # a precomputed -C folder instead of on-the-fly generation
    cache_dir: str | None = None
    workers: int = 0
    collapse: object | None = None  # a collapse.CollapseConfig, or None
    sanity: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.models:
            raise UsageError("no model given; pass --model NAME (see `ellrobust models`).")
        if self.checkpoints and len(self.checkpoints) != len(self.models):
            raise UsageError(f"{len(self.checkpoints)} --checkpoint for {len(self.models)} --model; give one per model, in order.")
        if len(set(self.models)) != len(self.models):
            raise UsageError("the same --model is given twice; give each model once.")
        if self.m_grad not in M_GRAD_CHOICES:
            raise UsageError(f"--m-grad must be one of {', '.join(M_GRAD_CHOICES)} (got {self.m_grad!r}).")
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive (got {self.batch_size}).")
        if self.n is not None and self.n <= 0:
            raise UsageError(f"--n must be a positive number of images (got {self.n}).")

    def to_dict(self) -> dict:
        """The request as plain JSON-ready data (what run.json records and the default --out hashes)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("attacks", "collapse")}
        out["attacks"] = [{"name": a.name, "params": dict(a.params), "eps": a.eps} for a in self.attacks]
        out["collapse"] = _collapse_key(self.collapse)
        return json.loads(json.dumps(out, default=str))

    def m_grad_modes(self, elliptical: bool) -> tuple[str, ...]:
        """A baseline model has no metric to differentiate through: it runs once, with m_grad ''."""
        if not elliptical:
            return ("",)
        return ("detach", "full") if self.m_grad == "both" else (self.m_grad,)


@dataclass
class LoadedModel:
    name: str
    module: nn.Module
    digest: str
    elliptical: bool
    weights: str  # where the weights came from: a file, a shipped checkpoint, or a seeded initialisation


@dataclass(frozen=True)
class Unit:
    """One saved piece of work. ``model`` is ``"*"`` for units that cover every model at once."""

    stage: str
    model: str
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    m_grad: str = ""
    prior: tuple[float, ...] = ()  # smaller budgets of the same attack run before this one (nested eps)

    @property
    def label(self) -> str:
        parts = [self.model, self.method]
        if self.eps is not None:
            parts.append(f"eps={self.eps * 255:.3g}/255")
        if self.severity is not None:
            parts.append(f"s{self.severity}")
        if self.m_grad:
            parts.append(f"m_grad={self.m_grad}")
        return " ".join(parts)


@dataclass
class UnitResult:
    """Rows (partial: the engine adds provenance), per-example outcomes per model, and diagnostics."""

    rows: list[dict] = field(default_factory=list)
    outcomes: dict[str, list[int]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressEvent:
    kind: str  # "start", "advance", "end"
    label: str
    total: int = 0
    advance: int = 0
    cached: bool = False


ProgressFn = Callable[[ProgressEvent], None]


def _no_progress(event: ProgressEvent) -> None:
    return None


@dataclass
class RunContext:
    """What every stage sees: the request, the data, the models, the clean outcomes.

    Stages read images through :meth:`batches` and collect per-position results with :meth:`gather`:
    both work the same in one process and under ``torchrun`` (see :mod:`ellrobust.distributed`).
    """

    config: EvalConfig
    data: LoadedDataset
    indices: list[int]
    models: dict[str, LoadedModel]
    progress: ProgressFn
    dist: DistInfo = field(default_factory=DistInfo)
    clean: dict[str, np.ndarray] = field(default_factory=dict)
    results: dict[Unit, UnitResult] = field(default_factory=dict)  # every unit finished so far
    unit_seed: int = 0

    @property
    def device(self) -> torch.device:
        return torch.device(self.dist.device(self.config.device))

    def batches(self, positions: list[int] | None, label: str) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """This rank's batches of ``positions`` (0-based within the selection; None: all of them).

        Yields (positions of the batch, images, labels) on the device. The cut into batches is the
        same in every process layout, and the global RNG is seeded from the unit seed and the batch
        index before each batch, so a batch's random numbers (random starts, noise) do not depend on
        which rank runs it or on what ran before it. Emits progress events for ``label``.
        """
        positions = list(range(len(self.indices))) if positions is None else list(positions)
        mine = [(b, chunk) for b, chunk in enumerate(batches(positions, self.config.batch_size)) if self.dist.owns(b)]
        flat = [self.indices[p] for _, chunk in mine for p in chunk]
        loader = DataLoader(Subset(self.data.dataset, flat), batch_size=self.config.batch_size, shuffle=False, num_workers=self.config.workers)
        self.progress(ProgressEvent("start", label, total=len(mine)))
        for (b, chunk), (x, y) in zip(mine, loader if flat else (), strict=True):
            seed_everything(self.unit_seed + b)
            yield chunk, x.to(self.device), y.to(self.device)
            self.progress(ProgressEvent("advance", label, advance=1))
        self.progress(ProgressEvent("end", label))

    def gather(self, values: dict[int, float], size: int | None = None, dtype=np.float64) -> np.ndarray:
        """Per-position values from every rank as one array over the selection (or ``size``)."""
        return self.dist.gather_values(values, len(self.indices) if size is None else size, dtype)

    def eps_for(self, request) -> tuple[float, ...]:
        if request.eps is not None:
            return request.eps
        if self.config.eps is not None:
            return self.config.eps
        return request.definition.default_eps or self.data.spec.default_eps


class Stage(Protocol):
    """A family of units. Stages run in registration order; later ones may read ``ctx.clean``.

    A stage may also define ``derive(ctx, rows) -> list[dict]``: aggregate rows computed from all
    rows of the run once every unit is done (e.g. mCE over corruptions).
    """

    def units(self, ctx: RunContext) -> list[Unit]: ...

    def run(self, unit: Unit, ctx: RunContext) -> UnitResult: ...


STAGES: Registry[Callable[[], Stage]] = Registry("stage")


def unit_seed(base_seed: int, key: str) -> int:
    """A per-unit seed derived from the run seed and the unit's key (stable across resumes)."""
    return (int(key[:8], 16) ^ base_seed) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class UnitStore:
    """Finished units on disk, one JSON file each, written atomically."""

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
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None  # a damaged unit file is simply recomputed
        if data.get("key") != key:
            return None
        outcomes = {m: [int(c) for c in bits] for m, bits in data["outcomes"].items()}
        return UnitResult(rows=data["rows"], outcomes=outcomes, extra=data.get("extra", {}))

    def save(self, key: str, unit: Unit, result: UnitResult) -> None:
        payload = {
            "key": key,
            "unit": asdict(unit),
            "rows": result.rows,
            "outcomes": {m: "".join(str(int(v)) for v in vals) for m, vals in result.outcomes.items()},
            "extra": result.extra,
        }
        atomic_write(self.path(key, unit), json.dumps(payload, sort_keys=True) + "\n")


@dataclass
class RunResult:
    table: object  # pandas.DataFrame
    examples: object  # pandas.DataFrame
    sanity: list[dict]
    run_dir: Path
    computed: int
    reused: int


def load_models(config: EvalConfig, data: LoadedDataset, device: str) -> dict[str, LoadedModel]:
    """Load every model of the run for the dataset (its classes, its image size, its default size)."""
    models = {}
    checkpoints = config.checkpoints or (None,) * len(config.models)
    for name, ckpt in zip(config.models, checkpoints, strict=True):
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)  # a randomly initialised architecture is the same in every run
            module = load_model(
                name,
                checkpoint=ckpt,
                num_classes=data.num_classes,
                dataset=data.spec.name,
                default_arch=data.spec.default_arch,
                img_size=data.spec.image_size,
            ).to(device)
        models[name] = LoadedModel(name, module, state_dict_digest(module), bool(module.cfg.elliptical_layers), _weights_source(name, ckpt, data, config.seed))
    return models


def _weights_source(name: str, checkpoint: str | None, data: LoadedDataset, seed: int) -> str:
    if checkpoint is not None:
        return str(checkpoint)
    shipped = default_checkpoint(name, dataset=data.spec.name, default_arch=data.spec.default_arch)
    return f"shipped: {shipped.filename}" if shipped else f"random initialisation (seed {seed})"


class Evaluation:
    """Runs an :class:`EvalConfig` into a run folder and returns the assembled results."""

    def __init__(self, config: EvalConfig, run_dir: str | Path, progress: ProgressFn = _no_progress, command: str | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.command = command  # the command line that asked for the run, recorded in run.json

    def identity(self, unit: Unit, ctx: RunContext) -> str:
        ident = {
            "unit": asdict(unit),
            "checkpoints": {m.name: m.digest for m in ctx.models.values()} if unit.model == "*" else ctx.models[unit.model].digest,
            "data": ctx.data.digest,
            "split": ctx.data.split,
            "indices": hashlib.sha256(np.asarray(ctx.indices, dtype=np.int64).tobytes()).hexdigest(),
            "seed": self.config.seed,
            "corruption_source": self.config.corruption_source,
            # attack units also measure collapse on their adversarial images when it is requested
            "collapse": _collapse_key(self.config.collapse) if unit.stage == "attack" else None,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()

    def run(self) -> RunResult:
        """Run every unit not already on disk, then assemble and save the table (rank 0 writes)."""
        from ellrobust import stages as _stages  # noqa: F401  (registers the stages)

        cfg = self.config
        dist = init_distributed(cfg.device)
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise UsageError(f"--out {str(self.run_dir)!r} is a file; pass a folder.")
        started = time.time()
        with RunLock(self.run_dir) if dist.is_main else contextlib.nullcontext():
            data = load_dataset(cfg.dataset, cfg.split, cfg.data_root)
            indices = select_indices(len(data), cfg.n, cfg.seed)
            models = load_models(cfg, data, dist.device(cfg.device))
            ctx = RunContext(cfg, data, indices, models, self.progress if dist.is_main else _no_progress, dist)
            store = UnitStore(self.run_dir)
            all_rows: list[dict] = []
            outcomes: list[tuple[Unit, str, list[int]]] = []
            extras: list[tuple[Unit, dict]] = []
            computed = reused = 0
            stages = []
            for stage_name, make_stage in STAGES.items():
                stage = make_stage()
                stages.append(stage)
                for unit in stage.units(ctx):
                    key = self.identity(unit, ctx)
                    result = dist.broadcast(store.load(key, unit) if dist.is_main else None)  # all ranks agree
                    if result is None:
                        ctx.unit_seed = unit_seed(cfg.seed, key)
                        seed_everything(ctx.unit_seed)
                        tick = time.perf_counter()
                        result = stage.run(unit, ctx)
                        result.extra["seconds"] = time.perf_counter() - tick
                        if dist.is_main:
                            store.save(key, unit, result)
                        computed += 1
                    else:
                        ctx.progress(ProgressEvent("end", unit.label, cached=True))
                        reused += 1
                    ctx.results[unit] = result
                    if stage_name == "clean":
                        ctx.clean[unit.model] = np.asarray(result.outcomes[unit.model], dtype=bool)
                    all_rows.extend(result.rows)
                    for model, vals in result.outcomes.items():
                        outcomes.append((unit, model, vals))
                    extras.append((unit, result.extra))
            for stage in stages:
                if hasattr(stage, "derive"):
                    all_rows.extend(stage.derive(ctx, list(all_rows)))
            derived, sanity = derive(ctx, outcomes, extras, all_rows)
            all_rows.extend(derived)
            table = self._finish_table(all_rows, ctx)
            examples = examples_frame(outcomes, ctx)
            if dist.is_main:
                save_table(table, self.run_dir)
                atomic_write(self.run_dir / "examples.csv.gz", _gzip(examples.to_csv(index=False, lineterminator="\n")))
                atomic_write(self.run_dir / "run.json", json.dumps(self._describe(ctx, started), indent=1, default=str) + "\n")
            dist.barrier()
        return RunResult(table, examples, sanity, self.run_dir, computed, reused)

    def _finish_table(self, rows: list[dict], ctx: RunContext):
        base = {
            "dataset": ctx.data.spec.name,
            "split": ctx.data.split,
            "n": len(ctx.indices),
            "seed": self.config.seed,
            "ellrobust_version": __version__,
            "torch_version": torch.__version__,
        }
        full = []
        for row in rows:
            model = row.get("model")
            ck = ctx.models[model].digest if model in ctx.models else None
            full.append({**base, "checkpoint": ck, **row})
        return to_frame(full)

    def _describe(self, ctx: RunContext, started: float) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command,
            "config": self.config.to_dict(),
            "models": {m.name: {"checkpoint": m.digest, "weights": m.weights, "elliptical": m.elliptical, "config": _cfg_dict(m.module)} for m in ctx.models.values()},
            "dataset": {"name": ctx.data.spec.name, "split": ctx.data.split, "digest": ctx.data.digest, "n": len(ctx.indices), "num_classes": ctx.data.num_classes},
            "environment": {**environment(), "world_size": ctx.dist.world_size},
            "wall_time_s": time.time() - started,
            "unit_seconds": sum(float(r.extra.get("seconds", 0.0)) for r in ctx.results.values()),
        }


def _collapse_key(collapse: object | None) -> object:
    return json.loads(json.dumps(asdict(collapse), default=str)) if collapse is not None else None


def _cfg_dict(module: nn.Module) -> dict:
    cfg = getattr(module, "cfg", None)
    return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(cfg).items()} if cfg is not None else {}


def environment() -> dict:
    """Versions and hardware, recorded in every run folder."""
    import os

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
    return env


def _gzip(text: str) -> bytes:
    import gzip

    return gzip.compress(text.encode(), mtime=0)


def examples_frame(outcomes: list[tuple[Unit, str, list[int]]], ctx: RunContext):
    import pandas as pd

    frames = []
    for unit, model, vals in outcomes:
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "method": unit.method,
                    "params": unit.params,
                    "eps": unit.eps,
                    "severity": unit.severity,
                    "m_grad": unit.m_grad,
                    "index": ctx.indices,
                    "correct": np.asarray(vals, dtype=np.int8),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["model", "method", "params", "eps", "severity", "m_grad", "index", "correct"])
    return pd.concat(frames, ignore_index=True)


def derive(ctx: RunContext, outcomes, extras, rows) -> tuple[list[dict], list[dict]]:
    """Numbers computed from the units: worst case over attacks, paired comparisons, sanity flags."""
    from ellrobust.attacks.sanity import sanity_rows, worst_case_rows

    derived = worst_case_rows(ctx, outcomes)
    by_model: dict[str, dict[tuple, np.ndarray]] = {}
    for unit, model, vals in outcomes:
        by_model.setdefault(model, {})[(unit.method, unit.params, unit.eps, unit.severity, unit.m_grad)] = np.asarray(vals, bool)
    for row in derived:
        key = (row["method"], row["params"], row.get("eps"), row.get("severity"), row.get("m_grad", ""))
        by_model.setdefault(row["model"], {})[key] = np.asarray(row.pop("_outcomes"), bool)
    names = list(ctx.models)
    for a, b in combinations(names, 2):
        derived.extend(paired_rows(a, b, by_model.get(a, {}), by_model.get(b, {})))
    sanity = sanity_rows(ctx, rows + derived, extras) if ctx.config.sanity else []
    return derived + sanity, sanity


def paired_rows(a: str, b: str, outcomes_a: dict, outcomes_b: dict) -> list[dict]:
    """Paired comparison rows of model ``a`` against ``b`` on every method both were measured on.

    A baseline runs once (m_grad '') and is compared with each m_grad mode of an elliptical model.
    """
    from ellrobust.metrics.stats import paired_comparison

    rows = []
    for key in sorted(set(outcomes_a) | set(outcomes_b), key=str):
        method, params, eps, severity, mg = key
        blank = (method, params, eps, severity, "")
        if mg == "" and not (key in outcomes_a and key in outcomes_b):
            continue
        va = outcomes_a.get(key, outcomes_a.get(blank))
        vb = outcomes_b.get(key, outcomes_b.get(blank))
        if va is None or vb is None:
            continue
        cmp = paired_comparison(va, vb)
        common = {"model": a, "baseline": b, "method": method, "params": params, "eps": eps, "severity": severity, "m_grad": mg}
        for metric, value in (
            ("accuracy_difference", cmp.difference),
            ("difference_ci_low", cmp.ci_low),
            ("difference_ci_high", cmp.ci_high),
            ("mcnemar_p", cmp.p_value),
        ):
            rows.append({**common, "metric": metric, "value": value})
    return rows
