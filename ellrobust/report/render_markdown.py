"""The markdown back end: escaping, pipe tables of the neutral table model, headings and images.

Why our own and not ``DataFrame.to_markdown``: that needs ``tabulate`` and does not escape cells.
Model names, run folders and sanity details come from users; a ``|`` would split a table cell, a
``*`` or ``_`` would start emphasis, and ``<script>`` would reach a renderer that allows HTML.
Every piece of user text therefore passes through :func:`escape`, and :func:`table` escapes every
cell itself, so a caller cannot forget it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from ellrobust.report.table_model import Align, Cell, Table

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


def table(t: Table) -> str:
    """A neutral table as a GitHub-flavoured pipe table; every header and cell is escaped.

    Emphasised cells are bold. The title, caption and sections are the terminal's: a document gives
    each table a heading and prose of its own, and a pipe table has no rules between rows.
    """
    rule = {Align.LEFT: ":---", Align.RIGHT: "---:"}
    lines = [
        "| " + " | ".join(escape(h) for h in t.headers) + " |",
        "| " + " | ".join(rule[a] for a in t.align) + " |",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _cell(cell: str | Cell) -> str:
    if isinstance(cell, Cell):
        return f"**{escape(cell.text)}**" if cell.text else ""
    return escape(cell)


def heading(level: int, text: str) -> str:
    """An ATX heading with escaped text."""
    return f"{'#' * level} {escape(text)}"


def image(alt: str, path: str) -> str:
    """An image link to a relative file; the path is percent-encoded so odd file names stay links."""
    return f"![{escape(alt)}]({quote(path)})"


def bullets(items: Sequence[str]) -> str:
    """A bullet list of already formatted (escaped) lines."""
    return "\n".join(f"- {item}" for item in items)
