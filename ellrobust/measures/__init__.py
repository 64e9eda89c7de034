"""Floor 6: the measures: clean accuracy, attacks, minimal budgets, corruptions, collapse and OOD detection,
each a :class:`Stage`, and the probes that observe every attacked batch (perturbation statistics, attacked
patches, collapse, transfer, saved images, attack failures; :mod:`~ellrobust.measures.attack_probe`); the
paired statistics of their per-image records. Importing this face registers every probe."""

from ellrobust.measures.attack import AttackStage
from ellrobust.measures.attack_probe import ATTACK_PROBES, AttackProbe, attack_probe
from ellrobust.measures.clean_accuracy import CleanStage
from ellrobust.measures.corruption import CorruptionStage
from ellrobust.measures.failure_probe import FailureProbe
from ellrobust.measures.minimal_budget import MinimalStage
from ellrobust.measures.ood import OODStage
from ellrobust.measures.patch_probe import PatchProbe
from ellrobust.measures.perturbation_stats import PerturbationProbe
from ellrobust.measures.representation_collapse import AdversarialCollapseProbe, CollapseStage
from ellrobust.measures.saved_adversarial import SavedAdversarialProbe
from ellrobust.measures.stage import STAGES, Stage, ordered_stages, stage
from ellrobust.measures.transfer import TransferProbe

__all__ = [
    "ATTACK_PROBES",
    "AdversarialCollapseProbe",
    "AttackProbe",
    "AttackStage",
    "CleanStage",
    "CollapseStage",
    "CorruptionStage",
    "FailureProbe",
    "MinimalStage",
    "OODStage",
    "PatchProbe",
    "PerturbationProbe",
    "SavedAdversarialProbe",
    "STAGES",
    "Stage",
    "TransferProbe",
    "attack_probe",
    "ordered_stages",
    "stage",
]
