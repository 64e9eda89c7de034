"""The primary endpoints, Holm across claims and the adaptive condition, against scipy and hand computation;
and the simulation that shows the claim rule keeps its family-wise level on runs shaped like the example."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, ttest_rel, wilcoxon

from ellrobust.stats.claim_family import (
    Adaptive,
    ClaimName,
    PrimaryStatus,
    StatusReason,
    judge_claims,
)
from ellrobust.stats.corruption_error import ALEXNET_ERRORS, corruption_error, mean_corruption_error
from ellrobust.stats.inference import holm_adjust, mcnemar_exact
from ellrobust.stats.ood_detection import paired_auroc
from ellrobust.stats.primary_endpoints import (
    GridBudgets,
    MinimalNormBudgets,
    Primary,
    PrimaryTest,
    accuracy_primary,
    auroc_primary,
    budget_primary,
    fixed_budget_primary,
    mce_image_differences,
    mean_difference_primary,
    overestimates,
    worst_case_budgets,
)
from ellrobust.stats.primary_simulation import (
    Alternative,
    RunShape,
    _latent,
    _mcnemar_p,
    _model,
    budget_endpoint,
    simulate,
    worst_cases,
)
from ellrobust.stats.rank_tests import hodges_lehmann, hodges_lehmann_side

GRID = np.array([1, 2, 4, 8]) / 255


def _grid(broken_at: list[float | None]) -> np.ndarray:
    """(grid, n) flags of an attack that breaks image i at every budget from ``broken_at[i]`` up (None: never)."""
    return np.array([[b is not None and e >= b for b in broken_at] for e in GRID])


def test_worst_case_budget_takes_the_smallest_over_methods_censors_at_the_largest_and_zeroes_misclassified():
    fmn = MinimalNormBudgets("fmn", np.array([3, 5, 6, 0.5, 1]) / 255, np.array([0, 1, 0, 0, 0], bool), 6 / 255)
    pgd = GridBudgets("pgd", GRID, _grid([4 / 255, None, 2 / 255, None, 1 / 255]))
    found = worst_case_budgets([fmn, pgd], clean_correct=np.array([1, 1, 1, 1, 0], bool))
    # image 0: FMN 3 < PGD 4; 1: never broken, censored at the largest budget 8; 2: PGD 2 < FMN 6 (an
    # overestimate); 3: FMN only; 4: misclassified clean, 0 whatever the methods say.
    assert found.budgets * 255 == pytest.approx([3, 8, 2, 0.5, 0])
    assert found.censored.tolist() == [False, True, False, False, False]
    assert found.eps_max == pytest.approx(8 / 255) and found.continuous and found.methods == ("fmn", "pgd")
    grid_only = worst_case_budgets([pgd], clean_correct=np.ones(5, bool))
    assert not grid_only.continuous and grid_only.budgets * 255 == pytest.approx([4, 8, 2, 8, 1])


def test_worst_case_budget_refuses_mismatched_methods():
    fmn = MinimalNormBudgets("fmn", np.array([0.1, 0.2]), np.array([False, False]), 0.05)
    with pytest.raises(ValueError, match="fmn: .*exceed eps_max"):
        worst_case_budgets([fmn], clean_correct=np.ones(2, bool))
    with pytest.raises(ValueError, match="same ones"):
        worst_case_budgets([GridBudgets("pgd", GRID, _grid([None]))], clean_correct=np.ones(2, bool))


def _budgets(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple:
    """Two models' worst-case budgets from FMN and a grid attack, about a quarter of images censored."""
    out = []
    for s in (shift, 0.0):
        eps = rng.lognormal(np.log(4 / 255), 0.6, n) + s
        fmn = MinimalNormBudgets("fmn", np.minimum(eps, 8 / 255), eps > 8 / 255, 8 / 255)
        pgd = GridBudgets("pgd", GRID, GRID[:, None] >= eps * rng.lognormal(0.1, 0.1, n))
        out.append(worst_case_budgets([fmn, pgd], clean_correct=rng.random(n) < 0.8))
    return tuple(out)


