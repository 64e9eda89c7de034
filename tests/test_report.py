"""``ellrobust report`` and ``eval --report``: every section, the verdict, valid PNG figures, safe markdown.

Two kinds of input: a tiny real run, and a hand-made table with chosen effects and every kind of row
(:mod:`fake_results`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fake_results import BASELINE, ELLIPTICAL, Scenario, run_json, simulate
from matplotlib.image import imread

from ellrobust.cli import app
from ellrobust.measures.primary_claims import primaries
from ellrobust.report.claim_sentences import claim_line
from ellrobust.report.document import always_present
from ellrobust.report.render_markdown import escape
from ellrobust.report.writer import write_report
from ellrobust.results import CORRECT, Outcomes, Row, load_examples, load_results, records, save_table, to_frame
from ellrobust.verdict.claim_types import ClaimStatus
from ellrobust.verdict.rules import RULES, claims

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "evil|<script>alert(1)</script>*_x_* $\\frac{"
CORRUPTIONS = ("gaussian_noise", "fog")


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory) -> tuple[Path, str]:
    """A tiny real run, written with ``--report`` (the hook ``eval`` calls), and what ``eval`` printed."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("run") / "tiny"
    args = ["eval", "-m", "deit-nano", "-m", "deit-nano-elliptical", "-d", "synthetic", "--attack", "fgsm,pgd"]
    args += ["--eps", "2/255,8/255", "--n", "16", "--m-grad", "both", "--out", str(out), "--report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result.stdout


@pytest.fixture(scope="module")
def run_dir(tiny_eval) -> Path:
    return tiny_eval[0]


def fake_run(path: Path, df=None) -> Path:
    """A run folder holding a hand-made table with every row the schema has."""
    path.mkdir(parents=True)
    save_table(simulate() if df is None else df, path)
    (path / "run.json").write_text(json.dumps(run_json()))
    return path


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("full")
    return write_report([fake_run(root / "run")], root / "report").parent


def section(text: str, title: str) -> str:
    """The body of one ``## title`` section."""
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def tables_in(text: str) -> list[list[str]]:
    """Every pipe table as its lines."""
    return [block.splitlines() for block in re.findall(r"(?:^\|.*\|\n)+", text, flags=re.M)]


def with_more_rows(src: Path, dst: Path, rename: dict[str, str] | None = None) -> Path:
    """A copy of a run plus fabricated corruption and collapse rows, built against the schema."""
    table = records(load_results(src))
    base = {k: table[0][k] for k in ("dataset", "split", "n", "seed")}
    extra = []
    for i, model in enumerate(("deit-nano", "deit-nano-elliptical")):
        for corruption in CORRUPTIONS:  # per severity, then the mean over severities (severity empty)
            for severity in (1, 2, 3, 4, 5, None):
                value = 0.9 - 0.15 * (severity or 3) + 0.05 * i
                extra.append(
                    {
                        **base,
                        "model": model,
                        "method": corruption,
                        "params": "{}",
                        "severity": severity,
                        "metric": "corruption_accuracy",
                        "value": value,
                    }
                )
        for reference in ({"normalization": "none"}, {"normalization": "baseline", "baseline": "deit-nano"}):
            ref = {
                "params": json.dumps({"normalization": reference["normalization"]}),
                "baseline": reference.get("baseline"),
            }
            for corruption in CORRUPTIONS:
                extra.append(
                    {**base, **ref, "model": model, "method": corruption, "metric": "ce", "value": 0.8 - 0.1 * i}
                )
            for metric in ("mce", "relative_mce"):
                extra.append({**base, **ref, "model": model, "method": "mce", "metric": metric, "value": 0.8 - 0.1 * i})
        for layer in range(3):
            extra.append(
                {
                    **base,
                    "model": model,
                    "method": "collapse",
                    "params": "{}",
                    "layer": layer,
                    "metric": "token_cosine",
                    "value": 0.2 + (0.3 - 0.1 * i) * layer,
                }
            )
    df = to_frame(table + extra)
    meta = json.loads((src / "run.json").read_text())
    for old, new in (rename or {}).items():
        df["model"] = df["model"].replace(old, new)
        df["baseline"] = df["baseline"].replace(old, new)
        meta["models"][new] = meta["models"].pop(old)
    dst.mkdir(parents=True)
    save_table(df, dst)
    (dst / "run.json").write_text(json.dumps(meta))
    return dst


def claim_lines(verdict: str) -> list[str]:
    """The verdict's claim lines (not the bullets of its rules)."""
    return [line for line in verdict.splitlines() if line.startswith(tuple(f"- **{s.value}**" for s in ClaimStatus))]


def headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("## ")]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_eval_report_writes_every_section(run_dir):
    text = (run_dir / "report.md").read_text()
    assert headings(text) == list(always_present())
    assert "| deit-nano |" in text and "ε 8/255" in text
    assert "Not measured in these runs; pass `--corruption" in text
    assert_png(run_dir / "figures" / "robust_accuracy.png")


