"""Engine stages, registered here in the order they run.

Clean comes first: every later stage reads its per-example outcomes (attacks skip misclassified
images). Registration is explicit, not a side effect of import order.
"""

from ellrobust.context import STAGES
from ellrobust.stages.attack import AttackStage
from ellrobust.stages.clean import CleanStage
from ellrobust.stages.collapse import CollapseStage
from ellrobust.stages.corruption import CorruptionStage

STAGES.add("clean", CleanStage)
STAGES.add("attack", AttackStage)
STAGES.add("corruption", CorruptionStage)
STAGES.add("collapse", CollapseStage)
