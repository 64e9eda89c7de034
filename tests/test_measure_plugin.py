"""A new measure is one module: a measure written here, in a file of its own, reaches every output.

The module below is all a new measure needs: one metric declaration, one stage, one table, one
report section and its terminal tables. Nothing else in ellrobust is edited: the subprocesses import
it before the CLI runs (as a user's own package would be imported), and the results table, the
terminal, the report and ``check`` find it through the registries it fills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

MEASURE = '''
"""Mean max-softmax confidence on the clean images: a whole measure in one module."""

import torch

from ellrobust.measures.stage import Stage, stage
from ellrobust.report.render_markdown import heading, table
from ellrobust.report.sections import Section, report_section, terminal_tables
from ellrobust.report.table_model import Align, Table
from ellrobust.results import Direction, Kind, Row, declare_metric
from ellrobust.run.units import Unit, UnitResult

CONFIDENCE = declare_metric(
    "mean_confidence", unit="fraction", compare=Kind.SCALED, better=Direction.EITHER, doc="mean max-softmax"
)


@stage("mean-confidence", order=5)
class ConfidenceStage(Stage):
    def units(self, ctx):
        return [Unit("mean-confidence", name, "confidence") for name in ctx.models]

    @torch.no_grad()
    def run(self, unit, ctx, seed):
        model = ctx.models[unit.model].module
        values = {}
        for batch in ctx.batches(None, unit.label, seed):
            top = torch.softmax(model(batch.images), 1).amax(1)
            values.update(zip(batch.positions, top.tolist()))
        return UnitResult(rows=[Row(unit.model, CONFIDENCE, float(ctx.gather(values).mean()), "confidence")])


def confidence_table(df, labels=None):
    rows = df[df["metric"] == CONFIDENCE]
    if rows.empty:
        return None
    cells = tuple((r.model, f"{r.value * 100:.1f}") for r in rows.itertuples())
    return Table(("model", "mean confidence (%)"), cells, (Align.LEFT, Align.RIGHT), title="Mean confidence (%)")


def confidence_section(inp):
    found = confidence_table(inp.df)
    return [] if found is None else [heading(2, "Mean confidence"), "The mean max-softmax probability.", table(found)]


report_section(Section("Mean confidence", 85, confidence_section))
terminal_tables("mean confidence", order=80)(lambda df, labels: [confidence_table(df)])
'''


REPO = Path(__file__).resolve().parent.parent  # this checkout first, whatever is installed


def _ellrobust(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter that imported the measure's module first."""
    code = "import sys, confidence_measure; from ellrobust.cli import main; sys.argv[0] = 'ellrobust'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=folder,
        env={
            "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]),
            "COLUMNS": "150",
            "PATH": "/usr/bin:/bin",
            "OMP_NUM_THREADS": "1",
        },  # fmt: skip
        timeout=600,
        check=False,
    )


def test_a_measure_in_one_module_reaches_the_table_terminal_report_and_check(tmp_path):
    (tmp_path / "confidence_measure.py").write_text(textwrap.dedent(MEASURE))
    run = tmp_path / "run"
    tiny = ["--data", "synthetic", "-m", "deit-nano", "-m", "deit-nano-elliptical", "--n", "8", "--batch-size", "8"]
    done = _ellrobust(tmp_path, "eval", *tiny, "--attack", "none", "--out", str(run), "--report", "--details")
    assert done.returncode == 0, done.stderr

    table = pd.read_csv(run / "results.csv")
    ours = table[table["metric"] == "mean_confidence"]
    assert sorted(ours["model"]) == ["deit-nano", "deit-nano-elliptical"]
    assert ours["value"].between(0, 1).all()
    assert "Mean confidence (%)" in done.stdout  # the terminal printed its table

    report = (run / "report.md").read_text()
    assert "## Mean confidence" in report
    for r in ours.itertuples():
        assert f"| {r.model} | {r.value * 100:.1f} |" in report

    baseline = tmp_path / "baseline.json"
    assert _ellrobust(tmp_path, "check", str(run), "--baseline", str(baseline), "--update").returncode == 0
    assert _ellrobust(tmp_path, "check", str(run), "--baseline", str(baseline)).returncode == 0
    document = json.loads(baseline.read_text())
    moved = next(r for r in document["records"] if r["metric"] == "mean_confidence")
    moved["value"] += 0.5  # beyond its declared tolerance (5 %, at least 0.05), in either direction
    baseline.write_text(json.dumps(document))
    failed = _ellrobust(tmp_path, "check", str(run), "--baseline", str(baseline))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "mean_confidence" in failed.stdout + failed.stderr