def test_eval_prints_the_verdict_after_its_tables(tiny_eval):
    _, stdout = tiny_eval
    summary, verdict = stdout.split("Verdict", 1)
    assert "Summary" in summary and "Paired differences" not in summary  # every other table waits for --details
    assert "adversarial robustness, deit-nano-elliptical vs deit-nano: sign test" in verdict
    assert "supported:" not in verdict and "contradicted:" not in verdict  # 16 images: nothing survives Holm


def test_a_real_run_carries_the_intervals_into_the_report(run_dir):
    text = (run_dir / "report.md").read_text()
    assert "95 % Wilson" in section(text, "Clean accuracy") and "Holm p" in section(text, "Paired differences")
    assert "**supported**" not in section(text, "Verdict")  # 16 images of untrained models


def test_report_of_a_full_run_opens_with_the_verdict(full_report):
    text = (full_report / "report.md").read_text()
    assert headings(text) == list(always_present()) and headings(text)[:3] == ["Summary", "Verdict", "Contents"]
    assert text.splitlines().index("## Contents") < 60  # the answer fits the first screenful
    verdict = section(text, "Verdict")
    lines = claim_lines(verdict)
    assert len(lines) == 3  # one per claim: robustness (with its adaptive check), corruptions, collapse
    assert f"- **supported**: adversarial robustness, {ELLIPTICAL} vs {BASELINE}: sign test" in verdict
    assert all("n = 400" in line and "(m = 3)" in line for line in lines)
    assert "adaptive check (m_grad full): agrees" in lines[0]
    assert "Holm p" in verdict and "**Rules**" in verdict and "Holm across the claims" in verdict
    assert all(f"- {rule}" in verdict for rule in RULES)


def test_full_run_tables_use_the_runs_intervals_and_short_labels(full_report):
    text = (full_report / "report.md").read_text()
    assert "95 % Wilson" in section(text, "Clean accuracy") and "Wald" not in text
    headers = [t[0] for t in tables_in(text)]
    assert headers and not any("{" in h for h in headers), [h for h in headers if "{" in h]
    legend = section(text, "Setup").split("### Labels", 1)[1]
    assert "**pgd**: pgd with steps=10, step_size=0.25\\*eps" in legend
    assert "**worst-case**: per image, the worst case over fgsm, pgd (Linf)" in legend
    assert "**residual, cls**: tokens of the residual stream after each block, class token included" in legend
    robust = section(text, "Robust accuracy")
    assert "| pgd | deit-elliptical | detach | fp32 |" in robust and "(" in robust.split("| pgd | deit-elliptical |")[1]
    assert "precision** of the attack iterations: fp32" in text and "protocol cifar-10-c" in text


def test_paired_table_marks_holm_and_power_and_corruption_cells_go_to_the_appendix(full_report):
    text = (full_report / "report.md").read_text()
    paired = tables_in(section(text, "Paired differences"))[0]
    assert paired[0] == (
        "| A | B | comparison | ε | m_grad | precision | A − B (pp) | 95 % CI | McNemar p | Holm p | survives Holm "
        "| detectable | n needed |"
    )
    assert len(paired) == 2 + 1 + 3 * 3 * 2  # header, rule, clean, (fgsm, pgd, worst-case) × 3 ε × 2 m_grad
    assert any("| **yes (A)** |" in row for row in paired) and any("| no |" in row for row in paired)
    appendix = section(text, "Appendix: per-cell tables")
    cells = next(t for t in tables_in(appendix) if "| severity |" in t[0] and "Holm p" in t[0])
    assert len(cells) == 2 + 3 * 5
    assert "survives Holm" in text and "Holm's adjustment runs within each family" in appendix
    assert "<details><summary>Corruptions: per-cell tables</summary>" in appendix


