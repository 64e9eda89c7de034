"""Corruption units: one per corruption × severity, covering every model of the run at once.

Why one unit for all models (``Unit(model="*")``): corrupting an image costs far more than a forward
pass of the models compared here, and the corrupted images do not depend on the model. Each batch is
therefore corrupted once (in DataLoader workers, ``--workers``) and fed to every model, which also
guarantees that the models are compared on identical pixels. The unit's outcomes hold one 0/1 list
per model in ``ctx.indices`` order, from which the engine derives the paired comparisons (accuracy
difference with a 95 % CI, McNemar) of every two models per corruption and severity.

After all units, :meth:`CorruptionStage.derive` aggregates the per-severity accuracies into the
per-corruption accuracy, CE, mCE and relative mCE (:mod:`ellrobust.metrics.corruption`):

* ImageNet (``imagefolder`` with 1000 classes, or a precomputed ImageNet-C folder): normalised by
  AlexNet's errors, as in Hendrycks & Dietterich (2019); corruptions without AlexNet numbers (the
  extra ones) get accuracies but no CE.
* Any other dataset, two labelled variants: unnormalised (``{"normalization": "none"}``: the mean
  error) and relative to a baseline model of the run (``{"normalization": "baseline"}``, the
  ``baseline`` column names it). The baseline is the first non-elliptical model of the run, i.e. the
  plain DeiT the elliptical model is meant to beat, or the first model if all are elliptical.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ellrobust.corruptions import CORRUPTIONS, resolve_corruptions
from ellrobust.corruptions.generate import chunk_bounds
from ellrobust.corruptions.sources import CorruptionSource, open_source
from ellrobust.engine import ProgressEvent, RunContext, Unit, UnitResult
from ellrobust.metrics.corruption import (
    ALEXNET_CLEAN_ERROR,
    alexnet_errors,
    corruption_error,
    mean_corruption_error,
    relative_corruption_error,
)


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


class CorruptionStage:
    """Units over corruption × severity for all models; aggregates (CE, mCE) in :meth:`derive`.

    The source of images is opened in :meth:`units`, so a missing corruption or severity in a
    ``--corruption-root`` folder is reported before any corrupted image is evaluated.
    """

    def __init__(self) -> None:
        self._source: CorruptionSource | None = None
        self._names: tuple[str, ...] = ()

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
        return json.dumps({"source": self._source.label, **extra})

    @torch.no_grad()
    def run(self, unit: Unit, ctx: RunContext) -> UnitResult:
        chunks = self._source.chunks(unit.method, unit.severity)
        mine = [c for c in range(len(chunks)) if ctx.dist.owns(c)]  # under torchrun: this rank's batches
        loader = DataLoader(Subset(chunks, mine), batch_size=None, num_workers=ctx.config.workers)
        local: dict[str, dict[int, int]] = {name: {} for name in ctx.models}
        generated = 0
        data_s = model_s = 0.0  # where the time goes: waiting for images vs the models' forward passes
        ctx.progress(ProgressEvent("start", unit.label, total=len(loader)))
        tick = time.perf_counter()
        for chunk, (x, y, made) in zip(mine, loader, strict=True):
            positions = chunk_bounds(chunk, len(ctx.indices), ctx.config.batch_size)
            ready = time.perf_counter()
            data_s += ready - tick
            x, y = x.to(ctx.device), y.to(ctx.device)
            generated += int(made)
            for name, lm in ctx.models.items():
                local[name].update(zip(positions, (lm.module(x).argmax(1) == y).int().tolist(), strict=True))
            tick = time.perf_counter()
            model_s += tick - ready
            ctx.progress(ProgressEvent("advance", unit.label, advance=1))
        ctx.progress(ProgressEvent("end", unit.label))
        correct = {name: ctx.gather(vals, dtype=np.int64).tolist() for name, vals in local.items()}
        generated = sum(ctx.dist.gather_objects(generated))
        rows = [
            {
                "model": name,
                "method": unit.method,
                "params": unit.params,
                "eps": None,  # explicit: a run without attacks has no other eps to type the column
                "severity": unit.severity,
                "m_grad": "",
                "metric": "corruption_accuracy",
                "value": float(np.mean(vals)),
            }
            for name, vals in correct.items()
        ]
        extra = {
            "generated_images": generated,
            "images": len(ctx.indices),
            "source": self._source.label,
            "data_seconds": data_s,
            "model_seconds": model_s,
        }
        return UnitResult(rows=rows, outcomes=correct, extra=extra)

    def derive(self, ctx: RunContext, rows: list[dict]) -> list[dict]:
        """Per-corruption accuracy, CE, mCE and relative mCE of every model, from the unit rows."""
        if self._source is None:
            return []
        accuracy: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))  # model → c → s → acc
        clean: dict[str, float] = {}
        for r in rows:
            if r.get("metric") == "corruption_accuracy" and r.get("severity") is not None and r.get("method") in CORRUPTIONS:
                accuracy[r["model"]][r["method"]][int(r["severity"])] = r["value"]
            elif r.get("metric") == "clean_accuracy" and r.get("m_grad", "") == "":
                clean[r["model"]] = r["value"]
        errors = {m: {c: {s: 1.0 - a for s, a in sorted(by_s.items())} for c, by_s in by_c.items()} for m, by_c in accuracy.items()}
        clean_errors = {m: 1.0 - a for m, a in clean.items()}
        models = [m for m in ctx.models if m in errors]
        out = [
            self._row(m, c, "corruption_accuracy", float(np.mean(list(accuracy[m][c].values()))))
            for m in models
            for c in self._names
            if c in accuracy[m]
        ]
        for ref in self._references(ctx, errors, clean_errors):
            for m in models:
                out.extend(self._ce_rows(m, errors[m], clean_errors.get(m), ref))
        return out

    def _references(self, ctx: RunContext, errors: dict, clean_errors: dict[str, float]) -> list[Reference]:
        if self._source.imagenet:
            sev = sorted(ctx.config.severities)
            alexnet = {c: dict(zip(sev, e, strict=True)) for c in self._names if (e := alexnet_errors(c, sev)) is not None}
            return [Reference("alexnet", alexnet, ALEXNET_CLEAN_ERROR)]
        base = baseline_model(ctx)
        return [
            Reference("none"),
            Reference("baseline", errors.get(base, {}), clean_errors.get(base), baseline=base),
        ]

    def _ce_rows(self, model: str, errors: dict[str, dict[int, float]], clean_error: float | None, ref: Reference) -> list[dict]:
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
            out.append(self._row(model, c, "ce", ce, params={**label, "severities": sev}, baseline=ref.baseline))
            ces.append(ce)
            used.append(c)
            if clean_error is not None and (ref.errors is None or ref.clean_error is not None):
                relative.append(relative_corruption_error(mine, clean_error, theirs, ref.clean_error))
        if not used:
            return out
        summary = {**label, "severities": sorted({s for c in used for s in errors[c]}), "corruptions": used}
        out.append(self._row(model, "mce", "mce", mean_corruption_error(ces), params=summary, baseline=ref.baseline))
        if len(relative) == len(used):
            out.append(self._row(model, "mce", "relative_mce", mean_corruption_error(relative), params=summary, baseline=ref.baseline))
        return out

    def _row(self, model: str, method: str, metric: str, value: float, *, params: dict | None = None, baseline: str | None = None) -> dict:
        row = {
            "model": model,
            "method": method,
            "params": self._params(**(params or {})),
            "eps": None,
            "severity": None,
            "m_grad": "",
            "metric": metric,
            "value": value,
        }
        if baseline is not None:
            row["baseline"] = baseline
        return row


def baseline_model(ctx: RunContext) -> str:
    """The reference of baseline-normalised CE: the first plain (non-elliptical) model, else the first."""
    return next((name for name, lm in ctx.models.items() if not lm.elliptical), next(iter(ctx.models)))
