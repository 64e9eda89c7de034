"""Adversarial units: model × attack × eps × m_grad, attacking only the clean-correct examples (by default).

Examples the model already gets wrong are not attacked (they count as non-robust): attacking them
would only waste time, and the number attacked is recorded (``n_attacked``). With ``--labels predicted``
(:mod:`ellrobust.attacks.target_labels`) every image is attacked instead, its target the model's clean
prediction, and it is robust while that prediction holds; the large-budget sanity check still attacks
the true labels.

Budgets are nested: the budgets of one attack run in increasing order, and an image that the attack
already fooled at a smaller budget is not attacked again at a larger one. Its adversarial image lies
inside every larger ball of the same norm, so it is non-robust there too; only the survivors are
attacked. This is sound (robust accuracy can only get lower, i.e. the evaluation only stronger) and
saves most of the work at large budgets. ``Unit.prior`` records the smaller budgets, so a unit is
never reused from a run with another list of budgets.

This stage only attacks. What else is measured on the adversarial images — per-image predictions and
perturbation sizes, collapse, transfer to the other models, the saved images — are probes
(:mod:`ellrobust.measures.attack_probe`) that see every attacked batch.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch

from ellrobust.attacks import ATTACKS, AttackRequest, make_request, perturb, perturbation_norm
from ellrobust.attacks.patches import PATCH_NORM, patch_size
from ellrobust.attacks.sanity_checks import LARGE_EPS_METHOD
from ellrobust.attacks.target_labels import AttackLabels, labelled_params, split_labels
from ellrobust.core.precision import fp32_predictions
from ellrobust.measures.attack_probe import AttackedBatch, AttackProbe, AttackScope, open_probes, probe_identity
from ellrobust.measures.stage import Stage, stage
from ellrobust.results import CORRECT, ImageTable, Metric, Row
from ellrobust.run.context import LoadedModel, RunContext
from ellrobust.run.units import Unit, UnitResult, clean_unit

#: The large-budget PGD sanity check: at eps = 0.5 any image can be turned into any other class.
LARGE_EPS = 0.5
LARGE_EPS_MAX_POINTS = 100


def fixed_budget(requests) -> list[AttackRequest]:
    """The requests this stage runs: those answering at one budget (minimal-norm methods have a stage of their own)."""
    return [r for r in requests if not r.definition.is_minimal]


@stage("attack", order=10)
class AttackStage(Stage):
    def units(self, ctx: RunContext) -> list[Unit]:
        units = []
        for name, lm in ctx.models.items():
            for mode in ctx.config.m_grad_modes(lm.elliptical):
                for precision in ctx.config.precision:
                    p = precision.value
                    for req in fixed_budget(ctx.config.attacks):
                        budgets = sorted(float(e) for e in ctx.eps_for(req))
                        params = labelled_params(req.params_json(), ctx.config.labels)
                        for i, eps in enumerate(budgets):
                            units.append(Unit("attack", name, req.name, params, eps, None, mode, tuple(budgets[:i]), p))
                    if ctx.config.sanity and any(
                        not r.definition.gradient_free for r in fixed_budget(ctx.config.attacks)
                    ):
                        large = make_request("pgd", {"steps": 10, "step_size": "0.1*eps"})
                        units.append(
                            Unit("attack", name, LARGE_EPS_METHOD, large.params_json(), LARGE_EPS, None, mode, (), p)
                        )
        return units

    def observers(self, unit: Unit, ctx: RunContext) -> dict[str, object]:
        """The probes' parts of the key; the large-budget sanity unit runs none."""
        return {} if unit.method == LARGE_EPS_METHOD else probe_identity(ctx)

    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        twin = replace(unit, m_grad="detach")
        if unit.m_grad == "full" and _gradient_free(unit.method) and twin in ctx.results:
            return _with_m_grad(ctx.results[twin], unit.m_grad)  # no gradient, so m_grad cannot change it
        lm = ctx.models[unit.model]
        large = unit.method == LARGE_EPS_METHOD
        scope = _scope(unit, ctx, lm, large)
        probes = [] if large else open_probes(scope)
        if lm.elliptical:
            lm.module.set_m_grad(unit.m_grad)
        try:
            robust, extra = _attack(scope, seed, probes)
        finally:
            if lm.elliptical:
                lm.module.set_m_grad("detach")
        if large:
            extra["robust_accuracy"] = float(robust[scope.positions].mean()) if scope.positions else 0.0
            return UnitResult(extra=extra)
        row = Row(unit.model, Metric.ROBUST_ACCURACY, float(robust.mean()), unit.method, unit.params, unit.eps)
        row = row.replace(m_grad=unit.m_grad, precision=unit.precision)
        rows = [row, row.with_metric(Metric.N_ATTACKED, float(len(scope.positions)))]
        result = UnitResult(rows=rows, per_image=ImageTable.of(unit.model, {CORRECT: robust}), extra=extra)
        for probe in probes:
            probe.finish(result)
        return result


def _gradient_free(method: str) -> bool:
    return method in ATTACKS and ATTACKS.get(method).gradient_free