def test_corruption_summary_heat_map_and_mce_difference(full_report):
    text = (full_report / "report.md").read_text()
    corruptions = section(text, "Corruptions")
    summary = tables_in(corruptions.split("### Summary per corruption", 1)[1])[0]
    assert summary[0].startswith(
        "| corruption | deit-elliptical (%) | deit (%) | deit-elliptical − deit (pp) "
        "| cells surviving Holm (A / B) | CE"
    )
    assert len(summary) == 2 + 3
    assert re.search(r"\| gaussian_noise \| \d+\.\d \(\d+\.\d–\d+\.\d\) \|", summary[2])
    assert re.search(r"\| \d / 0 of 5 \|", summary[2])
    assert "](figures/corruption_difference.png)" in corruptions
    assert_png(full_report / "figures" / "corruption_difference.png")
    assert "| deit-elliptical | deit | unnormalised |" in corruptions and "95 % bootstrap CI" in corruptions


def test_collapse_tables_show_intervals_differences_and_the_later_half(full_report):
    text = (full_report / "report.md").read_text()
    collapse = tables_in(section(text, "Representation collapse"))[0]
    assert collapse[0] == "| layer | deit-elliptical | deit | deit-elliptical − deit |"
    assert collapse[-1].startswith("| later half (3–5) |")
    assert re.search(
        r"\| 5 \| 0\.\d{3} \(0\.\d{3} … 0\.\d{3}\) \| .* \| -0\.\d{3} \(-0\.\d{3} … -0\.\d{3}\) \|", collapse[-2]
    )
    for name in ("robust_accuracy", "corruption_accuracy", "corruption_difference", "collapse_token_cosine"):
        assert f"](figures/{name}.png)" in text
        assert_png(full_report / "figures" / f"{name}.png")
    adversarial = tables_in(
        section(text, "Appendix: per-cell tables").split("on adversarial images and per head", 1)[1]
    )[0]
    assert adversarial[0] == "| images | ε | m_grad | precision | setting | layer | deit-elliptical | deit |"
    assert adversarial[2].startswith("| pgd | 2/255 | detach | fp32 | residual, cls | 0 |")
    assert adversarial[2].count("…") == 2  # the baseline (attacked once, m_grad '') stands next to the detach mode


def test_identical_models_get_no_supported_or_contradicted_line(tmp_path):
    run = fake_run(tmp_path / "same", simulate(Scenario(identical=True)))
    text = write_report([run], tmp_path / "report").read_text()
    assert "**supported**" not in text and "**contradicted**" not in text
    assert section(text, "Verdict").count("- **inconclusive at this n**") == 3


def test_report_with_corruption_and_collapse_rows(run_dir, tmp_path, runner):
    run = with_more_rows(run_dir, tmp_path / "full")
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert headings(text) == list(always_present())
    for sub in ("### Corruption accuracy", "### Corruption error and mCE", "### Token cosine similarity"):
        assert sub in text
    assert text.count("Not measured") == 1  # every section measured; only the patch claim was not run
    assert "Not measured in this run, so not judged: patch robustness" in text
    assert "| relative mCE (vs deit-nano) |" in text and "| mCE (unnormalised) |" in text
    assert "| fog (vs deit-nano) |" in text
    for name in ("robust_accuracy", "corruption_accuracy", "collapse_token_cosine"):
        assert f"](figures/{name}.png)" in text
        assert_png(out / "figures" / f"{name}.png")


def test_several_runs_are_told_apart(run_dir, tmp_path):
    other = with_more_rows(run_dir, tmp_path / "other")
    path = write_report([run_dir, other], tmp_path / "both")
    text = path.read_text()
    assert "### Run tiny" in text and "### Run other" in text
    assert "| run | model |" in text


def test_hostile_model_name_is_escaped(run_dir, tmp_path):
    run = with_more_rows(run_dir, tmp_path / "hostile", rename={"deit-nano-elliptical": HOSTILE})
    path = write_report([run], tmp_path / "report")
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "*_x_*" not in text
    for block in re.findall(r"(?:^\|.*\|\n)+", text, flags=re.M):  # every table keeps its column count
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1, block
    for png in (tmp_path / "report" / "figures").glob("*.png"):
        assert_png(png)


