"""A run's units of work and what each one yields: the contract between the engine and the measures."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from ellrobust.attacks import patch_budgeted
from ellrobust.core.precision import Precision
from ellrobust.results import CORRECT, MEASUREMENT_FIELDS, OWN, TRANSFERRED, ImageTable, Outcomes, Row


@dataclass(frozen=True)
class Unit:
    """One saved piece of work. ``model`` is ``"*"`` for units that cover every model at once."""

    stage: str
    model: str
    method: str
    params: str = "{}"
    eps: float | None = None
    severity: int | None = None
    m_grad: str = ""
    prior: tuple[float, ...] = ()  # smaller budgets of the same attack run before this one (nested eps)
    precision: str = ""  # the attack iterations' precision; "" where it does not apply

    @property
    def label(self) -> str:
        parts = [self.model, self.method]
        if self.eps is not None:
            patches = patch_budgeted(self.method, {})
            parts.append(f"patches={self.eps:g}" if patches else f"eps={self.eps * 255:.3g}/255")
        if self.severity is not None:
            parts.append(f"s{self.severity}")
        if self.m_grad:
            parts.append(f"m_grad={self.m_grad}")
        if self.precision and self.precision != Precision.FP32:
            parts.append(self.precision)
        return " ".join(parts)


@dataclass
class UnitResult:
    """What a unit yields: rows (the engine adds provenance), a per-image table, and diagnostics.

    Attributes:
        rows: the unit's typed rows (:class:`~ellrobust.results.rows.Row`).
        per_image: per model, the unit's declared per-image columns
            (:class:`~ellrobust.results.image_table.ImageTable`): ``correct`` (0/1 per selected image:
            correct / robust), and whatever the measures add (predictions, perturbation sizes,
            ε* and censoring, confidence, collapse values...). With ``--transfer``, each other model's
            verdict on the attacked model's adversarial images is its own view,
            :data:`~ellrobust.results.image_table.TRANSFERRED`. A minimal-norm unit's outcomes are
            those of the budgets in ``extra["eps_grid"]`` (the run's grid for the method, set when the
            run reads the unit: :meth:`ellrobust.measures.minimal_budget.MinimalStage.finish`).
        extra: diagnostics for run.json and the sanity checks (timings, perturbation sizes).
    """

    rows: list[Row] = field(default_factory=list)
    per_image: ImageTable = field(default_factory=ImageTable)
    extra: dict = field(default_factory=dict)

    def outcomes_of(self, unit: Unit) -> list[Outcomes]:
        """The unit's per-example outcomes as typed records, one per model and view with a ``correct``
        column, transferred ones first, each in its view's measurement (:data:`VIEW_MEASUREMENTS`).

        A minimal-norm unit gives one per model and budget of its grid: robust at ε when ε* > ε
        (:func:`ellrobust.stats.minimal_budgets.robust_flags`), each carrying the images' ε* and censoring.
        """
        table = self.per_image
        if any(table.get(model, "eps_star") is not None for model in table.models()):
            return self._minimal_outcomes(unit)
        unknown = set(table.views()) - set(VIEW_MEASUREMENTS)
        if unknown:
            raise ValueError(f"per-image view(s) {sorted(unknown)} have no measurement")
        out = []
        for view, measurement in VIEW_MEASUREMENTS.items():
            for model in table.models(view):
                columns = table.entry(model, view)
                if CORRECT in columns:
                    out.append(Outcomes(model=model, **measurement(unit), columns=columns))
        return out

    def _minimal_outcomes(self, unit: Unit) -> list[Outcomes]:
        from ellrobust.stats.minimal_budgets import robust_flags

        grid = [float(e) for e in self.extra.get("eps_grid", [])]
        eps_max = float(self.extra["eps_max"])
        out = []
        for model in self.per_image.models():
            stars = self.per_image.get(model, "eps_star")
            if stars is None:
                continue
            censored = self.per_image.column(model, "censored")
            flags = robust_flags(stars, censored, grid, eps_max=eps_max)
            out += [
                Outcomes(
                    model=model,
                    **(_own_measurement(unit) | {"eps": eps, "severity": None}),
                    columns={CORRECT: robust, "eps_star": stars, "censored": censored},
                )
                for eps, robust in zip(grid, flags, strict=True)
            ]
        return out


def transfer_params(unit: Unit) -> str:
    """The params of a transferred measurement: the attack's, plus the model it attacked (``source``) and,
    for an elliptical source, its ``source_m_grad``.

    The target takes no gradient, so its own m_grad does not apply (its rows' ``m_grad`` is empty); the
    source is part of the params so that the images of different sources are different measurements,
    and two targets judged on the same source's images pair up image by image.
    """
    params = json.loads(unit.params)
    params["source"] = unit.model
    if unit.m_grad:
        params["source_m_grad"] = unit.m_grad
    return json.dumps(params, sort_keys=True)


def _own_measurement(unit: Unit) -> dict[str, object]:
    return {name: getattr(unit, name) for name in MEASUREMENT_FIELDS}


def _transferred_measurement(unit: Unit) -> dict[str, object]:
    """A target's measurement of the unit's adversarial images: no budget of its own, no m_grad."""
    return _own_measurement(unit) | {"params": transfer_params(unit), "severity": None, "m_grad": ""}


#: Per view of a unit's per-image table, the measurement its outcomes are in; transferred ones first.
VIEW_MEASUREMENTS: dict[str, Callable[[Unit], dict[str, object]]] = {
    TRANSFERRED: _transferred_measurement,
    OWN: _own_measurement,
}


def clean_unit(model: str) -> Unit:
    """The clean-accuracy unit of ``model``: its outcomes decide which images the attacks attack."""
    return Unit("clean", model, "clean")


def unit_seed(base_seed: int, key: str) -> int:
    """A per-unit seed derived from the run seed and the unit's key (stable across resumes)."""
    return (int(key[:8], 16) ^ base_seed) & 0x7FFFFFFF
