"""Adversarial units: model × attack × eps × m_grad, attacking only the clean-correct examples.

Examples the model already gets wrong are not attacked (they count as non-robust): attacking them
would only waste time, and the number attacked is recorded (``n_attacked``).

Budgets are nested: the budgets of one attack run in increasing order, and an image that the attack
already fooled at a smaller budget is not attacked again at a larger one. Its adversarial image lies
inside every larger ball of the same norm, so it is non-robust there too; only the survivors are
attacked. This is sound (robust accuracy can only get lower, i.e. the evaluation only stronger) and
saves most of the work at large budgets. ``Unit.prior`` records the smaller budgets, so a unit is
never reused from a run with another list of budgets.

With ``--collapse``, each unit of a model with tokens also measures representation collapse on its
adversarial images (rows with the attack's method, eps and m_grad). These are the clean-correct images only, so they
are a different image set from the clean collapse rows (method ``collapse``), which use every image.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from ellrobust.attacks import ATTACKS, AttackRequest, make_request, perturb, perturbation_norm
from ellrobust.attacks.sanity import LARGE_EPS_METHOD
from ellrobust.collapse import CollapseAccumulator
from ellrobust.context import RunContext, Unit, UnitResult
from ellrobust.precision import fp32_predictions
from ellrobust.results import Metric, Row
from ellrobust.stages.base import Stage

#: The large-budget PGD sanity check: at eps = 0.5 any image can be turned into any other class.
LARGE_EPS = 0.5
LARGE_EPS_MAX_POINTS = 100


class AttackStage(Stage):
    def units(self, ctx: RunContext) -> list[Unit]:
        units = []
        for name, lm in ctx.models.items():
            for mode in ctx.config.m_grad_modes(lm.elliptical):
                for precision in ctx.config.precision:
                    p = precision.value
                    for req in ctx.config.attacks:
                        budgets = sorted(float(e) for e in ctx.eps_for(req))
                        for i, eps in enumerate(budgets):
                            units.append(
                                Unit(
                                    "attack", name, req.name, req.params_json(), eps, None, mode, tuple(budgets[:i]), p
                                )
                            )
                    if ctx.config.sanity and any(not r.definition.gradient_free for r in ctx.config.attacks):
                        large = make_request("pgd", {"steps": 10, "step_size": "0.1*eps"})
                        units.append(
                            Unit("attack", name, LARGE_EPS_METHOD, large.params_json(), LARGE_EPS, None, mode, (), p)
                        )
        return units

    def run(self, unit: Unit, ctx: RunContext, seed: int) -> UnitResult:
        twin = replace(unit, m_grad="detach")
        if (
            unit.m_grad == "full"
            and unit.method in ATTACKS
            and ATTACKS.get(unit.method).gradient_free
            and twin in ctx.results
        ):
            return _with_m_grad(ctx.results[twin], unit.m_grad)  # no gradient, so m_grad cannot change it
        lm = ctx.models[unit.model]
        model = lm.module
        if lm.elliptical:
            model.set_m_grad(unit.m_grad)
        clean = ctx.clean_outcomes(unit.model)
        survivors = clean
        if unit.prior:  # nested budgets: attack only what the next smaller budget did not fool
            previous = replace(unit, eps=unit.prior[-1], prior=unit.prior[:-1])
            survivors = np.asarray(ctx.results[previous].outcomes[unit.model], dtype=bool)
        positions = np.flatnonzero(survivors).tolist()
        large = unit.method == LARGE_EPS_METHOD
        if large:
            positions = positions[:LARGE_EPS_MAX_POINTS]
            request = AttackRequest("pgd", json.loads(unit.params))
        else:
            request = AttackRequest(unit.method, json.loads(unit.params))
        collapse = None
        if ctx.config.collapse is not None and not large and lm.tokens:
            collapse = CollapseAccumulator(model, ctx.config.collapse, unit.model)
        local: dict[int, int] = {}
        stats = {"max_norm": 0.0, "lo": 1.0, "hi": 0.0}
        infos: list[dict] = []
        for batch in ctx.batches(positions, unit.label, seed):
            x, y, batch_pos = batch.images, batch.labels, batch.positions
            info: dict = {}
            adv = perturb(
                model,
                request,
                x,
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
            ok = (fp32_predictions(model, adv) == y).int().tolist()
            if collapse is not None:
                collapse.add(adv, batch_pos)
            local.update(zip(batch_pos, ok, strict=True))
            stats["max_norm"] = max(stats["max_norm"], float(perturbation_norm(adv, x, request.norm).max()))
            stats["lo"], stats["hi"] = min(stats["lo"], float(adv.min())), max(stats["hi"], float(adv.max()))
        robust = ctx.gather(local, dtype=np.int8)
        if collapse is not None:
            collapse.merge(ctx.dist.gather_objects(collapse.state()))
        per_rank = ctx.dist.gather_objects(stats)
        max_norm = max(s["max_norm"] for s in per_rank)
        lo, hi = min(s["lo"] for s in per_rank), max(s["hi"] for s in per_rank)
        if lm.elliptical:
            model.set_m_grad("detach")
        extra = {
            "max_perturbation": max_norm,
            "min_pixel": lo,
            "max_pixel": hi,
            "norm": request.norm,
            "n_attacked": len(positions),
            **merge_info([i for part in ctx.dist.gather_objects(infos) for i in part]),
        }
        if large:
            extra["robust_accuracy"] = float(robust[positions].mean()) if positions else 0.0
            return UnitResult(extra=extra)
        measured = {
            "model": unit.model,
            "method": unit.method,
            "params": unit.params,
            "eps": unit.eps,
            "m_grad": unit.m_grad,
            "precision": unit.precision,
        }
        row = Row(**measured, metric=Metric.ROBUST_ACCURACY, value=float(robust.mean()))
        rows = [row, row.with_metric(Metric.N_ATTACKED, float(len(positions)))]
        values = {}
        if collapse is not None:
            rows.extend(collapse.rows(measured, len(ctx.indices), extra_params=request.params))
            values = collapse.values(len(ctx.indices))
        return UnitResult(rows=rows, outcomes={unit.model: robust.tolist()}, values=values, extra=extra)


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
    rows = [row.replace(m_grad=m_grad) for row in result.rows]
    return UnitResult(rows=rows, outcomes=dict(result.outcomes), values=dict(result.values), extra=dict(result.extra))
