"""Terminal output shared by the commands: rich progress (stderr), result tables (stdout), JSON.

The tables are the report's (:mod:`ellrobust.report.tables`), drawn by the rich back end
(:mod:`ellrobust.report.render_rich`), and the verdict's lines are the report's words
(:mod:`ellrobust.report.claim_sentences`); what is the terminal's own lives here: the consoles, the progress
bars, ``--json`` and the sanity warnings. Nothing here loads the engine: ``ellrobust report`` and
``ellrobust check`` print through this module too.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ellrobust.report import tables
from ellrobust.report.claim_sentences import claim_line
from ellrobust.report.legend import build_labels
from ellrobust.report.render_rich import rich_table, rich_verdict
from ellrobust.report.sections import TERMINAL, ordered_terminal_tables
from ellrobust.report.summary_table import summary_table
from ellrobust.report.table_model import Table
from ellrobust.results import records
from ellrobust.verdict.results_view import prepare
from ellrobust.verdict.rules import claims

if TYPE_CHECKING:
    from ellrobust.run.context import ProgressEvent

#: Tables keep their shape when piped (rich would squeeze them into 80 columns).
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160")))
stderr = Console(stderr=True, soft_wrap=True)


@contextmanager
def data_warnings():
    """The library's :class:`~ellrobust.core.errors.DataWarning` s (data that loads, maybe not as meant), each as
    one line on stderr, every time, instead of Python's two lines once per place."""
    from ellrobust.core.errors import DataWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, DataWarning):
            stderr.print(f"warning: {message}", markup=False, highlight=False)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        yield


@contextmanager
def unit_progress(enabled: bool = True):
    """A rich progress display on stderr, one bar per unit; yields the engine's progress callback."""
    if not enabled:
        yield lambda event: None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
        disable=not stderr.is_terminal and not _force(),
    )
    tasks: dict[str, int] = {}

    def callback(event: ProgressEvent) -> None:
        if event.kind == "start":
            tasks[event.label] = progress.add_task(event.label, total=max(event.total, 1))
            if event.total == 0:
                progress.update(tasks[event.label], completed=1)
        elif event.kind == "advance" and event.label in tasks:
            progress.advance(tasks[event.label], event.advance)
        elif event.kind == "end":
            if event.cached:
                tid = progress.add_task(f"{event.label} [dim](saved, skipped)[/dim]", total=1)
                progress.update(tid, completed=1)
            elif event.label in tasks:
                task = progress.tasks[tasks[event.label]]
                progress.update(tasks[event.label], completed=task.total)

    with progress:
        yield callback


def _force() -> bool:
    return os.environ.get("ELLROBUST_PROGRESS") == "1"


def print_json(df: pd.DataFrame) -> None:
    sys.stdout.write(json.dumps(records(df), indent=1) + "\n")


def accuracy_table(df: pd.DataFrame, title: str) -> RenderableType:
    """Accuracy under each attack and budget with its clean accuracy (the clean table alone for a run
    without attacks), under ``title``."""
    frame = prepare(df)
    found = tables.robust_table(frame, build_labels(frame)) or tables.clean_table(frame)
    return Group() if found is None else rich_table(replace(found, title=title))


def measure_tables(df: pd.DataFrame) -> list[RenderableType]:
    """The tables every registered measure prints after the headline accuracy table
    (:func:`ellrobust.report.sections.terminal_tables`), in their order; a family the run did not
    measure prints nothing."""
    frame = prepare(df)
    labels = build_labels(frame)
    found = (_group(entry.build(frame, labels)) for entry in ordered_terminal_tables())
    return [group for group in found if group is not None]


def summary(df: pd.DataFrame, setting: str) -> RenderableType:
    """The one-screen summary (:func:`~ellrobust.report.summary_table.summary_table`) titled with the run's setting."""
    found = summary_table(prepare(df))
    return Group() if found is None else rich_table(replace(found, title=f"{found.title} · {setting}"))


def measure_table(df: pd.DataFrame, name: str) -> RenderableType | None:
    """One registered measure's tables (``collapse`` for ``ellrobust collapse``); None when it measured nothing."""
    frame = prepare(df)
    return _group(TERMINAL.get(name).build(frame, build_labels(frame)))


def _group(found: list[Table | None]) -> RenderableType | None:
    """The tables that exist, one after another; None when the run measured none of them."""
    shown = [rich_table(t) for t in found if t is not None]
    return Group(*shown) if shown else None


def verdict(df: pd.DataFrame, elliptical: Mapping[str, bool]) -> RenderableType | None:
    """The verdict's lines (:func:`ellrobust.verdict.rules.claims`), one per claim; None when nothing is judged."""
    frame = prepare(df)
    found = claims(frame, elliptical)
    if not found:
        return None
    note = "Rules: see README, section Verdict. Holm's family: the primaries of one pair's claims."
    return rich_verdict([(c.status, claim_line(c)) for c in found], note)


def warn_sanity(df: pd.DataFrame) -> int:
    """Print failing sanity checks as warnings on stderr; returns how many failed."""
    rows = tables.sanity_rows(prepare(df))
    failed = rows[rows["value"] < 1]
    for r in failed.itertuples(index=False):
        mg = f" (m_grad={r.m_grad})" if r.m_grad else ""
        check = r.metric.removeprefix("sanity_")
        stderr.print(
            f"[yellow]warning[/yellow]: sanity check {check} failed for {r.model}{mg}: {tables.sanity_detail(r.params)}"
        )
    return len(failed)
