"""Writing a report: ``write_report([run_dir, ...], out_dir)`` reads each folder's ``results.csv`` and ``run.json``,
renders the tables (:mod:`~ellrobust.report.tables`) and figures (:mod:`~ellrobust.report.plots`),
and writes ``out_dir/report.md`` with the figures under ``out_dir/figures/``. Several runs may be
combined (say, a CPU run and a GPU run); rows then carry the run's folder name, which tells apart
tables' rows and plots' lines.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from ellrobust.core.errors import UsageError
from ellrobust.core.files import atomic_write
from ellrobust.report import plots
from ellrobust.report.document import always_present, render
from ellrobust.report.run_folder import Run
from ellrobust.report.sections import ordered_sections
from ellrobust.results import load_results, read_run_json
from ellrobust.verdict.results_view import prepare

__all__ = ["always_present", "load_runs", "write_report"]

FIGURES_DIR = "figures"


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Read run folders; each is labelled by its folder name, or its full path where names repeat."""
    if not run_dirs:
        raise UsageError("no run folder given; pass one or more folders written by `ellrobust eval`.")
    paths = [Path(p) for p in run_dirs]
    names = [p.name for p in paths]
    runs = []
    for path, name in zip(paths, names, strict=True):
        label = name if names.count(name) == 1 else str(path)
        runs.append(Run(label, path, read_run_json(path), prepare(load_results(path), label)))
    return runs


def write_report(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``report.md`` and its figures for the given run folders; returns the report's path."""
    runs = load_runs(run_dirs)
    df = pd.concat([r.table for r in runs], ignore_index=True)
    out_dir = Path(out_dir)
    drawn: dict[str, object] = {}
    for section in ordered_sections():
        drawn.update(section.figures(df, runs) if section.figures else {})
    figures = {}
    for name, fig in drawn.items():
        if fig is not None:
            plots.save_png(fig, out_dir / FIGURES_DIR / f"{name}.png")
            figures[name] = f"{FIGURES_DIR}/{name}.png"
    path = out_dir / "report.md"
    same = len(run_dirs) == 1 and Path(run_dirs[0]).resolve() == out_dir.resolve()
    command = None if same else shlex.join(["ellrobust", "report", *map(str, run_dirs), "--out", str(out_dir)])
    atomic_write(path, render(runs, df, figures, report_command=command))
    return path
