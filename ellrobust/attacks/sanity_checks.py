"""Named sanity checks on every attack run, each a function in :data:`SANITY_CHECKS`.

A robustness number is only as good as the attack behind it. These checks catch the usual ways an
evaluation lies (RobustBench / AutoAttack practice): perturbations outside the budget or the image
range, robust accuracy above clean accuracy, accuracy that grows with eps, PGD weaker than FGSM,
gradient-free attacks beating gradient attacks (gradient masking), PGD at a huge budget that does not
reach chance, and an attack run in bf16 or TF32 that leaves more images robust than the same attack in
fp32 (a lower precision may only weaken an attack). Four more read what the failure probe found on the
model itself (:mod:`.failure_checks`, AutoAttack's ``checks.py``): randomised outputs (advice: ``eot-pgd``),
probabilities instead of logits, zero input gradients, and a PGD loss that never moved.
Each becomes a row ``method == "sanity"``,
``metric == "sanity_<check>"``, value 1 (pass) or 0 (fail), with the detail in ``params``; checks are
made per model, m_grad mode and precision. Under ``--labels predicted`` robust accuracy counts the
images whose prediction survives, wrong clean ones included, so robust ≤ clean is not checked there.

Comparisons between accuracies allow one example of slack (1/n): random starts make two nearly equal
attacks trade single examples, which is noise, not a broken evaluation.

A new check is one function under ``@sanity_check("<name>")``: it reads the run's :class:`Evidence`
for one (model, m_grad, precision) and returns its row (none where it does not apply). Registration
order is the order of the rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ellrobust.attacks import ATTACKS, AttackRequest
from ellrobust.attacks.failure_checks import RANDOMISED_TOLERANCE, merged
from ellrobust.attacks.target_labels import LABELS_PARAM, AttackLabels
from ellrobust.core.precision import Precision
from ellrobust.core.registry import Registry
from ellrobust.results import Metric, Row
from ellrobust.stats.inference import binomial_se

LARGE_EPS_METHOD = "sanity-pgd-large-eps"

#: A lower-precision robust accuracy may exceed the fp32 one by this many binomial standard errors.
PRECISION_SIGMAS = 2.0

Key = tuple[str, str, str]  # (model, m_grad, precision)
Accuracies = Mapping[tuple[str, str, float], float]  # (method, norm, eps) -> robust accuracy


def flag(model: str, mg: str, check: str, ok: bool, detail: str, precision: str = "") -> Row:
    """The row of one check: 1 pass, 0 fail, the detail in ``params``."""
    return Row(
        model,
        Metric.sanity(check),
        1.0 if ok else 0.0,
        "sanity",
        json.dumps({"detail": detail}),
        m_grad=mg,
        precision=precision,
    )


@dataclass(frozen=True)
class Evidence:
    """What the checks read, gathered once per run from its rows and its attacks' diagnostics.

    Every mapping is keyed by :data:`Key` unless said otherwise; a key missing means nothing of
    that kind was measured there.
    """

    n: int  # images of the run (at least 1)
    chance: float  # 1 / number of classes
    clean: Mapping[str, float]  # model -> clean accuracy
    robust: Mapping[Key, Accuracies]
    predicted: frozenset[Key]  # attacked with --labels predicted
    transferred: Mapping[tuple[str, str], list[tuple[str, str, str, float, float]]]  # (model, precision) -> ...
    bounds: Mapping[Key, list[str]]  # perturbations larger than their eps
    ranges: Mapping[Key, list[str]]  # adversarial images outside [0, 1]
    large: Mapping[Key, float]  # robust accuracy of PGD at the huge budget
    seen: frozenset[Key]  # attacked at all
    failures: Mapping[Key, Mapping[str, object]] = field(default_factory=dict)  # the failure probe's findings

    @property
    def slack(self) -> float:
        """One example: the noise two nearly equal attacks trade."""
        return 1.0 / self.n + 1e-12

    def accs(self, key: Key) -> Accuracies:
        return self.robust.get(key, {})


Check = Callable[[Evidence, Key], list[Row]]

#: Every sanity check on an attack run, in the order of its rows.
SANITY_CHECKS: Registry[Check] = Registry("sanity check")


def sanity_check(name: str) -> Callable[[Check], Check]:
    """Register a check under ``name``, whose rows are ``sanity_<name>``; a second ``name`` raises."""

    def register(check: Check) -> Check:
        return SANITY_CHECKS.add(name, check)

    return register


def _row(key: Key, check: str, ok: bool, detail: str) -> list[Row]:
    model, mg, precision = key
    return [flag(model, mg, check, ok, detail, precision=precision)]


def _robust(rows: list[Row]) -> tuple[dict[Key, dict], frozenset[Key]]:
    """Robust accuracies of the run's own fixed-budget attacks, and the keys attacked under predicted labels."""
    robust: dict[Key, dict] = defaultdict(dict)
    predicted: set[Key] = set()
    for r in rows:
        if r.metric is Metric.ROBUST_ACCURACY and r.method != "worst-case" and r.layer is None and not r.baseline:
            params = json.loads(r.params)
            norm = AttackRequest(r.method, params).norm
            robust[(r.model, r.m_grad, r.precision)][(r.method, norm, r.eps)] = r.value
            if params.get(LABELS_PARAM) == AttackLabels.PREDICTED:
                predicted.add((r.model, r.m_grad, r.precision))
    return dict(robust), frozenset(predicted)


