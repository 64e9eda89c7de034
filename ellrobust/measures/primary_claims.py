"""Each claim's primary endpoint, per elliptical × plain pair, from the run's per-image outcomes.

The verdict (:mod:`ellrobust.verdict.rules`) judges one primary per claim, Holm-adjusted across the
claims, so a run that measures more does not conclude less. The primaries are fixed before the run
(:data:`PRIMARIES`, recorded in run.json) and computed here, once all units are done, as rows
``method == "primary"``: the estimate (elliptical − baseline) with its 95 % interval, the two-sided
p and the images counted, with the claim, the test and what is compared in ``params``. One function
writes those rows for every claim (:func:`estimate_rows`).

* **adversarial robustness**: each image's worst-case L∞ budget over every white-box attack of the
  run on the model itself (a minimal-norm method's ε*, else the smallest grid budget that broke it;
  never broken: censored at the largest budget; misclassified clean: 0), compared by the exact sign
  test with the Hodges–Lehmann interval (:func:`~ellrobust.stats.primary_endpoints.budget_primary`),
  once per ``m_grad`` mode of the elliptical model (``full`` is the adaptive condition). Transferred
  and gradient-free attacks are left out: the one is a masking check, the other not white-box.
* **patch robustness**: the same test on each image's worst-case *number of patches* over the run's
  patch attacks (``patch``, ``patch-fool``, ``attention-fool``: the smallest patch budget that broke it;
  never broken: censored at the largest; misclassified clean: 0), the counterpart of ε* for the patch
  threat model, again once per ``m_grad`` mode. Patch budgets are a grid, so its estimate is the share
  of images where the elliptical model needs more patches minus the share where it needs fewer.
* **corruptions**: the paired t-test on each image's share of the mCE difference (AlexNet-normalised
  where the run's protocol has AlexNet's errors, else unnormalised).
* **collapse**: the paired t-test on the token cosine averaged over the later half of the layers,
  from the run's later-half difference rows (their Student-t interval is that test's).
* **natural shift**: clean accuracy on a shift dataset (ImageNet-R, -A, -Sketch, -V2), exact McNemar.
* **OOD detection**: DeLong's test of the AUROCs (ImageNet-O), from the run's OOD rows.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import t as student_t

from ellrobust.attacks import ATTACKS, AttackRequest
from ellrobust.attacks.patches import PATCH_NORM
from ellrobust.attacks.sanity_checks import LARGE_EPS_METHOD
from ellrobust.results import Metric, Outcomes, Row
from ellrobust.run.context import RunContext
from ellrobust.stats.claim_family import ClaimName
from ellrobust.stats.corruption_error import alexnet_errors
from ellrobust.stats.decisions import CONFIDENCE
from ellrobust.stats.primary_endpoints import (
    GridBudgets,
    MinimalNormBudgets,
    Primary,
    PrimaryTest,
    WorstCaseBudgets,
    accuracy_primary,
    budget_primary,
    mce_image_differences,
    mean_difference_primary,
    worst_case_budgets,
)

METHOD = "primary"

#: Each claim's primary, as run.json records it before any number is seen.
PRIMARIES = {
    ClaimName.ROBUSTNESS.value: "exact sign test on each image's worst-case L∞ budget over the run's white-box "
    "attacks (minimal-norm ε* or smallest breaking grid budget; censored at the largest; 0 if misclassified "
    "clean), Hodges–Lehmann interval; again under m_grad full (intersection-union)",
    ClaimName.PATCH_ROBUSTNESS.value: "exact sign test on each image's worst-case number of patches over the run's "
    "patch attacks (smallest breaking patch budget; censored at the largest; 0 if misclassified clean); "
    "again under m_grad full (intersection-union)",
    ClaimName.CORRUPTIONS.value: "paired t-test on each image's share of the mCE difference",
    ClaimName.COLLAPSE.value: "paired t-test on the later-half token cosine",
    ClaimName.NATURAL_SHIFT.value: "exact McNemar test of clean accuracy on the shift dataset",
    ClaimName.OOD.value: "DeLong's paired test of the AUROCs",
}


def estimate_rows(model: str, baseline: str, params: dict, primary: Primary, m_grad: str = "") -> list[Row]:
    """A primary as rows: estimate, its interval, p and images, the claim and test in ``params``."""
    row = Row(
        model,
        Metric.PRIMARY_ESTIMATE,
        primary.estimate,
        METHOD,
        params=json.dumps({**params, "test": primary.test.value}, sort_keys=True),
        m_grad=m_grad,
        baseline=baseline,
    )
    return [
        row,
        row.with_metric(Metric.PRIMARY_ESTIMATE.ci_low, primary.ci_low),
        row.with_metric(Metric.PRIMARY_ESTIMATE.ci_high, primary.ci_high),
        row.with_metric(Metric.PRIMARY_P, primary.p),
        row.with_metric(Metric.PRIMARY_N, primary.n),
    ]


def primary_rows(ctx: RunContext, outcomes: list[Outcomes], rows: list[Row]) -> list[Row]:
    """Every claim's primary for every elliptical × plain pair of the run (none where not measured)."""
    spec = ctx.data.spec
    return primaries(
        {name: m.elliptical for name, m in ctx.models.items()},
        outcomes,
        rows,
        len(ctx.indices),
        shift=spec.name if spec.natural_shift else None,
    )


