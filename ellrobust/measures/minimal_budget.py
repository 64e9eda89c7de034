"""Minimal-norm units: model × minimal-norm method × m_grad × precision, one ε* per clean-correct image.

A minimal-norm method (``--attack fmn``, ``--attack bisect-<attack>``; :attr:`AttackDef.minimal
<ellrobust.attacks.definitions.AttackDef.minimal>`) answers once per image with the smallest budget ε*
that breaks it. Only the clean-correct images are attacked; an image the model gets wrong clean has
ε* = 0. An image not broken within ``eps_max`` is *censored* (ε* recorded as ``eps_max``). The unit
saves ε* and the censoring flags, nothing that depends on the run's budgets: :meth:`MinimalStage.finish`
derives, for whichever grid the run asks (``ctx.eps_for(request)``), the robust accuracy at each ε
(robust when ε* > ε, :func:`~ellrobust.stats.minimal_budgets.robust_flags`) with the per-image outcomes
that every table, worst case, paired comparison and check reads, so the unit is reused across grids.
A grid beyond ``eps_max`` is refused before any work: censored ε* are unknown there.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from ellrobust.attacks import AttackRequest
from ellrobust.attacks.minimal_search import solve
from ellrobust.core.errors import UsageError
from ellrobust.measures.stage import Stage, stage
from ellrobust.results import ImageTable, Metric, Row
from ellrobust.run.context import RunContext
from ellrobust.run.units import Unit, UnitResult
from ellrobust.stats.minimal_budgets import ABS_TOL, REL_TOL, robust_flags


def minimal_requests(requests) -> list[AttackRequest]:
    """The run's minimal-norm methods, in the order the request gives them."""
    return [r for r in requests if r.definition.is_minimal]


def eps_grid(ctx: RunContext, request: AttackRequest) -> tuple[float, ...]:
    """The budgets the method's rows are read at: the run's grid for it, in increasing order."""
    return tuple(sorted(float(e) for e in ctx.eps_for(request)))


@stage("minimal", order=20)
class MinimalStage(Stage):
    def units(self, ctx: RunContext) -> list[Unit]:
        units = []
        requests = minimal_requests(ctx.config.attacks)
        for req in requests:
            grid, eps_max = eps_grid(ctx, req), float(req.params["eps_max"])
            if grid and grid[-1] > eps_max * (1 + REL_TOL) + ABS_TOL:
                raise UsageError(
                    f"{req.name}: the run's eps grid reaches {grid[-1] * 255:.4g}/255, above eps_max "
                    f"{eps_max * 255:.4g}/255 where censored ε* are unknown; raise eps_max or lower --eps."
                )
        for name, lm in ctx.models.items():
            for mode in ctx.config.m_grad_modes(lm.elliptical):
                for precision in ctx.config.precision:
                    for req in requests:
                        units.append(
                            Unit("minimal", name, req.name, req.params_json(), None, None, mode, (), precision.value)
                        )
        return units

    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        request = AttackRequest(unit.method, json.loads(unit.params))
        definition = request.definition
        twin = replace(unit, m_grad="detach")
        if unit.m_grad == "full" and definition.gradient_free and twin in ctx.results:
            saved = ctx.results[twin]  # no gradient, so m_grad cannot change it
            return UnitResult(
                rows=[r.replace(m_grad=unit.m_grad) for r in saved.rows],
                per_image=saved.per_image,
                extra={k: v for k, v in saved.extra.items() if k != "eps_grid"},
            )
        lm = ctx.models[unit.model]
        model = lm.module
        if lm.elliptical:
            model.set_m_grad(unit.m_grad)
        positions = np.flatnonzero(ctx.clean_outcomes(unit.model)).tolist()
        eps_max = float(request.params["eps_max"])
        stars: dict[int, float] = {}
        flags: dict[int, int] = {}
        for batch in ctx.batches(positions, unit.label, seed):
            found = solve(
                definition,
                model,
                batch.images,
                batch.labels,
                dict(request.params),
                num_classes=ctx.data.num_classes,
                seed=batch.seed,
                precision=unit.precision,
            )
            stars.update(zip(batch.positions, found.eps_star.double().cpu().tolist(), strict=True))
            flags.update(zip(batch.positions, found.censored.int().cpu().tolist(), strict=True))
        if lm.elliptical:
            model.set_m_grad("detach")
        eps_star = ctx.gather(stars)  # 0 where not attacked: misclassified clean
        censored = ctx.gather(flags, dtype=np.int8).astype(bool)
        truncated = np.where(censored, eps_max, eps_star)
        measured = Row(
            unit.model,
            Metric.EPS_STAR_MEDIAN,
            float(np.median(truncated)) if truncated.size else float("nan"),
            unit.method,
            unit.params,
            m_grad=unit.m_grad,
            precision=unit.precision,
        )
        rows = [measured, measured.with_metric(Metric.N_CENSORED, float(censored.sum()))]
        extra = {"norm": request.norm, "eps_max": eps_max, "n_attacked": len(positions)}
        per_image = ImageTable.of(unit.model, {"eps_star": eps_star, "censored": censored})
        return UnitResult(rows=rows, per_image=per_image, extra=extra)

    def finish(self, unit: Unit, result: UnitResult, ctx: RunContext) -> UnitResult:
        """The saved ε* read at this run's grid: one ``robust_accuracy`` row (and outcomes) per budget."""
        request = next(
            r for r in minimal_requests(ctx.config.attacks) if r.name == unit.method and r.params_json() == unit.params
        )
        grid = eps_grid(ctx, request)
        eps_max = float(result.extra["eps_max"])
        rows = [r for r in result.rows if r.metric is not Metric.ROBUST_ACCURACY]
        stars = result.per_image.column(unit.model, "eps_star")
        censored = result.per_image.column(unit.model, "censored")
        robust = robust_flags(stars, censored, [min(e, eps_max) for e in grid], eps_max=eps_max)
        for eps, flags in zip(grid, robust, strict=True):
            rows.append(
                Row(
                    unit.model,
                    Metric.ROBUST_ACCURACY,
                    float(flags.mean()),
                    unit.method,
                    unit.params,
                    eps=eps,
                    m_grad=unit.m_grad,
                    precision=unit.precision,
                )
            )
        return replace(result, rows=rows, extra={**result.extra, "eps_grid": list(grid)})
