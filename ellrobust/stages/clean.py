"""Clean accuracy: one unit per model; its per-example outcomes gate every attack."""

from __future__ import annotations

import torch

from ellrobust.engine import ProgressEvent, RunContext, Unit, UnitResult, iter_batches


class CleanStage:
    def units(self, ctx: RunContext) -> list[Unit]:
        return [Unit("clean", name, "clean") for name in ctx.models]

    @torch.no_grad()
    def run(self, unit: Unit, ctx: RunContext) -> UnitResult:
        model = ctx.models[unit.model].module
        loader = ctx.loader()
        ctx.progress(ProgressEvent("start", unit.label, total=len(loader)))
        correct: list[int] = []
        for x, y in iter_batches(loader, ctx.device):
            correct.extend((model(x).argmax(1) == y).int().tolist())
            ctx.progress(ProgressEvent("advance", unit.label, advance=1))
        ctx.progress(ProgressEvent("end", unit.label))
        acc = sum(correct) / len(correct)
        row = {"model": unit.model, "method": "clean", "params": "{}", "m_grad": "", "metric": "clean_accuracy", "value": acc}
        return UnitResult(rows=[row], outcomes={unit.model: correct})


