"""A realistic results table built by hand, with the rows the report and verdict read.

The report's and verdict's tests need tables with chosen effects (a clear win, identical models), so
they simulate per-image outcomes and derive every row the way the contract describes
(Wilson intervals, a paired interval that is never zero-width, exact McNemar p with Holm over the
pair's family, power, paired t-intervals, a paired bootstrap for mCE). The statistics here are simple
stand-ins: the tests check what the report *does* with the rows, not the statistics module.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, t

from ellrobust.measures.primary_claims import primaries
from ellrobust.results import CORRECT, SCHEMA_VERSION, Outcomes, Row, to_frame

ELLIPTICAL, BASELINE = "deit-elliptical", "deit"
MODELS = {ELLIPTICAL: True, BASELINE: False}
EPS = (1 / 255, 2 / 255, 4 / 255)
CORRUPTIONS = ("gaussian_noise", "fog", "contrast")
SEVERITIES = (1, 2, 3, 4, 5)
DEPTH = 6
PGD = json.dumps({"steps": 10, "step_size": "0.25*eps", "random_start": True, "restarts": 1})
COLLAPSE = {"feature": "residual", "cls": True}
CORRUPTION_PARAMS = json.dumps({"source": "generated on the fly", "protocol": "cifar-10-c"})
_Z = 1.959964 + 0.841621


@dataclass(frozen=True)
class Scenario:
    """How the elliptical model differs from the baseline (0 everywhere: two copies of one model)."""

    n: int = 400
    attack_gain: float = 0.15  # extra robust accuracy of the elliptical model under attack
    corruption_gain: float = 0.06
    collapse_gain: float = 0.08  # token cosine the elliptical model saves in the last layer
    identical: bool = False
    seed: int = 0


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def holm(p: list[float]) -> list[float]:
    order = np.argsort(p)
    adjusted = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def paired_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Difference, a smoothed Wald interval (never zero-width), exact McNemar p and power of a − b."""
    n = a.size
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    d = (a_only - b_only) / n
    bs, cs, ns = a_only + 0.5, b_only + 0.5, n + 2
    centre = (bs - cs) / ns
    half = 1.959964 * math.sqrt(max((bs + cs) - (bs - cs) ** 2 / ns, 0.0)) / ns
    rate = (a_only + b_only) / n
    p = 1.0 if a_only + b_only == 0 else float(binomtest(min(a_only, b_only), a_only + b_only).pvalue)
    return {
        "accuracy_difference": d,
        "difference_ci_low": max(centre - half, -1.0),
        "difference_ci_high": min(centre + half, 1.0),
        "mcnemar_p": p,
        "detectable_difference": _Z * math.sqrt(max(rate, 1 / n) / n),
        "n_required": math.nan if d == 0 else float(math.ceil(_Z**2 * max(rate, 1 / n) / d**2)),
    }


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    m = float(values.mean())
    half = (
        float(t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    )
    return m, m - half, m + half


def simulate(s: Scenario = Scenario()) -> pd.DataFrame:
    """Two models, clean + fgsm/pgd at 3 budgets (m_grad detach/full) + worst case, 3 corruptions × 5
    severities with CE/mCE, collapse per layer with later-half summaries (and on PGD images), sanity rows."""
    rng = np.random.default_rng(s.seed)
    n = s.n
    base = {"dataset": "digits", "split": "test", "n": n, "seed": 0, "ellrobust_version": "0.1.0", "torch_version": "2"}
    rows: list[dict] = []
    outcomes: dict[
        tuple, dict[str, np.ndarray]
    ] = {}  # (method, params, eps, severity, m_grad, precision) → model → correct

    def draw(p: float, within: np.ndarray | None = None) -> np.ndarray:
        u = rng.random(n)
        return (u < p) & (within if within is not None else True)

    def gain(value: float) -> float:
        return 0.0 if s.identical else value

    clean_b = draw(0.95)
    clean = {BASELINE: clean_b, ELLIPTICAL: clean_b.copy() if s.identical else draw(0.95)}
    for model, correct in clean.items():
        outcomes.setdefault(("clean", "{}", None, None, "", ""), {})[model] = correct
    per_attack: dict[tuple, dict[str, np.ndarray]] = {}
    for method, params, strength in (("fgsm", "{}", 0.6), ("pgd", PGD, 0.8)):
        for eps in EPS:
            survive = max(0.02, 1 - strength * eps * 255 / 4)
            base_robust = draw(survive, clean[BASELINE])
            for mg, extra in (("detach", 0.0), ("full", -0.05)):
                ell = (
                    base_robust & clean[ELLIPTICAL]
                    if s.identical
                    else draw(min(1.0, survive + gain(s.attack_gain) + extra), clean[ELLIPTICAL])
                )
                key = (method, params, eps, None, mg, "fp32")
                outcomes.setdefault(key, {})[ELLIPTICAL] = ell
                outcomes[key][BASELINE] = base_robust  # a baseline's row (m_grad '') pairs with every mode
                per_attack.setdefault((eps, mg), {}).setdefault(ELLIPTICAL, []).append(ell)
                per_attack[(eps, mg)].setdefault(BASELINE, []).append(base_robust)
    worst_params = json.dumps({"attacks": ["fgsm", "pgd"], "norm": "Linf"}, sort_keys=True)
    for (eps, mg), by_model in per_attack.items():
        key = ("worst-case", worst_params, eps, None, mg, "fp32")
        outcomes[key] = {m: np.logical_and.reduce(v[-2:]) for m, v in by_model.items()}
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            p = max(0.1, 0.97 - 0.15 * severity)
            b = draw(p)
            e = b.copy() if s.identical else draw(min(1.0, p + gain(s.corruption_gain)))
            outcomes[(corruption, CORRUPTION_PARAMS, None, severity, "", "")] = {ELLIPTICAL: e, BASELINE: b}

    for (method, params, eps, severity, mg, precision), by_model in outcomes.items():
        metric = {"clean": "clean_accuracy"}.get(method, "corruption_accuracy" if severity else "robust_accuracy")
        common = {**base, "method": method, "params": params, "eps": eps, "severity": severity, "precision": precision}
        for model, correct in by_model.items():
            model_mg = mg if model == ELLIPTICAL else ""
            if model == BASELINE and mg == "full":
                continue
            k = int(correct.sum())
            low, high = wilson(k, n)
            row = {**common, "model": model, "m_grad": model_mg}
            rows += [
                {**row, "metric": metric, "value": k / n},
                {**row, "metric": f"{metric}_ci_low", "value": low},
                {**row, "metric": f"{metric}_ci_high", "value": high},
            ]
    for corruption in CORRUPTIONS:  # the mean over severities (severity empty), Wilson at n
        for model in MODELS:
            acc = np.mean(
                [outcomes[(corruption, CORRUPTION_PARAMS, None, sv, "", "")][model].mean() for sv in SEVERITIES]
            )
            low, high = wilson(round(acc * n), n)
            row = {**base, "model": model, "method": corruption, "params": CORRUPTION_PARAMS, "m_grad": ""}
            rows += [
                {**row, "metric": "corruption_accuracy", "value": acc},
                {**row, "metric": "corruption_accuracy_ci_low", "value": low},
                {**row, "metric": "corruption_accuracy_ci_high", "value": high},
            ]

    paired: list[dict] = []
    for (method, params, eps, severity, mg, precision), by_model in outcomes.items():
        stats = paired_stats(by_model[ELLIPTICAL], by_model[BASELINE])
        common = {
            **base,
            "model": ELLIPTICAL,
            "baseline": BASELINE,
            "method": method,
            "params": params,
            "eps": eps,
            "severity": severity,
            "m_grad": mg,
            "precision": precision,
        }
        paired += [{**common, "metric": m, "value": v} for m, v in stats.items()]
    p_rows = [r for r in paired if r["metric"] == "mcnemar_p"]
    for r, adjusted in zip(p_rows, holm([r["value"] for r in p_rows]), strict=True):
        paired.append({**r, "metric": "mcnemar_p_adjusted", "value": adjusted})
    rows += paired

    rows += _mce_rows(base, outcomes, rng)
    rows += _collapse_rows(base, s, rng)
    for model, mg in ((ELLIPTICAL, "detach"), (ELLIPTICAL, "full"), (BASELINE, "")):
        rows.append(
            {
                **base,
                "model": model,
                "method": "sanity",
                "params": json.dumps({"detail": "robust ≤ clean"}),
                "m_grad": mg,
                "metric": "sanity_robust_le_clean",
                "value": 1.0,
            }
        )
    rows += _primary_rows(base, outcomes, rows)
    return to_frame(rows)


def _primary_rows(base: dict, outcomes: dict, rows: list[dict]) -> list[dict]:
    """The claims' primaries, computed from the simulated per-image outcomes as a run computes them."""
    found = {}
    for (method, params, eps, severity, mg, precision), by_model in outcomes.items():
        for model, correct in by_model.items():
            key = (model, method, params, eps, severity, mg if model == ELLIPTICAL else "", precision)
            found[key] = Outcomes(**dict(zip(_MEASUREMENT, key, strict=True)), columns={CORRECT: correct})
    typed = [Row(**{k: r[k] for k in _ROW_FIELDS if k in r}) for r in rows]
    return [{**base, **r.as_dict()} for r in primaries(MODELS, list(found.values()), typed, base["n"])]


_MEASUREMENT = ("model", "method", "params", "eps", "severity", "m_grad", "precision")
_ROW_FIELDS = ("model", "metric", "value", "method", "params", "eps", "severity", "layer", "m_grad", "precision")
_ROW_FIELDS += ("baseline",)


def _mce_rows(base: dict, outcomes: dict, rng: np.random.Generator) -> list[dict]:
    errors = {
        m: np.stack([~outcomes[(c, CORRUPTION_PARAMS, None, sv, "", "")][m] for c in CORRUPTIONS for sv in SEVERITIES])
        for m in MODELS
    }

    def mce(model: str, idx: np.ndarray) -> float:
        return float(errors[model][:, idx].mean())

    n = base["n"]
    everything = np.arange(n)
    rows = []
    params = json.dumps(
        {
            "source": "generated on the fly",
            "normalization": "none",
            "severities": list(SEVERITIES),
            "corruptions": list(CORRUPTIONS),
        }
    )
    for model in MODELS:
        for c in CORRUPTIONS:
            ce = float(np.mean([errors[model][CORRUPTIONS.index(c) * 5 + i].mean() for i in range(5)]))
            rows.append(
                {
                    **base,
                    "model": model,
                    "method": c,
                    "params": json.dumps({"normalization": "none"}),
                    "metric": "ce",
                    "value": ce,
                }
            )
        rows.append(
            {
                **base,
                "model": model,
                "method": "mce",
                "params": params,
                "metric": "mce",
                "value": mce(model, everything),
            }
        )
    boot = []
    for _ in range(200):
        idx = rng.integers(0, n, n)
        boot.append(mce(ELLIPTICAL, idx) - mce(BASELINE, idx))
    common = {**base, "model": ELLIPTICAL, "baseline": BASELINE, "method": "mce", "params": params}
    rows += [
        {**common, "metric": "mce_difference", "value": mce(ELLIPTICAL, everything) - mce(BASELINE, everything)},
        {**common, "metric": "mce_difference_ci_low", "value": float(np.percentile(boot, 2.5))},
        {**common, "metric": "mce_difference_ci_high", "value": float(np.percentile(boot, 97.5))},
    ]
    return rows


def _collapse_rows(base: dict, s: Scenario, rng: np.random.Generator) -> list[dict]:
    n = base["n"]
    per_image = {}
    shared = rng.normal(0, 0.05, (n, DEPTH))
    for model in MODELS:
        saving = 0.0 if (model == BASELINE or s.identical) else s.collapse_gain
        layers = np.arange(DEPTH)
        per_image[model] = (
            0.2
            + 0.1 * layers
            + shared
            - saving * layers / (DEPTH - 1)
            + (0 if s.identical else rng.normal(0, 0.02, (n, DEPTH)))
        )
    later = list(range(DEPTH // 2, DEPTH))
    rows = []
    common = {**base, "method": "collapse", "m_grad": ""}
    for model, values in per_image.items():
        for layer in [*range(DEPTH), None]:
            v = _pick(values, layer, later)
            params = json.dumps({**COLLAPSE, **({"layers": later} if layer is None else {})}, sort_keys=True)
            m, low, high = mean_ci(v)
            row = {**common, "model": model, "params": params, "layer": layer}
            rows += [
                {**row, "metric": "token_cosine", "value": m},
                {**row, "metric": "token_cosine_ci_low", "value": low},
                {**row, "metric": "token_cosine_ci_high", "value": high},
            ]
    for layer in [*range(DEPTH), None]:
        d, low, high = mean_ci(_pick(per_image[ELLIPTICAL], layer, later) - _pick(per_image[BASELINE], layer, later))
        span = (
            {"layers": later, "baseline_layers": later} if layer is None else {}
        )  # the summary's difference names both spans
        params = json.dumps({**COLLAPSE, **span}, sort_keys=True)
        row = {**common, "model": ELLIPTICAL, "baseline": BASELINE, "params": params, "layer": layer}
        rows += [
            {**row, "metric": "token_cosine_difference", "value": d},
            {**row, "metric": "token_cosine_difference_ci_low", "value": low},
            {**row, "metric": "token_cosine_difference_ci_high", "value": high},
        ]
    adversarial = json.dumps(
        {**json.loads(PGD), **COLLAPSE}, sort_keys=True
    )  # each model's own attacked images: no pairs
    for model, mg in ((ELLIPTICAL, "detach"), (BASELINE, "")):
        for layer in range(DEPTH):
            m, low, high = mean_ci(per_image[model][:, layer] + 0.05)
            row = {
                **base,
                "model": model,
                "method": "pgd",
                "params": adversarial,
                "eps": EPS[1],
                "m_grad": mg,
                "precision": "fp32",
                "layer": layer,
            }
            rows += [
                {**row, "metric": "token_cosine", "value": m},
                {**row, "metric": "token_cosine_ci_low", "value": low},
                {**row, "metric": "token_cosine_ci_high", "value": high},
            ]
    return rows


def _pick(values: np.ndarray, layer: int | None, later: list[int]) -> np.ndarray:
    """Per-image values of one layer, or (layer None) their mean over the later layers."""
    return values[:, layer] if layer is not None else values[:, later].mean(axis=1)


def run_json(n: int = 400) -> dict:
    """The parts of run.json the report reads."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": "ellrobust eval -m deit-elliptical -m deit --attack fgsm,pgd --m-grad both "
        "--corruption gaussian_noise,fog,contrast --collapse",
        "config": {
            "seed": 0,
            "attacks": [{"name": "fgsm", "params": {}}, {"name": "pgd", "params": json.loads(PGD)}],
            "eps": list(EPS),
            "m_grad": "both",
            "precision": "fp32",
            "corruptions": list(CORRUPTIONS),
            "severities": list(SEVERITIES),
            "corruption_protocol": "cifar-10-c",
            "collapse": COLLAPSE,
            "device": "cpu",
        },
        "models": {
            ELLIPTICAL: {"checkpoint": "2e0e5993f7ec", "elliptical": True},
            BASELINE: {"checkpoint": "3eb47d7a6053", "elliptical": False},
        },
        "dataset": {"name": "digits", "split": "test", "n": n, "num_classes": 10, "digest": "b7b84446f774"},
        "environment": {"ellrobust": "0.1.0", "torch": "2", "python": "3.11"},
    }
