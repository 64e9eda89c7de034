"""The contract between the engine and a stage: which units it has, and how one is computed.

Stages register themselves (``@stage("name", order=…)``) and the engine runs every registered stage
in ``order`` (:func:`ordered_stages`): clean first, because every later stage may read its outcomes
through :meth:`~ellrobust.run.context.RunContext.clean_outcomes`.
For each stage it asks for the units, loads the finished ones from disk, calls :meth:`Stage.prepare`
with the rest, then :meth:`Stage.run` for each of them with the unit's seed, and passes every unit's
result, computed or loaded, through :meth:`Stage.finish`; after the last stage,
:meth:`Stage.derive` adds rows that need every unit of the run. The hooks a stage does not need keep
these no-op defaults.
"""

from __future__ import annotations

from collections.abc import Callable

from ellrobust.core.registry import Registry
from ellrobust.request.config import EvalConfig
from ellrobust.results import Row
from ellrobust.run.context import RunContext
from ellrobust.run.units import Unit, UnitResult


class Stage:
    """A family of units (clean accuracy, attacks, corruptions, collapse).

    ``order`` places it among the registered stages: a stage may read the units of every stage
    before it (the clean stage, order 0, gates the attacks).
    """

    order: int = 0

    @staticmethod
    def before_workers(config: EvalConfig, image_size: int, protocol: str) -> None:
        """Work to do once in the main process before the run's worker pool forks (it is inherited)."""

    def identity(self, unit: Unit, ctx: RunContext) -> dict[str, object]:
        """What else a unit's numbers and random numbers depend on, beside its models, data and seed
        (which the engine adds): e.g. the corruption protocol. Part of its key and of its seed."""
        return {}

    def observers(self, unit: Unit, ctx: RunContext) -> dict[str, object]:
        """What is measured beside the unit's own numbers without changing them (the attack probes):
        part of its key, so a unit computed without them is not reused for a run that asks for them,
        but not of its seed, so the unit's own numbers stay the same with or without them."""
        return {}

    def units(self, ctx: RunContext) -> list[Unit]:
        """The stage's units for this run, in the order they run."""
        raise NotImplementedError

    def prepare(self, ctx: RunContext, pending: list[Unit]) -> None:
        """Called with the units about to be computed (not on disk), in order, before the first runs."""

    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        """Compute one unit; ``seed`` comes from the unit's key (the same on every rank and every resume)."""
        raise NotImplementedError

    def finish(self, unit: Unit, result: UnitResult, ctx: RunContext) -> UnitResult:
        """The unit's result as this run reads it, computed or loaded from disk (after it was saved).

        For what depends on the run's request but not on the unit's numbers (the minimal stage's rows
        at the run's budgets), so that a unit is reused whatever those are. The default: as it is.
        """
        return result

    def derive(self, ctx: RunContext, rows: list[Row]) -> list[Row]:
        """Rows computed from every row of the run once all units are done (e.g. mCE over corruptions)."""
        return []


STAGES: Registry[type[Stage]] = Registry("stage")


def stage(name: str, *, order: int) -> Callable[[type[Stage]], type[Stage]]:
    """Register a :class:`Stage` subclass under ``name``, to run at ``order`` (a class decorator)."""

    def register(cls: type[Stage]) -> type[Stage]:
        cls.order = order
        STAGES.add(name, cls)
        return cls

    return register


def ordered_stages() -> list[type[Stage]]:
    """Every registered stage, in the order the engine runs them."""
    return sorted((cls for _, cls in STAGES.items()), key=lambda cls: cls.order)
