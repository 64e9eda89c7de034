"""``--save-adversarial``: every attack unit writes the images its verdicts stand on.

One safetensors file per measurement (:mod:`ellrobust.results.adversarial_images`), for the whole
selection: the attacked images over the next smaller budget's (nested budgets) or the clean images,
with the predictions the unit recorded, so the file and the per-example table agree. The clean images
are written once per run folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ellrobust.core.errors import quote
from ellrobust.core.readback import DamagedFileError
from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, attack_probe
from ellrobust.results.adversarial_images import (
    AdversarialSet,
    load_adversarial,
    load_clean,
    save_adversarial,
    save_clean,
)
from ellrobust.run.context import RunContext
from ellrobust.run.units import UnitResult


@attack_probe("save-adversarial")
class SavedAdversarialProbe(AttackProbe):
    order = 40  # after the perturbation probe, whose predictions the file records

    def __init__(self, scope: AttackScope) -> None:
        self.scope = scope
        self.images: dict[int, np.ndarray] = {}

    @staticmethod
    def identity(ctx: RunContext) -> dict[str, object]:
        """A unit computed without its images cannot give them later."""
        return {"save_adversarial": True} if ctx.config.save_adversarial else {}

    @classmethod
    def open(cls, scope: AttackScope) -> SavedAdversarialProbe | None:
        return cls(scope) if scope.ctx.config.save_adversarial else None

    def observe(self, batch: AttackedBatch) -> None:
        self.images.update(zip(batch.positions, batch.adversarial.float().cpu().numpy(), strict=True))

    def finish(self, result: UnitResult) -> None:
        ctx = self.scope.ctx
        parts = ctx.dist.gather_objects(self.images)
        if ctx.dist.is_main:
            attacked = {p: a for part in parts for p, a in part.items()}
            path = _save(self.scope, attacked, result.per_image.column(self.scope.unit.model, "prediction"))
            result.extra["adversarial_file"] = str(path.relative_to(ctx.run_dir))


def _save(scope: AttackScope, attacked: dict[int, np.ndarray], predicted: list[int]) -> Path:
    ctx, unit = scope.ctx, scope.unit
    every = list(range(len(ctx.indices)))
    labels = ctx.store.labels[every].astype(np.int64)
    if scope.previous is None:
        base = ctx.store.batch(every, "cpu")[0].float().numpy()
        if not _clean_saved(ctx.run_dir):  # once per run folder: the images every file perturbs
            save_clean(ctx.run_dir, np.asarray(ctx.indices, dtype=np.int64), base, labels)
    else:
        base = _previous_images(scope).copy()
    for position, image in attacked.items():
        base[position] = image
    measurement = AdversarialSet(
        unit.model,
        unit.method,
        unit.params,
        float(unit.eps),
        unit.m_grad,
        unit.precision,
        scope.request.norm,
        np.asarray(ctx.indices, dtype=np.int64),
        base,
        labels,
        np.asarray(predicted, dtype=np.int64),
    )
    return save_adversarial(ctx.run_dir, measurement)


def _previous_images(scope: AttackScope) -> np.ndarray:
    """The smaller budget's saved images, which this unit's file starts from."""
    name = scope.ctx.results[scope.previous].extra.get("adversarial_file")
    path = scope.ctx.run_dir / name if name else None
    if path is None or not path.is_file():
        raise DamagedFileError(
            f"the adversarial images of {scope.unit.model} at the smaller budget {scope.unit.prior[-1]:.6g} are "
            f"missing ({quote(path or 'never saved')}); run the same command again: a unit whose files are missing "
            "is recomputed."
        )
    return load_adversarial(path).x_adv


def _clean_saved(run_dir: Path) -> bool:
    """Whether the run folder holds its clean images whole (a damaged file is written again)."""
    try:
        return load_clean(run_dir) is not None
    except DamagedFileError:
        return False
