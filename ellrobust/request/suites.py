"""Declarative evaluation suites (TOML files in ``attacks/``): data, not code.

A suite lists attacks with their parameters and, optionally, run defaults::

    description = "…"
    eps = ["1/255", "2/255"]          # budgets for L∞ attacks, pixel units
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
from ellrobust.attacks.target_labels import parse_labels
from ellrobust.core.errors import UsageError
from ellrobust.core.parsing import parse_eps_list, parse_int_range


@dataclass(frozen=True)
class Suite:
    path: str
    description: str
    attacks: tuple[AttackRequest, ...]
    eps: tuple[float, ...] | None = None
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


def _eps(value: object, where: str) -> tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    try:
        return parse_eps_list(str(value))
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None


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
    validate_params(params)
    request = make_request(name, params)
    return AttackRequest(request.name, request.params, _eps(eps, eps_where)) if eps is not None else request


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every problem is a one-line :class:`UsageError`."""
    path = Path(path)
    if not path.is_file():
        bundled = bundled_suite(str(path))
        if bundled is None:
            raise UsageError(
                f"suite file {str(path)!r} does not exist; "
                f"pass a TOML file such as attacks/quick.toml, or one of {', '.join(BUNDLED)}."
            )
        path = bundled
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"suite {str(path)!r} is not valid TOML ({exc}).") from None
    attacks = []
    for i, entry in enumerate(data.get("attack", [])):
        if "name" not in entry:
            raise UsageError(f"suite {str(path)!r}: attack #{i + 1} has no name.")
        params = {k: v for k, v in entry.items() if k != "name"}
        name = entry["name"]
        attacks.append(attack_request(name, params, f"suite {str(path)!r}", f"suite {path.name} attack {name}"))
    corr = data.get("corruptions", {})
    severities = corr.get("severities")
    return Suite(
        path=str(path),
        description=str(data.get("description", "")),
        attacks=tuple(attacks),
        eps=_eps(data["eps"], f"suite {path.name}") if "eps" in data else None,
        n=data.get("n"),
        m_grad=data.get("m_grad"),
        corruptions=tuple(corr.get("names", ())),
        severities=parse_int_range(str(severities), "severities", 1, 5) if severities is not None else None,
        collapse=bool(data.get("collapse", False)),
        labels=parse_labels(data["labels"]).value if "labels" in data else None,
    )
