"""Adversarial attacks: one vocabulary over torchattacks, and three attacks computed here.

torchattacks does most algorithms; this module maps ellrobust's parameter names (``eps``, ``steps``,
``step_size``, ``random_start``, ``restarts``, ``norm``, ``samples``, ``lr``, ``delta``, ``queries``,
``target_classes``) onto each attack's own names, always passes every parameter explicitly
(torchattacks' SPSA defaults to eps = 0.3 in code while its docstring says 8/255), and runs on [0, 1]
images against models that normalise internally, so eps is always in pixel units.

Computed here, same algorithms: FAB-T for AutoAttack's verdict (:mod:`.fab`: the reference's
iterates without its per-iteration overheads), SPSA with passes sized to free memory (:mod:`.spsa`),
and the AutoAttack cascade itself (:mod:`.cascade`: components timed, decisions in strict fp32).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from ellrobust.attacks.cascade import Attack, Cascade, Float32Logits, Torchattack
from ellrobust.attacks.fab import FabTargeted
from ellrobust.attacks.spsa import SPSA
from ellrobust.errors import UsageError
from ellrobust.parsing import MAX_BUDGET, parse_fraction
from ellrobust.precision import Precision, fp32_predictions
from ellrobust.registry import Registry


@dataclass(frozen=True)
class AttackDef:
    """A registered attack: its norm, its parameters with defaults, and how to build it.

    ``factory(model, eps, params, num_classes, seed)`` returns an :class:`~.cascade.Attack`.
    ``label`` is the attack's name as papers write it, for reports and legends.
    """

    name: str
    label: str
    description: str
    norm: str  # "Linf" or "L2"
    defaults: Mapping[str, object]
    factory: Callable[..., Attack]
    gradient_free: bool = False
    default_eps: tuple[float, ...] | None = None  # L2 attacks need budgets on another scale
    cost: str = ""  # forward/backward passes per attacked image, for the listing

    def params(self, overrides: Mapping[str, object] | None = None) -> dict[str, object]:
        """The attack's parameters with ``overrides`` applied; names it does not take are ignored."""
        out = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key in out and value is not None:
                out[key] = value
        return out


ATTACKS: Registry[AttackDef] = Registry("attack")


def resolve_step_size(step_size: object, eps: float) -> float:
    """``step_size`` is absolute (a number, pixel units) or relative to eps (``"0.15*eps"``)."""
    if isinstance(step_size, (int, float)):
        value = float(step_size)
    else:
        text = str(step_size).replace(" ", "")
        try:
            if text.endswith("*eps"):
                value = float(text[: -len("*eps")]) * eps
            elif text.endswith("eps"):
                value = float(text[: -len("eps")] or 1) * eps
            else:
                value = parse_fraction(text)
        except ValueError:
            raise UsageError(f"step size {step_size!r} is not a number or 'K*eps' (e.g. 2/255 or 0.25*eps).") from None
    if value <= 0:
        raise UsageError(f"step size must be positive (got {step_size!r}).")
    return value


def _fgsm(model, eps, p, num_classes, seed):
    import torchattacks

    return Torchattack(torchattacks.FGSM(model, eps=eps))


def _pgd(model, eps, p, num_classes, seed):
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    return Torchattack(torchattacks.PGD(model, eps=eps, alpha=alpha, steps=int(p["steps"]), random_start=bool(p["random_start"])))


def _pgd_l2(model, eps, p, num_classes, seed):
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    return Torchattack(torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=int(p["steps"]), random_start=bool(p["random_start"])))


def _spsa(model, eps, p, num_classes, seed):
    return SPSA(
        model,
        eps=eps,
        delta=float(p["delta"]),
        lr=float(p["lr"]),
        steps=int(p["steps"]),
        samples=int(p["samples"]),
        max_batch_size=int(p["max_batch_size"]),
        seed=seed,
    )


def _apgd_ce_attack(model, eps, p, seed, restarts: int):
    import torchattacks

    return torchattacks.APGD(model, norm=p["norm"], eps=eps, steps=int(p["steps"]), n_restarts=restarts, seed=seed, loss="ce")


def _apgd_t_attack(model, eps, p, num_classes, seed, restarts: int):
    """APGD-T over the ``target_classes`` most likely other classes (torchattacks alone would use all)."""
    import torchattacks

    attack = torchattacks.APGDT(model, norm=p["norm"], eps=eps, steps=int(p["steps"]), n_restarts=restarts, seed=seed, n_classes=num_classes)
    attack.n_target_classes = int(p["target_classes"])
    return attack


def _apgd_ce(model, eps, p, num_classes, seed):
    return Torchattack(_apgd_ce_attack(model, eps, p, seed, int(p["restarts"])))


def _apgd_t(model, eps, p, num_classes, seed):
    return Torchattack(_apgd_t_attack(model, eps, p, num_classes, seed, int(p["restarts"])))


def _fab_t(model, eps, p, num_classes, seed):
    return FabTargeted(model, eps=eps, norm=str(p["norm"]), steps=int(p["steps"]), target_classes=int(p["target_classes"]))


