"""Which patches a patch attack changed, per image: the ``attacked_patch`` columns of its units.

A patch attack's result says where it struck, not only whether: per image, the tokens (row-major
patch indices of the model's own grid, :func:`~ellrobust.attacks.patches.patches_touched`) in which
the adversarial image differs from the clean one, one per member ``attacked_patch|0``,
``attacked_patch|1``… (−1 pads an image that needed fewer; an image not attacked has none).
Patch-Fool and Attention-Fool change exactly the patches they selected; the plain ``patch`` attack's
free squares may straddle up to four tokens each. Under nested budgets an image a smaller budget
already fooled keeps that budget's patches, as every other per-image column does.
"""

from __future__ import annotations

import numpy as np

from ellrobust.attacks.patches import PATCH_NORM, budget_patches, patch_size, patches_touched
from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, attack_probe
from ellrobust.results import declare_column
from ellrobust.results.image_table import FAMILY_SEPARATOR, family_values
from ellrobust.run.units import UnitResult

#: The family of the attacked tokens' columns.
ATTACKED_PATCH = "attacked_patch"

declare_column(
    ATTACKED_PATCH,
    np.int64,
    "a token (row-major patch index) whose pixels a patch attack changed, one per member; -1: none",
    example=True,
    family=True,
)


def member(slot: int) -> str:
    """The column of an image's ``slot``-th attacked token."""
    return f"{ATTACKED_PATCH}{FAMILY_SEPARATOR}{slot}"


def attacked_patches(columns: dict[str, np.ndarray]) -> list[list[int]]:
    """Per image, the attacked tokens that a unit's ``attacked_patch`` members hold (empty: none)."""
    table = family_values(columns, ATTACKED_PATCH)
    return [] if table is None else [[int(t) for t in row if t >= 0] for row in table]


@attack_probe("patches")
class PatchProbe(AttackProbe):
    order = 15

    def __init__(self, scope: AttackScope) -> None:
        self.scope = scope
        self.side = patch_size(scope.model.module)
        self.seen: dict[int, list[int]] = {}

    @classmethod
    def open(cls, scope: AttackScope) -> PatchProbe | None:
        return cls(scope) if scope.request.norm == PATCH_NORM else None

    def observe(self, batch: AttackedBatch) -> None:
        touched = patches_touched(batch.adversarial, batch.images, self.side)
        self.seen.update(zip(batch.positions, touched, strict=True))

    def finish(self, result: UnitResult) -> None:
        scope, model = self.scope, self.scope.unit.model
        size = len(scope.ctx.indices)
        width = 4 * budget_patches(scope.unit.eps)  # a square of a patch's side touches at most four tokens
        slots = np.full((size, width), -1, dtype=np.int64)
        if scope.previous is not None:  # nested budgets: what the smaller budget struck stays
            before = family_values(scope.ctx.results[scope.previous].per_image.entry(model), ATTACKED_PATCH)
            if before is not None:
                slots[:, : before.shape[1]] = before
        for slot in range(width):  # each rank saw its own batches: gathered slot by slot
            mine = {position: (tokens[slot] if slot < len(tokens) else -1) for position, tokens in self.seen.items()}
            slots[scope.positions, slot] = scope.ctx.gather(mine, dtype=np.int64)[scope.positions]
        used = int((slots >= 0).sum(axis=1).max(initial=0))
        result.per_image.put(model, {member(slot): slots[:, slot] for slot in range(used)})
