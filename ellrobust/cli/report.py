"""``ellrobust report``: a markdown report with figures, and LaTeX tables on request, rebuilt from run folders."""

from __future__ import annotations

from pathlib import Path

import typer


def report_cmd(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run folders written by `ellrobust eval` (several are combined).", show_default=False
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.md and figures/ (created if needed)."),
    latex: bool = typer.Option(
        False, "--latex", help="Also write tables.tex: the main tables as booktabs LaTeX, a document that compiles."
    ),
) -> None:
    """Write report.md (setup, tables, paired statistics, sanity checks) and PNG figures; tables.tex with --latex.

    Examples:

      ellrobust report reports/runs/digits-1a2b3c4d --out reports/example

      ellrobust report runs/cpu runs/gpu --out reports/compare

      ellrobust report reports/runs/digits-1a2b3c4d --out paper --latex
    """
    from ellrobust.cli.terminal import stderr
    from ellrobust.core.files import check_destination
    from ellrobust.report.writer import write_report

    check_destination(out, "--out", folder=True)

    path = write_report(run_dirs, out)
    stderr.print(f"report: {path}")
    if latex:
        from ellrobust.report.latex_tables import write_latex

        stderr.print(f"tables: {write_latex(run_dirs, out)}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