def _transferred(rows: list[Row]) -> dict[tuple[str, str], list[tuple[str, str, str, float, float]]]:
    """(model, precision) -> (method, source, norm, eps, accuracy) of every transferred attack."""
    out: dict[tuple[str, str], list] = defaultdict(list)
    for r in rows:
        if r.metric is Metric.TRANSFER_ACCURACY:
            params = json.loads(r.params)
            norm = AttackRequest(r.method, params).norm
            out[(r.model, r.precision)].append((r.method, params["source"], norm, r.eps, r.value))
    return dict(out)


def _diagnostics(extras) -> tuple[dict, dict, dict, frozenset[Key]]:
    """Out-of-budget and out-of-range perturbations, the huge-budget accuracy, and the keys attacked."""
    bounds: dict[Key, list[str]] = defaultdict(list)
    ranges: dict[Key, list[str]] = defaultdict(list)
    large: dict[Key, float] = {}
    seen: set[Key] = set()
    for unit, extra in extras:
        if unit.stage != "attack" or not extra:
            continue
        key = (unit.model, unit.m_grad, unit.precision)
        seen.add(key)
        if unit.method == LARGE_EPS_METHOD:
            large[key] = extra["robust_accuracy"]
            continue
        if extra["n_attacked"] and extra["max_perturbation"] > unit.eps * (1 + 1e-5) + 1e-6:
            bounds[key].append(f"{unit.method}@{unit.eps:.4g}: {extra['max_perturbation']:.4g} > eps")
        if extra["n_attacked"] and (extra["min_pixel"] < 0 or extra["max_pixel"] > 1):
            ranges[key].append(f"{unit.method}@{unit.eps:.4g}: [{extra['min_pixel']:.4g}, {extra['max_pixel']:.4g}]")
    return dict(bounds), dict(ranges), large, frozenset(seen)


def _failures(extras) -> dict[Key, dict[str, object]]:
    """The failure probe's findings (:mod:`.failure_checks`) of every attack unit, merged per key."""
    found: dict[Key, list[dict]] = defaultdict(list)
    for unit, extra in extras:
        if unit.stage == "attack" and extra and extra.get("failure"):
            found[(unit.model, unit.m_grad, unit.precision)].append(extra["failure"])
    return {key: merged(parts) for key, parts in found.items()}


def gather(ctx, rows: list[Row], extras) -> Evidence:
    """The run's :class:`Evidence`: ``extras`` pairs each finished unit with its diagnostics."""
    robust, predicted = _robust(rows)
    bounds, ranges, large, seen = _diagnostics(extras)
    return Evidence(
        n=max(1, len(ctx.indices)),
        chance=1.0 / ctx.data.num_classes,
        clean={r.model: r.value for r in rows if r.metric is Metric.CLEAN_ACCURACY},
        robust=robust,
        predicted=predicted,
        transferred=_transferred(rows),
        bounds=bounds,
        ranges=ranges,
        large=large,
        seen=seen,
        failures=_failures(extras),
    )


def sanity_rows(ctx, rows: list[Row], extras) -> list[Row]:
    """Run every registered check for each model, m_grad mode and precision, checks in registration order."""
    evidence = gather(ctx, rows, extras)
    out = []
    for key in sorted(evidence.seen | set(evidence.robust)):
        for _, check in SANITY_CHECKS.items():
            out += check(evidence, key)
    return out


@sanity_check("perturbation_within_eps")
def perturbation_within_eps(evidence: Evidence, key: Key) -> list[Row]:
    """Every adversarial image within its eps ball of the clean one."""
    bounds = evidence.bounds.get(key, [])
    return _row(
        key, "perturbation_within_eps", not bounds, "; ".join(bounds) or "every perturbation within its eps ball"
    )


