"""Clean accuracy: one unit per model; its per-example outcomes gate every attack."""

from __future__ import annotations

import json

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
        nonfinite = 0
        for x, y in iter_batches(loader, ctx.device):
            logits = model(x)
            finite = torch.isfinite(logits).all(1)
            nonfinite += int((~finite).sum())
            correct.extend(((logits.argmax(1) == y) & finite).int().tolist())  # NaN logits never count as correct
            ctx.progress(ProgressEvent("advance", unit.label, advance=1))
        ctx.progress(ProgressEvent("end", unit.label))
        acc = sum(correct) / len(correct)
        common = {"model": unit.model, "method": "clean", "params": "{}", "m_grad": ""}
        rows = [{**common, "metric": "clean_accuracy", "value": acc}]
        if nonfinite:
            detail = json.dumps({"detail": f"{nonfinite} of {len(correct)} images give NaN/inf logits: broken weights or inputs"})
            rows.append({**common, "method": "sanity", "params": detail, "metric": "sanity_finite_logits", "value": 0.0})
        return UnitResult(rows=rows, outcomes={unit.model: correct})