def test_escape():
    assert escape("a|b") == "a\\|b"
    assert escape("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert escape("*bold* _it_ `code` [l](u)") == "\\*bold\\* \\_it\\_ \\`code\\` \\[l\\](u)"
    assert escape("deit-nano-elliptical m_grad") == "deit-nano-elliptical m_grad"
    assert escape("two\nlines") == "two lines"


def test_missing_run_folder_is_a_usage_error(tmp_path, runner):
    result = runner.invoke(app, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("error:")


def test_a_report_on_two_copies_of_one_network_never_reads_supported_or_contradicted(runner, tmp_path):
    """Both models are the shipped plain DeiT (same weights, two names): no claim may be judged either way.

    The verdict compares an elliptical model with a baseline, and run.json says which is which: the
    first copy is marked elliptical there, which is the only thing that differs between the two.
    """
    from ellrobust.models.zoo import shipped_checkpoint

    weights = shipped_checkpoint("digits", "deit-micro").path
    out = tmp_path / "run"
    args = [
        "eval",
        "-m",
        "deit",
        "-c",
        str(weights),
        "-m",
        "deit-micro",
        "-c",
        str(weights),
        "--attack",
        "fgsm,pgd",
        "--eps",
        "2/255,8/255",
    ]
    args += ["--corruption", "contrast,fog", "--severity", "1,3", "--collapse", "--n", "100", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # the run judged nothing (both are plain); its primaries as if the first copy were elliptical:
    examples, table = load_examples(out), load_results(out)
    attacked = examples["model"].eq("deit") & examples["eps"].notna()
    examples.loc[attacked, "m_grad"] = "detach"  # as an elliptical model's attacks are recorded
    keys = ["model", "method", "params", "eps", "severity", "m_grad", "precision"]
    outcomes = [
        Outcomes(
            **{k: (None if pd.isna(v) else v) for k, v in zip(keys, key, strict=True)},
            columns={CORRECT: group.sort_values("index")["correct"].to_numpy(bool)},
        )  # fmt: skip
        for key, group in examples.fillna({"m_grad": "", "precision": "", "params": "{}"}).groupby(keys, dropna=False)
    ]
    records_ = table.dropna(subset=["value"]).to_dict(orient="records")
    rows = [Row(**{k: (None if pd.isna(r[k]) else r[k]) for k in ROW_KEYS}) for r in records_]
    found = primaries({"deit": True, "deit-micro": False}, outcomes, rows, 100)
    df = table.iloc[0:0]
    frame = pd.concat([df, to_frame([{**_setup(table), **r.as_dict()} for r in found])], ignore_index=True)
    claims_found = claims(frame, {"deit": True, "deit-micro": False})
    assert [c.name for c in claims_found] == ["adversarial robustness", "corruptions", "collapse"]
    assert all(c.status is ClaimStatus.INCONCLUSIVE for c in claims_found), [claim_line(c) for c in claims_found]


ROW_KEYS = (
    "model",
    "metric",
    "value",
    "method",
    "params",
    "eps",
    "severity",
    "layer",
    "m_grad",
    "precision",
    "baseline",
)


def _setup(table: pd.DataFrame) -> dict:
    first = table.iloc[0]
    return {k: first[k] for k in ("dataset", "split", "n", "seed")}


def test_the_apgd_row_is_described_as_apgd_ce_plus_apgd_t_never_as_autoattack():
    from ellrobust.report.legend import build_labels

    df = pd.DataFrame(
        {
            "method": ["apgd", "autoattack", "pgd"],
            "params": ['{"steps": 100, "target_classes": 9}', '{"steps": 100, "queries": 5000}', '{"steps": 10}'],
            "eps": [8 / 255] * 3,
        }
    )
    legend = dict(build_labels(df).legend)
    assert legend["apgd"].startswith("APGD-CE + APGD-T with") and "AutoAttack" not in legend["apgd"]
    assert legend["autoattack"].startswith("autoattack with") and legend["pgd"].startswith("pgd with")


def test_report_and_check_never_load_the_engine(tmp_path):
    """``ellrobust report`` and ``ellrobust check`` rebuild from run folders alone: in a fresh interpreter,
    neither imports the engine or one of its stages (the structure test holds the direct imports; this
    holds what actually loads)."""
    run, out, baseline = fake_run(tmp_path / "run"), tmp_path / "report", tmp_path / "baseline.json"
    code = f"""
import sys
from typer.testing import CliRunner
from ellrobust.cli import app
for args in (["report", {str(run)!r}, "--out", {str(out)!r}], \
["check", {str(run)!r}, "-b", {str(baseline)!r}, "--update"],
             ["check", {str(run)!r}, "-b", {str(baseline)!r}]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
print(sorted(m for m in sys.modules if m == "ellrobust.engine.runner" or m.startswith("ellrobust.measures")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
