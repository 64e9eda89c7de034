"""Out-of-distribution detection (imagenet-o): one unit per model, scoring every image by its maximum softmax.

The stage has units only when the run's dataset has OOD images (:attr:`RunContext.ood_indices`).
A unit reads the in-distribution images (the selection) and the OOD images (stored after it) from
the run's one image store, and scores each by its maximum softmax probability over the dataset's
``score_classes`` (ImageNet-O's 200 classes, as Hendrycks et al.'s protocol masks the logits),
in strict fp32 like every verdict. Its rows: AUROC with DeLong's 95 % interval and AUPR, OOD
positive with the score −MSP (:mod:`ellrobust.stats.ood_detection`). The per-image MSP and OOD flags stay
in the unit's per-image table (columns ``msp`` and ``ood``): the paired comparison between models
(:mod:`ellrobust.measures.paired`) and the run folder's ``ood_scores.csv.gz``
(:mod:`ellrobust.results.ood_scores`, written by :meth:`OODStage.derive`) are made from them.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ellrobust.core.precision import Precision, precision_scope
from ellrobust.measures.stage import Stage, stage
from ellrobust.results import ImageTable, Metric, Row, declare_column
from ellrobust.results.ood_scores import save_scores, scores_frame
from ellrobust.run.context import RunContext
from ellrobust.run.units import Unit, UnitResult
from ellrobust.stats.ood_detection import auroc, auroc_interval, average_precision

#: The method and params of every OOD row: the score is the maximum softmax probability.
OOD_METHOD = "ood"
OOD_PARAMS = json.dumps({"score": "msp"})

declare_column("msp", np.float64, "the maximum softmax probability (OOD units: in-distribution images, then OOD)")
declare_column("ood", bool, "1: an out-of-distribution image (OOD units)")


def ood_scores(results: dict[Unit, UnitResult]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each model's (MSP, OOD flags) over the run's images, in-distribution first, from its OOD unit."""
    return {
        unit.model: (r.per_image.column(unit.model, "msp"), r.per_image.column(unit.model, "ood"))
        for unit, r in results.items()
        if unit.stage == OOD_METHOD
    }


@stage("ood", order=50)
class OODStage(Stage):
    def units(self, ctx: RunContext) -> list[Unit]:
        if not ctx.ood_indices:
            return []
        return [Unit("ood", name, OOD_METHOD, OOD_PARAMS) for name in ctx.models]

    @torch.no_grad()
    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        model = ctx.models[unit.model].module
        classes = torch.as_tensor(ctx.data.dataset.score_classes, dtype=torch.long, device=ctx.device)
        size = len(ctx.indices) + len(ctx.ood_indices)
        local: dict[int, float] = {}
        for batch in ctx.batches(list(range(size)), unit.label, seed):
            with precision_scope(Precision.FP32, batch.images.device):
                logits = model(batch.images).float()
            msp = torch.softmax(logits[:, classes], dim=1).amax(dim=1)
            local.update(zip(batch.positions, msp.tolist(), strict=True))
        msp = ctx.gather(local, size=size)
        ood = np.arange(size) >= len(ctx.indices)
        score = -msp  # higher: more likely out of distribution (Hendrycks et al.)
        nan = float("nan")  # NaN logits (the clean stage's sanity row names them): no ranking, no statistic
        finite = bool(np.isfinite(score).all())
        low, high = auroc_interval(score, ood) if finite else (nan, nan)
        row = Row(unit.model, Metric.OOD_AUROC, auroc(score, ood) if finite else nan, OOD_METHOD, OOD_PARAMS)
        rows = [
            row,
            row.with_metric(Metric.OOD_AUROC.ci_low, low),
            row.with_metric(Metric.OOD_AUROC.ci_high, high),
            row.with_metric(Metric.OOD_AUPR, average_precision(score, ood) if finite else nan),
        ]
        return UnitResult(rows=rows, per_image=ImageTable.of(unit.model, {"msp": msp, "ood": ood}))

    def derive(self, ctx: RunContext, rows: list[Row]) -> list[Row]:
        """Write the per-image scores of every model (no rows: the paired ones belong to the Holm family)."""
        scores = ood_scores(ctx.results)
        if scores and ctx.dist.is_main and ctx.run_dir is not None:
            save_scores(scores_frame(scores, ctx.indices + ctx.ood_indices), ctx.run_dir)
        return []
