"""``ellrobust report`` and ``eval --report``: every section, valid PNG figures, safe markdown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from matplotlib.image import imread

from ellrobust.cli import app
from ellrobust.report import SECTIONS, write_report
from ellrobust.report.markdown import escape
from ellrobust.results import load_results, records, save_table, to_frame

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "evil|<script>alert(1)</script>*_x_* $\\frac{"
CORRUPTIONS = ("gaussian_noise", "fog")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny real run, written with ``--report`` (the hook ``eval`` calls)."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("run") / "tiny"
    args = ["eval", "-m", "deit-nano", "-m", "deit-nano-elliptical", "-d", "synthetic", "--attack", "fgsm,pgd"]
    args += ["--eps", "2/255,8/255", "--n", "16", "--m-grad", "both", "--out", str(out), "--report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def with_more_rows(src: Path, dst: Path, rename: dict[str, str] | None = None) -> Path:
    """A copy of a run plus fabricated corruption and collapse rows, built against the schema."""
    table = records(load_results(src))
    base = {k: table[0][k] for k in ("dataset", "split", "n", "seed")}
    extra = []
    for i, model in enumerate(("deit-nano", "deit-nano-elliptical")):
        for corruption in CORRUPTIONS:  # per severity, then the mean over severities (severity empty)
            for severity in (1, 2, 3, 4, 5, None):
                value = 0.9 - 0.15 * (severity or 3) + 0.05 * i
                extra.append({**base, "model": model, "method": corruption, "params": "{}", "severity": severity, "metric": "corruption_accuracy", "value": value})
        for reference in ({"normalization": "none"}, {"normalization": "baseline", "baseline": "deit-nano"}):
            ref = {"params": json.dumps({"normalization": reference["normalization"]}), "baseline": reference.get("baseline")}
            for corruption in CORRUPTIONS:
                extra.append({**base, **ref, "model": model, "method": corruption, "metric": "ce", "value": 0.8 - 0.1 * i})
            for metric in ("mce", "relative_mce"):
                extra.append({**base, **ref, "model": model, "method": "mce", "metric": metric, "value": 0.8 - 0.1 * i})
        for layer in range(3):
            extra.append({**base, "model": model, "method": "collapse", "params": "{}", "layer": layer, "metric": "token_cosine", "value": 0.2 + (0.3 - 0.1 * i) * layer})
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


def headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("## ")]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_eval_report_writes_every_section(run_dir):
    text = (run_dir / "report.md").read_text()
    assert headings(text) == list(SECTIONS)
    assert "| deit-nano |" in text and "ε 8/255" in text
    assert "Not measured in these runs; pass `--corruption" in text
    assert_png(run_dir / "figures" / "robust_accuracy.png")


def test_report_with_corruption_and_collapse_rows(run_dir, tmp_path, runner):
    run = with_more_rows(run_dir, tmp_path / "full")
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    assert headings(text) == list(SECTIONS)
    for sub in ("### Corruption accuracy", "### Corruption error and mCE", "### Token cosine similarity"):
        assert sub in text
    assert "Not measured" not in text
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
