"""The verdict: one claim per primary endpoint, Holm across the pair's claims, the adaptive condition.

:func:`~ellrobust.verdict.rules.claims` reads the primaries a run recorded (rows ``method ==
"primary"``, :mod:`ellrobust.measures.primary_claims`) and returns data; the tests build those rows
with the function the run writes them with, and read the numbers and, where the words matter, the
line the renderers write (:func:`ellrobust.report.claim_sentences.claim_line`).
"""

from __future__ import annotations

import math

import pytest
from fake_results import BASELINE, ELLIPTICAL, MODELS, simulate
from rich.console import Console

from ellrobust.cli.terminal import measure_table, verdict
from ellrobust.measures.primary_claims import estimate_rows
from ellrobust.report.claim_sentences import claim_line
from ellrobust.results import to_frame
from ellrobust.stats.claim_family import Adaptive
from ellrobust.stats.inference import holm_adjust
from ellrobust.stats.primary_endpoints import Primary, PrimaryTest
from ellrobust.verdict.claim_types import ClaimStatus
from ellrobust.verdict.results_view import prepare
from ellrobust.verdict.rules import claims, elliptical_models, unmeasured

N = 500
BASE = {"dataset": "digits", "split": "test", "n": N, "seed": 0}
_UNITS = {"adversarial robustness": "pixels", "corruptions": "ratio", "collapse": "cosine", "OOD detection": "auroc"}
_HIGHER = {"adversarial robustness": True, "corruptions": False, "collapse": False, "OOD detection": True}


def primary(claim, estimate, low, high, p, *, m_grad="", n=N) -> list[dict]:
    """The rows of one primary, elliptical − baseline, as the run writes them."""
    test = PrimaryTest.SIGN if claim == "adversarial robustness" else PrimaryTest.PAIRED_T
    found = Primary(test, estimate, low, high, p, n, _HIGHER[claim])
    params = {"claim": claim, "what": "x", "unit": _UNITS[claim], "higher_is_better": _HIGHER[claim]}
    return [{**BASE, **r.as_dict()} for r in estimate_rows(ELLIPTICAL, BASELINE, params, found, m_grad=m_grad)]


def table(*groups: list[dict]):
    return prepare(to_frame([r for group in groups for r in group]))


def only(found):
    assert len(found) == 1, found
    return found[0]


def test_a_clear_win_is_supported_and_a_clear_loss_contradicted():
    win = only(claims(table(primary("adversarial robustness", 0.01, 0.004, 0.02, 0.0001)), MODELS))
    assert win.status is ClaimStatus.SUPPORTED and win.family_size == 1 and win.n_needed is None
    loss = only(claims(table(primary("corruptions", 0.03, 0.01, 0.05, 0.001)), MODELS))  # higher mCE: worse
    assert loss.status is ClaimStatus.CONTRADICTED


def test_holm_runs_across_the_claims_of_a_pair():
    ps = {"adversarial robustness": 0.02, "corruptions": 0.03, "collapse": 0.04}
    df = table(
        primary("adversarial robustness", 0.01, 0.001, 0.02, ps["adversarial robustness"]),
        primary("corruptions", -0.02, -0.04, -0.001, ps["corruptions"]),
        primary("collapse", -0.05, -0.09, -0.001, ps["collapse"]),
    )
    found = claims(df, MODELS)
    adjusted = holm_adjust(list(ps.values()))
    assert [c.name for c in found] == list(ps)
    assert [c.result.p_holm for c in found] == pytest.approx(list(adjusted))
    assert {c.family_size for c in found} == {3}
    # each p alone is below α, none survives Holm over three claims: all inconclusive, with the images needed
    assert {c.status for c in found} == {ClaimStatus.INCONCLUSIVE}
    assert all(c.n_needed is not None and c.n_needed > N for c in found)


def test_a_significant_p_with_an_interval_across_zero_decides_nothing():
    c = only(claims(table(primary("collapse", -0.01, -0.03, 0.01, 0.001)), MODELS))
    assert c.status is ClaimStatus.INCONCLUSIVE