@sanity_check("inside_unit_range")
def inside_unit_range(evidence: Evidence, key: Key) -> list[Row]:
    """Every adversarial image a valid image, pixels in [0, 1]."""
    ranges = evidence.ranges.get(key, [])
    return _row(key, "inside_unit_range", not ranges, "; ".join(ranges) or "every adversarial image in [0, 1]")


@sanity_check("robust_le_clean")
def robust_le_clean(evidence: Evidence, key: Key) -> list[Row]:
    """No attack leaves more images right than the clean run; not under predicted labels, where it may."""
    if key in evidence.predicted:  # predicted labels: a wrong clean image can stay "robust"
        return []
    clean = evidence.clean.get(key[0], 1.0)
    above = [
        f"{m}@{e:.4g}: {v:.3f} > clean {clean:.3f}" for (m, _, e), v in evidence.accs(key).items() if v > clean + 1e-12
    ]
    return _row(key, "robust_le_clean", not above, "; ".join(above) or "robust ≤ clean for every attack")


@sanity_check("monotone_in_eps")
def monotone_in_eps(evidence: Evidence, key: Key) -> list[Row]:
    """An attack at a larger budget leaves no more images robust, for attacks run at several budgets."""
    by_attack: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for (m, norm, e), v in evidence.accs(key).items():
        by_attack[(m, norm)].append((e, v))
    if not any(len(p) > 1 for p in by_attack.values()):
        return []
    rising = []
    for (m, _), pts in by_attack.items():
        pts.sort()
        rising += [
            f"{m}: {a:.3f}@{e1:.4g} → {b:.3f}@{e2:.4g}"
            for (e1, a), (e2, b) in zip(pts, pts[1:], strict=False)
            if b > a + evidence.slack
        ]
    return _row(key, "monotone_in_eps", not rising, "; ".join(rising) or "accuracy non-increasing in eps")


@sanity_check("pgd_le_fgsm")
def pgd_le_fgsm(evidence: Evidence, key: Key) -> list[Row]:
    """PGD, FGSM iterated, at least as strong as FGSM at every budget both ran at."""
    accs = evidence.accs(key)
    pairs = [
        (e, accs[("pgd", "Linf", e)], accs[("fgsm", "Linf", e)])
        for (m, _, e) in accs
        if m == "pgd" and ("fgsm", "Linf", e) in accs
    ]
    if not pairs:
        return []
    worse = [f"eps {e:.4g}: pgd {p:.3f} > fgsm {f:.3f}" for e, p, f in pairs if p > f + evidence.slack]
    return _row(key, "pgd_le_fgsm", not worse, "; ".join(worse) or "PGD at least as strong as FGSM")


def _gradient_free(method: str) -> bool | None:
    """Whether a registered attack is gradient-free; None for a method that is no registered attack."""
    return ATTACKS.get(method).gradient_free if method in ATTACKS else None


@sanity_check("no_gradient_masking")
def no_gradient_masking(evidence: Evidence, key: Key) -> list[Row]:
    """No gradient-free attack stronger than the best gradient attack at its budget and norm."""
    accs = evidence.accs(key)
    kinds = {_gradient_free(m) for (m, _, _) in accs}
    if not (True in kinds and False in kinds):
        return []
    masking = []
    for (m, norm, e), v in accs.items():
        if _gradient_free(m):
            grads = [w for (m2, n2, e2), w in accs.items() if e2 == e and n2 == norm and _gradient_free(m2) is False]
            if grads and v < min(grads) - evidence.slack:
                masking.append(f"{m} {v:.3f} < best gradient attack {min(grads):.3f} at eps {e:.4g}")
    detail = "; ".join(masking) or "gradient-free attacks no stronger than gradient attacks"
    return _row(key, "no_gradient_masking", not masking, detail)


@sanity_check("transfer_not_stronger")
def transfer_not_stronger(evidence: Evidence, key: Key) -> list[Row]:
    """A white-box attack at least as strong as the same attack's images from another model (--transfer)."""
    model, _, precision = key
    accs = evidence.accs(key)
    transferred = evidence.transferred.get((model, precision), [])
    if not any((m, norm, e) in accs for m, _, norm, e, _ in transferred):
        return []
    stronger = [
        f"{m} from {source} {v:.3f} < white-box {accs[(m, norm, e)]:.3f} at eps {e:.4g}"
        for m, source, norm, e, v in transferred
        if (m, norm, e) in accs and v < accs[(m, norm, e)] - evidence.slack
    ]
    detail = "; ".join(stronger) or "every white-box attack at least as strong as the same attack transferred"
    return _row(key, "transfer_not_stronger", not stronger, detail)


