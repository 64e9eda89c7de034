"""Where a measure shows its numbers: report sections, report figures and terminal tables, registered.

A measure adds its part of the report and of ``eval``'s output by registering it here, in its own
module: the report (:mod:`~ellrobust.report.document`), its figures (:mod:`~ellrobust.report.writer`)
and the terminal (:mod:`ellrobust.cli.terminal`) loop over what is registered, in ``order``, and
never list the families themselves. A section's body starts with its own heading, so a section
may say "not measured" under a heading that is always there, or leave itself out when its rows
are absent (an empty list).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from ellrobust.core.registry import Registry
from ellrobust.report.legend import Labels
from ellrobust.report.run_folder import Run
from ellrobust.report.table_model import Table


@dataclass(frozen=True)
class ReportInput:
    """What a section reads: the runs, their combined prepared table, its labels and the drawn figures.

    Attributes:
        runs: the run folders of the report.
        df: their results tables, prepared (:func:`~ellrobust.verdict.results_view.prepare`) and combined.
        labels: the legend's labels of methods and settings.
        figures: figure name → path relative to the report, for the figures that were drawn.
    """

    runs: list[Run]
    df: pd.DataFrame
    labels: Labels
    figures: Mapping[str, str] = field(default_factory=dict)


#: Draws a section's figures from the combined table and the runs: name → figure (None: not drawable here).
FigureDraw = Callable[[pd.DataFrame, list[Run]], Mapping[str, object]]
#: A section's tables for a paper, from the prepared table and its labels: (label suffix, table or None).
PaperTables = Callable[[pd.DataFrame, Labels], list[tuple[str, Table | None]]]
#: The markdown parts of a section or its appendix, from what it reads.
SectionBody = Callable[[ReportInput], list[str]]


@dataclass(frozen=True)
class Section:
    """A part of the report.

    Attributes:
        title: its heading (the body writes it; tests and readers rely on the always-present ones).
        order: where it sits among the sections.
        body: its markdown parts, heading first; an empty list leaves the section out.
        always: whether its heading is always there (its body then says what was not measured).
        appendix: its per-cell tables for the report's appendix, if any.
        paper: the tables a paper takes from this section (``tables.tex``), each with the suffix of its
            ``\\label``; None: none.
        paper_title: the heading of those tables in ``tables.tex`` (default: ``title``).
        figures: draws the figures it shows from the combined table and the runs: name → figure, None
            for one these runs cannot draw. Imports matplotlib inside, so the terminal never loads it.
    """

    title: str
    order: int
    body: SectionBody
    always: bool = False
    appendix: SectionBody | None = None
    figures: FigureDraw | None = None
    paper: PaperTables | None = None
    paper_title: str = ""


@dataclass(frozen=True)
class TerminalTables:
    """Tables ``eval`` prints after a run, in ``order``: built from the prepared table and its labels."""

    order: int
    build: Callable[[pd.DataFrame, Labels], list[Table | None]]


SECTIONS: Registry[Section] = Registry("report section")
TERMINAL: Registry[TerminalTables] = Registry("terminal tables")


def report_section(section: Section) -> Section:
    """Register a report section under its title."""
    return SECTIONS.add(section.title, section)


def terminal_tables(name: str, *, order: int) -> Callable[[Callable], Callable]:
    """Register a function ``(prepared table, labels) -> tables`` that ``eval`` prints, at ``order``."""

    def register(build: Callable[[pd.DataFrame, Labels], list[Table | None]]) -> Callable:
        TERMINAL.add(name, TerminalTables(order, build))
        return build

    return register


def ordered_sections() -> list[Section]:
    return sorted((s for _, s in SECTIONS.items()), key=lambda s: s.order)


def ordered_terminal_tables() -> list[TerminalTables]:
    return sorted((t for _, t in TERMINAL.items()), key=lambda t: t.order)


def absent(how: str) -> str:
    """The line of a section whose rows are absent; ``how`` is trusted markdown saying how to measure them."""
    return f"_Not measured in these runs; {how}._"