@pytest.mark.parametrize("n", [30, 400])
def test_budget_primary_matches_scipy(n):
    a, b = _budgets(np.random.default_rng(n), n, shift=0.5 / 255)
    d = a.budgets - b.budgets
    sign = budget_primary(a, b)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    assert sign.test is PrimaryTest.SIGN and sign.p == pytest.approx(binomtest(pos, pos + neg).pvalue)
    assert (sign.estimate, sign.ci_low, sign.ci_high) == pytest.approx(hodges_lehmann(d)[:3])
    ranked = budget_primary(a, b, PrimaryTest.SIGNED_RANK)
    magnitudes = np.abs(d[d != 0])
    untied = np.unique(magnitudes).size == magnitudes.size
    method = "exact" if pos + neg <= 50 and untied else "approx"  # the library's choice (rank_tests)
    assert ranked.p == pytest.approx(wilcoxon(d, zero_method="wilcox", method=method).pvalue, rel=1e-9)
    assert sign.n == n and sign.higher_is_better


def test_grid_budgets_get_the_median_difference_and_other_tests_are_refused():
    rng = np.random.default_rng(3)
    a, b = (
        worst_case_budgets([GridBudgets("pgd", GRID, rng.random((4, 60)) < p)], clean_correct=np.ones(60, bool))
        for p in (0.2, 0.5)
    )
    found = budget_primary(a, b)
    assert found.estimate == np.median(a.budgets - b.budgets) and found.ci_low <= found.estimate <= found.ci_high
    with pytest.raises(ValueError, match="sign test, Wilcoxon signed-rank"):
        budget_primary(a, b, PrimaryTest.MCNEMAR)


def test_fixed_budget_primary_is_mcnemar_on_worst_case_robust_accuracy():
    a, b = _budgets(np.random.default_rng(5), 300, shift=0.3 / 255)
    found = fixed_budget_primary(a, b, 2 / 255)
    ra, rb = a.censored | (a.budgets > 2 / 255), b.censored | (b.budgets > 2 / 255)
    x, y = int((ra & ~rb).sum()), int((~ra & rb).sum())
    assert found.estimate == pytest.approx((x - y) / 300) and found.p == pytest.approx(binomtest(x, x + y).pvalue)
    assert found.ci_low < found.estimate < found.ci_high and found.test is PrimaryTest.MCNEMAR


def test_mean_difference_primary_is_the_paired_t_test():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.5, 0.1, 40), rng.normal(0.47, 0.1, 40)
    found = mean_difference_primary(a - b, higher_is_better=False)
    assert found.p == pytest.approx(ttest_rel(a, b).pvalue) and found.estimate == pytest.approx((a - b).mean())
    assert not found.higher_is_better and math.isnan(mean_difference_primary(np.ones(5), higher_is_better=False).p)


@pytest.mark.parametrize("alexnet", [True, False])
def test_mce_image_differences_average_to_the_mce_difference(alexnet):
    rng = np.random.default_rng(11)
    names = list(ALEXNET_ERRORS)[:4]
    wrong_a, wrong_b = (rng.random((4, 5, 50)) < p for p in (0.4, 0.5))
    reference = np.array([ALEXNET_ERRORS[c] for c in names]) if alexnet else None

    def mce(wrong):
        errors = wrong.mean(axis=2)
        refs = reference if alexnet else [None] * 4
        pairs = zip(errors, refs, strict=True)
        return mean_corruption_error(corruption_error(list(e), None if r is None else list(r)) for e, r in pairs)

    d = mce_image_differences(wrong_a, wrong_b, reference)
    assert d.shape == (50,) and d.mean() == pytest.approx(mce(wrong_a) - mce(wrong_b))


def test_accuracy_and_auroc_primaries_wrap_mcnemar_and_delong():
    rng = np.random.default_rng(13)
    a, b = rng.random(200) < 0.7, rng.random(200) < 0.6
    found = accuracy_primary(a, b)
    x, y = int((a & ~b).sum()), int((~a & b).sum())
    assert found.p == pytest.approx(binomtest(x, x + y).pvalue)
    ood = rng.random(200) < 0.3
    sa, sb = rng.normal(size=200) + ood, rng.normal(size=200) + 0.5 * ood
    auc = auroc_primary(sa, sb, ood)
    assert (auc.estimate, auc.p) == pytest.approx(tuple(paired_auroc(sa, sb, ood).__dict__.values())[::3])