def primaries(
    elliptical: dict[str, bool], outcomes: list[Outcomes], rows: list[Row], n: int, shift: str | None = None
) -> list[Row]:
    """The primaries' rows from a run's per-image outcomes and rows (model → elliptical; ``shift``: the
    shift dataset's name, None for a dataset that is not a natural shift)."""
    mine: dict[str, list[Outcomes]] = defaultdict(list)
    for o in outcomes:
        mine[o.model].append(o)
    out = []
    for e in (name for name, is_elliptical in elliptical.items() if is_elliptical):
        for b in (name for name, is_elliptical in elliptical.items() if not is_elliptical):
            for threat in THREATS:
                out += _robustness(e, b, mine[e], mine[b], threat)
            out += _corruptions(e, b, mine[e], mine[b], rows)
            out += _from_rows(e, b, rows, n)
            if shift is not None:
                out += _shift(e, b, mine[e], mine[b], shift)
    return out


def _clean(outcomes: Iterable[Outcomes]) -> np.ndarray | None:
    return next((o.correct for o in outcomes if o.method == "clean"), None)


@dataclass(frozen=True)
class Threat:
    """A robustness claim's threat model: the norm of its attacks and how its budgets read."""

    claim: ClaimName
    norm: str
    budget: str  # the per-image budget, in words
    grid_budget: str  # the same, when every method ran on a grid of budgets
    unit: str  # the unit of a continuous (minimal-norm) estimate


#: The robustness claims, one per threat model: pixel budgets (L∞) and patch budgets.
THREATS = (
    Threat(ClaimName.ROBUSTNESS, "Linf", "L∞ budget", "L∞ grid budget", "pixels"),
    Threat(ClaimName.PATCH_ROBUSTNESS, PATCH_NORM, "number of patches", "number of patches", "patches"),
)


def _white_box(o: Outcomes, norm: str) -> bool:
    """An attack of the model itself, with gradients, in ``norm``, at fp32 (the run's other precisions repeat it)."""
    if o.eps is None or o.method in (LARGE_EPS_METHOD, "worst-case") or o.method not in ATTACKS:
        return False
    params = json.loads(o.params)
    request = AttackRequest(o.method, params)
    gradient_free = ATTACKS.get(o.method).gradient_free
    return "source" not in params and request.norm == norm and not gradient_free and o.precision in ("", "fp32")


