"""Corruption units: one per corruption × severity, covering every model of the run at once.

Why one unit for all models (``Unit(model="*")``): corrupting an image costs far more than a forward
pass of the models compared here, and the corrupted images do not depend on the model. Each image is
therefore corrupted once and every batch is fed to every model, which also guarantees that the models
are compared on identical pixels. The unit's outcomes hold one 0/1 list per model in ``ctx.indices``
order, from which the engine derives the paired comparisons of every two models per corruption and
severity.

Where the work goes: the corrupted images come from the run's one worker pool (:mod:`ellrobust.core.workers`),
one task per image (per batch for precomputed arrays), streamed in unit order with a bounded number of
tasks in flight. :meth:`CorruptionStage.prepare` starts that stream for every unit still to compute, so
the workers generate the next batches, and the next unit's, while the models evaluate the current
batch. The clean images are read from the run's image store by the workers themselves.

After all units, :meth:`CorruptionStage.derive` aggregates the per-severity accuracies into the
per-corruption accuracy, CE, mCE and relative mCE (:mod:`ellrobust.stats.corruption_error`), and the mCE
difference of every two models with a paired bootstrap interval over images:

* ImageNet (``imagefolder`` with 1000 classes under the ImageNet-C protocol, or a precomputed
  ImageNet-C folder): normalised by AlexNet's errors, as in Hendrycks & Dietterich (2019);
  corruptions without AlexNet numbers (the extra ones, ImageNet-3DCC's) get accuracies but no CE.
* Any other dataset, two labelled variants: unnormalised (``{"normalization": "none"}``: the mean
  error) and relative to a baseline model of the run (``{"normalization": "baseline"}``, the
  ``baseline`` column names it). The baseline is the first non-elliptical model of the run, i.e. the
  plain DeiT the elliptical model is meant to beat, or the first model if all are elliptical.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from ellrobust.core.precision import fp32_logits
from ellrobust.corruptions import is_corruption, resolve_corruptions
from ellrobust.corruptions.sources import BatchPlan, CorruptionSource, open_source, warm_up_generation
from ellrobust.measures.stage import Stage, stage
from ellrobust.request.config import EvalConfig
from ellrobust.results import CORRECT, ImageTable, Metric, Row
from ellrobust.run.context import ProgressEvent, RunContext
from ellrobust.run.units import Unit, UnitResult
from ellrobust.stats.calibration import max_softmax, top_k_hits
from ellrobust.stats.corruption_error import (
    ALEXNET_CLEAN_ERROR,
    alexnet_errors,
    corruption_error,
    mean_corruption_error,
    relative_corruption_error,
)
from ellrobust.stats.inference import paired_bootstrap_interval

#: Resamples of the paired bootstrap of the mCE difference.
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Reference:
    """What CE is normalised by: a name, the reference's errors and clean error, or nothing.

    Attributes:
        normalization: ``alexnet``, ``baseline`` or ``none`` (recorded in the rows' params).
        errors: per corruption, the reference's errors at each evaluated severity (a dict
            severity → error); None for the unnormalised variant. A corruption missing here gets no CE.
        clean_error: the reference's clean error (relative mCE); None when unnormalised or unknown.
        baseline: the baseline model's name, for the ``baseline`` column.
    """

    normalization: str
    errors: Mapping[str, Mapping[int, float]] | None = None
    clean_error: float | None = None
    baseline: str | None = None


@stage("corruption", order=30)
class CorruptionStage(Stage):
    def identity(self, unit: Unit, ctx: RunContext) -> dict[str, object]:
        return {"corruption_protocol": ctx.corruption_protocol}

    """Units over corruption × severity for all models; aggregates (CE, mCE) in :meth:`derive`.

    The source of images is opened in :meth:`units`, so a missing corruption or severity in a
    ``--corruption-root`` folder is reported before any corrupted image is evaluated.
    """

    def __init__(self) -> None:
        self._source: CorruptionSource | None = None
        self._names: tuple[str, ...] = ()
        self._stream: Iterator[np.ndarray] | None = None
        self._pending: dict[Unit, list[tuple[list[int], BatchPlan]]] = {}

    @staticmethod
    def before_workers(config: EvalConfig, image_size: int, protocol: str) -> None:
        """Compile what generation compiles (numba's glass_blur) once, before the workers fork."""
        if config.corruptions and config.corruption_source is None:
            warm_up_generation(resolve_corruptions(config.corruptions), config.severities, protocol, image_size)

    def units(self, ctx: RunContext) -> list[Unit]:
        cfg = ctx.config
        if not cfg.corruptions:
            return []
        self._names = resolve_corruptions(cfg.corruptions)
        self._source = open_source(ctx)
        self._source.check(self._names, cfg.severities)
        params = self._params()
        return [Unit("corruption", "*", name, params, None, s) for name in self._names for s in cfg.severities]

    def _params(self, **extra: object) -> str:
        return json.dumps({"source": self._source.label, **self._source.params, **extra})

    def _plans(self, ctx: RunContext, unit: Unit) -> list[tuple[list[int], BatchPlan]]:
        """This rank's batches of one unit with the tasks that produce their images."""
        return [(chunk, self._source.batch_plan(unit.method, unit.severity, chunk)) for _, chunk in ctx.owned_batches()]

    def prepare(self, ctx: RunContext, pending: list[Unit]) -> None:
        """Stream the images of every pending unit through the pool, in unit and batch order."""
        plans = {unit: self._plans(ctx, unit) for unit in pending}
        if pending:  # e.g. --cache's disk space
            self._source.reserve([plan for unit_plans in plans.values() for _, plan in unit_plans])
        self._pending = dict(plans)  # run() takes its unit's plans out of this one
        tasks = (task for unit in pending for _, plan in plans[unit] for task in plan.tasks)
        self._stream = ctx.pool.run(tasks, window=max(ctx.pool.default_window(), 2 * ctx.config.batch_size))

    @torch.no_grad()
    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        with ctx.pool.sharing_cores():
            return self._run(unit, ctx)

    def _run(self, unit: Unit, ctx: RunContext) -> UnitResult:
        plans = self._pending.pop(unit)
        local: dict[str, dict[int, int]] = {name: {} for name in ctx.models}
        predicted: dict[str, dict[int, int]] = {name: {} for name in ctx.models}
        confidence: dict[str, dict[int, float]] = {name: {} for name in ctx.models}
        top5: dict[str, dict[int, int]] = {name: {} for name in ctx.models}
        generated = 0
        data_s = model_s = 0.0  # where the time goes: waiting for images vs the models' forward passes
        ctx.progress(ProgressEvent("start", unit.label, total=len(plans)))
        tick = time.perf_counter()
        for positions, plan in plans:
            images = np.concatenate([next(self._stream) for _ in plan.tasks])
            plan.finish(images, ctx.store.labels[positions])
            ready = time.perf_counter()
            data_s += ready - tick
            x = torch.from_numpy(images).to(ctx.device).permute(0, 3, 1, 2).float().div_(255)
            y = torch.from_numpy(ctx.store.labels[positions]).to(ctx.device)
            generated += plan.generated
            for name, lm in ctx.models.items():
                logits = fp32_logits(lm.module, x)
                said = logits.argmax(1)
                local[name].update(zip(positions, (said == y).int().tolist(), strict=True))
                predicted[name].update(zip(positions, said.tolist(), strict=True))
                confidence[name].update(zip(positions, max_softmax(logits).tolist(), strict=True))
                top5[name].update(zip(positions, top_k_hits(logits, y).int().tolist(), strict=True))
            tick = time.perf_counter()
            model_s += tick - ready
            ctx.progress(ProgressEvent("advance", unit.label, advance=1))
        ctx.progress(ProgressEvent("end", unit.label))
        correct = {name: ctx.gather(vals, dtype=np.int64).tolist() for name, vals in local.items()}
        generated = sum(ctx.dist.gather_objects(generated))
        rows = [
            Row(
                name,
                Metric.CORRUPTION_ACCURACY,
                float(np.mean(vals)),
                unit.method,
                params=unit.params,
                severity=unit.severity,
            )
            for name, vals in correct.items()
        ]
        hits = {name: ctx.gather(vals, dtype=np.int64).tolist() for name, vals in top5.items()}
        rows += [
            Row(name, Metric.TOP5_ACCURACY, float(np.mean(v)), unit.method, params=unit.params, severity=unit.severity)
            for name, v in hits.items()
        ]
        extra = {
            "generated_images": generated,
            "images": len(ctx.indices),
            "source": self._source.label,
            "data_seconds": data_s,
            "model_seconds": model_s,
        }
        return UnitResult(rows=rows, per_image=_per_image(ctx, correct, predicted, confidence, hits), extra=extra)

    def derive(self, ctx: RunContext, rows: list[Row]) -> list[Row]:
        """Per-corruption accuracy, CE, mCE and relative mCE of every model, from the unit rows."""
        if self._source is None:
            return []
        accuracy: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))  # model → c → s → acc
        clean: dict[str, float] = {}
        for r in rows:
            if r.metric is Metric.CORRUPTION_ACCURACY and r.severity is not None and is_corruption(r.method):
                accuracy[r.model][r.method][r.severity] = r.value
            elif r.metric is Metric.CLEAN_ACCURACY and r.m_grad == "":
                clean[r.model] = r.value
        errors = {
            m: {c: {s: 1.0 - a for s, a in sorted(by_s.items())} for c, by_s in by_c.items()}
            for m, by_c in accuracy.items()
        }
        clean_errors = {m: 1.0 - a for m, a in clean.items()}
        models = [m for m in ctx.models if m in errors]
        out = [
            self._row(m, c, Metric.CORRUPTION_ACCURACY, float(np.mean(list(accuracy[m][c].values()))))
            for m in models
            for c in self._names
            if c in accuracy[m]
        ]
        references = self._references(ctx, errors, clean_errors)
        for ref in references:
            for m in models:
                out.extend(self._ce_rows(m, errors[m], clean_errors.get(m), ref))
        out.extend(self._mce_differences(ctx, models, references))
        return out

    def _mce_differences(self, ctx: RunContext, models: list[str], references: list[Reference]) -> list[Row]:
        """mCE of A minus mCE of B with a paired bootstrap interval over images, per normalisation.

        Each resample draws images with replacement and recomputes both models' errors on them (and
        the baseline's, where it is the reference), so the interval keeps the pairing; it is never
        narrower than its Student-t interval (:func:`~ellrobust.stats.inference.paired_bootstrap_interval`),
        so it stays honest at small n. The seed comes from the run seed and the pair, so the interval is
        the same in every run and under torchrun.
        """
        severities = tuple(sorted(ctx.config.severities))
        units = {(u.method, u.severity): r for u, r in ctx.results.items() if u.stage == "corruption"}
        names = [c for c in self._names if all((c, s) in units for s in severities)]
        if not names:
            return []
        # wrong[m][c, i]: how many severities of corruption c image i is misclassified at, per model
        wrong = {
            m: np.stack(
                [np.sum([~units[(c, s)].per_image.column(m, CORRECT) for s in severities], axis=0) for c in names]
            ).astype(np.float64)
            for m in models
        }
        n = len(ctx.indices)
        out = []
        for ref in references:
            used = [i for i, c in enumerate(names) if ref.errors is None or c in ref.errors]
            if not used:
                continue
            label = {"normalization": ref.normalization} | ({"baseline": ref.baseline} if ref.baseline else {})
            fixed = None
            if ref.normalization == "alexnet":
                fixed = np.asarray([sum(ref.errors[names[i]][s] for s in severities) for i in used])
            summary = {**label, "severities": list(severities), "corruptions": [names[i] for i in used]}

            def mce(model: str, rows: np.ndarray | None, ref=ref, used=used, fixed=fixed) -> float:
                own = (wrong[model][used] if rows is None else wrong[model][used][:, rows]).mean(axis=1)
                if ref.normalization == "none":
                    return float(np.mean(own / len(severities)))
                theirs = (
                    fixed
                    if fixed is not None
                    else (wrong[ref.baseline][used] if rows is None else wrong[ref.baseline][used][:, rows]).mean(
                        axis=1
                    )
                )
                with np.errstate(divide="ignore", invalid="ignore"):
                    return float(np.mean(np.where(theirs > 0, own / theirs, np.nan)))

            for a, b in combinations(models, 2):
                seed = int.from_bytes(_seed_bytes(ctx.config.seed, a, b, label), "little")
                low, high = paired_bootstrap_interval(
                    lambda rows, a=a, b=b: mce(a, rows) - mce(b, rows), n, seed=seed, resamples=BOOTSTRAP_RESAMPLES
                )
                row = self._row(
                    a, "mce", Metric.MCE.difference, mce(a, None) - mce(b, None), params=summary, baseline=b
                )
                out += [
                    row,
                    row.with_metric(Metric.MCE.difference.ci_low, low),
                    row.with_metric(Metric.MCE.difference.ci_high, high),
                ]
        return out

    def _references(self, ctx: RunContext, errors: dict, clean_errors: dict[str, float]) -> list[Reference]:
        if self._source.imagenet:
            sev = sorted(ctx.config.severities)
            alexnet = {
                c: dict(zip(sev, e, strict=True)) for c in self._names if (e := alexnet_errors(c, sev)) is not None
            }
            return [Reference("alexnet", alexnet, ALEXNET_CLEAN_ERROR)]
        base = baseline_model(ctx)
        return [
            Reference("none"),
            Reference("baseline", errors.get(base, {}), clean_errors.get(base), baseline=base),
        ]

    def _ce_rows(
        self, model: str, errors: dict[str, dict[int, float]], clean_error: float | None, ref: Reference
    ) -> list[Row]:
        """CE per corruption, mCE and relative mCE of one model against one reference."""
        label = {"normalization": ref.normalization} | ({"baseline": ref.baseline} if ref.baseline else {})
        out, ces, relative = [], [], []
        used: list[str] = []
        for c in self._names:
            if c not in errors or (ref.errors is not None and c not in ref.errors):
                continue
            sev = sorted(errors[c])
            mine = [errors[c][s] for s in sev]
            theirs = [ref.errors[c][s] for s in sev] if ref.errors is not None else None
            ce = corruption_error(mine, theirs)
            out.append(self._row(model, c, Metric.CE, ce, params={**label, "severities": sev}, baseline=ref.baseline))
            ces.append(ce)
            used.append(c)
            if clean_error is not None and (ref.errors is None or ref.clean_error is not None):
                relative.append(relative_corruption_error(mine, clean_error, theirs, ref.clean_error))
        if not used:
            return out
        summary = {**label, "severities": sorted({s for c in used for s in errors[c]}), "corruptions": used}
        out.append(
            self._row(model, "mce", Metric.MCE, mean_corruption_error(ces), params=summary, baseline=ref.baseline)
        )
        if len(relative) == len(used):
            out.append(
                self._row(
                    model,
                    "mce",
                    Metric.RELATIVE_MCE,
                    mean_corruption_error(relative),
                    params=summary,
                    baseline=ref.baseline,
                )
            )
        return out

    def _row(
        self,
        model: str,
        method: str,
        metric: Metric,
        value: float,
        *,
        params: dict | None = None,
        baseline: str | None = None,
    ) -> Row:
        return Row(model, metric, value, method, params=self._params(**(params or {})), baseline=baseline or "")


def _seed_bytes(seed: int, a: str, b: str, label: dict) -> bytes:
    """Four stable bytes for the bootstrap seed of one pair and normalisation."""
    return hashlib.sha256(json.dumps([seed, a, b, label], sort_keys=True).encode()).digest()[:4]


def baseline_model(ctx: RunContext) -> str:
    """The reference of baseline-normalised CE: the first plain (non-elliptical) model, else the first."""
    return next((name for name, lm in ctx.models.items() if not lm.elliptical), next(iter(ctx.models)))


def _per_image(
    ctx: RunContext,
    correct: dict[str, list[int]],
    predicted: dict[str, dict[int, int]],
    confidence: dict[str, dict[int, float]],
    hits: dict[str, list[int]],
) -> ImageTable:
    """Each model's verdict, prediction, confidence and top-5 hit per image (gathered over ranks)."""
    table = ImageTable()
    for name, vals in correct.items():
        gathered = {
            "prediction": ctx.gather(predicted[name], dtype=np.int64),
            "confidence": ctx.gather(confidence[name]),
        }
        table.put(name, {CORRECT: vals, **gathered, "top5": hits[name]})
    return table
