"""Engine stages: clean accuracy, attacks, minimal budgets, corruptions, collapse and OOD detection, each a
:class:`Stage`."""

from ellrobust.stages.attack import AttackStage
from ellrobust.stages.base import Stage
from ellrobust.stages.clean import CleanStage
from ellrobust.stages.collapse import CollapseStage
from ellrobust.stages.corruption import CorruptionStage
from ellrobust.stages.minimal import MinimalStage
from ellrobust.stages.ood import OODStage

__all__ = ["AttackStage", "CleanStage", "CollapseStage", "CorruptionStage", "MinimalStage", "OODStage", "Stage"]
