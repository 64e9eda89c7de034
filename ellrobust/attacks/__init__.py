"""Floor 3: adversarial attacks: one vocabulary over torchattacks, and three attacks computed here.

torchattacks does most algorithms; ellrobust maps its parameter names (``eps``, ``steps``,
``step_size``, ``random_start``, ``restarts``, ``norm``, ``samples``, ``lr``, ``delta``, ``queries``,
``target_classes``) onto each attack's own names (:mod:`.factories`), always passes every parameter
explicitly (torchattacks' SPSA defaults to eps = 0.3 in code while its docstring says 8/255), and runs
on [0, 1] images against models that normalise internally, so eps is always in pixel units.

Computed here, same algorithms: FAB-T for AutoAttack's verdict (:mod:`.fab`: the reference's
iterates without its per-iteration overheads), SPSA with passes sized to free memory (:mod:`.spsa`),
and the AutoAttack cascade itself (:mod:`.cascade`: components timed, decisions in strict fp32).

Minimal-norm answers, one ε* per image instead of one verdict per budget (:mod:`.minimal`): FMN
(:mod:`.fast_minimum_norm`) and a bisection over any fixed-budget attack (:mod:`.bisection`).

The registry is :mod:`.registry`, requests and their validation :mod:`.request`, running an attack
:mod:`.perturbation`; this file only re-exports them.
"""

from ellrobust.attacks.attack_request import (
    BUDGETS,
    AttackRequest,
    cli_flag,
    make_request,
    validate_params,
    validate_request,
)
from ellrobust.attacks.bisection import RegistryAttack, bisect, registry_attack
from ellrobust.attacks.definitions import ATTACKS, AttackDef, patch_budgeted
from ellrobust.attacks.factories import resolve_step_size
from ellrobust.attacks.fast_minimum_norm import fmn
from ellrobust.attacks.minimal_answers import MinimalResult
from ellrobust.attacks.perturbation import perturb, perturbation_norm

__all__ = [
    "ATTACKS",
    "BUDGETS",
    "AttackDef",
    "AttackRequest",
    "MinimalResult",
    "RegistryAttack",
    "bisect",
    "fmn",
    "make_request",
    "patch_budgeted",
    "perturb",
    "perturbation_norm",
    "registry_attack",
    "resolve_step_size",
    "validate_params",
    "cli_flag",
    "validate_request",
]
