"""Simulated runs shaped like the example report, to check the claim rule's level and power.

Two models are drawn per image from one latent description of the image (its difficulty, its
robustness), each with its own independent noise: under the null they are the same model twice, so
every difference between them is chance. A run has the example's shape: clean accuracy; three
fixed-budget attacks (FGSM-, PGD- and SPSA-like, increasingly close to each image's true ε*) at four
budgets, their transferred counterparts, and a minimal-norm method (FMN-like: exact up to 2 %, but
overestimating ε* by 25–100 % on a few per cent of images), each under two m_grad modes; 15 corruptions
× 5 severities; the later-half token cosine. Images no method breaks up to the largest budget are
censored there, as in a real run.

Each run is judged twice:

* **the claim rule** (:mod:`ellrobust.stats.claim_family`): the robustness primary on the worst-case
  budgets (:func:`~ellrobust.stats.primary_endpoints.worst_case_budgets`, computed by the library per
  run) under m_grad detach, with the adaptive condition under full; the mCE difference and the
  token cosine by paired t-tests; Holm across the three claims;
* **the 0.4 rule**: one Holm family of the 142 paired comparisons the example made (clean; per mode 3
  attacks × 4 ε, FMN's robust accuracy at the 4 ε, 3 transferred attacks × 4 ε, the worst case at
  4 ε; 75 corruption cells; the sign test on FMN's ε* per mode), an attack line reading supported when
  a budget favours it and none the other model, the mCE and collapse claims by their intervals at α
  (the t-interval, never wider than 0.4's bootstrap-or-t interval, so the 0.4 error rate printed is
  an upper bound for those two claims).

The per-image draws are vectorised over runs; the primaries are the library's functions, run by run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom
from scipy.stats import t as student_t

from ellrobust.stats.claim_family import PrimaryStatus, status_of, union_p
from ellrobust.stats.decisions import ALPHA, CONFIDENCE, Favours, holm_direction, interval_direction
from ellrobust.stats.inference import holm_adjust, paired_difference_interval
from ellrobust.stats.primary_endpoints import (
    GridBudgets,
    MinimalNormBudgets,
    PrimaryTest,
    WorstCaseBudgets,
    worst_case_budgets,
)
from ellrobust.stats.rank_tests import hodges_lehmann_side, sign_test, signed_rank_test

_DECIDED = (PrimaryStatus.SUPPORTED, PrimaryStatus.CONTRADICTED)


@dataclass(frozen=True)
class RunShape:
    """The shape of a simulated run and the distribution of its images (defaults: the example's shape)."""

    n: int = 200
    eps_grid: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    attack_spread: tuple[float, ...] = (0.8, 0.15, 0.4)  # FGSM, PGD, SPSA: sd of log(found budget / ε*)
    transfer_offset: float = 0.7  # log factor a transferred attack loses on top of its white-box one
    fmn_miss: float = 0.05  # share of images the minimal-norm method overestimates by 25–100 %
    modes: int = 2  # m_grad detach, full
    corruptions: int = 15
    severities: int = 5
    eps_median: float = 3 / 255  # median true ε* of a correctly classified image
    eps_spread: float = 0.7  # sd of log ε* between images (shared by the two models)
    eps_noise: float = 0.15  # sd of log ε* per model and image (independent between the models)


@dataclass(frozen=True)
class Alternative:
    """How model A differs from B: its true ε* multiplied by ``scale``, then ``shift`` added (correct images)."""

    scale: float = 1.0
    shift: float = 0.0


@dataclass(frozen=True)
class _Latent:
    difficulty: np.ndarray  # (R, n)
    robustness: np.ndarray  # (R, n)
    corruption: np.ndarray  # (C, S, R, n) log-odds of an error
    cosine: np.ndarray  # (R, n)


@dataclass(frozen=True)
class _Model:
    clean: np.ndarray  # (R, n) correct clean
    fmn: np.ndarray  # (modes, R, n) budget found by the minimal-norm method (0 if misclassified clean)
    broken: np.ndarray  # (modes, attacks, grid, R, n) white-box attack broke the image at ε
    transfer: np.ndarray  # (modes, attacks, grid, R, n) transferred attack broke it
    wrong: np.ndarray  # (C, S, R, n) corruption errors
    cosine: np.ndarray  # (R, n) later-half token cosine


def _latent(rng: np.random.Generator, shape: RunShape, runs: int) -> _Latent:
    size = (runs, shape.n)
    cells = np.add.outer(rng.normal(-0.5, 0.8, shape.corruptions), np.linspace(-1.0, 1.5, shape.severities))
    difficulty = rng.normal(size=size)
    corruption = cells[:, :, None, None] + 0.8 * difficulty + rng.normal(0, 0.5, (*cells.shape, *size))
    return _Latent(difficulty, rng.normal(size=size), corruption, rng.normal(0.5, 0.1, size))


def _model(rng: np.random.Generator, shape: RunShape, latent: _Latent, alternative: Alternative) -> _Model:
    """One model's outcomes on every image of every run, given the images' latent description."""
    size = latent.difficulty.shape
    clean = rng.random(size) < 1 / (1 + np.exp(-(1.6 - 1.2 * latent.difficulty)))
    log_eps = np.log(shape.eps_median) + shape.eps_spread * latent.robustness + shape.eps_noise * rng.normal(size=size)
    true = np.where(clean, np.exp(log_eps) * alternative.scale + alternative.shift, 0.0)
    miss = rng.random((shape.modes, *size)) < shape.fmn_miss
    overshoot = np.where(miss, rng.uniform(0.25, 1.0, miss.shape), np.abs(rng.normal(0, 0.02, miss.shape)))
    spread = np.asarray(shape.attack_spread)[None, :, None, None, None]
    found = true * np.exp(np.abs(rng.normal(size=(shape.modes, spread.shape[1], 1, *size))) * spread)
    grid = np.asarray(shape.eps_grid)[None, None, :, None, None]
    wrong = rng.random(latent.corruption.shape) < 1 / (1 + np.exp(-latent.corruption))
    return _Model(
        clean=clean,
        fmn=true * (1 + overshoot),
        broken=found <= grid,
        transfer=found * np.exp(shape.transfer_offset) <= grid,
        wrong=wrong,
        cosine=latent.cosine + rng.normal(0, 0.05, size),
    )


def _worst_case(model: _Model, shape: RunShape, mode: int, run: int) -> WorstCaseBudgets:
    """The library's worst-case budgets of one model in one run and mode (FMN and the three attacks)."""
    eps_max = max(shape.eps_grid)
    found = model.fmn[mode, run]
    methods = [MinimalNormBudgets("fmn", np.minimum(found, eps_max), found > eps_max, eps_max)]
    methods += [
        GridBudgets(f"attack {k}", np.asarray(shape.eps_grid), model.broken[mode, k, :, run])
        for k in range(model.broken.shape[1])
    ]
    return worst_case_budgets(methods, model.clean[run])


def _t_primary(d: np.ndarray, lower_is_better: bool) -> tuple[np.ndarray, list[Favours]]:
    """Per run (rows of ``d``), the paired t-test's p and the side of its interval (mCE, token cosine)."""
    n = d.shape[1]
    mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = 2 * student_t.sf(np.abs(t), n - 1)
    half = student_t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / np.sqrt(n)
    sides = [
        interval_direction(lo, hi, lower_is_better=lower_is_better, n=n)
        for lo, hi in zip(mean - half, mean + half, strict=True)
    ]
    return p, sides


def _mce_differences(a: _Model, b: _Model) -> np.ndarray:
    """Per run and image, the unnormalised mCE difference A − B (mean error over cells)."""
    return (a.wrong.astype(float) - b.wrong).mean(axis=(0, 1))


#: A robustness endpoint: the worst-case budgets of A and B → (p, the side its interval favours).
Endpoint = Callable[[WorstCaseBudgets, WorstCaseBudgets], tuple[float, Favours]]


def budget_endpoint(test: PrimaryTest) -> Endpoint:
    """The budget primary by ``test``: its p, and the side of its Hodges–Lehmann interval, as
    :func:`~ellrobust.stats.primary_endpoints.budget_primary` gives them (the side computed exactly by
    :func:`~ellrobust.stats.rank_tests.hodges_lehmann_side`, without the interval's ends)."""

    def endpoint(a: WorstCaseBudgets, b: WorstCaseBudgets) -> tuple[float, Favours]:
        d = a.budgets - b.budgets
        p = sign_test(d) if test is PrimaryTest.SIGN else signed_rank_test(d)[0]
        return p, Favours(hodges_lehmann_side(d))

    return endpoint


def fixed_endpoint(eps: float) -> Endpoint:
    """The fixed-budget primary: worst-case robust accuracy at ``eps`` by McNemar, with Tango's interval."""

    def endpoint(a: WorstCaseBudgets, b: WorstCaseBudgets) -> tuple[float, Favours]:
        ra, rb = (w.censored | (w.budgets > eps) for w in (a, b))
        x, y = int((ra & ~rb).sum()), int((~ra & rb).sum())
        p = float(_mcnemar_p(np.array(x), np.array(y)))
        if p >= ALPHA:  # the side cannot matter: skip the root finding
            return p, Favours.NEITHER
        low, high = paired_difference_interval(x, y, ra.size)
        return p, interval_direction(low, high, n=ra.size)

    return endpoint


def worst_cases(a: _Model, b: _Model, shape: RunShape) -> list[list[tuple[WorstCaseBudgets, WorstCaseBudgets]]]:
    """Per run and m_grad mode, the library's worst-case budgets of A and B."""
    return [
        [(_worst_case(a, shape, mode, r), _worst_case(b, shape, mode, r)) for mode in range(shape.modes)]
        for r in range(a.clean.shape[0])
    ]


def claim_rule(a: _Model, b: _Model, cases: list, endpoint: Endpoint) -> tuple[np.ndarray, np.ndarray]:
    """Per run, whether any claim is decided, and whether the robustness claim reads supported.

    Robustness by ``endpoint`` under every mode (the adaptive condition: intersection-union p), mCE and
    token cosine by paired t-tests, Holm across the three, each status by :func:`status_of`.
    """
    mce_p, mce_side = _t_primary(_mce_differences(a, b), lower_is_better=True)
    cos_p, cos_side = _t_primary(a.cosine - b.cosine, lower_is_better=True)
    any_decided, robust = np.zeros(len(cases), bool), np.zeros(len(cases), bool)
    for r, modes in enumerate(cases):
        parts = [endpoint(wa, wb) for wa, wb in modes]
        adjusted = holm_adjust([union_p(tuple(q for q, _ in parts)), mce_p[r], cos_p[r]])
        sides = [tuple(s for _, s in parts), (mce_side[r],), (cos_side[r],)]
        statuses = [status_of(float(q), s)[0] for q, s in zip(adjusted, sides, strict=True)]
        any_decided[r] = any(s in _DECIDED for s in statuses)
        robust[r] = statuses[0] is PrimaryStatus.SUPPORTED
    return any_decided, robust


def _mcnemar_p(a_only: np.ndarray, b_only: np.ndarray) -> np.ndarray:
    """Exact two-sided McNemar p of many count pairs at once (equal to inference.mcnemar_exact)."""
    total = a_only + b_only
    p = np.minimum(1.0, 2 * binom.cdf(np.minimum(a_only, b_only), total, 0.5))
    return np.where(total == 0, 1.0, p)


def _family_flags(a: _Model, b: _Model, shape: RunShape, cases: list) -> tuple[np.ndarray, np.ndarray, list]:
    """The 0.4 family's 140 McNemar cells: robust/correct flags of A and B (cells, R, n) and each cell's line.

    A line is (kind, mode) for the attack lines (white-box attack k, FMN at the grid, transferred k, the
    worst case); None for cells that belong to no attack line (clean, corruption cells).
    """
    grid = np.asarray(shape.eps_grid)
    flags_a, flags_b, lines = [a.clean], [b.clean], [None]
    for mode in range(shape.modes):
        wc = [[(w.censored | (w.budgets[None, :] > grid[:, None])) for w in pair] for pair in (c[mode] for c in cases)]
        worst = [np.stack([w[i] for w in wc], axis=1) for i in (0, 1)]  # (grid, R, n)
        for k in range(a.broken.shape[1]):
            flags_a += list(~a.broken[mode, k])
            flags_b += list(~b.broken[mode, k])
            lines += [(f"attack {k}", mode)] * grid.size
            flags_a += list(~a.transfer[mode, k])
            flags_b += list(~b.transfer[mode, k])
            lines += [(f"transfer {k}", mode)] * grid.size
        flags_a += list(a.fmn[mode][None] > grid[:, None, None])
        flags_b += list(b.fmn[mode][None] > grid[:, None, None])
        lines += [("fmn", mode)] * grid.size
        flags_a += list(worst[0])
        flags_b += list(worst[1])
        lines += [("worst-case", mode)] * grid.size
    flags_a += list((~a.wrong).reshape(-1, *a.clean.shape))
    flags_b += list((~b.wrong).reshape(-1, *b.clean.shape))
    lines += [None] * (a.wrong.shape[0] * a.wrong.shape[1])
    return np.stack(flags_a), np.stack(flags_b), lines


def old_rule(a: _Model, b: _Model, shape: RunShape, cases: list) -> dict[str, np.ndarray]:
    """Per run, the 0.4 rule: one Holm family of all 142 comparisons; which claims it decides.

    Returns ``any`` (any claim supported or contradicted), ``worst`` (the m_grad detach worst-case
    line supported), ``fmn`` (the detach minimal-budget line supported) and ``robust`` (any detach
    attack or minimal line supported).
    """
    fa, fb, lines = _family_flags(a, b, shape, cases)
    x, y = (fa & ~fb).sum(axis=-1), (~fa & fb).sum(axis=-1)  # (cells, R)
    cells = _mcnemar_p(x, y)
    eps_max = max(shape.eps_grid)
    mce_side = _t_primary(_mce_differences(a, b), lower_is_better=True)[1]
    cos_side = _t_primary(a.cosine - b.cosine, lower_is_better=True)[1]
    n = a.clean.shape[1]
    out = {key: np.zeros(a.clean.shape[0], bool) for key in ("any", "worst", "fmn", "robust")}
    for r in range(a.clean.shape[0]):
        d = [np.minimum(a.fmn[m, r], eps_max) - np.minimum(b.fmn[m, r], eps_max) for m in range(shape.modes)]
        adjusted = holm_adjust([*cells[:, r], *(sign_test(dm) for dm in d)])
        favours: dict[tuple, set] = {}
        for i in np.flatnonzero(adjusted[: len(lines)] < ALPHA):
            low, high = paired_difference_interval(int(x[i, r]), int(y[i, r]), n)
            side = holm_direction((x[i, r] - y[i, r]) / n, low, high, float(adjusted[i]))
            favours.setdefault(lines[i], set()).add(side)
        statuses = {line: _line_status(sides) for line, sides in favours.items() if line is not None}
        for m, dm in enumerate(d):
            statuses[("minimal", m)] = status_of(float(adjusted[len(lines) + m]), (Favours(hodges_lehmann_side(dm)),))[
                0
            ]
        decided = {line for line, status in statuses.items() if status in _DECIDED}
        supported = {line for line, status in statuses.items() if status is PrimaryStatus.SUPPORTED}
        out["any"][r] = bool(decided) or mce_side[r] is not Favours.NEITHER or cos_side[r] is not Favours.NEITHER
        out["worst"][r] = ("worst-case", 0) in supported
        out["fmn"][r] = ("minimal", 0) in supported
        out["robust"][r] = any(mode == 0 and not kind.startswith("transfer") for kind, mode in supported)
    return out


def _line_status(sides: set) -> PrimaryStatus:
    """0.4's attack line: supported when a budget favours A and none B, contradicted in the mirror case."""
    if Favours.A in sides and Favours.B not in sides:
        return PrimaryStatus.SUPPORTED
    if Favours.B in sides and Favours.A not in sides:
        return PrimaryStatus.CONTRADICTED
    return PrimaryStatus.INCONCLUSIVE


@dataclass(frozen=True)
class Simulated:
    """Per run, what each rule concluded (boolean arrays over the runs)."""

    claim_any: dict[str, np.ndarray]  # endpoint name → any claim decided under the claim rule
    claim_robust: dict[str, np.ndarray]  # endpoint name → robustness claim supported
    old: dict[str, np.ndarray]  # the 0.4 rule, as :func:`old_rule` returns

    @property
    def runs(self) -> int:
        return len(self.old["any"])


def simulate(
    shape: RunShape,
    runs: int,
    *,
    seed: int,
    alternative: Alternative = Alternative(),  # noqa: B008 - a frozen dataclass, immutable
    endpoints: dict[str, Endpoint] | None = None,
    chunk: int = 50,
) -> Simulated:
    """Draw ``runs`` runs of two models (A under ``alternative``, B under the null) and judge each.

    ``endpoints`` (name → robustness endpoint) defaults to the sign test and the signed-rank test on
    worst-case budgets. Runs are drawn ``chunk`` at a time (memory: ~ chunk × n × 160 bytes).
    """
    if endpoints is None:
        endpoints = {str(t): budget_endpoint(t) for t in (PrimaryTest.SIGN, PrimaryTest.SIGNED_RANK)}
    rng = np.random.default_rng(seed)
    claim_any = {name: [] for name in endpoints}
    claim_robust = {name: [] for name in endpoints}
    old: dict[str, list] = {}
    for start in range(0, runs, chunk):
        latent = _latent(rng, shape, min(chunk, runs - start))
        a, b = _model(rng, shape, latent, alternative), _model(rng, shape, latent, Alternative())
        cases = worst_cases(a, b, shape)
        for name, endpoint in endpoints.items():
            decided, robust = claim_rule(a, b, cases, endpoint)
            claim_any[name].append(decided)
            claim_robust[name].append(robust)
        for key, value in old_rule(a, b, shape, cases).items():
            old.setdefault(key, []).append(value)
    join = np.concatenate
    return Simulated(
        {k: join(v) for k, v in claim_any.items()},
        {k: join(v) for k, v in claim_robust.items()},
        {k: join(v) for k, v in old.items()},
    )


def worst_case_accuracy(model: _Model, shape: RunShape, eps: float, mode: int = 0) -> float:
    """The fraction of images no method breaks at ``eps`` (a grid budget) in one m_grad mode."""
    on_grid = np.asarray(shape.eps_grid) <= eps
    broken = model.broken[mode][:, on_grid].any(axis=(0, 1))
    return float((model.clean & (model.fmn[mode] > eps) & ~broken).mean())


def scale_for_difference(shape: RunShape, eps: float, difference: float, *, seed: int, images: int = 100_000) -> float:
    """The ε* scale of model A whose worst-case robust accuracy at ``eps`` exceeds B's by ``difference``.

    Found by bisection on ``images`` images drawn with the same seed at every trial scale (common random
    numbers, so the accuracy rises monotonically with the scale).
    """
    big = RunShape(**{**shape.__dict__, "n": images // 4, "corruptions": 1, "severities": 1})

    def accuracy(scale: float) -> float:
        rng = np.random.default_rng(seed)
        return worst_case_accuracy(_model(rng, big, _latent(rng, big, 4), Alternative(scale=scale)), big, eps)

    base, low, high = accuracy(1.0), 1.0, 4.0
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if accuracy(middle) - base < difference else (low, middle)
    return (low + high) / 2