@pytest.mark.parametrize(
    ("full", "status", "adaptive"),
    [
        ((0.008, 0.002, 0.015, 0.001), ClaimStatus.SUPPORTED, Adaptive.PASSED),
        ((0.001, -0.004, 0.006, 0.6), ClaimStatus.INCONCLUSIVE, Adaptive.FAILED),
    ],
)
def test_robustness_is_decided_only_when_the_adaptive_attack_agrees(full, status, adaptive):
    df = table(
        primary("adversarial robustness", 0.01, 0.004, 0.02, 0.0001, m_grad="detach"),
        primary("adversarial robustness", *full, m_grad="full"),
    )
    c = only(claims(df, MODELS))
    assert c.status is status and c.adaptive is adaptive
    assert c.result.p == pytest.approx(max(0.0001, full[3]))  # the intersection-union p: no extra α
    assert "adaptive check (m_grad full)" in claim_line(c)


def test_without_m_grad_both_the_line_says_the_adaptive_check_was_not_run():
    c = only(claims(table(primary("adversarial robustness", 0.01, 0.004, 0.02, 0.0001, m_grad="detach")), MODELS))
    assert c.adaptive is Adaptive.NOT_RUN and "adaptive check not run (pass --m-grad both)" in claim_line(c)


def test_a_line_says_claim_endpoint_estimate_interval_p_holm_p_and_images_needed():
    c = only(claims(table(primary("collapse", -0.02, -0.05, 0.01, 0.2)), MODELS))
    line = claim_line(c)
    for part in ("collapse, deit-elliptical vs deit", "paired t on x", "-0.020 (95 % CI -0.050 … +0.010)", "p 0.2",
                 "Holm p 0.2 (m = 1)", "n = 500", "images would detect a difference of this size"):  # fmt: skip
        assert part in line, (part, line)


def test_no_difference_observed_states_no_number_of_images():
    c = only(claims(table(primary("collapse", 0.0, -0.02, 0.02, 1.0)), MODELS))
    assert c.n_needed is not None and math.isnan(c.n_needed) and "no difference observed" in claim_line(c)


def test_at_most_six_lines_per_pair_and_only_elliptical_against_plain():
    groups = [primary(c, -0.01, -0.02, 0.01, 0.5) for c in ("corruptions", "collapse", "OOD detection")]
    groups.append(primary("adversarial robustness", 0.0, -0.01, 0.01, 1.0, m_grad="detach"))
    groups.append(primary("adversarial robustness", 0.0, -0.01, 0.01, 1.0, m_grad="full"))
    df = table(*groups)
    assert len(claims(df, MODELS)) == 4 <= 6
    assert claims(df, {}) == []
    assert claims(df, {ELLIPTICAL: True, BASELINE: True}) == []


def test_a_run_says_what_it_did_not_measure():
    df = simulate()
    patches = "patch robustness (`--attack patch-fool --patches 1,2,4`)"
    assert unmeasured(df) == [patches]
    patched = df.assign(method=df["method"].replace({"fgsm": "patch-fool"}))
    assert unmeasured(patched) == []
    assert unmeasured(patched.assign(metric=df["metric"].replace({"mce": "x"}))) == ["corruptions (`--corruption all`)"]
    only_patches = df.assign(method=df["method"].replace({"fgsm": "patch-fool", "pgd": "patch"}))
    only_patches = only_patches[only_patches["method"] != "worst-case"]
    assert "adversarial robustness (`--attack`)" in unmeasured(only_patches)


def test_elliptical_models_come_from_run_json():
    meta = {"models": {ELLIPTICAL: {"elliptical": True}, BASELINE: {"elliptical": False}, "odd": "?"}}
    assert elliptical_models(meta) == MODELS


def render(renderable) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def test_cli_paired_table_shows_holm_and_power():
    text = render(measure_table(simulate(), "paired"))
    assert "Holm p" in text and "detectable" in text and "n needed" in text
    assert "yes (A)" in text and "{" not in text
    assert "Paired differences per corruption and severity" in text  # the corruption cells in a table of their own


def test_cli_verdict_prints_one_line_per_claim():
    df = table(
        primary("adversarial robustness", 0.01, 0.002, 0.02, 0.001), primary("collapse", -0.05, -0.08, -0.02, 0.01)
    )
    text = render(verdict(df, MODELS))
    lines = [line for line in text.splitlines() if line.startswith(("supported", "contradicted", "inconclusive"))]
    assert len(lines) == len(claims(df, MODELS)) == 2
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
