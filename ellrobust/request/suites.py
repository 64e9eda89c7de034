"""Declarative evaluation suites (TOML files in ``attacks/``): data, not code.

A suite lists attacks with their parameters and, optionally, run defaults::

    description = "…"
    eps = ["1/255", "2/255"]          # budgets for L∞ attacks, pixel units
    patches = [1, 2, 4]               # budgets for the patch attacks, numbers of patches
    n = 200
    m_grad = "detach"
    labels = "true"                   # or "predicted" (--labels)

    [[attack]]
    name = "pgd"
    steps = 20
    step_size = "0.15*eps"
    eps = ["0.25", "0.5"]             # optional per-attack budgets (e.g. for L2 attacks)

    [corruptions]                     # optional
    names = ["all"]
    severities = "1-5"

Options given on the command line override the suite's values.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ellrobust.attacks import ATTACKS, AttackRequest, make_request, validate_params
from ellrobust.attacks.patches import PATCH_NORM, patch_counts
from ellrobust.core.errors import UsageError
from ellrobust.request.spec import Caller, options_of


@dataclass(frozen=True)
class Suite:
    path: str
    description: str
    attacks: tuple[AttackRequest, ...]
    eps: tuple[float, ...] | None = None
    patches: tuple[float, ...] | None = None  # the patch attacks' budgets (numbers of patches)
    n: int | None = None
    m_grad: str | None = None
    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] | None = None
    collapse: bool = False
    labels: str | None = None  # --labels: "true" or "predicted"; None: the command line's
    extra: dict = field(default_factory=dict, compare=False)


#: The suites of the repo's attacks/ folder, installed as the package data ``ellrobust.attack_suites``.
BUNDLED = ("quick", "paper", "ci")
#: What ``ellrobust eval`` and ``ellrobust.evaluate`` run when asked for no attack, corruption or collapse.
DEFAULT_SUITE = "quick"


def bundled_suite(name: str) -> Path | None:
    """A bundled suite by name (``quick``) or by its repo path (``attacks/quick.toml``).

    Looked up in the package (``ellrobust/attack_suites/``, where a regular install puts the repo's
    ``attacks/`` folder, see pyproject.toml) and, for a source checkout or an editable install, in
    the repo's ``attacks/`` folder itself.
    """
    stem = Path(name).stem
    if stem not in BUNDLED or Path(name).parent.name not in ("", "attacks"):
        return None
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "attack_suites", package.parent / "attacks"):
        if (folder / f"{stem}.toml").is_file():
            return folder / f"{stem}.toml"
    return None


def attack_request(name: str, params: dict, where: str, eps_where: str) -> AttackRequest:
    """One attack as a suite entry (or ``ellrobust.evaluate(attacks={name: params})``) gives it.

    ``params`` are the attack's parameters, and ``eps``, budgets for this attack alone. Every problem
    is one line that starts with ``where`` (``eps_where`` for the budgets) and lists what the attack takes.
    """
    definition = ATTACKS.get(name)
    params = dict(params)
    eps = params.pop("eps", None)
    unknown = sorted(set(params) - set(definition.defaults))
    if unknown:
        takes = ", ".join(definition.defaults) or "none"
        raise UsageError(f"{where}: attack {name!r} takes no parameter {', '.join(unknown)}; it takes {takes}.")
    try:
        validate_params(params)
    except UsageError as exc:
        raise UsageError(f"{where}: attack {name!r}: {exc}") from None
    request = make_request(name, params)
    if eps is None:
        return request
    try:
        if request.norm == PATCH_NORM:
            budgets = patch_counts(eps, "eps")
        else:
            budgets = options_of("eval")["eps"].read(eps, Caller.SUITE)
    except UsageError as exc:
        raise UsageError(f"{eps_where}: {exc}") from None
    return AttackRequest(request.name, request.params, budgets)


#: The keys a suite file takes at its top level, and in its ``[corruptions]`` table; the others are refused.
SUITE_KEYS = ("description", "eps", "patches", "n", "m_grad", "labels", "collapse", "attack", "corruptions")
CORRUPTION_KEYS = ("names", "severities")
#: A ``[corruptions]`` key → the request option it sets.
_CORRUPTION_OPTIONS = {"names": "corruptions", "severities": "severities"}


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every problem is one :class:`UsageError` line naming the key.

    Every key goes through the request's own option (:mod:`~ellrobust.request.spec`): its type and
    bounds are checked as the flag's are, with the same message; booleans are TOML booleans only.
    """
    path = _suite_path(Path(path))
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"suite {str(path)!r} is not valid TOML ({exc}).") from None
    where = f"suite {str(path)!r}"
    _known(data, SUITE_KEYS, where)
    corruptions = data.get("corruptions", {})
    if not isinstance(corruptions, dict):
        raise UsageError(f"{where}: corruptions must be a table ([corruptions] with names and severities).")
    _known(corruptions, CORRUPTION_KEYS, f"{where} [corruptions]")
    top = ("eps", "patches", "n", "m_grad", "labels", "collapse")
    values = {key: _read(key, data[key], where) for key in top if key in data}
    values |= {_CORRUPTION_OPTIONS[k]: _read(_CORRUPTION_OPTIONS[k], v, where) for k, v in corruptions.items()}
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{where}: description must be a string (got {description!r}).")
    return Suite(
        path=str(path),
        description=description,
        attacks=_attacks(data.get("attack", []), where, path),
        eps=values.get("eps"),
        patches=values.get("patches"),
        n=values.get("n"),
        m_grad=values.get("m_grad"),
        corruptions=values.get("corruptions", ()),
        severities=values.get("severities"),
        collapse=values.get("collapse", False),
        labels=values.get("labels"),
    )


def _suite_path(path: Path) -> Path:
    if path.is_file():
        return path
    bundled = bundled_suite(str(path))
    if bundled is None:
        raise UsageError(
            f"suite file {str(path)!r} does not exist; "
            f"pass a TOML file such as attacks/quick.toml, or one of {', '.join(BUNDLED)}."
        )
    return bundled


def _known(table: dict, valid: tuple[str, ...], where: str) -> None:
    """Refuse a key that is not ``valid`` (a misspelling would otherwise be ignored), listing the valid ones."""
    for key in table:
        if key not in valid:
            raise UsageError(f"{where}: unknown key {key!r}; a suite takes {', '.join(valid)}.")


def _read(name: str, value: object, where: str) -> object:
    """A key's value through the request option of that name, its message prefixed with the suite."""
    try:
        return options_of("eval")[name].read(value, Caller.SUITE)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _attacks(entries: object, where: str, path: Path) -> tuple[AttackRequest, ...]:
    """The ``[[attack]]`` tables, each checked by the attack's own parameter validation."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UsageError(f"{where}: attack must be a list of tables, each [[attack]] with a name (got {entries!r}).")
    attacks = []
    for i, entry in enumerate(entries):
        name = entry.get("name")
        if name is None:
            raise UsageError(f"{where}: attack #{i + 1} has no name.")
        if not isinstance(name, str):
            raise UsageError(f"{where}: attack #{i + 1}'s name must be a string (got {name!r}).")
        params = {k: v for k, v in entry.items() if k != "name"}
        attacks.append(attack_request(name, params, where, f"suite {path.name} attack {name}"))
    return tuple(attacks)
