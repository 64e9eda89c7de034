"""Representation collapse on the clean images: one unit per model, measured layer by layer.

Collapse on adversarial images is measured by the attack stage itself, on the images it attacks
(see :mod:`ellrobust.measures.attack`), so both share one :class:`~ellrobust.measures.collapse_probe.CollapseConfig`.
The per-image values are kept in the unit result: every model measures every selected image here,
so the engine derives paired differences between models from them. Models without tokens (CNN
baselines) have no collapse units (:func:`~ellrobust.measures.collapse_probe.token_models`).
"""

from __future__ import annotations

import torch

from ellrobust.measures.collapse_probe import CollapseAccumulator, token_models
from ellrobust.measures.stage import Stage
from ellrobust.run.context import RunContext
from ellrobust.run.units import Unit, UnitResult


class CollapseStage(Stage):
    def units(self, ctx: RunContext) -> list[Unit]:
        config = ctx.config.collapse
        if config is None:
            return []
        names = token_models({name: lm.module for name, lm in ctx.models.items()})
        for name in names:  # a bad --layers fails before any collapse unit runs
            config.resolve_layers(ctx.models[name].module.depth, name)
        return [Unit("collapse", name, "collapse", config.unit_params()) for name in names]

    @torch.no_grad()
    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        accumulator = CollapseAccumulator(ctx.models[unit.model].module, ctx.config.collapse, unit.model)
        for batch in ctx.batches(None, unit.label, seed):
            accumulator.add(batch.images, batch.positions)
        accumulator.merge(ctx.dist.gather_objects(accumulator.state()))
        size = len(ctx.indices)
        measured = {"model": unit.model, "method": unit.method, "precision": ctx.config.collapse.precision.value}
        return UnitResult(rows=accumulator.rows(measured, size), values=accumulator.values(size))
