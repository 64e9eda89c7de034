"""The patch threat model in a run: --patches, which patches were attacked, the minimal number of patches,
and the patch robustness claim that reads it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ellrobust
from ellrobust.core.errors import UsageError
from ellrobust.measures.minimal_patches import minimal_patch_rows
from ellrobust.measures.patch_probe import attacked_patches, member
from ellrobust.measures.primary_claims import primaries
from ellrobust.report.writer import write_report
from ellrobust.request.build import build_config
from ellrobust.request.spec import Caller
from ellrobust.request.suites import load_suite
from ellrobust.results import Metric, Outcomes
from ellrobust.results.per_image import examples_frame, load_examples, save_examples
from ellrobust.stats.claim_family import ClaimName

QUICK_PATCH = {"positions": 1, "steps": 3, "step_size": 0.2}


def _config(**given):
    return build_config({"models": ["deit"], **given}, Caller.CLI, default_collapse=None)


def test_patches_sets_the_budgets_of_the_patch_attacks_alone():
    config = _config(attacks="pgd,patch-fool", patches="1,3", eps="2/255")
    assert config.patches == (1.0, 3.0) and config.eps == (2 / 255,)
    with pytest.raises(
        UsageError, match=r"--patches must be whole numbers of patches ≥ 1, such as 1,2,4 \(got '1,x'\)"
    ):
        _config(attacks="patch", patches="1,x")
    with pytest.raises(UsageError, match="--patches must be whole numbers of patches ≥ 1"):
        _config(attacks="patch", patches="0")
    with pytest.raises(UsageError, match="none is asked for; add one"):
        _config(attacks="pgd", patches="1,2")


def test_a_suite_sets_patches_and_the_command_line_replaces_a_patch_attacks_own(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(
        'patches = [2]\n[[attack]]\nname = "patch"\neps = [1, 4]\n[[attack]]\nname = "pgd"\neps = ["1/255"]\n'
    )
    assert load_suite(suite).patches == (2.0,)
    kept = _config(suite=str(suite))
    assert [(a.name, a.eps) for a in kept.attacks] == [("patch", (1.0, 4.0)), ("pgd", (1 / 255,))]
    replaced = _config(suite=str(suite), patches="3")
    assert [(a.name, a.eps) for a in replaced.attacks] == [("patch", None), ("pgd", (1 / 255,))]
    pixels = _config(suite=str(suite), eps="2/255")  # --eps leaves the patch budgets alone
    assert [(a.name, a.eps) for a in pixels.attacks] == [("patch", (1.0, 4.0)), ("pgd", None)]


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    return ellrobust.evaluate(
        ["deit-elliptical", "deit"],
        attacks={"patch": QUICK_PATCH, "patch-fool": {"steps": 3}},
        patches="1,2",
        n=10,
        save_adversarial=True,
        out=tmp_path_factory.mktemp("patches") / "run",
    )


def test_a_run_records_which_patches_each_attack_changed(patched):
    ex = patched.examples
    fool = ex[(ex["method"] == "patch-fool") & (ex["model"] == "deit")]
    at_one = fool[fool["eps"] == 1.0]
    # Patch-Fool rewrites exactly the one patch it selected, on every image it attacked (all are clean-correct).
    counts = at_one["attacked_patch"].map(lambda s: len(s.split()))
    assert (counts == 1).all() and at_one["attacked_patch"].map(lambda s: 0 <= int(s) < 64).all()
    at_two = fool[fool["eps"] == 2.0].set_index("index")
    for index, tokens in at_one.set_index("index")["attacked_patch"].items():
        if at_two.loc[index, "correct"] == 0 and len(at_two.loc[index, "attacked_patch"].split()) == 1:
            assert at_two.loc[index, "attacked_patch"] == tokens  # fooled at one patch: nested, its patch kept
    assert (ex[ex["method"] == "clean"]["attacked_patch"] == "").all()


def test_the_run_has_each_models_minimal_number_of_patches_and_the_patch_claim(patched):
    df = patched.table
    medians = df[df["metric"] == Metric.MINIMAL_PATCHES_MEDIAN.value]
    assert set(medians["model"]) == {"deit", "deit-elliptical"} and medians["value"].between(0, 2).all()
    claims = {c.name: c for c in patched.verdict}
    assert ClaimName.PATCH_ROBUSTNESS.value in claims
    assert ClaimName.ROBUSTNESS.value not in claims  # no pixel attack ran
    endpoint = claims[ClaimName.PATCH_ROBUSTNESS.value].endpoint
    assert endpoint.test == "sign test" and "number of patches over patch, patch-fool" in endpoint.what


def test_attacked_patches_survive_the_examples_file(tmp_path):
    outcomes = [
        Outcomes(
            model="a", method="patch", eps=1.0, columns={"correct": [1, 0], member(0): [3, 5], member(1): [-1, 6]}
        ),
        Outcomes(model="a", method="clean", columns={"correct": [1, 1]}),
    ]
    save_examples(examples_frame(outcomes, [10, 11]), tmp_path)
    assert load_examples(tmp_path)["attacked_patch"].tolist() == ["3", "5 6", "", ""]
    assert attacked_patches(outcomes[0].columns) == [[3], [5, 6]]


def _patch_outcomes(model: str, broken_at: list[float | None], m_grad: str = "") -> list[Outcomes]:
    """A model's clean and patch-attack outcomes: image i first broken at ``broken_at[i]`` patches."""
    out = [Outcomes(model=model, method="clean", columns={"correct": [True] * len(broken_at)})]
    for k in (1.0, 2.0, 4.0):
        robust = [b is None or b > k for b in broken_at]
        out.append(Outcomes(model=model, method="patch-fool", params=json.dumps({"steps": 3}), eps=k, m_grad=m_grad,
                            columns={"correct": robust}))  # fmt: skip
    return out


