"""The metric vocabulary: one declaration per metric, and the names it gives the results table.

A measure declares each number it writes once, with :func:`declare_metric`: its name, its unit,
which way is better, how ``ellrobust check`` compares it, and whether it has a 95 % interval and a
paired difference between two models. The declaration gives the companions their names
(``<name>_ci_low``/``_ci_high``, ``<name>_difference`` and its bounds), so a family with an interval
and a paired difference is one line, not seven names kept in step by hand.

Metric names are a contract with users' scripts (README, "Results"): a declared name never changes.
A :class:`Metric` is a string: ``Metric("robust_accuracy")`` checks that the name is declared, and
the declarations below are also attributes (``Metric.ROBUST_ACCURACY``) for the code that names them.
Sanity checks name their rows ``sanity_<check>`` and are declared by their own registry
(:mod:`ellrobust.attacks.sanity_checks`), so any ``sanity_*`` name is a metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

SANITY_PREFIX = "sanity_"


class Kind(StrEnum):
    """How ``ellrobust check`` compares a metric with its baseline."""

    BINOMIAL = "binomial"  # an accuracy-like fraction: 3 binomial standard errors at n
    SCALED = "scaled"  # any other number: 5 % of its size, at least 0.05
    FLAG = "flag"  # a sanity check: pass must stay pass
    SKIP = "skip"  # derived from compared rows: presence only


class Direction(StrEnum):
    """Which way a metric gets worse."""

    HIGHER_IS_BETTER = "higher is better"
    LOWER_IS_BETTER = "lower is better"
    EITHER = "either way"


@dataclass(frozen=True)
class MetricDef:
    """One declared metric.

    Attributes:
        name: the metric's name in the results table.
        unit: what its value is (``fraction``, ``pixels``, ``count``, ``p``, ``score``, ...).
        compare: how ``check`` compares it.
        better: which way it improves.
        interval: how its 95 % interval is made (``Wilson``, ``bootstrap``...); empty: no interval.
        doc: a line for readers of the table.
        of: the metric this one is a companion of (an interval end, a paired difference); empty otherwise.
    """

    name: str
    unit: str
    compare: Kind = Kind.SCALED
    better: Direction = Direction.EITHER
    interval: str = ""
    doc: str = ""
    of: str = ""


_DECLARED: dict[str, MetricDef] = {}
_INSTANCES: dict[str, Metric] = {}  # one object per name, so ``is`` works as it did on the enum


class _Vocabulary(type):
    """Lets ``for m in Metric`` and ``name in Metric`` read the declarations, as they did on the enum."""

    def __iter__(cls) -> Iterator[Metric]:
        return (Metric(name) for name in _DECLARED)

    def __contains__(cls, name: object) -> bool:
        return isinstance(name, str) and (name in _DECLARED or name.startswith(SANITY_PREFIX))


class Metric(str, metaclass=_Vocabulary):
    """A declared metric name (a ``str``); an undeclared one is a ``ValueError``."""

    def __new__(cls, name: str) -> Metric:
        known = _INSTANCES.get(name)
        if known is not None:
            return known
        if name not in Metric:
            raise ValueError(f"{name!r} is not a declared metric")
        return _INSTANCES.setdefault(name, super().__new__(cls, name))

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Metric({self.value!r})"

    @property
    def definition(self) -> MetricDef | None:
        """Its declaration (None for a sanity check's flag)."""
        return _DECLARED.get(self.value)

    @property
    def ci_low(self) -> Metric:
        """The lower end of this metric's 95 % interval (``robust_accuracy`` → ``robust_accuracy_ci_low``)."""
        return Metric(f"{self.value}_ci_low")

    @property
    def ci_high(self) -> Metric:
        return Metric(f"{self.value}_ci_high")

    @property
    def difference(self) -> Metric:
        """The paired difference of this metric between two models (``token_cosine`` → ``token_cosine_difference``)."""
        return Metric(f"{self.value}_difference")

    @property
    def is_sanity(self) -> bool:
        return self.value.startswith(SANITY_PREFIX)

    @classmethod
    def sanity(cls, check: str) -> Metric:
        """The metric of a named sanity check (``robust_le_clean`` → ``sanity_robust_le_clean``)."""
        return cls(f"{SANITY_PREFIX}{check}")


def _add(definition: MetricDef) -> Metric:
    known = _DECLARED.get(definition.name)
    if known is not None and known != definition:
        raise ValueError(f"metric {definition.name!r} is declared twice, differently")
    _DECLARED[definition.name] = definition
    return Metric(definition.name)


def declare_metric(
    name: str,
    *,
    unit: str,
    compare: Kind = Kind.SCALED,
    better: Direction = Direction.EITHER,
    interval: str = "",
    paired: str = "",
    doc: str = "",
) -> Metric:
    """Declare a metric and its companions; returns the metric.

    Args:
        name: the metric's name in the results table (a public contract once released).
        unit: what its value is, for readers.
        compare: how ``check`` compares it; its companions are never compared, only required.
        better: which way it improves.
        interval: how its 95 % interval is made; declares ``<name>_ci_low`` and ``<name>_ci_high``.
        paired: how the paired difference between two models and its interval are made; declares
            ``<name>_difference`` with its ``_ci_low``/``_ci_high``.
        doc: a line for readers.
    """
    return _declare(MetricDef(name, unit, compare, better, interval, doc), paired)


def _declare(definition: MetricDef, paired: str = "") -> Metric:
    metric = _add(definition)
    for end in ("ci_low", "ci_high") if definition.interval else ():
        _add(MetricDef(f"{definition.name}_{end}", definition.unit, Kind.SKIP, of=definition.name))
    if paired:
        difference = MetricDef(f"{definition.name}_difference", definition.unit, Kind.SKIP, interval=paired)
        _declare(replace(difference, of=definition.name))
    return metric


def declared(metric: str) -> MetricDef | None:
    """The declaration of a metric name, None when it is not declared (an old or future name, a sanity flag)."""
    return _DECLARED.get(metric)
