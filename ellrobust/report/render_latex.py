"""The LaTeX back end: booktabs tables of the neutral table model, for a paper.

The third back end beside :mod:`~ellrobust.report.render_rich` (terminal) and
:mod:`~ellrobust.report.render_markdown` (reports): it draws the tables the builders made, so a paper's
table carries the numbers and labels of the report. Every header, cell and caption passes through
:func:`escape`, because model names and settings come from users: a ``%`` would end the line, a ``&``
would split a cell, and ``\\input`` would run. The output compiles with ``pdflatex`` and the packages
of a minimal TeX Live (``booktabs`` and ``geometry``); characters ``pdflatex`` has no glyph for in its
default fonts are written as their code point rather than stopping the compilation.
"""

from __future__ import annotations

from collections.abc import Sequence

from ellrobust.report.table_model import Align, Cell, Table

#: LaTeX's special characters, each as the command that prints it.
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
#: The non-ASCII characters the tables' labels and numbers use, and a few alike, as LaTeX writes them.
_UNICODE = {
    "ε": r"\ensuremath{\varepsilon}",
    "α": r"\ensuremath{\alpha}",
    "δ": r"\ensuremath{\delta}",
    "σ": r"\ensuremath{\sigma}",
    "Δ": r"\ensuremath{\Delta}",
    "×": r"\ensuremath{\times}",
    "·": r"\ensuremath{\cdot}",
    "±": r"\ensuremath{\pm}",
    "−": r"\ensuremath{-}",
    "≥": r"\ensuremath{\geq}",
    "≤": r"\ensuremath{\leq}",
    "→": r"\ensuremath{\rightarrow}",
    "–": "--",
    "—": "---",
    "…": r"\ldots{}",
    "\u00a0": "~",
}
_ALIGN = {Align.LEFT: "l", Align.RIGHT: "r"}


def escape(text: object) -> str:
    """Text that prints literally in a cell or a caption, on one line.

    Line breaks and control characters become spaces (a blank line would end a paragraph inside a
    table). Latin-1 letters stay as they are (``inputenc`` and ``T1`` print them); other characters
    without a mapping are written ``[U+XXXX]`` so that an unusual model name cannot stop ``pdflatex``.
    """
    return "".join(_character(ch) for ch in " ".join(str(text).splitlines()))


def _character(ch: str) -> str:
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    if ch in _UNICODE:
        return _UNICODE[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return " "
    if code < 0x7F or 0xA1 <= code <= 0xFF:
        return ch
    return f"[U+{code:04X}]"


def _cell(cell: str | Cell) -> str:
    if isinstance(cell, Cell):
        return rf"\textbf{{{escape(cell.text)}}}" if cell.text else ""
    return escape(cell)


def table(t: Table, caption: str, label: str) -> str:
    """A neutral table as a ``table`` float holding a booktabs ``tabular``.

    Emphasised cells are bold; each section the terminal separates with a rule gets a ``\\midrule``.
    ``caption`` (plain text, escaped here) goes above the table, as journals set table captions;
    ``label`` (letters, digits, ``:`` and ``-``) lets the paper ``\\ref`` it.
    """
    sections = set(t.sections)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        rf"\caption{{{escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{" + "".join(_ALIGN[a] for a in t.align) + "}",
        r"\toprule",
        " & ".join(escape(h) for h in t.headers) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(t.rows):
        if i in sections and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(_cell(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def section(title: str) -> str:
    """A numbered section heading with escaped text."""
    return rf"\section{{{escape(title)}}}"


def document(title: str, parts: Sequence[str]) -> str:
    """A minimal standalone document around ``parts`` (already LaTeX), which compiles as it is.

    Landscape A4 with narrow margins, since the paired tables are wide; a paper copies the ``table``
    floats and needs only ``booktabs`` in its own preamble.
    """
    preamble = [
        r"\documentclass{article}",
        r"\usepackage[utf8]{inputenc}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage[a4paper,landscape,margin=1.5cm]{geometry}",
        r"\usepackage{booktabs}",
        rf"\title{{{escape(title)}}}",
        r"\date{}",
        r"\begin{document}",
        r"\maketitle",
    ]
    return "\n".join(preamble) + "\n\n" + "\n\n".join(parts) + "\n\n" + r"\end{document}" + "\n"
