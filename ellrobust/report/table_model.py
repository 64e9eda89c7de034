"""The neutral table: what a table says, before a back end draws it on the terminal or in a report.

A builder (:mod:`~ellrobust.report.tables`) decides once which columns a table has, what they are
called and what every cell reads; the back ends only draw it: :mod:`~ellrobust.report.render_rich`
for the terminal and :mod:`~ellrobust.report.render_markdown` for reports. So ``eval``'s tables and the
report's carry the same labels and the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Align(StrEnum):
    """Column alignment; numbers read best right-aligned."""

    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True)
class Cell:
    """A cell the back ends emphasise (bold), such as a paired difference that survives Holm."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of already formatted (not yet escaped) cells.

    Attributes:
        headers: Column titles.
        rows: One tuple per row, as long as ``headers``: plain text, or a :class:`Cell` to emphasise.
        align: Alignment per column.
        title: What the table shows, in a line: the terminal prints it above the table; a report gives
            each table a heading and prose of its own instead.
        caption: A note the terminal prints below the table (a report says it in its prose).
        sections: Indices of the rows that open a new group; the terminal draws a rule above each.
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[str | Cell, ...], ...]
    align: tuple[Align, ...]
    title: str = ""
    caption: str = ""
    sections: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.align) != len(self.headers) or any(len(r) != len(self.headers) for r in self.rows):
            raise ValueError("every row and the alignment must have one entry per header")


def cell_text(cell: str | Cell) -> str:
    """A cell's text, emphasised or not."""
    return cell.text if isinstance(cell, Cell) else cell
