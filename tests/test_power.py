"""Power at the level the verdict tests (Holm's α/m), and bootstrap claims that stay honest at small n.

Two findings of an independent check (issue 18): the detectable difference was computed for a single
test at α although the verdict reads Holm-adjusted p over families of 10–80 comparisons, and the
percentile bootstrap of the mCE difference called a claim supported at n = 3. The tests here check
the exact power of the exact McNemar test by brute force, reproduce the issue's figures, read the
power rows of a pair's family, and judge the issue's n = 3 case, n = 1 and identical models.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from rich.console import Console
from scipy.stats import binomtest, multinomial

from ellrobust.cli.terminal import measure_table
from ellrobust.measures.paired import paired_rows
from ellrobust.measures.primary_claims import estimate_rows
from ellrobust.report.number_format import format_signed_interval
from ellrobust.results import Metric, to_frame
from ellrobust.stats.claim_family import StatusReason
from ellrobust.stats.decisions import (
    ALPHA,
    MIN_IMAGES,
    Favours,
    holm_direction,
    holm_level,
    interval_direction,
    min_images,
)
from ellrobust.stats.inference import (
    bootstrap_replicates,
    detectable_difference,
    mcnemar_power,
    mean_interval,
    paired_bootstrap_interval,
    required_n,
)
from ellrobust.stats.primary_endpoints import Primary, PrimaryTest
from ellrobust.verdict.claim_types import ClaimStatus
from ellrobust.verdict.results_view import prepare
from ellrobust.verdict.rules import claims

A, B = "deit-elliptical", "deit"
MODELS = {A: True, B: False}


def brute_force_power(difference: float, psi: float, n: int, level: float) -> float:
    """Every outcome (A-only, B-only, concordant) of n images, weighted by its multinomial probability."""
    p10, p01 = (psi + difference) / 2, (psi - difference) / 2
    total = 0.0
    for a_only in range(n + 1):
        for b_only in range(n + 1 - a_only):
            d = a_only + b_only
            p = 1.0 if d == 0 else binomtest(min(a_only, b_only), d, 0.5).pvalue
            if p < level:
                total += multinomial.pmf([a_only, b_only, n - d], n, [p10, p01, 1 - psi])
    return total


@pytest.mark.parametrize(
    ("difference", "psi", "n", "level"),
    [(0.3, 0.5, 20, 0.05), (-0.2, 0.4, 25, 0.01), (0.1, 0.1, 15, 0.05), (0.0, 0.6, 18, 0.05), (0.5, 0.7, 12, 0.005)],
)
def test_exact_mcnemar_power_matches_brute_force_enumeration(difference, psi, n, level):
    assert mcnemar_power(difference, psi, n, level) == pytest.approx(
        brute_force_power(difference, psi, n, level), abs=1e-12
    )


def test_exact_power_edges_and_errors():
    assert mcnemar_power(0.0, 0.0, 100) == 0.0  # models that never disagree: nothing to reject on
    assert mcnemar_power(0.0, 0.3, 200) < ALPHA  # under H0 the exact test keeps its level
    assert mcnemar_power(0.3, 0.3, 5, 0.05) == 0.0  # 2 / 2^5 > 0.05: no outcome of 5 images rejects
    with pytest.raises(ValueError):
        mcnemar_power(0.2, 0.1, 100)  # |p_A − p_B| can never exceed the discordance


# The issue's figures: psi (Connor's discordance rate, p10 + p01) 5 %, n = 1 000.
PSI, N = 0.05, 1000


def test_the_single_test_figure_and_its_power_under_holm():
    single = detectable_difference(PSI, N)
    assert single == pytest.approx(0.0198, abs=5e-5)  # the 1.98 pp the tables used to report
    assert mcnemar_power(single, PSI, N, ALPHA) == pytest.approx(0.78, abs=0.01)  # ~80 %: right for one test
    assert mcnemar_power(single, PSI, N, holm_level(10)) == pytest.approx(0.45, abs=0.01)
    assert mcnemar_power(single, PSI, N, holm_level(80)) == pytest.approx(0.23, abs=0.01)


@pytest.mark.parametrize(("m", "expected"), [(10, 0.026), (80, 0.030)])
def test_the_detectable_difference_at_holms_first_step_has_80_percent_exact_power(m, expected):
    """The issue: 80 % power needs 2.6–3.0 pp at α/10 … α/80.

    Tolerance 0.03 on the power: the exact test is discrete (its attained level is below nominal, and
    power is a sawtooth in n by a few points at ~50 discordant images) and Connor's formula is a normal
    approximation; measured, 0.790 at α/10 and 0.814 at α/80.
    """
    delta = detectable_difference(PSI, N, alpha=holm_level(m))
    assert delta == pytest.approx(expected, abs=0.0005)
    assert mcnemar_power(delta, PSI, N, holm_level(m)) == pytest.approx(0.80, abs=0.03)
    assert required_n(delta, PSI, alpha=holm_level(m)) in (N, N + 1)


@pytest.mark.parametrize("psi", [0.05, 0.2])
@pytest.mark.parametrize("n", [500, 2000])
@pytest.mark.parametrize("m", [1, 10, 80])
def test_connors_formula_at_alpha_over_m_stays_near_its_promised_power(psi, n, m):
    """Over the families the verdict sees, the normal approximation at α/m delivers about 80 % exactly.

    Measured over this grid: 0.766 to 0.866. Below 80 % by at most 0.05 (the exact test is discrete, its
    attained level below α/m); above it by up to 0.10 only where the difference nears the discordance
    (δ = 0.85 ψ at ψ = 0.05, n = 500, m = 80: 0.87), where Connor's variance is conservative.
    """
    delta = detectable_difference(psi, n, alpha=holm_level(m))
    assert 0.75 <= mcnemar_power(delta, psi, n, holm_level(m)) <= 0.90


def _frame(rows, n: int):
    base = {"dataset": "digits", "split": "test", "n": n, "seed": 0}
    return prepare(to_frame([{**base, **dataclasses.asdict(r), "metric": r.metric.value} for r in rows]))


def _outcomes(n: int, seed: int) -> tuple[dict, dict]:
    """Clean and PGD at three budgets for two models on the same n images: Holm families of 1 and 3."""
    rng = np.random.default_rng(seed)
    pgd = json.dumps({"steps": 10})
    keys = [("clean", "{}", None, None, "", "")] + [("pgd", pgd, e / 255, None, "detach", "fp32") for e in (1, 2, 4)]
    mine = {k: rng.random(n) < 0.8 for k in keys}
    theirs = {k: np.where(rng.random(n) < 0.1, ~v, v) for k, v in mine.items()}  # ~10 % discordant
    baseline = {(m, p, e, s, "" if m == "pgd" else g, pr): v for (m, p, e, s, g, pr), v in theirs.items()}
    return mine, baseline


def test_paired_rows_state_power_at_the_familys_first_holm_step():
    n = 400
    mine, theirs = _outcomes(n, seed=0)
    rows = paired_rows(A, B, mine, theirs)
    sizes = {r.method: r.value for r in rows if r.metric is Metric.HOLM_FAMILY_SIZE}
    assert sizes == {"clean": 1.0, "pgd": 3.0}  # clean accuracy and the attacks are families of their own
    by_key = {}
    for r in rows:
        by_key.setdefault((r.method, r.eps), {})[r.metric] = r.value
    for (method, eps), values in by_key.items():
        key = next(k for k in mine if (k[0], k[2]) == (method, eps))
        a, b = mine[key], theirs[(key[0], key[1], key[2], key[3], "" if method == "pgd" else key[4], key[5])]
        psi = float((a != b).mean())
        level = ALPHA / sizes[method]
        assert values[Metric.DETECTABLE_DIFFERENCE] == pytest.approx(detectable_difference(psi, n, alpha=level))
        if method == "pgd":
            assert values[Metric.DETECTABLE_DIFFERENCE] > detectable_difference(psi, n)  # α/3 needs a larger one
        d = abs(values[Metric.ACCURACY_DIFFERENCE])
        if d:
            assert values[Metric.N_REQUIRED] == required_n(d, psi, alpha=level)
    text = render(measure_table(_frame(rows, n), "paired"))
    assert "m = 1–3; detectable and n needed: 80 % power at Holm's first-step α/m" in text


def render(renderable) -> str:
    console = Console(record=True, width=400)
    console.print(renderable)
    return console.export_text()


# The issue's bootstrap case: one corruption, five severities, three images. Model A is wrong at 0, 1 and
# 2 of the five severities of images 0, 1, 2, model B at 1, 3 and 5: unnormalised mCE 0.2 against 0.6.
WRONG_A, WRONG_B, SEVERITIES = np.array([0, 1, 2]), np.array([1, 3, 5]), 5


def mce_difference(indices: np.ndarray) -> float:
    """Unnormalised mCE(A) − mCE(B) on the images ``indices``, as the corruption stage computes it."""
    return float(WRONG_A[indices].mean() / SEVERITIES - WRONG_B[indices].mean() / SEVERITIES)


def test_the_issues_n3_case_reproduces_the_percentile_interval_and_is_widened_to_t():
    replicates = bootstrap_replicates(mce_difference, 3, seed=0)
    assert np.quantile(replicates, [0.025, 0.975]) == pytest.approx([-0.6, -0.2])  # the issue's (−0.600, −0.200)
    _, t_low, t_high = mean_interval((WRONG_A - WRONG_B) / SEVERITIES)
    assert (t_low, t_high) == pytest.approx((-0.897, 0.097), abs=5e-4)  # the issue's paired t-interval
    low, high = paired_bootstrap_interval(mce_difference, 3, seed=0)
    assert (low, high) == pytest.approx((t_low, t_high), abs=0.02)  # resampling noise of the t part
    assert low < 0 < high


def mce_rows(n: int, diff: float, low: float, high: float) -> list[dict]:
    base = {"dataset": "digits", "split": "test", "n": n, "seed": 0, "method": "mce"}
    params = json.dumps({"normalization": "none"})
    rows = [{**base, "model": m, "params": params, "metric": "mce", "value": v} for m, v in ((A, 0.2), (B, 0.2 - diff))]
    paired = {**base, "model": A, "baseline": B, "params": params}
    rows += [
        {**paired, "metric": m, "value": v}
        for m, v in (("mce_difference", diff), ("mce_difference_ci_low", low), ("mce_difference_ci_high", high))
    ]
    return rows


def mce_claim(n: int, diff: float, low: float, high: float, p: float = 0.001):
    """The corruptions claim of a primary with these numbers, as the verdict judges it."""
    params = {"claim": "corruptions", "what": "mCE share", "unit": "ratio", "higher_is_better": False}
    found = Primary(PrimaryTest.PAIRED_T, diff, low, high, p, n, False)
    rows = [{"dataset": "digits", "split": "test", "n": n, "seed": 0, **r.as_dict()}
            for r in estimate_rows(A, B, params, found)]  # fmt: skip
    [claim] = claims(prepare(to_frame(rows)), MODELS)
    return claim


def test_the_n3_case_is_not_supported_whatever_its_interval():
    low, high = paired_bootstrap_interval(mce_difference, 3, seed=0)
    assert mce_claim(3, -0.4, low, high).status is ClaimStatus.INCONCLUSIVE
    # even an interval below 0 with a small p supports nothing on 3 images
    old = mce_claim(3, -0.4, -0.6, -0.2)
    assert old.status is ClaimStatus.INCONCLUSIVE and old.result.reason is StatusReason.INTERVAL_DISAGREES
    # the same interval on enough images is judged
    assert mce_claim(MIN_IMAGES, -0.4, -0.6, -0.2).status is ClaimStatus.SUPPORTED


def test_n1_and_identical_models_give_zero_width_intervals_that_support_nothing():
    one = paired_bootstrap_interval(lambda i: float(np.array([-0.4])[i].mean()), 1, seed=0)
    assert one == (-0.4, -0.4)
    assert mce_claim(1, -0.4, *one).status is ClaimStatus.INCONCLUSIVE
    same = np.zeros(50)
    identical = paired_bootstrap_interval(lambda i: float(same[i].mean()), 50, seed=0)
    assert identical == (0.0, 0.0)
    assert mce_claim(50, 0.0, *identical).status is ClaimStatus.INCONCLUSIVE
    # every image differing by the same amount: zero width away from 0, still no evidence of a side
    constant = paired_bootstrap_interval(lambda i: float(np.full(50, -0.2)[i].mean()), 50, seed=0)
    assert constant == pytest.approx((-0.2, -0.2))
    claim = mce_claim(50, -0.2, *constant)
    assert claim.status is ClaimStatus.INCONCLUSIVE and claim.result.reason is StatusReason.INTERVAL_DISAGREES


def test_zero_width_is_shown_as_such():
    assert format_signed_interval(-0.4, -0.4) == "-0.400 (zero width)"
    assert format_signed_interval(-0.6, -0.2) == "-0.600 … -0.200"
    text = render(measure_table(prepare(to_frame(mce_rows(1, -0.4, -0.4, -0.4))), "corruptions"))
    assert "-0.400 (zero width)" in text


def test_the_decision_functions_refuse_zero_width_and_too_few_images():
    assert min_images() == MIN_IMAGES == 6
    for alpha in (0.05, 0.01, 0.0625):
        k = min_images(alpha)
        assert 2 * 0.5**k < alpha <= 2 * 0.5 ** (k - 1)  # the sign test's smallest p reaches α first at k
    assert interval_direction(-0.6, -0.2, lower_is_better=True) is Favours.A
    assert interval_direction(-0.6, -0.2, lower_is_better=True, n=MIN_IMAGES - 1) is Favours.NEITHER
    assert interval_direction(-0.6, -0.2, lower_is_better=True, n=MIN_IMAGES) is Favours.A
    assert interval_direction(-0.2, -0.2, lower_is_better=True) is Favours.NEITHER
    assert holm_direction(0.1, 0.05, 0.15, 0.001) is Favours.A
    assert holm_direction(0.1, 0.1, 0.1, 0.001) is Favours.NEITHER
    assert holm_level(10) == pytest.approx(0.005) and not math.isnan(holm_level(1))
    with pytest.raises(ValueError):
        holm_level(0)