def _scope(unit: Unit, ctx: RunContext, lm: LoadedModel, large: bool) -> AttackScope:
    """Which images the unit attacks, with which request: the clean-correct ones (every image under
    ``--labels predicted``), of those the ones the next smaller budget left robust (nested budgets);
    the large-budget sanity unit takes the first :data:`LARGE_EPS_MAX_POINTS` of them and PGD."""
    attack_params, labels = split_labels(json.loads(unit.params))
    clean = ctx.clean_outcomes(unit.model)
    predicted = labels is AttackLabels.PREDICTED
    survivors = np.ones_like(clean) if predicted else clean
    previous = None
    if unit.prior:
        previous = replace(unit, eps=unit.prior[-1], prior=unit.prior[:-1])
        survivors = ctx.results[previous].per_image.column(unit.model, CORRECT)
    positions = np.flatnonzero(survivors).tolist()
    if large:
        request = AttackRequest("pgd", json.loads(unit.params))
        return AttackScope(unit, ctx, lm, request, positions[:LARGE_EPS_MAX_POINTS], None)
    aims = ctx.results[clean_unit(unit.model)].per_image.column(unit.model, "prediction") if predicted else None
    return AttackScope(unit, ctx, lm, AttackRequest(unit.method, attack_params), positions, previous, aims)


def _attack(scope: AttackScope, seed: int, probes: list[AttackProbe]) -> tuple[np.ndarray, dict]:
    """Attack the scope's images batch by batch, show every batch to the probes, and return the
    per-image robust flags over the selection and the unit's diagnostics (gathered over ranks)."""
    unit, ctx, model = scope.unit, scope.ctx, scope.model.module
    aims = scope.aims
    robust: dict[int, int] = {}
    budget = BudgetCheck(scope.request.norm, patch_size(model) if scope.request.norm == PATCH_NORM else None)
    infos: list[dict] = []
    for batch in ctx.batches(scope.positions, unit.label, seed):
        y = batch.labels if aims is None else torch.as_tensor(aims[batch.positions], device=batch.labels.device)
        info: dict = {}
        adv = perturb(
            model,
            scope.request,
            batch.images,
            y,
            eps=unit.eps,
            num_classes=ctx.data.num_classes,
            seed=batch.seed,
            precision=unit.precision,
            info=info,
        )
        infos.append(info)
        # The verdict: a strict fp32 forward, whatever precision the iterations ran in, so a lower
        # precision can only weaken the attack, never count a broken image as robust.
        predicted = fp32_predictions(model, adv)
        robust.update(zip(batch.positions, (predicted == y).int().tolist(), strict=True))
        budget.add(batch.images, adv)
        attacked = AttackedBatch(batch.positions, batch.images, batch.labels, adv, predicted)
        for probe in probes:
            probe.observe(attacked)
    extra = {
        **budget.merged(ctx.dist.gather_objects(budget.state())),
        "norm": scope.request.norm,
        "n_attacked": len(scope.positions),
        **merge_info([i for part in ctx.dist.gather_objects(infos) for i in part]),
    }
    return ctx.gather(robust, dtype=np.int8), extra


class BudgetCheck:
    """The largest perturbation in the attack's own norm and the pixel range of the adversarial images:
    what the sanity checks compare with the budget and with [0, 1]."""

    def __init__(self, norm: str, patch: int | None = None) -> None:
        self.norm, self.patch = norm, patch
        self.max_norm, self.lo, self.hi = 0.0, 1.0, 0.0

    def add(self, images: torch.Tensor, adv: torch.Tensor) -> None:
        self.max_norm = max(self.max_norm, float(perturbation_norm(adv, images, self.norm, self.patch).max()))
        self.lo, self.hi = min(self.lo, float(adv.min())), max(self.hi, float(adv.max()))

    def state(self) -> dict[str, float]:
        return {"max_norm": self.max_norm, "lo": self.lo, "hi": self.hi}

    @staticmethod
    def merged(per_rank: list[dict[str, float]]) -> dict[str, float]:
        return {
            "max_perturbation": max(s["max_norm"] for s in per_rank),
            "min_pixel": min(s["lo"] for s in per_rank),
            "max_pixel": max(s["hi"] for s in per_rank),
        }


def merge_info(parts: list[dict]) -> dict:
    """An attack's diagnostics summed over batches and ranks: component times, images attacked and broken.

    ``components`` (cascades such as AutoAttack) are summed per component; any other number keeps
    its largest value (e.g. the images per forward pass SPSA settled on).
    """
    out: dict = {}
    for part in parts:
        for key, value in part.items():
            if key == "components":
                merged = out.setdefault("components", {})
                for name, stats in value.items():
                    slot = merged.setdefault(name, {})
                    for k, v in stats.items():
                        slot[k] = slot.get(k, 0) + v
            elif isinstance(value, int | float):
                out[key] = max(out.get(key, value), value)
    return out


def _with_m_grad(result: UnitResult, m_grad: str) -> UnitResult:
    """A gradient-free attack's result under the other m_grad mode: the same images, the same logits.

    The metric ``m`` changes what gradients see, never the logits, and a gradient-free attack only
    queries logits, so its ``detach`` result holds for ``full`` as well; it is copied, not re-run.
    """
    return replace(result, rows=[row.replace(m_grad=m_grad) for row in result.rows], extra=dict(result.extra))
