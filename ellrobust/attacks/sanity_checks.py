"""Named sanity checks on every attack run.

A robustness number is only as good as the attack behind it. These checks catch the usual ways an
evaluation lies (RobustBench / AutoAttack practice): perturbations outside the budget or the image
range, robust accuracy above clean accuracy, accuracy that grows with eps, PGD weaker than FGSM,
gradient-free attacks beating gradient attacks (gradient masking), PGD at a huge budget that does not
reach chance, and an attack run in bf16 or TF32 that leaves more images robust than the same attack in
fp32 (a lower precision may only weaken an attack). Each becomes a row ``method == "sanity"``,
``metric == "sanity_<check>"``, value 1 (pass) or 0 (fail), with the detail in ``params``; checks are
made per model, m_grad mode and precision. Under ``--labels predicted`` robust accuracy counts the
images whose prediction survives, wrong clean ones included, so robust ≤ clean is not checked there.

Comparisons between accuracies allow one example of slack (1/n): random starts make two nearly equal
attacks trade single examples, which is noise, not a broken evaluation.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict

from ellrobust.attacks import ATTACKS, AttackRequest
from ellrobust.attacks.target_labels import LABELS_PARAM, AttackLabels
from ellrobust.core.precision import Precision
from ellrobust.results import Metric, Row
from ellrobust.stats.inference import binomial_se

LARGE_EPS_METHOD = "sanity-pgd-large-eps"

#: A lower-precision robust accuracy may exceed the fp32 one by this many binomial standard errors.
PRECISION_SIGMAS = 2.0


def _norm(unit) -> str:
    return AttackRequest(unit.method, json.loads(unit.params)).norm


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


def sanity_rows(ctx, rows: list[Row], extras) -> list[Row]:
    """Evaluate every applicable check for each model, m_grad mode and precision."""
    n = max(1, len(ctx.indices))
    slack = 1.0 / n + 1e-12
    clean = {r.model: r.value for r in rows if r.metric is Metric.CLEAN_ACCURACY}
    robust: dict[tuple, dict[tuple, float]] = defaultdict(dict)  # (model, mg, precision) -> (method, norm, eps) -> acc
    predicted: set[tuple] = set()  # (model, mg, precision) attacked with --labels predicted
    for r in rows:
        if r.metric is Metric.ROBUST_ACCURACY and r.method != "worst-case" and r.layer is None and not r.baseline:
            params = json.loads(r.params)
            norm = AttackRequest(r.method, params).norm
            robust[(r.model, r.m_grad, r.precision)][(r.method, norm, r.eps)] = r.value
            if params.get(LABELS_PARAM) == AttackLabels.PREDICTED:
                predicted.add((r.model, r.m_grad, r.precision))
    transferred: dict[tuple, list[tuple[str, str, str, float, float]]] = defaultdict(list)
    for r in rows:
        if r.metric is Metric.TRANSFER_ACCURACY:
            params = json.loads(r.params)
            norm = AttackRequest(r.method, params).norm
            transferred[(r.model, r.precision)].append((r.method, params["source"], norm, r.eps, r.value))
    bounds: dict[tuple, list[str]] = defaultdict(list)
    ranges: dict[tuple, list[str]] = defaultdict(list)
    large: dict[tuple, float] = {}
    seen: set[tuple] = set()
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
    out = []
    chance = 1.0 / ctx.data.num_classes
    for key in sorted(seen | set(robust)):
        model, mg, precision = key
        accs = robust.get(key, {})
        check = functools.partial(flag, model, mg, precision=precision)
        out.append(
            check(
                "perturbation_within_eps",
                not bounds[key],
                "; ".join(bounds[key]) or "every perturbation within its eps ball",
            )
        )
        out.append(
            check("inside_unit_range", not ranges[key], "; ".join(ranges[key]) or "every adversarial image in [0, 1]")
        )
        above = [
            f"{m}@{e:.4g}: {v:.3f} > clean {clean.get(model, 1):.3f}"
            for (m, _, e), v in accs.items()
            if v > clean.get(model, 1.0) + 1e-12
        ]
        if key not in predicted:  # predicted labels: a wrong clean image can stay "robust"
            out.append(check("robust_le_clean", not above, "; ".join(above) or "robust ≤ clean for every attack"))
        rising = []
        by_attack: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        for (m, norm, e), v in accs.items():
            by_attack[(m, norm)].append((e, v))
        for (m, _), pts in by_attack.items():
            pts.sort()
            rising += [
                f"{m}: {a:.3f}@{e1:.4g} → {b:.3f}@{e2:.4g}"
                for (e1, a), (e2, b) in zip(pts, pts[1:], strict=False)
                if b > a + slack
            ]
        if any(len(p) > 1 for p in by_attack.values()):
            out.append(check("monotone_in_eps", not rising, "; ".join(rising) or "accuracy non-increasing in eps"))
        pairs = [
            (e, accs[("pgd", "Linf", e)], accs[("fgsm", "Linf", e)])
            for (m, norm, e) in accs
            if m == "pgd" and ("fgsm", "Linf", e) in accs
        ]
        if pairs:
            worse = [f"eps {e:.4g}: pgd {p:.3f} > fgsm {f:.3f}" for e, p, f in pairs if p > f + slack]
            out.append(check("pgd_le_fgsm", not worse, "; ".join(worse) or "PGD at least as strong as FGSM"))
        masking = []
        for (m, norm, e), v in accs.items():
            if m in ATTACKS and ATTACKS.get(m).gradient_free:
                grads = [
                    w
                    for (m2, n2, e2), w in accs.items()
                    if e2 == e and n2 == norm and m2 in ATTACKS and not ATTACKS.get(m2).gradient_free
                ]
                if grads and v < min(grads) - slack:
                    masking.append(f"{m} {v:.3f} < best gradient attack {min(grads):.3f} at eps {e:.4g}")
        if any(m in ATTACKS and ATTACKS.get(m).gradient_free for (m, _, _) in accs) and any(
            m in ATTACKS and not ATTACKS.get(m).gradient_free for (m, _, _) in accs
        ):
            out.append(
                check(
                    "no_gradient_masking",
                    not masking,
                    "; ".join(masking) or "gradient-free attacks no stronger than gradient attacks",
                )
            )
        stronger = [
            f"{m} from {source} {v:.3f} < white-box {accs[(m, norm, e)]:.3f} at eps {e:.4g}"
            for m, source, norm, e, v in transferred.get((model, precision), [])
            if (m, norm, e) in accs and v < accs[(m, norm, e)] - slack
        ]
        if any((m, norm, e) in accs for m, _, norm, e, _ in transferred.get((model, precision), [])):
            out.append(
                check(
                    "transfer_not_stronger",
                    not stronger,
                    "; ".join(stronger) or "every white-box attack at least as strong as the same attack transferred",
                )
            )
        if key in large:
            ok = large[key] <= chance + 1e-12
            out.append(
                check(
                    "large_eps_reaches_chance", ok, f"PGD at eps 0.5: accuracy {large[key]:.3f} (chance {chance:.3f})"
                )
            )
        reference = robust.get((model, mg, Precision.FP32.value))
        if precision and precision != Precision.FP32 and reference:
            shared = [
                (m, e, v, reference[(m, norm, e)]) for (m, norm, e), v in accs.items() if (m, norm, e) in reference
            ]
            if shared:
                above = [
                    f"{m}@{e:.4g}: {precision} {v:.3f} > fp32 {f:.3f}"
                    for m, e, v, f in shared
                    if v > f + max(PRECISION_SIGMAS * binomial_se(f, n), slack)
                ]
                detail = (
                    "; ".join(above)
                    or f"{precision} robust accuracy within {PRECISION_SIGMAS:g} binomial SE of fp32 (or below it)"
                )
                out.append(check("precision_not_above_fp32", not above, detail))
    return out
