"""A run's units of work and what each one yields: the contract between the engine and the measures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ellrobust.core.precision import Precision
from ellrobust.results import Outcomes, Row


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
            parts.append(f"eps={self.eps * 255:.3g}/255")
        if self.severity is not None:
            parts.append(f"s{self.severity}")
        if self.m_grad:
            parts.append(f"m_grad={self.m_grad}")
        if self.precision and self.precision != Precision.FP32:
            parts.append(self.precision)
        return " ".join(parts)


@dataclass
class UnitResult:
    """Rows (the engine adds provenance), per-example outcomes and values, and diagnostics.

    Attributes:
        rows: the unit's typed rows (:class:`~ellrobust.results.rows.Row`).
        outcomes: per model, one 0/1 per selected image (correct / robust).
        values: per-image measurements other than correctness (collapse metrics), keyed by a name
            the producing stage chooses; one float per image the unit measured.
        extra: diagnostics for run.json and the sanity checks (timings, perturbation sizes).
        predictions: per model, the class predicted for each selected image (as ``outcomes``).
        linf, l2: per attacked model, the size of each selected image's perturbation.
        transfer, transfer_predictions: with ``--transfer``, per other model of the run, whether it
            classifies the attacked model's adversarial images correctly, and what it predicts.
        eps_star, censored: per model of a minimal-norm unit, each selected image's minimal budget ε*
            (0 for an image misclassified clean, ``eps_max`` when censored) and whether it is censored.
            Such a unit's outcomes are those of the budgets in ``extra["eps_grid"]`` (the run's grid for
            the method, set when the run reads the unit: :meth:`ellrobust.measures.minimal_budget.MinimalStage.finish`).
        confidence, top5: per model of a clean or corruption unit, each selected image's max-softmax
            confidence and top-5 hit (:mod:`ellrobust.stats.calibration`).
    """

    rows: list[Row] = field(default_factory=list)
    outcomes: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    predictions: dict[str, list[int]] = field(default_factory=dict)
    linf: dict[str, list[float]] = field(default_factory=dict)
    l2: dict[str, list[float]] = field(default_factory=dict)
    transfer: dict[str, list[int]] = field(default_factory=dict)
    transfer_predictions: dict[str, list[int]] = field(default_factory=dict)
    eps_star: dict[str, list[float]] = field(default_factory=dict)
    censored: dict[str, list[int]] = field(default_factory=dict)
    confidence: dict[str, list[float]] = field(default_factory=dict)
    top5: dict[str, list[int]] = field(default_factory=dict)

    def outcomes_of(self, unit: Unit) -> list[Outcomes]:
        """The unit's per-example outcomes as typed records, one per model, in the unit's measurement;
        transferred ones in the measurement :func:`transfer_params` names.

        A minimal-norm unit gives one per model and budget of its grid: robust at ε when ε* > ε
        (:func:`ellrobust.stats.minimal_budgets.robust_flags`), each carrying the images' ε* and censoring.
        """
        if self.eps_star:
            return self._minimal_outcomes(unit)
        transferred = [
            Outcomes(
                target,
                unit.method,
                transfer_params(unit),
                unit.eps,
                None,
                "",
                unit.precision,
                np.asarray(vals, dtype=bool),
                self.transfer_predictions.get(target),
            )
            for target, vals in self.transfer.items()
        ]
        return transferred + [
            Outcomes(
                model,
                unit.method,
                unit.params,
                unit.eps,
                unit.severity,
                unit.m_grad,
                unit.precision,
                np.asarray(vals, dtype=bool),
                self.predictions.get(model),
                self.linf.get(model),
                self.l2.get(model),
                confidence=self.confidence.get(model),
                top5=self.top5.get(model),
            )
            for model, vals in self.outcomes.items()
        ]

    def _minimal_outcomes(self, unit: Unit) -> list[Outcomes]:
        from ellrobust.stats.minimal_budgets import robust_flags

        grid = [float(e) for e in self.extra.get("eps_grid", [])]
        eps_max = float(self.extra["eps_max"])
        out = []
        for model, stars in self.eps_star.items():
            censored = np.asarray(self.censored[model], dtype=bool)
            flags = robust_flags(np.asarray(stars, dtype=float), censored, grid, eps_max=eps_max)
            out += [
                Outcomes(
                    model,
                    unit.method,
                    unit.params,
                    eps,
                    None,
                    unit.m_grad,
                    unit.precision,
                    robust,
                    eps_star=np.asarray(stars, dtype=float),
                    censored=censored,
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


def clean_unit(model: str) -> Unit:
    """The clean-accuracy unit of ``model``: its outcomes decide which images the attacks attack."""
    return Unit("clean", model, "clean")


def unit_seed(base_seed: int, key: str) -> int:
    """A per-unit seed derived from the run seed and the unit's key (stable across resumes)."""
    return (int(key[:8], 16) ^ base_seed) & 0x7FFFFFFF