def _square_attack(model, eps, p, seed, restarts: int, rescale_schedule: bool):
    import torchattacks

    return torchattacks.Square(
        model,
        norm=p["norm"],
        eps=eps,
        n_queries=int(p["queries"]),
        n_restarts=restarts,
        p_init=float(p.get("p_init", 0.8)),
        resc_schedule=rescale_schedule,
        seed=seed,
    )


def _square(model, eps, p, num_classes, seed):
    return Torchattack(_square_attack(model, eps, p, seed, int(p["restarts"]), rescale_schedule=True))


def _apgd(model, eps, p, num_classes, seed):
    """APGD-CE then APGD-T on what APGD-CE left robust (no FAB-T, no Square: not AutoAttack, so not labelled so)."""
    return Cascade(
        model,
        (
            ("apgd-ce", Torchattack(_apgd_ce_attack(model, eps, p, seed, restarts=1))),
            ("apgd-t", Torchattack(_apgd_t_attack(model, eps, p, num_classes, seed, restarts=1))),
        ),
    )


def _autoattack(model, eps, p, num_classes, seed):
    """AutoAttack, standard version, configured as Croce & Hein's reference implementation.

    APGD-CE, APGD-T (9 targets), FAB-T (9 targets), each 100 iterations and one restart, then
    Square with 5000 queries and p_init 0.8 on its fixed schedule (the reference passes
    ``resc_schedule=False``; torchattacks' AutoAttack would rescale it and use 10 iterations and every
    other class as a target). Run as a :class:`~.cascade.Cascade`, with FAB-T computed by
    :class:`~.fab.FabTargeted`.
    """
    return Cascade(
        model,
        (
            ("apgd-ce", Torchattack(_apgd_ce_attack(model, eps, p, seed, restarts=1))),
            ("apgd-t", Torchattack(_apgd_t_attack(model, eps, p, num_classes, seed, restarts=1))),
            ("fab-t", _fab_t(model, eps, p, num_classes, seed)),
            ("square", Torchattack(_square_attack(model, eps, p, seed, restarts=1, rescale_schedule=False))),
        ),
    )


def _register(defn: AttackDef) -> None:
    ATTACKS.add(defn.name, defn)


def _frozen(**kw: object) -> Mapping[str, object]:
    return MappingProxyType(kw)


_L2_EPS = (0.1, 0.25, 0.5)

_register(AttackDef("fgsm", "FGSM", "Fast Gradient Sign Method (Goodfellow et al. 2015), L∞", "Linf", _frozen(), _fgsm, cost="1 fwd+bwd"))
_register(
    AttackDef(
        "pgd",
        "PGD",
        "Projected Gradient Descent (Madry et al. 2018), L∞, random start",
        "Linf",
        _frozen(steps=10, step_size="0.25*eps", random_start=True, restarts=1),
        _pgd,
        cost="steps × restarts fwd+bwd",
    )
)
_register(
    AttackDef(
        "pgd-l2",
        "PGD-L2",
        "Projected Gradient Descent, L2 ball (eps is an L2 radius in [0, 1] pixel units)",
        "L2",
        _frozen(steps=10, step_size="0.25*eps", random_start=True, restarts=1),
        _pgd_l2,
        default_eps=_L2_EPS,
        cost="steps × restarts fwd+bwd",
    )
)
_register(
    AttackDef(
        "spsa",
        "SPSA",
        "SPSA (Uesato et al. 2018): gradient-free, finite differences along random directions, Adam steps; "
        "passes sized to free memory (max_batch_size: most directions per pass)",
        "Linf",
        _frozen(steps=20, samples=64, lr=0.01, delta=0.01, max_batch_size=64),
        _spsa,
        gradient_free=True,
        cost="2 × samples × steps fwd",
    )
)
_register(
    AttackDef(
        "apgd-ce",
        "APGD-CE",
        "Auto-PGD with cross-entropy loss (Croce & Hein 2020)",
        "Linf",
        _frozen(steps=20, restarts=1, norm="Linf"),
        _apgd_ce,
        cost="steps × restarts fwd+bwd",
    )
)
_register(
    AttackDef(
        "apgd-t",
        "APGD-T",
        "Targeted Auto-PGD with the DLR loss over the top classes (Croce & Hein 2020)",
        "Linf",
        _frozen(steps=20, restarts=1, norm="Linf", target_classes=9),
        _apgd_t,
        cost="steps × restarts × target_classes fwd+bwd",
    )
)
_register(
    AttackDef(
        "apgd",
        "APGD-CE + APGD-T",
        "APGD-CE + APGD-T (Croce & Hein 2020): APGD-T attacks only what APGD-CE left robust; no FAB-T, no Square",
        "Linf",
        _frozen(norm="Linf", steps=100, target_classes=9),
        _apgd,
        cost="≤ steps × (1 + target_classes) fwd+bwd",
    )
)
_register(
    AttackDef(
        "fab-t",
        "FAB-T",
        "Targeted FAB (Croce & Hein 2020) over the top classes, as AutoAttack runs it; "
        "stops at the first adversarial example within eps",
        "Linf",
        _frozen(norm="Linf", steps=100, target_classes=9),
        _fab_t,
        cost="≤ steps × target_classes × (fwd+bwd + fwd)",
    )
)
_register(
    AttackDef(
        "square",
        "Square",
        "Square Attack (Andriushchenko et al. 2020): gradient-free random search",
        "Linf",
        _frozen(queries=1000, restarts=1, p_init=0.8, norm="Linf"),
        _square,
        gradient_free=True,
        cost="≤ queries fwd",
    )
)
_register(
    AttackDef(
        "autoattack",
        "AutoAttack",
        "AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square, each on what the previous left robust (Croce & Hein 2020)",
        "Linf",
        _frozen(norm="Linf", steps=100, queries=5000, target_classes=9),
        _autoattack,
        cost="≤ 100 + 900 fwd+bwd, ≤ 900 × (fwd+bwd + fwd), ≤ 5000 fwd",
    )
)


