"""Transfer: every other model of the run judges the attacked model's adversarial images (``--transfer``).

The cheapest check against gradient masking: a model whose own white-box attack breaks fewer images
than another model's transferred images is probably hiding its gradients. Each target takes a strict
fp32 forward of the same adversarial images (no attack of its own) and is judged against the true
labels: ``transfer_accuracy`` rows whose params name the attacked model as ``source``
(:func:`~ellrobust.run.units.transfer_params`). An image the source got wrong clean is not attacked,
so the target is judged on the clean image there, as a saved file holds it.
"""

from __future__ import annotations

import numpy as np

from ellrobust.core.precision import fp32_predictions
from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, attack_probe
from ellrobust.results import CORRECT, OWN, TRANSFERRED, Metric, Row
from ellrobust.run.context import RunContext
from ellrobust.run.units import UnitResult, clean_unit, transfer_params


@attack_probe("transfer")
class TransferProbe(AttackProbe):
    order = 30

    def __init__(self, scope: AttackScope, targets: list[str]) -> None:
        self.scope = scope
        self.correct: dict[str, dict[int, int]] = {t: {} for t in targets}
        self.predicted: dict[str, dict[int, int]] = {t: {} for t in targets}

    @staticmethod
    def identity(ctx: RunContext) -> dict[str, object]:
        """The models that judge the images, by their weights: part of the unit's numbers."""
        if not ctx.config.transfer:
            return {}
        return {"transfer": {m.name: m.digest for m in ctx.models.values()}}

    @classmethod
    def open(cls, scope: AttackScope) -> TransferProbe | None:
        if not scope.ctx.config.transfer:
            return None
        return cls(scope, [t for t in scope.ctx.models if t != scope.unit.model])

    def observe(self, batch: AttackedBatch) -> None:
        for target in self.correct:  # a verdict too: strict fp32, whatever precision the attack ran in
            said = fp32_predictions(self.scope.ctx.models[target].module, batch.adversarial)
            self.correct[target].update(zip(batch.positions, (said == batch.truth).int().tolist(), strict=True))
            self.predicted[target].update(zip(batch.positions, said.tolist(), strict=True))

    def finish(self, result: UnitResult) -> None:
        scope, unit = self.scope, self.scope.unit
        for target in self.correct:
            correct, predicted = _before(scope, target)
            correct[scope.positions] = scope.ctx.gather(self.correct[target], dtype=np.int64)[scope.positions]
            predicted[scope.positions] = scope.ctx.gather(self.predicted[target], dtype=np.int64)[scope.positions]
            result.per_image.put(target, {CORRECT: correct, "prediction": predicted}, TRANSFERRED)
            row = Row(
                target, Metric.TRANSFER_ACCURACY, float(correct.mean()), unit.method, transfer_params(unit), unit.eps
            )
            result.rows.append(row.replace(precision=unit.precision))


def _before(scope: AttackScope, target: str) -> tuple[np.ndarray, np.ndarray]:
    """What ``target`` says of each image before this unit's attack: of the smaller budget's images
    (nested budgets), else of the clean images (correctness and predictions)."""
    if scope.previous is None:
        table, view = scope.ctx.results[clean_unit(target)].per_image, OWN
    else:
        table, view = scope.ctx.results[scope.previous].per_image, TRANSFERRED
    correct, predicted = table.column(target, CORRECT, view), table.column(target, "prediction", view)
    return correct.astype(np.int64), predicted.astype(np.int64)  # copies: the saved columns are read-only
