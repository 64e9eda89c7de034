"""What a run asks of an attack: the request with its resolved parameters, and its validation.

Validation lives apart from the attacks themselves so that the CLI and suites can reject a bad
option in one line before any model is loaded, and :func:`~.perturbation.perturb` can check again
for library callers who skipped that step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ellrobust.attacks.definitions import ATTACKS, NORM_DEFAULT_EPS, AttackDef
from ellrobust.core.errors import UsageError
from ellrobust.core.parsing import MAX_BUDGET, MIN_RESOLUTION


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

    @property
    def default_eps(self) -> tuple[float, ...] | None:
        """The budgets to run at when neither the suite nor ``--eps`` gives any (None: the dataset's).

        The definition's defaults are budgets in its own norm; a request whose ``norm`` parameter
        changed the threat model (``--attack apgd --norm L2``) gets that norm's defaults instead, so an
        L2 attack never runs at L∞ budgets 255 times too small to mean anything.
        """
        if self.norm == self.definition.norm:
            return self.definition.default_eps
        return NORM_DEFAULT_EPS.get(self.norm)

    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)


def make_request(name: str, overrides: Mapping[str, object] | None = None) -> AttackRequest:
    """Resolve an attack name and the user's overrides into an :class:`AttackRequest`."""
    defn = ATTACKS.get(name)
    return AttackRequest(name, MappingProxyType(defn.params(overrides)))


def _set_target_classes(name: str, k: int) -> str:
    """How to set ``target_classes``, which has no ``eval`` flag: in a suite's attack table, or the API's params."""
    return (
        f"set target_classes = {k} or fewer in the {name} [[attack]] table of a --suite file "
        f"(or attacks={{{name!r}: {{'target_classes': {k}}}}} in ellrobust.evaluate)"
    )


#: Parameters that set how much work an attack does, each bounded by :data:`~ellrobust.core.parsing.MAX_BUDGET`.
BUDGETS = ("steps", "restarts", "samples", "queries")


def cli_flag(key: str) -> str:
    """A parameter as the command line names it: ``step_size`` → ``--step-size``."""
    return "--" + key.replace("_", "-")


def validate_params(params: Mapping[str, object], name: Callable[[str], str] = cli_flag) -> None:
    """Reject values that no attack could use, or budgets beyond reason, in one line.

    ``name`` says how a parameter is named in the message: the flag on the command line (the
    default, also for suite files), ``steps=`` for a Python argument.
    """
    for key in ("steps", "restarts", "samples", "queries", "target_classes"):
        value = params.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            label = name(key) if key in BUDGETS else key  # target_classes is an attack parameter, no flag
            raise UsageError(f"{label} must be a positive integer (got {value!r}).")
        if key in BUDGETS and value is not None and value > MAX_BUDGET:
            raise UsageError(
                f"{name(key)} {value} is above the bound of {MAX_BUDGET:,}, more than any real evaluation needs; "
                "pass a smaller value."
            )
    for key in ("lr", "delta"):
        value = params.get(key)
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            raise UsageError(f"{name(key)} must be a positive number (got {value!r}).")
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{name(key)} must be a finite number (got {value!r}).")
    _validate_search(params, name)
    if params.get("norm") not in (None, "Linf", "L2"):
        raise UsageError(f"{name('norm')} must be Linf or L2 (got {params['norm']!r}).")


def _validate_search(params: Mapping[str, object], name: Callable[[str], str]) -> None:
    """``eps_max`` in (0, 1] and ``resolution`` in [MIN_RESOLUTION, eps_max): a bisection that ends."""
    for key in ("eps_max", "resolution"):
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise UsageError(f"{name(key)} must be a positive budget in [0, 1] pixel units (got {value!r}).")
        if value > 1:
            raise UsageError(
                f"{name(key)} {value:g} is outside (0, 1]; budgets are in [0, 1] pixel units (16/255, not 16)."
            )
    resolution = params.get("resolution")
    if resolution is not None and resolution < MIN_RESOLUTION:
        raise UsageError(
            f"{name('resolution')} {resolution:g} is below {MIN_RESOLUTION:g}, finer than any budget needs "
            "(bisection could not end); pass 1/255/16 or a coarser width."
        )
    if resolution is not None and params.get("eps_max") is not None and resolution >= params["eps_max"]:
        raise UsageError(
            f"{name('resolution')} {resolution:.6g} must be below {name('eps_max')} {params['eps_max']:.6g}; "
            "pass a smaller one."
        )


def validate_request(request: AttackRequest, num_classes: int) -> None:
    """Reject a request that cannot run on a dataset of ``num_classes`` classes, in one line.

    Call it before any work starts; :func:`~.perturbation.perturb` calls it too.
    """
    validate_params(request.params)
    targets = request.params.get("target_classes")
    if targets is not None and int(targets) >= num_classes:
        raise UsageError(
            f"{request.name}: target_classes {targets} needs more than {targets} classes; the dataset has "
            f"{num_classes}, so {_set_target_classes(request.name, num_classes - 1)}."
            if num_classes > 1
            else f"{request.name} needs at least 2 classes; the dataset has {num_classes}."
        )