@dataclass(frozen=True)
class AttackRequest:
    """One attack of a run with its fully resolved parameters (what the results table records)."""

    name: str
    params: Mapping[str, object] = field(default_factory=dict)
    eps: tuple[float, ...] | None = None  # budgets for this attack alone (a suite's per-attack list)

    @property
    def definition(self) -> AttackDef:
        return ATTACKS.get(self.name)

    @property
    def norm(self) -> str:
        return str(self.params.get("norm", self.definition.norm))

    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)


def make_request(name: str, overrides: Mapping[str, object] | None = None) -> AttackRequest:
    """Resolve an attack name and the user's overrides into an :class:`AttackRequest`."""
    defn = ATTACKS.get(name)
    return AttackRequest(name, MappingProxyType(defn.params(overrides)))


#: Parameters that set how much work an attack does, each bounded by :data:`~ellrobust.parsing.MAX_BUDGET`.
BUDGETS = ("steps", "restarts", "samples", "queries")


def validate_params(params: Mapping[str, object]) -> None:
    """Reject values that no attack could use, or budgets beyond reason, with the option named."""
    for key in ("steps", "restarts", "samples", "queries", "target_classes"):
        value = params.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise UsageError(f"--{key} must be a positive integer (got {value!r}).")
        if key in BUDGETS and value is not None and value > MAX_BUDGET:
            raise UsageError(f"--{key} {value} is above the bound of {MAX_BUDGET:,}, more than any real evaluation needs; pass a smaller value.")
    for key in ("lr", "delta"):
        value = params.get(key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise UsageError(f"--{key} must be a positive number (got {value!r}).")
    if params.get("norm") not in (None, "Linf", "L2"):
        raise UsageError(f"--norm must be Linf or L2 (got {params['norm']!r}).")


def validate_request(request: AttackRequest, num_classes: int) -> None:
    """Reject a request that cannot run on a dataset of ``num_classes`` classes, in one line.

    Call it before any work starts; :func:`perturb` calls it too.
    """
    validate_params(request.params)
    norm = request.params.get("norm")
    if norm is not None and norm not in ("Linf", "L2"):
        raise UsageError(f"{request.name} supports --norm Linf or L2 (got {norm!r}).")
    targets = request.params.get("target_classes")
    if targets is not None and int(targets) >= num_classes:
        raise UsageError(
            f"{request.name}: --target-classes {targets} needs more than {targets} classes; "
            f"the dataset has {num_classes}, so use --target-classes {num_classes - 1} or fewer."
            if num_classes > 1
            else f"{request.name} needs at least 2 classes; the dataset has {num_classes}."
        )


def perturb(
    model: nn.Module,
    request: AttackRequest,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    num_classes: int,
    seed: int,
    precision: Precision | str = Precision.FP32,
    info: dict | None = None,
) -> torch.Tensor:
    """Attack a batch of [0, 1] images; returns adversarial images in [0, 1].

    The attack's iterations run in ``precision``; every decision this function or a cascade makes
    about which images to attack again is a strict fp32 forward pass, so a lower precision can only
    weaken the attack. ``info``, if given, receives the attack's diagnostics for this batch: cascades
    (``autoattack``, ``apgd``) ``info["components"][name] = {"seconds", "attacked", "broken"}``, SPSA
    ``info["spsa_images_per_forward"]``.

    PGD-style restarts are run here (torchattacks' PGD has none): an example stays adversarial once
    any restart fools the model.
    """
    validate_request(request, num_classes)
    p = dict(request.params)
    attack = request.definition.factory(Float32Logits(model), eps, p, num_classes, seed)
    restarts = int(p.get("restarts", 1)) if request.name in ("pgd", "pgd-l2") else 1
    adv = attack.run(images, labels, precision=precision, info=info)
    for _ in range(restarts - 1):
        fooled = fp32_predictions(model, adv) != labels
        if bool(fooled.all()):
            break
        again = attack.run(images, labels, precision=precision, info=info)
        adv = torch.where(fooled.view(-1, 1, 1, 1), adv, again)
    return adv.detach()


def perturbation_norm(adv: torch.Tensor, images: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example size of the perturbation in the attack's norm."""
    delta = (adv - images).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(p=2, dim=1)
