"""One path from given options to the request: what ``eval``, ``collapse`` and :func:`ellrobust.evaluate` share.

Each caller hands over the values as its user wrote them (flags' values, Python arguments) and says
who it is (:class:`~ellrobust.request.spec.Caller`); every value is read through its option in
:mod:`~ellrobust.request.spec`, a suite (given, or the default one) fills what was not given, and
:class:`~ellrobust.request.config.EvalConfig` checks what concerns several fields at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from ellrobust.attacks import AttackRequest, cli_flag, make_request, validate_params
from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.core.errors import UsageError
from ellrobust.core.registry import unknown_choice
from ellrobust.request.config import EvalConfig
from ellrobust.request.spec import Caller, Option, Target, options_of, python_names
from ellrobust.request.suites import DEFAULT_SUITE, Suite, attack_request, load_suite
from ellrobust.request.values import names

#: What a suite may set when the caller did not: option name → the suite's attribute.
_FROM_SUITE = ("eps", "patches", "n", "m_grad", "labels", "corruptions", "severities")


def check_python_names(options: Mapping[str, object]) -> None:
    """Refuse a keyword :func:`ellrobust.evaluate` does not take, saying where it goes instead."""
    valid = python_names()
    spec = options_of("eval")
    for name in options:
        if name in valid:
            continue
        option = spec.get(name) or next((o for o in spec.values() if o.config_field == name), None)
        if option is not None and option.per_model:
            raise UsageError(f"{name!r} is not an option of ellrobust.evaluate: give it as a model's {option.name!r}.")
        if name == "architectures":
            raise UsageError(f"{name!r} is not an option of ellrobust.evaluate: give it as a model's 'model'.")
        if option is not None and option.name == "models":
            raise UsageError(f"{name!r} is not an option of ellrobust.evaluate: give it as the first argument.")
        if option is not None and option.target is not Target.CLI:
            raise UsageError(f"{name!r} is not an option of ellrobust.evaluate: give it as {option.name}=.")
        raise UsageError(unknown_choice("option of ellrobust.evaluate", name, list(valid)))


def build_config(
    given: Mapping[str, object],
    caller: Caller,
    *,
    default_collapse: object,
    per_model: Mapping[str, tuple] | None = None,
) -> EvalConfig:
    """The request of ``given`` (option name → value as the user wrote it; None: not given).

    Args:
        given: the values of ``eval``'s options (:func:`~ellrobust.request.spec.options_of`); those
            that go to the caller alone (``out``, ``max_image_pixels``) are left out.
        caller: who wrote them, which decides how a message names them.
        default_collapse: what ``collapse = true`` measures (a
            :class:`~ellrobust.measures.collapse_probe.CollapseConfig`); a ``collapse`` value that is
            no bool is taken as it is.
        per_model: request fields the caller set from each model's settings (Python's mappings).
    """
    spec = options_of("eval")
    raw = {k: v for k, v in given.items() if v is not None}
    collapse = raw.pop("collapse", False)
    if isinstance(collapse, bool) or caller is not Caller.PYTHON:
        collapse = default_collapse if spec["collapse"].read(collapse, caller) else None
    attacks = raw.pop("attacks", None)
    values = {k: spec[k].read(v, caller) for k, v in raw.items()}
    overrides = {k: values.pop(k) for k in list(values) if spec[k].target is Target.ATTACK}
    validate_params(overrides, _namer(spec, caller))
    suite_path = values.pop("suite", None)
    if suite_path is None and attacks is None and not values.get("corruptions") and collapse is None:
        suite_path = DEFAULT_SUITE
    suite = load_suite(suite_path) if suite_path is not None else None
    if suite is not None:
        values |= {k: getattr(suite, k) for k in _FROM_SUITE if k not in values and getattr(suite, k)}
        collapse = collapse if collapse is not None or not suite.collapse else default_collapse
    fields = {spec[k].config_field: v for k, v in values.items() if spec[k].target is Target.REQUEST}
    requests = _attacks(attacks, suite, overrides, caller, given=frozenset(raw) & {"eps", "patches"})
    return EvalConfig(attacks=requests, collapse=collapse, **fields, **(per_model or {}))


def _namer(spec: Mapping[str, Option], caller: Caller):
    if caller is Caller.CLI:
        return cli_flag
    return lambda key: spec[key].label(caller) if key in spec else key


def _attacks(
    value: object, suite: Suite | None, overrides: dict, caller: Caller, *, given: frozenset[str]
) -> tuple[AttackRequest, ...]:
    """The attacks asked for (names, or Python's names → parameters), else the suite's, with the overrides.

    A suite attack's own budgets give way to the caller's: ``--eps`` replaces a pixel-norm attack's,
    ``--patches`` a patch attack's.
    """
    if value is None:
        if suite is None:
            return ()
        out = []
        for req in suite.attacks:
            merged = make_request(req.name, {**dict(req.params), **overrides})
            replaced = ("patches" if merged.norm == PATCH_NORM else "eps") in given
            out.append(AttackRequest(merged.name, merged.params, None if replaced else req.eps))
        return tuple(out)
    if isinstance(value, Mapping):
        return tuple(_mapped(name, params, overrides) for name, params in value.items())
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    label = options_of("eval")["attacks"].label(caller)
    return tuple(make_request(name, overrides) for name in names(value, label))


def _mapped(name: object, params: object, overrides: dict) -> AttackRequest:
    """One attack of Python's ``attacks={name: params}``: its own parameters, then the options'."""
    if params is not None and not isinstance(params, Mapping):
        raise UsageError(
            f"attacks[{name!r}] must map parameter names to values, e.g. {{'steps': 20}} "
            f"(got a {type(params).__name__})."
        )
    request = attack_request(name, dict(params or {}), "attacks", f"attacks[{name!r}]")
    merged = make_request(request.name, {**dict(request.params), **overrides})
    return AttackRequest(merged.name, merged.params, request.eps)
