"""Engine stages, registered here in the order they run.

Clean comes first: every later stage reads its per-example outcomes (attacks skip misclassified
images). Registration is explicit, not a side effect of import order.
"""

from ellrobust.engine import STAGES
from ellrobust.stages.attack import AttackStage
from ellrobust.stages.clean import CleanStage
from ellrobust.stages.collapse import CollapseStage

STAGES.add("clean", CleanStage)
STAGES.add("attack", AttackStage)
STAGES.add("collapse", CollapseStage)
