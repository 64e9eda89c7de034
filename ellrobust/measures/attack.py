"""Adversarial units: model × attack × eps × m_grad, attacking only the clean-correct examples (by default).

Examples the model already gets wrong are not attacked (they count as non-robust): attacking them
would only waste time, and the number attacked is recorded (``n_attacked``). With ``--labels predicted``
(:mod:`ellrobust.attacks.target_labels`) every image is attacked instead, its target the model's clean
prediction, and it is robust while that prediction holds; ``--transfer`` targets are still judged
against the true labels, and the large-budget sanity check still attacks the true ones.

Budgets are nested: the budgets of one attack run in increasing order, and an image that the attack
already fooled at a smaller budget is not attacked again at a larger one. Its adversarial image lies
inside every larger ball of the same norm, so it is non-robust there too; only the survivors are
attacked. This is sound (robust accuracy can only get lower, i.e. the evaluation only stronger) and
saves most of the work at large budgets. ``Unit.prior`` records the smaller budgets, so a unit is
never reused from a run with another list of budgets.

Each unit records, per image, the class predicted on the image the verdict was taken on and the
perturbation's L∞ and L2 sizes (an image fooled at a smaller budget keeps that budget's image, an
image not attacked its clean prediction and size 0); with ``--save-adversarial`` it writes those
images (:mod:`ellrobust.results.adversarial_images`), so the file and the per-example table agree.

With ``--transfer``, every other model of the run judges the same adversarial images (a strict fp32
forward each, no attack): ``transfer_accuracy`` rows with the attacked model as ``source`` in their
params (:func:`~ellrobust.run.units.transfer_params`). An image the source got wrong clean is not
attacked, so the target is judged on the clean image there, as a saved file holds it.

With ``--collapse``, each unit of a model with tokens also measures representation collapse on its
adversarial images (rows with the attack's method, eps and m_grad). These are the clean-correct images only, so they
are a different image set from the clean collapse rows (method ``collapse``), which use every image.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ellrobust.attacks import ATTACKS, AttackRequest, make_request, perturb, perturbation_norm
from ellrobust.attacks.sanity_checks import LARGE_EPS_METHOD
from ellrobust.attacks.target_labels import AttackLabels, labelled_params, split_labels
from ellrobust.core.errors import UsageError, quote
from ellrobust.core.precision import fp32_predictions
from ellrobust.core.readback import DamagedFileError
from ellrobust.measures.collapse_probe import CollapseAccumulator
from ellrobust.measures.stage import Stage
from ellrobust.results import Metric, Row
from ellrobust.results.adversarial_images import (
    AdversarialSet,
    load_adversarial,
    load_clean,
    save_adversarial,
    save_clean,
)
from ellrobust.run.context import RunContext
from ellrobust.run.units import Unit, UnitResult, clean_unit, transfer_params

#: The large-budget PGD sanity check: at eps = 0.5 any image can be turned into any other class.
LARGE_EPS = 0.5
LARGE_EPS_MAX_POINTS = 100


def fixed_budget(requests) -> list[AttackRequest]:
    """The requests this stage runs: those answering at one budget (minimal-norm methods have a stage of their own)."""
    return [r for r in requests if not r.definition.is_minimal]


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
        attack_params, labels = split_labels(json.loads(unit.params))
        aims = _clean_predictions(ctx, unit.model) if labels is AttackLabels.PREDICTED else None
        clean = ctx.clean_outcomes(unit.model)
        survivors = clean if aims is None else np.ones_like(clean)  # predicted labels: every image is attacked
        previous = None
        if unit.prior:  # nested budgets: attack only what the next smaller budget did not fool
            previous = replace(unit, eps=unit.prior[-1], prior=unit.prior[:-1])
            survivors = np.asarray(ctx.results[previous].outcomes[unit.model], dtype=bool)
        positions = np.flatnonzero(survivors).tolist()
        large = unit.method == LARGE_EPS_METHOD
        if large:
            positions = positions[:LARGE_EPS_MAX_POINTS]
            request = AttackRequest("pgd", json.loads(unit.params))
        else:
            request = AttackRequest(unit.method, attack_params)
        collapse = None
        if ctx.config.collapse is not None and not large and lm.tokens:
            collapse = CollapseAccumulator(model, ctx.config.collapse, unit.model)
        local: dict[int, int] = {}
        said: dict[str, dict[int, float]] = {"prediction": {}, "linf": {}, "l2": {}}
        keep = ctx.config.save_adversarial and not large
        targets = [t for t in ctx.models if t != unit.model] if ctx.config.transfer and not large else []
        judged: dict[str, tuple[dict[int, int], dict[int, int]]] = {t: ({}, {}) for t in targets}
        images: dict[int, np.ndarray] = {}
        stats = {"max_norm": 0.0, "lo": 1.0, "hi": 0.0}
        infos: list[dict] = []
        for batch in ctx.batches(positions, unit.label, seed):
            x, truth, batch_pos = batch.images, batch.labels, batch.positions
            y = truth if aims is None else torch.as_tensor(aims[batch_pos], device=truth.device)
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
            predicted = fp32_predictions(model, adv)
            ok = (predicted == y).int().tolist()
            if collapse is not None:
                collapse.add(adv, batch_pos)
            local.update(zip(batch_pos, ok, strict=True))
            sizes = {"linf": perturbation_norm(adv, x, "Linf"), "l2": perturbation_norm(adv, x, "L2")}
            for name, per_image in (("prediction", predicted), *sizes.items()):
                said[name].update(zip(batch_pos, per_image.tolist(), strict=True))
            if keep:
                images.update(zip(batch_pos, adv.float().cpu().numpy(), strict=True))
            for target in targets:  # a verdict too: strict fp32, whatever precision the attack ran in
                said_by_target = fp32_predictions(ctx.models[target].module, adv)
                judged[target][0].update(zip(batch_pos, (said_by_target == truth).int().tolist(), strict=True))
                judged[target][1].update(zip(batch_pos, said_by_target.tolist(), strict=True))
            own = sizes["linf"] if request.norm == "Linf" else sizes["l2"]
            stats["max_norm"] = max(stats["max_norm"], float(own.max()))
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
        result = UnitResult(rows=rows, outcomes={unit.model: robust.tolist()}, values=values, extra=extra)
        carried = _carried(ctx, unit, previous)
        if carried is not None:
            for name, per_image in carried.items():
                gathered = ctx.gather(said[name], dtype=per_image.dtype)
                per_image[positions] = gathered[positions]
            result.predictions[unit.model] = carried["prediction"].tolist()
            result.linf[unit.model] = carried["linf"].tolist()
            result.l2[unit.model] = carried["l2"].tolist()
        for target in targets:
            correct, predicted = _transfer_base(ctx, previous, target)
            correct[positions] = ctx.gather(judged[target][0], dtype=np.int64)[positions]
            result.transfer[target] = correct.tolist()
            if predicted is not None:
                predicted[positions] = ctx.gather(judged[target][1], dtype=np.int64)[positions]
                result.transfer_predictions[target] = predicted.tolist()
            accuracy = float(correct.mean())
            transferred = Row(target, Metric.TRANSFER_ACCURACY, accuracy, unit.method, transfer_params(unit), unit.eps)
            result.rows.append(transferred.replace(precision=unit.precision))
        if keep:
            parts = ctx.dist.gather_objects(images)
            if ctx.dist.is_main:
                attacked = {p: a for part in parts for p, a in part.items()}
                predicted = result.predictions.get(unit.model)
                path = _save_images(ctx, unit, request.norm, previous, attacked, predicted)
                extra["adversarial_file"] = str(path.relative_to(ctx.run_dir))
        return result


def _clean_saved(run_dir: Path) -> bool:
    """Whether the run folder holds its clean images whole (a damaged file is written again)."""
    try:
        return load_clean(run_dir) is not None
    except DamagedFileError:
        return False


def _clean_predictions(ctx: RunContext, model: str) -> np.ndarray:
    """The classes ``model`` predicts on the clean images of the selection: the targets under ``--labels predicted``."""
    predicted = ctx.results[clean_unit(model)].predictions.get(model)
    if predicted is None:
        raise UsageError(
            f"the clean unit of {model} in this run folder predates per-image predictions, which --labels predicted "
            "attacks; run again with a new --out."
        )
    return np.asarray(predicted, dtype=np.int64)


def _carried(ctx: RunContext, unit: Unit, previous: Unit | None) -> dict[str, np.ndarray] | None:
    """What each selected image shows before this unit attacks: the prediction and perturbation sizes of
    the next smaller budget (nested budgets), or the clean prediction and size 0.

    None when the unit they come from predates per-image predictions (a run folder of ellrobust 0.2):
    this unit's examples then leave those columns empty rather than mix in guesses.
    """
    if previous is None:
        clean = ctx.results[clean_unit(unit.model)].predictions.get(unit.model)
        if clean is None:
            return None
        zeros = np.zeros(len(clean), dtype=np.float64)
        return {"prediction": np.asarray(clean, dtype=np.int64), "linf": zeros, "l2": zeros.copy()}
    before = ctx.results[previous]
    known = (before.predictions, before.linf, before.l2)
    if any(unit.model not in part for part in known):
        return None
    return {
        "prediction": np.asarray(before.predictions[unit.model], dtype=np.int64),
        "linf": np.asarray(before.linf[unit.model], dtype=np.float64),
        "l2": np.asarray(before.l2[unit.model], dtype=np.float64),
    }


def _transfer_base(ctx: RunContext, previous: Unit | None, target: str) -> tuple[np.ndarray, np.ndarray | None]:
    """What ``target`` says of each image before this unit's attack: of the smaller budget's images
    (nested budgets), else of the clean images (correctness; predictions, None where a unit of
    ellrobust 0.2 recorded none)."""
    if previous is None:
        clean = ctx.results[clean_unit(target)]
        correct, predicted = clean.outcomes[target], clean.predictions.get(target)
    else:
        before = ctx.results[previous]
        correct, predicted = before.transfer[target], before.transfer_predictions.get(target)
    return np.asarray(correct, dtype=np.int64), None if predicted is None else np.asarray(predicted, dtype=np.int64)


def _save_images(
    ctx: RunContext,
    unit: Unit,
    norm: str,
    previous: Unit | None,
    attacked: dict[int, np.ndarray],
    predicted: list[int] | None,
) -> Path:
    """Write the unit's images for the whole selection: the attacked ones over the smaller budget's (or
    the clean) images, with the predictions the unit recorded (computed here when an older clean unit
    recorded none)."""
    every = list(range(len(ctx.indices)))
    labels = ctx.store.labels[every].astype(np.int64)
    if previous is None:
        base = ctx.store.batch(every, "cpu")[0].float().numpy()
        if not _clean_saved(ctx.run_dir):  # once per run folder: the images every file perturbs
            save_clean(ctx.run_dir, np.asarray(ctx.indices, dtype=np.int64), base, labels)
    else:
        name = ctx.results[previous].extra.get("adversarial_file")
        path = ctx.run_dir / name if name else None
        if path is None or not path.is_file():
            raise DamagedFileError(
                f"the adversarial images of {unit.model} at the smaller budget {unit.prior[-1]:.6g} are missing "
                f"({quote(path or 'never saved')}); run the same command again: a unit whose files are missing "
                "is recomputed."
            )
        base = load_adversarial(path).x_adv.copy()
    for position, image in attacked.items():
        base[position] = image
    if predicted is None:
        model = ctx.models[unit.model].module
        chunks = [base[i : i + ctx.config.batch_size] for i in range(0, len(base), ctx.config.batch_size)]
        predicted = [
            int(c) for chunk in chunks for c in fp32_predictions(model, torch.from_numpy(chunk).to(ctx.device))
        ]
    prediction = np.asarray(predicted, dtype=np.int64)
    return save_adversarial(
        ctx.run_dir,
        AdversarialSet(
            unit.model,
            unit.method,
            unit.params,
            float(unit.eps),
            unit.m_grad,
            unit.precision,
            norm,
            np.asarray(ctx.indices, dtype=np.int64),
            base,
            labels,
            prediction,
        ),
    )


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
