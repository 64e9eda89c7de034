"""Floor 6: the measures: clean accuracy, attacks, minimal budgets, corruptions, collapse and OOD detection,
each a :class:`Stage`; the collapse probe and the paired statistics of their per-image records."""

from ellrobust.measures.attack import AttackStage
from ellrobust.measures.clean_accuracy import CleanStage
from ellrobust.measures.corruption import CorruptionStage
from ellrobust.measures.minimal_budget import MinimalStage
from ellrobust.measures.ood import OODStage
from ellrobust.measures.representation_collapse import CollapseStage
from ellrobust.measures.stage import Stage

__all__ = ["AttackStage", "CleanStage", "CollapseStage", "CorruptionStage", "MinimalStage", "OODStage", "Stage"]
