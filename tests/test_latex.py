"""``ellrobust report --latex`` and ``Results.report(latex=True)``: tables.tex compiles and says what report.md says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fake_results import ELLIPTICAL, run_json, simulate

from ellrobust.api import Results
from ellrobust.cli import app
from ellrobust.report.latex_tables import LATEX_FILE
from ellrobust.report.render_latex import escape, table
from ellrobust.report.table_model import Align, Cell, Table
from ellrobust.results import save_table

#: A model name with every LaTeX special, a command that would read a file, and characters without a glyph.
HOSTILE = "evil & 100% $x_1$ #2 {a} ~^ \\input{/etc/passwd} Жук"
#: A number as both back ends write it; a sign only where it opens a word, so ``60.1–68.9`` and ``60.1--68.9``
#: both read as 60.1 and 68.9.
NUMBER = re.compile(r"(?:(?<![^\s(])[-+])?(?<![\w.])\d+(?:\.\d+)?")


def fake_run(path: Path, rename: dict[str, str] | None = None) -> Path:
    """A run folder with every kind of row (:mod:`fake_results`), models renamed as asked."""
    path.mkdir(parents=True)
    df = simulate()
    meta = run_json()
    for old, new in (rename or {}).items():
        df[["model", "baseline"]] = df[["model", "baseline"]].replace(old, new)
        meta["models"] = {new if k == old else k: v for k, v in meta["models"].items()}
    save_table(df, path)
    (path / "run.json").write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, runner_module) -> Path:
    root = tmp_path_factory.mktemp("latex")
    out = root / "report"
    result = runner_module.invoke(app, ["report", str(fake_run(root / "run")), "--out", str(out), "--latex"])
    assert result.exit_code == 0, result.output
    assert f"tables: {out / LATEX_FILE}" in result.stderr
    return out


@pytest.fixture(scope="module")
def runner_module():
    from typer.testing import CliRunner

    return CliRunner()


def numbers(cells: list[str]) -> list[list[str]]:
    return [NUMBER.findall(cell) for cell in cells]


def markdown_tables(text: str) -> list[list[list[list[str]]]]:
    """Every pipe table as rows (the header first, the alignment rule dropped) of each cell's numbers."""
    out = []
    for block in re.findall(r"(?:^\|.*\|\n)+", text, flags=re.M):
        lines = block.splitlines()
        rows = [lines[0], *lines[2:]]
        out.append([numbers(re.split(r"(?<!\\)\|", line.strip())[1:-1]) for line in rows])
    return out


def latex_tables(text: str) -> list[list[list[list[str]]]]:
    """Every booktabs tabular as rows (the header first) of each cell's numbers."""
    out = []
    for body in re.findall(r"\\toprule\n(.*?)\\bottomrule", text, flags=re.S):
        lines = [line.removesuffix(r" \\") for line in body.splitlines() if line != r"\midrule"]
        out.append([numbers(re.split(r"(?<!\\)&", line)) for line in lines])
    return out


def test_every_latex_table_has_the_numbers_of_a_markdown_table(report_dir):
    latex = latex_tables((report_dir / LATEX_FILE).read_text())
    markdown = markdown_tables((report_dir / "report.md").read_text())
    # summary, robust accuracy, paired differences, corruption summary, CE and mCE, mCE difference, collapse
    assert len(latex) == 7
    for found in latex:
        assert found in markdown, found
    assert sum(len(t) - 1 for t in latex) > 30  # rows with numbers, not empty tables matching empty ones


def test_the_sections_and_labels(report_dir):
    text = (report_dir / LATEX_FILE).read_text()
    headings = re.findall(r"\\section\{(.*?)\}", text)
    assert headings == ["Summary", "Robust accuracy", "Corruptions", "Representation collapse", "Paired differences"]
    assert r"\label{tab:robust}" in text and r"\usepackage{booktabs}" in text
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 7
    assert r"\textbf{" in text  # a paired difference that survives Holm is emphasised, as in the report


def test_escape_neutralises_every_special():
    text = escape(HOSTILE + "\nline two")
    assert r"\input" not in text.replace(r"\textbackslash{}input", "")
    assert r"100\%" in text and r"\$x\_1\$" in text and r"\#2" in text and r"\{a\}" in text
    assert r"\textasciitilde{}\textasciicircum{}" in text
    assert "[U+0416][U+0443][U+043A]" in text and "\n" not in text
    assert (
        escape("ε 8/255 − 1…2 ≥ é") == r"\ensuremath{\varepsilon} 8/255 \ensuremath{-} 1\ldots{}2 \ensuremath{\geq} é"
    )


def test_table_draws_rules_sections_and_emphasis():
    t = Table(("a", "b"), (("x", Cell("1")), ("y", Cell("")), ("z", "3")), (Align.LEFT, Align.RIGHT), sections=(0, 2))
    lines = table(t, "a & b", "tab:t").splitlines()
    assert lines[lines.index(r"\toprule") + 1] == r"a & b \\"
    assert r"x & \textbf{1} \\" in lines and r"y &  \\" in lines
    assert lines.count(r"\midrule") == 2  # below the header, and above the section that opens at row 2
    assert r"\caption{a \& b}" in lines and r"\begin{tabular}{lr}" in lines


@pytest.mark.parametrize("hostile", [False, True])
def test_tables_tex_compiles_with_pdflatex(tmp_path, runner_module, hostile):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (TeX Live: texlive-latex-base, texlive-latex-recommended)")
    run = fake_run(tmp_path / "run", rename={ELLIPTICAL: HOSTILE} if hostile else None)
    result = runner_module.invoke(app, ["report", str(run), "--out", str(tmp_path / "out"), "--latex"])
    assert result.exit_code == 0, result.output
    compiled = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", LATEX_FILE],
        cwd=tmp_path / "out",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stdout[-3000:]
    assert (tmp_path / "out" / "tables.pdf").stat().st_size > 1000


def test_results_report_writes_the_same_tables(tmp_path, report_dir):
    run = fake_run(tmp_path / "run")
    results = Results(simulate(), simulate().iloc[:0], [], run, {}, 0, 0)
    path = results.report(tmp_path / "out", latex=True)
    assert path == tmp_path / "out" / "report.md"
    assert (tmp_path / "out" / LATEX_FILE).read_text() == (report_dir / LATEX_FILE).read_text()
    assert results.report().parent == run and not (run / LATEX_FILE).exists()
