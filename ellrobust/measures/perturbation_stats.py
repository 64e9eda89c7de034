"""Perturbation statistics: per image, the class predicted on the image the verdict was taken on and
the perturbation's L∞ and L2 sizes.

Under nested budgets an image that a smaller budget already fooled keeps that budget's image, and an
image not attacked its clean image (its clean prediction, size 0), so the columns describe, for every
image of the selection, the image its robust/not verdict stands on.
"""

from __future__ import annotations

import numpy as np

from ellrobust.attacks import perturbation_norm
from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, attack_probe
from ellrobust.run.units import UnitResult, clean_unit

COLUMNS = ("prediction", "linf", "l2")


@attack_probe("perturbation")
class PerturbationProbe(AttackProbe):
    order = 10

    def __init__(self, scope: AttackScope) -> None:
        self.scope = scope
        self.seen: dict[str, dict[int, float]] = {name: {} for name in COLUMNS}

    @classmethod
    def open(cls, scope: AttackScope) -> PerturbationProbe:
        return cls(scope)

    def observe(self, batch: AttackedBatch) -> None:
        columns = {
            "prediction": batch.predicted,
            "linf": perturbation_norm(batch.adversarial, batch.images, "Linf"),
            "l2": perturbation_norm(batch.adversarial, batch.images, "L2"),
        }
        for name, per_image in columns.items():
            self.seen[name].update(zip(batch.positions, per_image.tolist(), strict=True))

    def finish(self, result: UnitResult) -> None:
        scope, model = self.scope, self.scope.unit.model
        base = _before(scope)
        for name, per_image in base.items():
            per_image[scope.positions] = scope.ctx.gather(self.seen[name], dtype=per_image.dtype)[scope.positions]
        result.per_image.put(model, base)


def _before(scope: AttackScope) -> dict[str, np.ndarray]:
    """What each image shows before this unit attacks: the next smaller budget's prediction and sizes
    (nested budgets), or the clean prediction and size 0."""
    model = scope.unit.model
    if scope.previous is None:
        clean = scope.ctx.results[clean_unit(model)].per_image.column(model, "prediction").copy()
        zeros = np.zeros(len(clean), dtype=np.float64)
        return {"prediction": clean, "linf": zeros, "l2": zeros.copy()}
    before = scope.ctx.results[scope.previous].per_image
    return {name: before.column(model, name).copy() for name in COLUMNS}  # copies: saved columns are read-only
