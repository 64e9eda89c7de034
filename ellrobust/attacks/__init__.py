"""Adversarial attacks: one vocabulary over torchattacks, and three attacks computed here.

torchattacks does most algorithms; ellrobust maps its parameter names (``eps``, ``steps``,
``step_size``, ``random_start``, ``restarts``, ``norm``, ``samples``, ``lr``, ``delta``, ``queries``,
``target_classes``) onto each attack's own names (:mod:`.factories`), always passes every parameter
explicitly (torchattacks' SPSA defaults to eps = 0.3 in code while its docstring says 8/255), and runs
on [0, 1] images against models that normalise internally, so eps is always in pixel units.

Computed here, same algorithms: FAB-T for AutoAttack's verdict (:mod:`.fab`: the reference's
iterates without its per-iteration overheads), SPSA with passes sized to free memory (:mod:`.spsa`),
and the AutoAttack cascade itself (:mod:`.cascade`: components timed, decisions in strict fp32).

The registry is :mod:`.registry`, requests and their validation :mod:`.request`, running an attack
:mod:`.perturbation`; this file only re-exports them.
"""

from ellrobust.attacks.factories import resolve_step_size
from ellrobust.attacks.perturbation import perturb, perturbation_norm
from ellrobust.attacks.registry import ATTACKS, AttackDef
from ellrobust.attacks.request import BUDGETS, AttackRequest, make_request, validate_params, validate_request

__all__ = [
    "ATTACKS",
    "BUDGETS",
    "AttackDef",
    "AttackRequest",
    "make_request",
    "perturb",
    "perturbation_norm",
    "resolve_step_size",
    "validate_params",
    "validate_request",
]
