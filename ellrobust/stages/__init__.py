"""Engine stages: clean accuracy, attacks, corruptions and collapse, each a :class:`Stage`."""

from ellrobust.stages.attack import AttackStage
from ellrobust.stages.base import Stage
from ellrobust.stages.clean import CleanStage
from ellrobust.stages.collapse import CollapseStage
from ellrobust.stages.corruption import CorruptionStage

__all__ = ["AttackStage", "CleanStage", "CollapseStage", "CorruptionStage", "Stage"]
