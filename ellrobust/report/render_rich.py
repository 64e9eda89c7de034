"""The terminal back end: neutral tables and verdict lines as rich renderables.

Every cell becomes a :class:`rich.text.Text`, so a model name like ``[bold]`` prints as written
instead of being read as rich markup. Emphasised cells are bold; sections get a rule above them.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table as RichTable
from rich.text import Text

from ellrobust.report.table_model import Cell, Table
from ellrobust.verdict.claim_types import ClaimStatus

_STATUS_STYLE = {ClaimStatus.SUPPORTED: "green", ClaimStatus.CONTRADICTED: "red", ClaimStatus.INCONCLUSIVE: "yellow"}


def rich_table(t: Table) -> RichTable:
    """A neutral table as a rich table, with its title above and its caption below."""
    table = RichTable(
        title=Text(t.title, style="table.title") if t.title else None,
        caption=Text(t.caption, style="table.caption") if t.caption else None,
    )
    for header, align in zip(t.headers, t.align, strict=True):
        table.add_column(Text(header), justify=align.value)
    sections = set(t.sections)
    for i, row in enumerate(t.rows):
        if i in sections and i > 0:
            table.add_section()
        table.add_row(*(_cell(c) for c in row))
    return table


def _cell(cell: str | Cell) -> Text:
    return Text(cell.text, style="bold") if isinstance(cell, Cell) else Text(cell)


def rich_verdict(lines: list[tuple[ClaimStatus, str]], note: str) -> Group:
    """The verdict's lines, each opening with its status in colour, under a heading and above ``note``."""
    out = [Text("Verdict", style="bold")]
    for status, text in lines:
        line = Text()
        line.append(status.value, style=_STATUS_STYLE[status])
        line.append(f": {text}")
        out.append(line)
    out.append(Text(note, style="dim"))
    return Group(*out)