def test_overestimates_count_images_a_fixed_budget_attack_broke_below_the_minimal_budget():
    fmn = MinimalNormBudgets("fmn", np.array([1.5, 3, 4.5, 6, 2, 0]) / 255, np.array([0, 0, 0, 1, 0, 0], bool), 6 / 255)
    pgd = GridBudgets("pgd", GRID, _grid([2 / 255, 2 / 255, 4 / 255, 4 / 255, None, 1 / 255]))
    found = overestimates(fmn, [pgd])
    # over: image 1 (3 > 2), 2 (4.5 > 4), 3 (censored above 6, broken at 4); by > 25 %: 1 (+50 %) and 3
    # (6/4 = 1.5 already); image 2 is 12.5 % over, image 0 below the budget, 4 never broken, 5 misclassified.
    assert (found.n, found.over, found.over_by_margin, found.margin) == (6, 3, 2, 0.25)


def test_hodges_lehmann_side_is_the_side_of_its_interval():
    rng = np.random.default_rng(17)
    for _ in range(80):
        n = int(rng.integers(1, 90))
        d = np.round(rng.normal(rng.normal(0, 0.4), 1, n) * rng.choice([1, 4, 100])) / 4
        d[rng.random(n) < 0.2] = 0
        _, low, high, _ = hodges_lehmann(d)
        assert hodges_lehmann_side(d) == (1 if low > 0 else -1 if high < 0 else 0)


def test_vectorised_mcnemar_equals_the_exact_test():
    x, y = np.meshgrid(np.arange(0, 40, 3), np.arange(0, 40, 2))
    expected = np.vectorize(mcnemar_exact)(x, y)
    assert _mcnemar_p(x, y) == pytest.approx(expected, rel=1e-12)


def _primary(estimate: float, p: float, higher_is_better: bool = True, half: float = 0.01) -> Primary:
    return Primary(PrimaryTest.SIGN, estimate, estimate - half, estimate + half, p, 200, higher_is_better)


def test_holm_runs_across_the_claims_present_only():
    primaries = {
        ClaimName.ROBUSTNESS: _primary(0.02, 0.01),
        ClaimName.CORRUPTIONS: _primary(-0.03, 0.02, higher_is_better=False),
        ClaimName.COLLAPSE: _primary(0.05, 0.03, higher_is_better=False),
        ClaimName.OOD: None,
    }
    found = judge_claims(primaries)
    assert [r.p_holm for r in found[:3]] == pytest.approx(list(holm_adjust([0.01, 0.02, 0.03])))
    assert [r.status for r in found] == [
        PrimaryStatus.SUPPORTED,  # 0.03 < 0.05, above 0
        PrimaryStatus.SUPPORTED,  # lower mCE is better
        PrimaryStatus.CONTRADICTED,  # higher token cosine: more collapsed
        PrimaryStatus.NOT_RUN,
    ]
    assert found[3].reason is StatusReason.NOT_MEASURED and math.isnan(found[3].p_holm)
    assert found[0].adaptive is Adaptive.NOT_RUN and found[1].adaptive is Adaptive.NOT_APPLICABLE


def test_inconclusive_when_not_significant_or_the_interval_covers_zero():
    found = judge_claims({"a": _primary(0.02, 0.2), "b": _primary(0.001, 0.001)})
    assert [(r.status, r.reason) for r in found] == [
        (PrimaryStatus.INCONCLUSIVE, StatusReason.NOT_SIGNIFICANT),
        (PrimaryStatus.INCONCLUSIVE, StatusReason.INTERVAL_DISAGREES),
    ]