def _budgets(outcomes: list[Outcomes], m_grad: str, norm: str) -> list[MinimalNormBudgets | GridBudgets]:
    """Each white-box method's per-image budgets in ``norm`` under one ``m_grad`` mode (``""``: a plain model)."""
    grids: dict[str, dict[float, np.ndarray]] = defaultdict(dict)
    minimal = {}
    for o in outcomes:
        if not _white_box(o, norm) or o.m_grad != m_grad:
            continue
        stars = o.get("eps_star")
        if stars is not None:
            eps_max = float(json.loads(o.params)["eps_max"])
            minimal[o.method] = MinimalNormBudgets(o.method, stars, o.get("censored"), eps_max)
        else:
            grids[o.method][float(o.eps)] = ~np.asarray(o.correct, dtype=bool)
    found: list[MinimalNormBudgets | GridBudgets] = list(minimal.values())
    for method, broken in grids.items():
        eps = sorted(broken)
        found.append(GridBudgets(method, np.asarray(eps), np.stack([broken[e] for e in eps])))
    return found


def worst_budgets(outcomes: list[Outcomes], m_grad: str, norm: str) -> WorstCaseBudgets | None:
    """One model's worst-case budget per image in ``norm`` under one ``m_grad`` mode (None: no such attack)."""
    clean, methods = _clean(outcomes), _budgets(outcomes, m_grad, norm)
    return worst_case_budgets(methods, clean) if clean is not None and methods else None


def _robustness(e: str, b: str, of_e: list[Outcomes], of_b: list[Outcomes], threat: Threat) -> list[Row]:
    worst_b = worst_budgets(of_b, "", threat.norm)
    if worst_b is None:
        return []
    out = []
    for mg in ("detach", "full"):
        worst_e = worst_budgets(of_e, mg, threat.norm)
        if worst_e is None or sorted(worst_e.methods) != sorted(worst_b.methods):
            continue
        methods = ", ".join(sorted(worst_e.methods))
        if worst_e.continuous:
            primary = budget_primary(worst_e, worst_b, PrimaryTest.SIGN)
            what, unit = f"the worst-case {threat.budget} per image over {methods}", threat.unit
        else:
            primary = _grid_primary(worst_e.budgets - worst_b.budgets)
            what = f"which model's worst-case {threat.grid_budget} over {methods} is larger, per image"
            unit = "fraction"
        params = {"claim": threat.claim.value, "what": what, "unit": unit, "higher_is_better": True}
        out += estimate_rows(e, b, params, primary, m_grad=mg)
    return out


def _grid_primary(differences: np.ndarray) -> Primary:
    """The sign test on grid budgets, with an estimate that can show a side: the share of images where the
    elliptical model needs the larger budget minus the share where it needs the smaller one.

    On a grid most differences are ties, so a median difference (and its interval) is 0 whatever the
    signs say. The exact McNemar test of "A larger" against "B larger" is the sign test itself, and
    Tango's interval for that difference of paired proportions agrees with it on the side of 0.
    """
    larger, smaller = differences > 0, differences < 0
    return replace(accuracy_primary(larger, smaller), test=PrimaryTest.SIGN)


def _corruptions(e: str, b: str, of_e: list[Outcomes], of_b: list[Outcomes], rows: list[Row]) -> list[Row]:
    """The mCE primary over the corruption × severity cells both models have."""
    cells = {m: {(o.method, o.severity): o.correct for o in outs if o.severity is not None} for m, outs in
             ((e, of_e), (b, of_b))}  # fmt: skip
    shared = sorted(set(cells[e]) & set(cells[b]))
    names = sorted({c for c, _ in shared})
    severities = sorted({s for _, s in shared})
    if not names or len(shared) != len(names) * len(severities):
        return []
    alexnet = any(r.metric == Metric.MCE and json.loads(r.params).get("normalization") == "alexnet" for r in rows)
    reference = None
    if alexnet:
        errors = [alexnet_errors(c, severities) for c in names]
        if any(err is None for err in errors):
            return []
        reference = np.asarray(errors, dtype=float)

    def wrong(model: str) -> np.ndarray:
        return np.asarray([[~np.asarray(cells[model][(c, s)], dtype=bool) for s in severities] for c in names], float)

    differences = mce_image_differences(wrong(e), wrong(b), reference)
    primary = mean_difference_primary(differences, higher_is_better=False)
    params = {
        "claim": ClaimName.CORRUPTIONS.value,
        "what": f"each image's share of the {'AlexNet-normalised' if alexnet else 'unnormalised'} mCE",
        "unit": "ratio",
        "higher_is_better": False,
    }
    return estimate_rows(e, b, params, primary)