@sanity_check("large_eps_reaches_chance")
def large_eps_reaches_chance(evidence: Evidence, key: Key) -> list[Row]:
    """PGD at eps 0.5, a budget that can paint any image, leaves no more than chance accuracy."""
    if key not in evidence.large:
        return []
    accuracy, chance = evidence.large[key], evidence.chance
    detail = f"PGD at eps 0.5: accuracy {accuracy:.3f} (chance {chance:.3f})"
    return _row(key, "large_eps_reaches_chance", accuracy <= chance + 1e-12, detail)


@sanity_check("precision_not_above_fp32")
def precision_not_above_fp32(evidence: Evidence, key: Key) -> list[Row]:
    """A bf16 / TF32 attack leaves no more images robust than fp32, beyond binomial noise."""
    model, mg, precision = key
    reference = evidence.robust.get((model, mg, Precision.FP32.value))
    if not (precision and precision != Precision.FP32 and reference):
        return []
    shared = [
        (m, e, v, reference[(m, norm, e)])
        for (m, norm, e), v in evidence.accs(key).items()
        if (m, norm, e) in reference
    ]
    if not shared:
        return []
    above = [
        f"{m}@{e:.4g}: {precision} {v:.3f} > fp32 {f:.3f}"
        for m, e, v, f in shared
        if v > f + max(PRECISION_SIGMAS * binomial_se(f, evidence.n), evidence.slack)
    ]
    detail = (
        "; ".join(above) or f"{precision} robust accuracy within {PRECISION_SIGMAS:g} binomial SE of fp32 (or below it)"
    )
    return _row(key, "precision_not_above_fp32", not above, detail)


def _findings(evidence: Evidence, key: Key) -> Mapping[str, object] | None:
    return evidence.failures.get(key) or None


@sanity_check("deterministic_outputs")
def deterministic_outputs(evidence: Evidence, key: Key) -> list[Row]:
    """Two forward passes of the same images agree; a randomised model needs EOT, not plain gradients."""
    found = _findings(evidence, key)
    if found is None:
        return []
    distance, flipped = float(found["randomised"]), int(found["flipped"])
    ok = distance <= RANDOMISED_TOLERANCE and not flipped
    detail = (
        f"two passes of the same {found['images']} images agree"
        if ok
        else f"randomised outputs: two passes differ by {distance:.3g} (normalised logits), {flipped} predictions "
        "flip; gradient attacks see one sample of a random model: attack with eot-pgd (--attack eot-pgd)"
    )
    return _row(key, "deterministic_outputs", ok, detail)


@sanity_check("logits_not_probabilities")
def logits_not_probabilities(evidence: Evidence, key: Key) -> list[Row]:
    """The model returns logits: outputs that are probability distributions saturate the attacks' losses."""
    found = _findings(evidence, key)
    if found is None:
        return []
    ok = not found["probabilities"]
    detail = (
        "the outputs are logits"
        if ok
        else "the outputs are probabilities (in [0, 1], rows summing to 1): remove the softmax so the model "
        "returns logits"
    )
    return _row(key, "logits_not_probabilities", ok, detail)


@sanity_check("nonzero_gradients")
def nonzero_gradients(evidence: Evidence, key: Key) -> list[Row]:
    """No probed image has an exactly zero input gradient of the cross-entropy."""
    found = _findings(evidence, key)
    if found is None:
        return []
    zero, images = int(found["zero_gradient"]), max(1, int(found["images"]))
    detail = (
        f"{zero} of {images} images ({zero / images:.1%}) have a zero input gradient: gradient attacks cannot "
        "move them (quantised or thresholded input?); try a gradient-free attack (square, spsa)"
        if zero
        else f"every one of {images} images has a non-zero input gradient"
    )
    return _row(key, "nonzero_gradients", not zero, detail)


@sanity_check("loss_moves")
def loss_moves(evidence: Evidence, key: Key) -> list[Row]:
    """A few PGD steps move every probed image's loss."""
    found = _findings(evidence, key)
    if found is None:
        return []
    flat, images = int(found["flat_loss"]), max(1, int(found["images"]))
    detail = (
        f"the PGD loss never moved on {flat} of {images} images: the attack's steps do nothing there; "
        "try a gradient-free attack (square, spsa)"
        if flat
        else f"the PGD loss moved on every one of {images} images"
    )
    return _row(key, "loss_moves", not flat, detail)