def test_the_adaptive_condition_is_an_intersection_union_test():
    detach, corruptions = _primary(0.02, 0.001), {ClaimName.CORRUPTIONS: _primary(-0.1, 0.3, False, half=0.2)}
    passed = judge_claims(
        {ClaimName.ROBUSTNESS: detach, **corruptions}, adaptive={ClaimName.ROBUSTNESS: _primary(0.015, 0.004)}
    )
    assert passed[0].p == 0.004 and passed[0].p_holm == pytest.approx(0.008)  # max, then Holm with m = 2
    assert (passed[0].status, passed[0].adaptive) == (PrimaryStatus.SUPPORTED, Adaptive.PASSED)
    assert passed[0].adaptive_primary.p == 0.004 and passed[0].estimate == 0.02
    failed = judge_claims(
        {ClaimName.ROBUSTNESS: detach, **corruptions}, adaptive={ClaimName.ROBUSTNESS: _primary(0.01, 0.2)}
    )
    assert (failed[0].status, failed[0].adaptive) == (PrimaryStatus.INCONCLUSIVE, Adaptive.FAILED)
    flipped = judge_claims({ClaimName.ROBUSTNESS: detach}, adaptive={ClaimName.ROBUSTNESS: _primary(-0.02, 0.001)})
    assert (flipped[0].status, flipped[0].reason) == (PrimaryStatus.INCONCLUSIVE, StatusReason.MODES_DISAGREE)
    weak = judge_claims(
        {ClaimName.ROBUSTNESS: _primary(0.02, 0.3)}, adaptive={ClaimName.ROBUSTNESS: _primary(0.02, 0.001)}
    )
    assert weak[0].adaptive is Adaptive.NOT_REACHED
    with pytest.raises(ValueError, match="robustness claim"):
        judge_claims({ClaimName.COLLAPSE: detach}, adaptive={ClaimName.COLLAPSE: detach})
    with pytest.raises(ValueError, match="robustness claim"):
        judge_claims({ClaimName.COLLAPSE: detach}, adaptive={ClaimName.PATCH_ROBUSTNESS: detach})


def test_each_robustness_claim_has_its_own_adaptive_condition():
    detach, patches = _primary(0.02, 0.001), _primary(0.1, 0.002)
    found = judge_claims(
        {ClaimName.ROBUSTNESS: detach, ClaimName.PATCH_ROBUSTNESS: patches},
        adaptive={ClaimName.PATCH_ROBUSTNESS: _primary(0.1, 0.3)},
    )
    assert found[0].adaptive is Adaptive.NOT_RUN and found[0].status is PrimaryStatus.SUPPORTED
    assert (found[1].status, found[1].adaptive) == (PrimaryStatus.INCONCLUSIVE, Adaptive.FAILED)
    assert found[1].p == 0.3 and found[1].adaptive_primary.p == 0.3


def test_the_simulation_judges_budgets_as_the_library_does():
    shape = RunShape(n=120)
    rng = np.random.default_rng(19)
    latent = _latent(rng, shape, 3)
    a, b = _model(rng, shape, latent, Alternative(shift=0.5 / 255)), _model(rng, shape, latent, Alternative())
    for modes in worst_cases(a, b, shape):
        for wa, wb in modes:
            for test in (PrimaryTest.SIGN, PrimaryTest.SIGNED_RANK):
                p, side = budget_endpoint(test)(wa, wb)
                found = budget_primary(wa, wb, test)
                assert p == found.p and side == (1 if found.ci_low > 0 else -1 if found.ci_high < 0 else 0)


def _check_level(runs: int, seed: int) -> None:
    """Every rule's rate of any claim reading supported or contradicted under the null, against α = 0.05:
    at most the 99.9 % binomial quantile of runs at rate 0.05 (a rule at 0.1 fails this with few runs)."""
    found = simulate(RunShape(n=100), runs, seed=seed)
    limit = binom.ppf(0.999, runs, 0.05)
    for name, decided in found.claim_any.items():
        assert decided.sum() <= limit, f"{name}: {decided.sum()} of {runs} null runs decided a claim"


def test_the_claim_rule_keeps_its_family_wise_level_under_the_null():
    _check_level(runs=120, seed=23)


@pytest.mark.slow
def test_the_claim_rule_keeps_its_family_wise_level_over_2000_null_runs():
    found = simulate(RunShape(n=200), 2000, seed=29)
    for name, decided in found.claim_any.items():
        ci = binomtest(int(decided.sum()), decided.size).proportion_ci(method="exact")
        assert decided.mean() <= 0.05 and ci.low < 0.05, f"{name}: {decided.mean():.3f}"


def test_the_simulated_claim_rule_detects_a_large_shift():
    found = simulate(RunShape(n=100), 20, seed=31, alternative=Alternative(shift=1 / 255))
    for name, supported in found.claim_robust.items():
        assert supported.mean() >= 0.8, name