def _shift(e: str, b: str, of_e: list[Outcomes], of_b: list[Outcomes], dataset: str) -> list[Row]:
    clean_e, clean_b = _clean(of_e), _clean(of_b)
    if clean_e is None or clean_b is None:
        return []
    primary = accuracy_primary(clean_e, clean_b)
    params = {
        "claim": ClaimName.NATURAL_SHIFT.value,
        "what": f"clean accuracy on {dataset}",
        "unit": "fraction",
        "higher_is_better": True,
    }
    return estimate_rows(e, b, params, primary)


def _oriented(rows: list[Row], metric: Metric, e: str, b: str, keep) -> tuple[Row, float] | None:
    """The first row of ``metric`` between e and b that ``keep`` accepts, and its sign to read it as e − b."""
    for r in rows:
        if r.metric == metric and keep(r) and {r.model, r.baseline} == {e, b}:
            return r, (1.0 if r.model == e else -1.0)
    return None


def _companion(rows: list[Row], of: Row, metric: Metric) -> float:
    found = next((r for r in rows if r.metric == metric and r.replace(metric=of.metric, value=of.value) == of), None)
    return math.nan if found is None else found.value


def _from_rows(e: str, b: str, rows: list[Row], n: int) -> list[Row]:
    """The primaries whose test the run's rows already hold: later-half collapse (t) and OOD (DeLong)."""
    out = []
    collapse = _oriented(rows, Metric.TOKEN_COSINE.difference, e, b, _later_half_clean)
    if collapse is not None:
        row, sign = collapse
        low, high = (_companion(rows, row, Metric.TOKEN_COSINE.difference.ci_low),
                     _companion(rows, row, Metric.TOKEN_COSINE.difference.ci_high))  # fmt: skip
        low, high = sorted((sign * low, sign * high))
        estimate = sign * row.value
        primary = Primary(PrimaryTest.PAIRED_T, estimate, low, high, _t_p(estimate, low, high, n), n, False)
        params = {
            "claim": ClaimName.COLLAPSE.value,
            "what": "the token cosine averaged over the later half of the layers",
            "unit": "cosine",
            "higher_is_better": False,
        }
        out += estimate_rows(e, b, params, primary)
    ood = _oriented(rows, Metric.OOD_AUROC.difference, e, b, lambda r: True)
    if ood is not None:
        row, sign = ood
        low, high = (_companion(rows, row, Metric.OOD_AUROC.difference.ci_low),
                     _companion(rows, row, Metric.OOD_AUROC.difference.ci_high))  # fmt: skip
        low, high = sorted((sign * low, sign * high))
        p = _companion(rows, row, Metric.OOD_AUROC_DELONG_P)
        primary = Primary(PrimaryTest.DELONG, sign * row.value, low, high, p, n, True)
        params = {"claim": ClaimName.OOD.value, "what": "the AUROC (OOD positive, score −MSP)", "unit": "auroc",
                  "higher_is_better": True}  # fmt: skip
        out += estimate_rows(e, b, params, primary)
    return out


def _later_half_clean(r: Row) -> bool:
    """A later-half summary row of the clean images over all heads."""
    if r.method != "collapse" or r.layer is not None:
        return False
    params = json.loads(r.params)
    return "head" not in params and "attack" not in params


def _t_p(estimate: float, low: float, high: float, n: int) -> float:
    """The paired t-test's two-sided p that a Student-t interval on ``n`` images implies (NaN without one)."""
    if n < 2 or any(math.isnan(v) for v in (estimate, low, high)) or high <= low:
        return math.nan
    se = (high - low) / (2 * student_t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    return float(2 * student_t.sf(abs(estimate) / se, n - 1))
