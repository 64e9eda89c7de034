"""Floor 11: the ``ellrobust`` command line: a thin Typer layer over the library, one module per command.

Only this package talks to the terminal: rich progress and warnings on stderr, tables and ``--json``
on stdout. The app, its one-line errors and exit codes, and the console-script entry point ``main``
are :mod:`.application`; this file only re-exports them (``ellrobust.cli:main`` in pyproject.toml).
"""

from ellrobust.cli.application import app, main

__all__ = ["app", "main"]
