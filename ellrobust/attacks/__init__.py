"""Adversarial attacks: one vocabulary over torchattacks.

torchattacks does the algorithms; this module only maps ellrobust's parameter names (``eps``,
``steps``, ``step_size``, ``random_start``, ``restarts``, ``norm``, ``samples``, ``lr``, ``delta``,
``queries``) onto each attack's own names, always passes every parameter explicitly (torchattacks'
SPSA defaults to eps = 0.3 in code while its docstring says 8/255), and runs on [0, 1] images against
models that normalise internally, so eps is always in pixel units.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn

from ellrobust.errors import UsageError
from ellrobust.parsing import parse_fraction
from ellrobust.registry import Registry


@dataclass(frozen=True)
class AttackDef:
    """A registered attack: its norm, its parameters with defaults, and how to build it."""

    name: str
    description: str
    norm: str  # "Linf" or "L2"
    defaults: Mapping[str, object]
    factory: Callable[..., object]
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

    return torchattacks.FGSM(model, eps=eps)


def _pgd(model, eps, p, num_classes, seed):
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=int(p["steps"]), random_start=bool(p["random_start"]))


def _pgd_l2(model, eps, p, num_classes, seed):
    import torchattacks

    alpha = resolve_step_size(p["step_size"], eps)
    return torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=int(p["steps"]), random_start=bool(p["random_start"]))


def _spsa(model, eps, p, num_classes, seed):
    import torchattacks

    samples = int(p["samples"])
    return torchattacks.SPSA(
        model,
        eps=eps,
        delta=float(p["delta"]),
        lr=float(p["lr"]),
        nb_iter=int(p["steps"]),
        nb_sample=samples,
        max_batch_size=min(samples, int(p["max_batch_size"])),
    )


def _apgd_ce(model, eps, p, num_classes, seed):
    import torchattacks

    return torchattacks.APGD(model, norm=p["norm"], eps=eps, steps=int(p["steps"]), n_restarts=int(p["restarts"]), seed=seed, loss="ce")


def _target_classes(p, num_classes: int) -> int:
    """AutoAttack's standard targets the 9 most likely other classes; torchattacks would use all of them."""
    return max(1, min(int(p["target_classes"]), num_classes - 1))


def _apgd_t(model, eps, p, num_classes, seed):
    import torchattacks

    attack = torchattacks.APGDT(
        model, norm=p["norm"], eps=eps, steps=int(p["steps"]), n_restarts=int(p["restarts"]), seed=seed, n_classes=num_classes
    )
    attack.n_target_classes = _target_classes(p, num_classes)
    return attack


def _square(model, eps, p, num_classes, seed):
    import torchattacks

    return torchattacks.Square(
        model, norm=p["norm"], eps=eps, n_queries=int(p["queries"]), n_restarts=int(p["restarts"]), p_init=float(p["p_init"]), seed=seed
    )


def _autoattack(model, eps, p, num_classes, seed):
    """AutoAttack, standard version, configured as Croce & Hein's reference implementation.

    torchattacks builds the four attacks with its own defaults (10 iterations, every other class as a
    target); the standard version uses 100 iterations for APGD-CE, APGD-T and FAB-T, 9 target
    classes, and 5000 Square queries. Those are set here, on the attacks torchattacks built.
    """
    import torchattacks

    attack = torchattacks.AutoAttack(model, norm=p["norm"], eps=eps, version="standard", n_classes=num_classes, seed=seed)
    for sub in attack._autoattack.attacks:
        if isinstance(sub, torchattacks.Square):
            sub.n_queries = int(p["queries"])
        else:
            sub.steps = int(p["steps"])
        if hasattr(sub, "n_target_classes"):
            sub.n_target_classes = _target_classes(p, num_classes)
    return attack


def _register(defn: AttackDef) -> None:
    ATTACKS.add(defn.name, defn)


def _frozen(**kw: object) -> Mapping[str, object]:
    return MappingProxyType(kw)


_L2_EPS = (0.1, 0.25, 0.5)

_register(AttackDef("fgsm", "Fast Gradient Sign Method (Goodfellow et al. 2015), L∞", "Linf", _frozen(), _fgsm, cost="1 fwd+bwd"))
_register(
    AttackDef(
        "pgd",
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
        "SPSA (Uesato et al. 2018): gradient-free, finite differences along random directions, Adam steps",
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
        "Targeted Auto-PGD with the DLR loss over the top classes (Croce & Hein 2020)",
        "Linf",
        _frozen(steps=20, restarts=1, norm="Linf", target_classes=9),
        _apgd_t,
        cost="steps × restarts × target_classes fwd+bwd",
    )
)
_register(
    AttackDef(
        "square",
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
        "AutoAttack, standard version: APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020)",
        "Linf",
        _frozen(norm="Linf", steps=100, queries=5000, target_classes=9),
        _autoattack,
        cost="≈ 100 + 900 + 900 fwd+bwd, ≤ 5000 fwd",
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


def validate_params(params: Mapping[str, object]) -> None:
    """Reject values that no attack could use, with the option named."""
    for key in ("steps", "restarts", "samples", "queries", "target_classes"):
        value = params.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise UsageError(f"--{key} must be a positive integer (got {value!r}).")
    for key in ("lr", "delta"):
        value = params.get(key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise UsageError(f"--{key} must be a positive number (got {value!r}).")
    if params.get("norm") not in (None, "Linf", "L2"):
        raise UsageError(f"--norm must be Linf or L2 (got {params['norm']!r}).")


def perturb(
    model: nn.Module, request: AttackRequest, images: torch.Tensor, labels: torch.Tensor, *, eps: float, num_classes: int, seed: int,
    precision: str = "fp32", info: dict | None = None,
) -> torch.Tensor:
    """Attack a batch of [0, 1] images; returns adversarial images in [0, 1].

    PGD-style restarts are run here (torchattacks' PGD has none): an example stays adversarial once
    any restart fools the model.
    """
    p = dict(request.params)
    attack = request.definition.factory(model, eps, p, num_classes, seed)
    attack.set_model_training_mode(model_training=False)
    restarts = int(p.get("restarts", 1)) if request.name in ("pgd", "pgd-l2") else 1
    from ellrobust.precision import precision_scope

    with precision_scope(precision, images.device):
        adv = attack(images, labels)
    for _ in range(restarts - 1):
        with torch.no_grad():
            fooled = model(adv).argmax(1) != labels
        if bool(fooled.all()):
            break
        again = attack(images, labels)
        adv = torch.where(fooled.view(-1, 1, 1, 1), adv, again)
    return adv.detach()


def perturbation_norm(adv: torch.Tensor, images: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example size of the perturbation in the attack's norm."""
    delta = (adv - images).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(p=2, dim=1)
