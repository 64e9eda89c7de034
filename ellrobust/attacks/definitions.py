"""The attack registry: every attack ellrobust runs, as data (norm, defaults, cost) plus its factory.

:data:`ATTACKS` is built here, explicitly, from the factories of :mod:`.factories`: importing it is
all it takes to have every attack, and no module has to be imported for a registration side effect.
Registration order is listing order (``ellrobust attacks``, reports' legends).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ellrobust.attacks import factories
from ellrobust.attacks.cascade import Attack
from ellrobust.attacks.minimal_answers import DEFAULT_EPS_MAX, DEFAULT_RESOLUTION
from ellrobust.attacks.patches import DEFAULT_PATCHES, PATCH_NORM
from ellrobust.core.errors import UsageError
from ellrobust.core.registry import Registry


@dataclass(frozen=True)
class AttackDef:
    """A registered attack: its norm, its parameters with defaults, and how to build it.

    ``factory(model, eps, params, num_classes, seed)`` returns an :class:`~.cascade.Attack`.
    ``label`` is the attack's name as papers write it, for reports and legends.

    A *minimal-norm* method (``minimal`` set: FMN, ``bisect-<attack>``) answers once per image with the
    smallest budget ε* that breaks it (:class:`~.minimal.MinimalResult`), not at one budget: the run's
    minimal stage (:mod:`ellrobust.measures.minimal_budget`) runs it through :func:`.minimal_methods.solve`, and
    its ``factory`` refuses to run at a fixed budget. Its params
    hold ``eps_max`` (None in the defaults: :data:`~.minimal.DEFAULT_EPS_MAX` of its norm).

    ``restarts_in_perturb`` marks an attack whose factory's attack has no restarts of its own
    (torchattacks' PGD): :func:`~.perturbation.perturb` runs its ``restarts`` around it, keeping an
    image adversarial once any restart fools the model. The others run theirs inside (APGD, Square).
    """

    name: str
    label: str
    description: str
    norm: str  # "Linf", "L2", or "patch" (budgets are numbers of patches: :mod:`.patches`)
    defaults: Mapping[str, object]
    factory: Callable[..., Attack]
    gradient_free: bool = False
    default_eps: tuple[float, ...] | None = None  # L2 attacks need budgets on another scale
    cost: str = ""  # forward/backward passes per attacked image, for the listing
    minimal: str = ""  # a minimal-norm method's search (:data:`~.minimal_methods.SEARCHES`): "fmn" or "bisect"
    bisects: str = ""  # the fixed-budget attack a bisection runs
    restarts_in_perturb: bool = False  # its ``restarts`` param is run by :func:`~.perturbation.perturb`

    @property
    def is_minimal(self) -> bool:
        return bool(self.minimal)

    def params(self, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
        """The attack's parameters with ``overrides`` applied; names it does not take are ignored.

        A minimal-norm method's ``eps_max`` left at None becomes its norm's default, so the params a
        run records say how far it searched.
        """
        out = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key in out and value is not None:
                out[key] = value
        if self.is_minimal and out.get("eps_max") is None:
            out["eps_max"] = DEFAULT_EPS_MAX.get(str(out.get("norm", self.norm)), DEFAULT_EPS_MAX[self.norm])
        return out


def _frozen(**kw: object) -> Mapping[str, object]:
    """Read-only defaults: one registered definition is shared by every request of every run."""
    return MappingProxyType(kw)


_L2_EPS = (0.1, 0.25, 0.5)
#: Budgets of an attack whose ``--norm`` is not its definition's (APGD, Square, FMN with ``--norm L2``):
#: the definition's defaults are on the other norm's scale. None: the dataset's (L∞) defaults.
NORM_DEFAULT_EPS: Mapping[str, tuple[float, ...] | None] = MappingProxyType({"Linf": None, "L2": _L2_EPS})

#: The patch attacks (:mod:`.patches`): budgets are numbers of patches, not pixel norms, so no bisection runs them.
_PATCH_DEFINITIONS = (
    AttackDef(
        "patch",
        "Patch",
        "Adversarial patch: eps squares of the model's patch size, pixels free in [0, 1], at the worst of "
        "positions random placements per image, each optimised by PGD",
        PATCH_NORM,
        _frozen(positions=4, steps=40, step_size=0.05),
        factories.patch,
        default_eps=DEFAULT_PATCHES,
        cost="positions × steps fwd+bwd",
    ),
    AttackDef(
        "patch-fool",
        "Patch-Fool",
        "Patch-Fool (Fu et al. 2022): the eps patches receiving most attention, rewritten by Adam on "
        "cross-entropy plus an attention loss (official code's settings)",
        PATCH_NORM,
        _frozen(steps=250, lr=0.05, attention_layer=4, attention_weight=0.002),
        factories.patch_fool,
        default_eps=DEFAULT_PATCHES,
        cost="steps × (1 + depth / 2) fwd+bwd",
    ),
    AttackDef(
        "attention-fool",
        "Attention-Fool",
        "Attention-Fool (Lovisotto et al. 2022): eps patches optimised on cross-entropy plus the smooth maximum "
        "over layers and heads of the normalised pre-softmax query-key logits (through the elliptical metric), "
        "by cosine-decayed signed steps with normalised momentum",
        PATCH_NORM,
        _frozen(steps=250, step_size=8 / 255, kq_weight=1.0, momentum=0.9, kq_queries="all", attention_layer=4),
        factories.attention_fool,
        default_eps=DEFAULT_PATCHES,
        cost="steps fwd+bwd",
    ),
)

_DEFINITIONS = (
    AttackDef(
        "fgsm",
        "FGSM",
        "Fast Gradient Sign Method (Goodfellow et al. 2015), L∞",
        "Linf",
        _frozen(),
        factories.fgsm,
        cost="1 fwd+bwd",
    ),
    AttackDef(
        "pgd",
        "PGD",
        "Projected Gradient Descent (Madry et al. 2018), L∞, random start",
        "Linf",
        _frozen(steps=10, step_size="0.25*eps", random_start=True, restarts=1),
        factories.pgd,
        cost="steps × restarts fwd+bwd",
        restarts_in_perturb=True,
    ),
    AttackDef(
        "eot-pgd",
        "EOT-PGD",
        "PGD with Expectation over Transformation (Athalye et al. 2018), L∞: each step sums the gradients of "
        "samples forward passes, for randomised models",
        "Linf",
        _frozen(steps=10, samples=10, step_size="0.25*eps", random_start=True, restarts=1),
        factories.eot_pgd,
        cost="steps × samples × restarts fwd+bwd",
        restarts_in_perturb=True,
    ),
    AttackDef(
        "pgd-l2",
        "PGD-L2",
        "Projected Gradient Descent, L2 ball (eps is an L2 radius in [0, 1] pixel units)",
        "L2",
        _frozen(steps=10, step_size="0.25*eps", random_start=True, restarts=1),
        factories.pgd_l2,
        default_eps=_L2_EPS,
        cost="steps × restarts fwd+bwd",
        restarts_in_perturb=True,
    ),
    AttackDef(
        "spsa",
        "SPSA",
        "SPSA (Uesato et al. 2018): gradient-free, finite differences along random directions, Adam steps; "
        "passes sized to free memory (max_batch_size: most directions per pass)",
        "Linf",
        _frozen(steps=20, samples=64, lr=0.01, delta=0.01, max_batch_size=64),
        factories.spsa,
        gradient_free=True,
        cost="2 × samples × steps fwd",
    ),
    AttackDef(
        "apgd-ce",
        "APGD-CE",
        "Auto-PGD with cross-entropy loss (Croce & Hein 2020)",
        "Linf",
        _frozen(steps=20, restarts=1, norm="Linf"),
        factories.apgd_ce,
        cost="steps × restarts fwd+bwd",
    ),
    AttackDef(
        "apgd-t",
        "APGD-T",
        "Targeted Auto-PGD with the DLR loss over the top classes (Croce & Hein 2020)",
        "Linf",
        _frozen(steps=20, restarts=1, norm="Linf", target_classes=9),
        factories.apgd_t,
        cost="steps × restarts × target_classes fwd+bwd",
    ),
    AttackDef(
        "apgd",
        "APGD-CE + APGD-T",
        "APGD-CE + APGD-T (Croce & Hein 2020): APGD-T attacks only what APGD-CE left robust; no FAB-T, no Square",
        "Linf",
        _frozen(norm="Linf", steps=100, target_classes=9),
        factories.apgd,
        cost="≤ steps × (1 + target_classes) fwd+bwd",
    ),
    AttackDef(
        "fab-t",
        "FAB-T",
        "Targeted FAB (Croce & Hein 2020) over the top classes, as AutoAttack runs it; "
        "stops at the first adversarial example within eps",
        "Linf",
        _frozen(norm="Linf", steps=100, target_classes=9),
        factories.fab_t,
        cost="≤ steps × target_classes × (fwd+bwd + fwd)",
    ),
    AttackDef(
        "square",
        "Square",
        "Square Attack (Andriushchenko et al. 2020): gradient-free random search",
        "Linf",
        _frozen(queries=1000, restarts=1, p_init=0.8, norm="Linf"),
        factories.square,
        gradient_free=True,
        cost="≤ queries fwd",
    ),
    AttackDef(
        "autoattack",
        "AutoAttack",
        "AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square, each on what the previous left robust "
        "(Croce & Hein 2020)",
        "Linf",
        _frozen(norm="Linf", steps=100, queries=5000, target_classes=9),
        factories.autoattack,
        cost="≤ 100 + 900 fwd+bwd, ≤ 900 × (fwd+bwd + fwd), ≤ 5000 fwd",
    ),
)


def _fixed_budget_refused(*args: object, **kw: object) -> Attack:
    raise UsageError("a minimal-norm method answers per image, not at one budget; it runs in the minimal stage.")


_FMN = AttackDef(
    "fmn",
    "FMN",
    "Fast Minimum-Norm attack (Pintor et al. 2021): each image's minimal budget ε* (norm: Linf or L2); "
    "robust accuracy at every eps of the run from one run; censored above eps_max",
    "Linf",
    _frozen(steps=100, norm="Linf", eps_max=None),
    _fixed_budget_refused,
    cost="steps × (fwd+bwd + fwd)",
    minimal="fmn",
)


def _bisection(inner: AttackDef) -> AttackDef:
    """``bisect-<inner>``: each image's minimal budget for ``inner`` by bisection, in ``inner``'s norm."""
    return AttackDef(
        f"bisect-{inner.name}",
        f"bisect({inner.label})",
        f"Minimal budget ε* per image by bisection over {inner.name} to within resolution (default 1/255/16), "
        "censored above eps_max",
        inner.norm,
        _frozen(**inner.defaults, eps_max=None, resolution=DEFAULT_RESOLUTION),
        _fixed_budget_refused,
        gradient_free=inner.gradient_free,
        default_eps=inner.default_eps,
        cost=f"(1 + ⌈log2(eps_max / resolution)⌉) × ({inner.cost})",
        minimal="bisect",
        bisects=inner.name,
    )


def _registry(definitions: Iterable[AttackDef]) -> Registry[AttackDef]:
    registry: Registry[AttackDef] = Registry("attack")
    for definition in definitions:
        registry.add(definition.name, definition)
    return registry


#: Every attack: the fixed-budget ones, the patch attacks, then FMN and a bisection over each pixel-norm attack.
ATTACKS: Registry[AttackDef] = _registry(
    (*_DEFINITIONS, *_PATCH_DEFINITIONS, _FMN, *(_bisection(d) for d in _DEFINITIONS))
)


def patch_budgeted(method: str, params: Mapping[str, object]) -> bool:
    """Whether a measurement's budgets are numbers of patches: a patch attack's, or the worst case over them
    (``params["norm"]``). Tables, figures and Holm families keep these apart from pixel budgets."""
    if method == "worst-case":
        return params.get("norm") == PATCH_NORM
    return method in ATTACKS and ATTACKS.get(method).norm == PATCH_NORM
