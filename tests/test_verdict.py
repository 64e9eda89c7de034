"""The verdict: a claim reads supported only when the Holm-adjusted test and the interval both support it.

:func:`~ellrobust.verdict.rules.claims` returns data; the tests read its numbers and, where the words
matter, the text the renderers write from them (:mod:`ellrobust.report.claim_sentences`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
from fake_results import BASELINE, ELLIPTICAL, MODELS, PGD, Scenario, simulate
from rich.console import Console

from ellrobust.cli.terminal import measure_table, verdict
from ellrobust.report.claim_sentences import claim_text, evidence_text
from ellrobust.report.legend import build_labels
from ellrobust.results import to_frame
from ellrobust.stats.decisions import Favours
from ellrobust.verdict.claim_types import Claim, ClaimKind, ClaimStatus, Reason
from ellrobust.verdict.results_view import prepare
from ellrobust.verdict.rules import claims, elliptical_models

N = 500
BASE = {"dataset": "digits", "split": "test", "n": N, "seed": 0}


def budget(
    eps: float,
    diff: float,
    low: float,
    high: float,
    p: float,
    p_adj: float | None,
    *,
    method: str = "pgd",
    m_grad: str = "detach",
    precision: str = "fp32",
    flip: bool = False,
    n_required: float = float("nan"),
) -> list[dict]:
    """The paired rows of one attack budget, elliptical − baseline (``flip``: written as baseline − elliptical)."""
    model, baseline, sign = (BASELINE, ELLIPTICAL, -1) if flip else (ELLIPTICAL, BASELINE, 1)
    lo, hi = (-high, -low) if flip else (low, high)
    common = {
        **BASE,
        "model": model,
        "baseline": baseline,
        "method": method,
        "params": PGD if method == "pgd" else "{}",
        "eps": eps / 255,
        "m_grad": m_grad,
        "precision": precision,
    }
    values = {
        "accuracy_difference": sign * diff,
        "difference_ci_low": lo,
        "difference_ci_high": hi,
        "mcnemar_p": p,
        "detectable_difference": 0.06,
        "n_required": n_required,
    }
    if p_adj is not None:
        values["mcnemar_p_adjusted"] = p_adj
    return [{**common, "metric": m, "value": v} for m, v in values.items()]


@dataclass(frozen=True)
class Said:
    """A claim with the words the renderers write for it."""

    data: Claim
    claim: str
    evidence: str

    @property
    def status(self) -> ClaimStatus:
        return self.data.status

    @property
    def models(self) -> tuple[str, str]:
        return self.data.models


def judge(*rows: list[dict]) -> list[Said]:
    df = prepare(to_frame([r for group in rows for r in group]))
    labels = build_labels(df)
    return [Said(c, claim_text(c, labels), evidence_text(c, labels)) for c in claims(df, MODELS)]


def only(found: list[Said]) -> Said:
    assert len(found) == 1, found
    return found[0]


def test_clear_win_with_adjusted_p_below_alpha_is_supported():
    c = only(judge(budget(2, 0.12, 0.06, 0.18, 1e-5, 1e-4), budget(4, 0.02, -0.03, 0.07, 0.4, 0.8)))
    assert c.status is ClaimStatus.SUPPORTED
    assert c.claim == f"{ELLIPTICAL} is more robust than {BASELINE} under pgd (m_grad detach, fp32)"
    assert "n = 500" in c.evidence and "ε 2/255: +12.0 pp" in c.evidence and "Holm p 0.0001" in c.evidence
    assert c.models == (ELLIPTICAL, BASELINE)
    [attack] = c.data.attacks
    first, second = attack.budgets
    assert c.data.n == 500 and attack.setting.method == "pgd" and attack.setting.m_grad == "detach"
    assert (first.difference, first.ci_low, first.ci_high, first.p_adjusted) == (0.12, 0.06, 0.18, 1e-4)
    assert first.favours is Favours.A and second.favours is Favours.NEITHER


def test_unadjusted_p_below_alpha_but_adjusted_above_is_not_supported():
    c = only(judge(budget(2, 0.08, 0.01, 0.15, 0.02, 0.12, n_required=1234)))
    assert c.status is ClaimStatus.INCONCLUSIVE
    assert "no budget significant after Holm" in c.evidence
    assert "this run detects differences of 6.0 pp" in c.evidence
    assert "needs about 1234 images" in c.evidence  # how many images a difference of the observed size needs
    assert c.data.reason is Reason.NOT_SIGNIFICANT
    assert c.data.power.detectable == (0.06, 0.06) and c.data.power.largest.n_required == 1234


def test_adjusted_p_below_alpha_with_an_interval_across_zero_is_not_supported():
    assert only(judge(budget(2, 0.05, -0.01, 0.11, 0.001, 0.01))).status is ClaimStatus.INCONCLUSIVE


def test_significant_loss_is_contradicted_and_mixed_directions_are_inconclusive():
    loss = budget(2, -0.10, -0.16, -0.04, 1e-4, 1e-3)
    assert only(judge(loss)).status is ClaimStatus.CONTRADICTED
    mixed = only(judge(loss, budget(4, 0.10, 0.04, 0.16, 1e-4, 1e-3)))
    assert mixed.status is ClaimStatus.INCONCLUSIVE and "significant in both directions" in mixed.evidence


def test_rows_written_baseline_minus_elliptical_are_turned_around():
    c = only(judge(budget(2, 0.12, 0.06, 0.18, 1e-5, 1e-4, flip=True)))
    assert c.status is ClaimStatus.SUPPORTED
    assert "+12.0 pp (95 % CI +6.0 … +18.0" in c.evidence


def test_a_run_without_adjusted_p_is_not_judged():
    c = only(judge(budget(2, 0.30, 0.2, 0.4, 1e-12, None)))
    assert c.status is ClaimStatus.INCONCLUSIVE
    assert "not judged" in c.evidence and "mcnemar_p_adjusted" in c.evidence


def test_one_line_per_attack_m_grad_and_precision():
    found = judge(
        budget(2, 0.12, 0.06, 0.18, 1e-5, 1e-4),
        budget(2, 0.12, 0.06, 0.18, 1e-5, 1e-4, precision="bf16"),
        budget(2, 0.12, 0.06, 0.18, 1e-5, 1e-4, method="fgsm"),
    )
    assert [c.claim.split(" under ")[1] for c in found] == [
        "pgd (m_grad detach, fp32)",
        "pgd (m_grad detach, bf16)",
        "fgsm (m_grad detach, fp32)",
    ]


@pytest.mark.parametrize(
    ("full", "expected"),
    [
        (budget(2, 0.09, 0.03, 0.15, 1e-4, 1e-3, m_grad="full"), ClaimStatus.SUPPORTED),
        (budget(2, 0.03, -0.03, 0.09, 0.2, 0.6, m_grad="full"), ClaimStatus.INCONCLUSIVE),
        (budget(2, -0.09, -0.15, -0.03, 1e-4, 1e-3, m_grad="full"), ClaimStatus.CONTRADICTED),
    ],
)
def test_adaptive_attack_is_judged_on_the_full_rows_of_supported_attacks(full, expected):
    found = judge(budget(2, 0.12, 0.06, 0.18, 1e-5, 1e-4), full)
    adaptive = [c for c in found if "adaptive" in c.claim]
    assert only(adaptive).status is expected
    assert (
        only(adaptive).claim == f"{ELLIPTICAL}'s advantage over {BASELINE} survives the adaptive attack (m_grad full)"
    )


def test_adaptive_attack_without_an_advantage_to_keep_is_inconclusive():
    found = judge(budget(2, 0.01, -0.05, 0.07, 0.7, 1.0), budget(2, 0.09, 0.03, 0.15, 1e-4, 1e-3, m_grad="full"))
    adaptive = only([c for c in found if "adaptive" in c.claim])
    assert adaptive.status is ClaimStatus.INCONCLUSIVE and "none to survive" in adaptive.evidence
    assert adaptive.data.reason is Reason.NOTHING_TO_SURVIVE and adaptive.evidence.startswith("n = 500; ")


def mce_rows(diff: float | None, low: float = float("nan"), high: float = float("nan")) -> list[dict]:
    params = json.dumps({"normalization": "none"})
    rows = [
        {**BASE, "model": m, "method": "mce", "params": params, "metric": "mce", "value": v}
        for m, v in ((ELLIPTICAL, 0.40), (BASELINE, 0.45))
    ]
    if diff is not None:
        common = {**BASE, "model": ELLIPTICAL, "baseline": BASELINE, "method": "mce", "params": params}
        rows += [
            {**common, "metric": m, "value": v}
            for m, v in (("mce_difference", diff), ("mce_difference_ci_low", low), ("mce_difference_ci_high", high))
        ]
    return rows


@pytest.mark.parametrize(
    ("rows", "expected", "says"),
    [
        (mce_rows(-0.05, -0.08, -0.02), ClaimStatus.SUPPORTED, "95 % paired bootstrap CI -0.080 … -0.020"),
        (mce_rows(0.05, 0.02, 0.08), ClaimStatus.CONTRADICTED, "difference +0.050"),
        (mce_rows(-0.01, -0.04, 0.02), ClaimStatus.INCONCLUSIVE, "images to detect"),
        (mce_rows(None), ClaimStatus.INCONCLUSIVE, "not judged"),
    ],
)
def test_mce_claim_follows_the_bootstrap_interval(rows, expected, says):
    c = only(judge(rows))
    assert c.claim.startswith(f"{ELLIPTICAL} has a lower unnormalised mCE than {BASELINE}")
    assert c.status is expected and says in c.evidence
    assert f"{ELLIPTICAL} 0.400, {BASELINE} 0.450" in c.evidence
    assert c.data.kind is ClaimKind.MCE and c.data.estimate.values == ((ELLIPTICAL, 0.40), (BASELINE, 0.45))


def test_an_inconclusive_interval_says_how_many_images_a_difference_of_its_size_needs():
    estimate = only(judge(mce_rows(-0.01, -0.04, 0.02))).data.estimate
    # the half-width 0.03 shrinks as 1/√n to 0.01 · 1.96 / (1.96 + 0.84) at 80 % power
    assert estimate.images_needed == math.ceil(N * ((1.959964 + 0.841621) / 1.959964) ** 2 * (0.03 / 0.01) ** 2)


def cosine_rows(diff: float, low: float, high: float) -> list[dict]:
    params = json.dumps({"cls": True, "feature": "residual", "layers": [3, 4, 5]})
    common = {**BASE, "method": "collapse", "params": params, "m_grad": ""}
    rows = [
        {**common, "model": m, "metric": "token_cosine", "value": v}
        for m, v in ((ELLIPTICAL, 0.5), (BASELINE, 0.5 - diff))
    ]
    paired = {
        **common,
        "params": json.dumps({"baseline_layers": [3, 4, 5], "cls": True, "feature": "residual", "layers": [3, 4, 5]}),
    }  # as the engine writes it
    rows += [
        {**paired, "model": ELLIPTICAL, "baseline": BASELINE, "metric": f"token_cosine_difference{s}", "value": v}
        for s, v in (("", diff), ("_ci_low", low), ("_ci_high", high))
    ]
    return rows


def test_collapse_claim_reads_the_later_half_summary():
    less = only(judge(cosine_rows(-0.05, -0.07, -0.03)))
    assert less.status is ClaimStatus.SUPPORTED and "layers 3–5, residual, cls" in less.claim
    assert only(judge(cosine_rows(0.05, 0.03, 0.07))).status is ClaimStatus.CONTRADICTED
    assert only(judge(cosine_rows(0.01, -0.01, 0.03))).status is ClaimStatus.INCONCLUSIVE


def test_identical_models_are_never_supported_or_contradicted():
    found = claims(simulate(Scenario(identical=True)), MODELS)
    # the simulated table has no minimal-norm method (its claims: tests/test_minimal_eval.py)
    assert {c.kind for c in found} == set(ClaimKind) - {ClaimKind.MINIMAL}, [c.kind for c in found]
    assert {c.status for c in found} == {ClaimStatus.INCONCLUSIVE}


def test_a_constructed_clear_win_is_supported_everywhere():
    found = claims(simulate(Scenario(attack_gain=0.3, corruption_gain=0.15, collapse_gain=0.2)), MODELS)
    assert len(found) == 9  # fgsm, pgd, worst-case × (detach, full), adaptive, mCE, collapse
    unsupported = [c for c in found if c.status is not ClaimStatus.SUPPORTED]
    assert not unsupported, unsupported


def test_only_elliptical_against_plain_pairs_are_judged():
    df = simulate()
    assert claims(df, {}) == []
    assert claims(df, {ELLIPTICAL: True, BASELINE: True}) == []
    assert (
        elliptical_models({"models": {ELLIPTICAL: {"elliptical": True}, BASELINE: {"elliptical": False}, "x": {}}})
        == MODELS
    )


def render(renderable) -> str:
    console = Console(record=True, width=400)
    console.print(renderable)
    return console.export_text()


def test_cli_paired_table_shows_holm_and_power():
    text = render(measure_table(simulate(), "paired"))
    assert "Holm p" in text and "detectable" in text and "n needed" in text
    assert "yes (A)" in text and "{" not in text
    assert "Paired differences per corruption and severity" in text  # the corruption cells in a table of their own


def test_cli_verdict_prints_one_line_per_claim():
    df = simulate()
    text = render(verdict(df, MODELS))
    lines = [line for line in text.splitlines() if line.startswith(("supported", "contradicted", "inconclusive"))]
    assert len(lines) == len(claims(df, MODELS)) == 9
    assert verdict(df, {}) is None


def test_cli_collapse_table_shows_intervals_and_differences():
    text = render(measure_table(simulate(), "collapse"))
    assert f"{ELLIPTICAL} − {BASELINE}" in text and "later half" in text
    assert "(0." in text and " … " in text  # intervals in parentheses, as in the report
    assert "on adversarial images and per head" in text
    df = simulate()
    assert measure_table(df[~df["metric"].str.startswith("token_cosine")], "collapse") is None


def test_cli_corruption_table_shows_the_mce_difference():
    text = render(measure_table(simulate(), "corruptions"))
    assert "mCE difference on the same images" in text and "95 % bootstrap CI" in text
    assert any(line.count("│") and "unnormalised" in line and "-0.0" in line for line in text.splitlines())
