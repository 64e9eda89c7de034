"""A small, safe markdown writer: escaping, pipe tables, headings and images.

Why our own and not ``DataFrame.to_markdown``: that needs ``tabulate`` and does not escape cells.
Model names, run folders and sanity details come from users; a ``|`` would split a table cell, a
``*`` or ``_`` would start emphasis, and ``<script>`` would reach a renderer that allows HTML.
Every piece of user text therefore passes through :func:`escape`, and :func:`table` escapes every
cell itself, so a caller cannot forget it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

#: Characters that start inline markdown (emphasis, code, links, strike-through, table cells), and
#: underscores except between two letters or digits, where CommonMark never reads them as emphasis.
_INLINE = re.compile(r"([\\`*~\[\]|#])|(?<![^\W_])_|_(?![^\W_])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape(text: object) -> str:
    """Text that renders literally inside a paragraph, a heading or a table cell.

    HTML is neutralised with entities (a backslash does not stop HTML in CommonMark), inline
    markdown with backslashes, and line breaks become spaces because a newline ends a table row.
    Hyphens, dots and underscores inside words stay as they are, so ordinary names like
    ``deit-nano-elliptical`` or ``m_grad`` remain readable in the raw file and in diffs.
    """
    s = " ".join(str(text).splitlines())
    s = "".join(_HTML.get(ch, ch) for ch in s)
    return _INLINE.sub(lambda m: "\\" + m.group(0), s)


class Align(StrEnum):
    """Column alignment of a markdown table."""

    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True)
class Table:
    """A rendered-to-text table: headers and rows of already formatted (not yet escaped) cells.

    Attributes:
        headers: Column titles.
        rows: One tuple of cell texts per row, as long as ``headers``.
        align: Alignment per column; numbers read best right-aligned.
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: tuple[Align, ...]

    def __post_init__(self) -> None:
        if len(self.align) != len(self.headers) or any(len(r) != len(self.headers) for r in self.rows):
            raise ValueError("every row and the alignment must have one entry per header")


def table(t: Table) -> str:
    """A GitHub-flavoured pipe table; every header and cell is escaped."""
    rule = {Align.LEFT: ":---", Align.RIGHT: "---:"}
    lines = [
        "| " + " | ".join(escape(h) for h in t.headers) + " |",
        "| " + " | ".join(rule[a] for a in t.align) + " |",
    ]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def heading(level: int, text: str) -> str:
    """An ATX heading with escaped text."""
    return f"{'#' * level} {escape(text)}"


def image(alt: str, path: str) -> str:
    """An image link to a relative file; the path is percent-encoded so odd file names stay links."""
    return f"![{escape(alt)}]({quote(path)})"


def bullets(items: Sequence[str]) -> str:
    """A bullet list of already formatted (escaped) lines."""
    return "\n".join(f"- {item}" for item in items)
