"""``tables.tex``: the report's main tables as booktabs LaTeX, for a paper (``ellrobust report RUN --latex``).

The tables are those each registered report section offers a paper (its ``paper`` tables, built by
the same builders its markdown uses) and are drawn by :mod:`~ellrobust.report.render_latex`, so
every number reads as it does in ``report.md``. The file is a minimal document that compiles as it
is; each table is a ``table`` float a paper can copy, labelled ``tab:<name>`` for ``\\ref``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ellrobust.core.files import atomic_write
from ellrobust.report import render_latex
from ellrobust.report.legend import Labels, build_labels
from ellrobust.report.sections import ordered_sections
from ellrobust.report.table_model import Table
from ellrobust.report.writer import load_runs

#: The file ``--latex`` writes beside ``report.md``.
LATEX_FILE = "tables.tex"

#: A table of ``tables.tex`` and the suffix of its ``\label``.
Labelled = tuple[str, Table]


def latex_tables(df: pd.DataFrame, labels: Labels) -> Iterator[tuple[str, list[Labelled]]]:
    """The sections of ``tables.tex`` and their tables, in the report's order: every registered section's
    paper tables (:class:`~ellrobust.report.sections.Section` ``paper``); empty sections are left out."""
    for section in ordered_sections():
        found = section.paper(df, labels) if section.paper else []
        present = [(label, t) for label, t in found if t is not None]
        if present:
            yield section.paper_title or section.title, present


def caption(t: Table, heading: str) -> str:
    """A table's caption: the builder's title and note, as the terminal prints them above and below it."""
    return ". ".join(part for part in (t.title or heading, t.caption) if part)


def render(df: pd.DataFrame, title: str) -> str:
    """``tables.tex`` of a prepared results table (:func:`~ellrobust.verdict.results_view.prepare`)."""
    parts = []
    for heading, found in latex_tables(df, build_labels(df)):
        parts.append(render_latex.section(heading))
        parts += [render_latex.table(t, caption(t, heading), f"tab:{label}") for label, t in found]
    if not parts:
        parts.append(render_latex.escape("These runs hold no table of the report."))
    return render_latex.document(title, parts)


def write_latex(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write ``out_dir/tables.tex`` for the given run folders; returns its path."""
    runs = load_runs(run_dirs)
    df = pd.concat([r.table for r in runs], ignore_index=True)
    models = list(pd.unique(df["model"][df["model"] != ""]))
    path = Path(out_dir) / LATEX_FILE
    atomic_write(path, render(df, f"Robustness tables: {', '.join(models) or 'no models'}"))
    return path
