"""Probes: measures that observe an attack unit's batches instead of running units of their own.

The attack stage (:mod:`ellrobust.measures.attack`) only attacks. Everything else a run wants to know
about its adversarial images — their predictions and perturbation sizes, collapse on them, how the
other models judge them (transfer), the images themselves (``--save-adversarial``) — is a probe: it
sees each attacked batch (clean and adversarial images side by side) and, once the unit's batches
are done, adds its rows and per-image columns to the unit's result. A new observation of adversarial
images is one probe class with ``@attack_probe`` in its own module; the attack stage does not change.

Probes are collective like the stage itself: every rank calls :meth:`AttackProbe.observe` on its own
batches and :meth:`AttackProbe.finish` once, where a probe gathers what the other ranks saw.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ellrobust.attacks import AttackRequest
from ellrobust.core.registry import Registry
from ellrobust.run.context import LoadedModel, RunContext
from ellrobust.run.units import Unit, UnitResult


@dataclass(frozen=True)
class AttackScope:
    """What a probe knows of the unit it observes.

    Attributes:
        positions: the attacked images (positions in the run's selection); the others keep what the
            next smaller budget (``previous``) or the clean image showed.
        previous: the unit of the next smaller budget of the same attack (nested budgets), or None.
        aims: under ``--labels predicted``, the class each image of the selection is attacked away
            from (the model's clean prediction); None: the true labels.
    """

    unit: Unit
    ctx: RunContext
    model: LoadedModel
    request: AttackRequest
    positions: list[int]
    previous: Unit | None
    aims: np.ndarray | None = None


@dataclass(frozen=True)
class AttackedBatch:
    """One attacked batch: ``images`` and their ``adversarial`` versions, the true labels, and the
    attacked model's strict fp32 prediction on each adversarial image."""

    positions: list[int]
    images: torch.Tensor
    truth: torch.Tensor
    adversarial: torch.Tensor
    predicted: torch.Tensor


class AttackProbe(ABC):
    """An observer of an attack unit. ``order`` sets where its rows go (and what it may read of the
    result that probes before it wrote: the saved images take the predictions the perturbation probe
    recorded)."""

    order: ClassVar[int]

    @staticmethod
    def identity(ctx: RunContext) -> dict[str, object]:
        """What of the request this probe reads: part of every attack unit's key (never of its seed), so a
        unit measured without the probe is not reused by a run that asks for it."""
        return {}

    @classmethod
    @abstractmethod
    def open(cls, scope: AttackScope) -> AttackProbe | None:
        """The probe for this unit, or None when the run did not ask for it (or the model cannot give it)."""

    @abstractmethod
    def observe(self, batch: AttackedBatch) -> None:
        """Take one attacked batch of this rank."""

    @abstractmethod
    def finish(self, result: UnitResult) -> None:
        """Gather what every rank saw and add the probe's rows and per-image values to ``result``."""


ATTACK_PROBES: Registry[type[AttackProbe]] = Registry("attack probe")


def attack_probe(name: str):
    """Register an :class:`AttackProbe` subclass under ``name`` (a class decorator)."""

    def register(cls: type[AttackProbe]) -> type[AttackProbe]:
        ATTACK_PROBES.add(name, cls)
        return cls

    return register


def probe_identity(ctx: RunContext) -> dict[str, object]:
    """Every registered probe's part of an attack unit's key."""
    return {key: value for _, cls in ATTACK_PROBES.items() for key, value in cls.identity(ctx).items()}


def open_probes(scope: AttackScope) -> list[AttackProbe]:
    """The registered probes that apply to this unit, in their ``order``."""
    ordered = sorted((cls for _, cls in ATTACK_PROBES.items()), key=lambda cls: cls.order)
    return [probe for probe in (cls.open(scope) for cls in ordered) if probe is not None]
