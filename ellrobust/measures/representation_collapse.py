"""Representation collapse: on the clean images, one unit per model, measured layer by layer; on the
adversarial images, a probe of every attack unit of a model with tokens (:class:`AdversarialCollapseProbe`).

Both share one :class:`~ellrobust.measures.collapse_probe.CollapseConfig`. The probe's rows carry the
attack's method, eps and m_grad; they cover the attacked (clean-correct) images only, so they are a
different image set from the clean collapse rows (method ``collapse``), which use every image.
The per-image values are kept in the unit's per-image table (a column family per metric,
:func:`~ellrobust.measures.collapse_probe.value_key`): every model measures every selected image here,
so the engine derives paired differences between models from them. Models without tokens (CNN
baselines) have no collapse units (:func:`~ellrobust.measures.collapse_probe.token_models`).
"""

from __future__ import annotations

import torch

from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, attack_probe
from ellrobust.measures.collapse_probe import CollapseAccumulator, token_models
from ellrobust.measures.stage import Stage, stage
from ellrobust.request.config import collapse_key
from ellrobust.results import ImageTable
from ellrobust.run.context import RunContext
from ellrobust.run.units import Unit, UnitResult


@stage("collapse", order=40)
class CollapseStage(Stage):
    def identity(self, unit: Unit, ctx: RunContext) -> dict[str, object]:
        return {"collapse": collapse_key(ctx.config.collapse)}

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
        return UnitResult(
            rows=accumulator.rows(measured, size), per_image=ImageTable.of(unit.model, accumulator.values(size))
        )


@attack_probe("collapse")
class AdversarialCollapseProbe(AttackProbe):
    order = 20

    def __init__(self, scope: AttackScope) -> None:
        self.scope = scope
        self.accumulator = CollapseAccumulator(scope.model.module, scope.ctx.config.collapse, scope.unit.model)

    @staticmethod
    def identity(ctx: RunContext) -> dict[str, object]:
        return {"collapse": collapse_key(ctx.config.collapse)} if ctx.config.collapse is not None else {}

    @classmethod
    def open(cls, scope: AttackScope) -> AdversarialCollapseProbe | None:
        return cls(scope) if scope.ctx.config.collapse is not None and scope.model.tokens else None

    def observe(self, batch: AttackedBatch) -> None:
        self.accumulator.add(batch.adversarial, batch.positions)

    def finish(self, result: UnitResult) -> None:
        ctx, unit = self.scope.ctx, self.scope.unit
        self.accumulator.merge(ctx.dist.gather_objects(self.accumulator.state()))
        measured = {f: getattr(unit, f) for f in ("model", "method", "params", "eps", "m_grad", "precision")}
        size = len(ctx.indices)
        result.rows.extend(self.accumulator.rows(measured, size, extra_params=self.scope.request.params))
        result.per_image.put(unit.model, self.accumulator.values(size))