def test_the_minimal_number_of_patches_and_its_sign_test():
    ell = [2.0] * 12 + [None] * 2 + [1.0] * 2  # needs more patches on 14 images, fewer on none, ties on 2
    base = [1.0] * 16
    outcomes = _patch_outcomes("e", ell, "detach") + _patch_outcomes("b", base)
    rows = minimal_patch_rows(outcomes)
    medians = {(r.model, r.m_grad): r.value for r in rows if r.metric == Metric.MINIMAL_PATCHES_MEDIAN}
    censored = {r.model: r.value for r in rows if r.metric == Metric.N_CENSORED}
    assert medians == {("e", "detach"): 2.0, ("b", ""): 1.0} and censored == {"e": 2.0, "b": 0.0}
    found = [r for r in primaries({"e": True, "b": False}, outcomes, [], 16) if r.metric == Metric.PRIMARY_P]
    assert len(found) == 1 and json.loads(found[0].params)["claim"] == ClaimName.PATCH_ROBUSTNESS.value
    assert found[0].value == pytest.approx(2 * 0.5**14)  # exact sign test: 14 of 14 untied favour e
    estimate = next(
        r for r in primaries({"e": True, "b": False}, outcomes, [], 16) if r.metric == Metric.PRIMARY_ESTIMATE
    )
    assert estimate.value == pytest.approx(14 / 16) and estimate.m_grad == "detach"


def test_pixel_and_patch_budgets_are_separate_claims():
    pixel = [
        Outcomes(model=m, method="pgd", params=json.dumps({"steps": 1}), eps=0.01, m_grad=mg,
                 columns={"correct": np.arange(16) % 2 == 0})
        for m, mg in (("e", "detach"), ("b", ""))
    ]  # fmt: skip
    outcomes = _patch_outcomes("e", [2.0] * 16, "detach") + _patch_outcomes("b", [1.0] * 16) + pixel
    claims = {json.loads(r.params)["claim"] for r in primaries({"e": True, "b": False}, outcomes, [], 16)}
    assert claims == {ClaimName.ROBUSTNESS.value, ClaimName.PATCH_ROBUSTNESS.value}


def test_the_report_has_a_patch_section_and_keeps_patches_out_of_the_pixel_tables(patched, tmp_path):
    text = write_report([patched.run_dir], tmp_path / "report").read_text()
    patch_part = text[text.index("## Patch attacks") : text.index("## Corruptions")]
    assert "| 1 patch | 2 patches |" in patch_part and "median patches" in patch_part
    for figure in ("patch_accuracy", "patch_map", "patch_gallery"):
        assert f"figures/{figure}.png" in patch_part and (tmp_path / "report" / "figures" / f"{figure}.png").is_file()
    assert "255/255" not in text and "510/255" not in text  # a number of patches never reads as a pixel budget
    assert "patch robustness, deit-elliptical vs deit" in text


def test_the_report_command_reads_a_patch_run_on_its_own(patched, tmp_path):
    """``ellrobust report`` in a fresh process, where no measure module is imported: the patch rows'
    metrics must be known to the report's floor."""
    out = tmp_path / "alone"
    done = subprocess.run(
        [sys.executable, "-m", "ellrobust", "report", str(patched.run_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "## Patch attacks" in text and "median patches" in text
