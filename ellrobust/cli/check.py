"""``ellrobust check``: compare a run with a stored baseline in CI; exit 1 on a regression."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer


def check_cmd(
    run_dir: Path = typer.Argument(..., help="Run folder written by `ellrobust eval`.", show_default=False),
    baseline: Path = typer.Option(..., "--baseline", "-b", help="Baseline JSON file (written by --update)."),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        help="Absolute tolerance for every compared number (default: 3 binomial SE for accuracies, 5 % otherwise).",
    ),
    update: bool = typer.Option(False, "--update", help="Write the baseline from this run instead of comparing."),
    junit: Path | None = typer.Option(
        None, "--junit", help="Also write the comparisons as JUnit XML (GitLab, Jenkins): one test case per number."
    ),
) -> None:
    """Compare every metric of a baseline with a run; print a markdown summary on stdout.

    Exit codes: 0 no regression, 1 regression (a metric dropped beyond its tolerance, a sanity
    check started failing, or a baseline row is missing), 2 usage error (e.g. the baseline was
    recorded for other models, data or n).

    Examples:

      ellrobust check reports/runs/ci --baseline reports/ci-baseline.json >> "$GITHUB_STEP_SUMMARY"

      ellrobust check reports/runs/ci --baseline reports/ci-baseline.json --update

      ellrobust check reports/runs/ci --baseline reports/ci-baseline.json --junit check.xml
    """
    from ellrobust.cli.terminal import stderr
    from ellrobust.report.check_summary import summary_markdown
    from ellrobust.results import load_results
    from ellrobust.verdict.regression import compare, read_baseline, write_baseline

    if junit is not None:
        from ellrobust.core.errors import UsageError
        from ellrobust.core.files import check_destination

        if update:
            raise UsageError("--junit reports a comparison, and --update compares nothing; drop one of them.")
        check_destination(junit, "--junit", folder=False)
    table = load_results(run_dir)
    if update:
        count = write_baseline(table, baseline, _regenerate_command(run_dir, baseline))
        stderr.print(f"baseline: wrote {count} records to {baseline}")
        return
    result = compare(table, read_baseline(baseline), tolerance)
    typer.echo(summary_markdown(result, str(run_dir), str(baseline)), nl=False)
    if junit is not None:
        from ellrobust.report.junit import write_junit

        write_junit(result, junit, str(run_dir), str(baseline))
        stderr.print(f"junit: {junit}")
    if not result.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check")(check_cmd)


def _regenerate_command(run_dir: Path, baseline: Path) -> str:
    """The commands that write ``baseline`` again: the run's own (from its run.json), then this update."""
    meta_path = run_dir / "run.json"
    run_command = json.loads(meta_path.read_text()).get("command") if meta_path.is_file() else None
    update = shlex.join(["ellrobust", "check", str(run_dir), "--baseline", str(baseline), "--update"])
    if run_command:
        return f"{run_command} > /dev/null && {update}"
    return f"(the `ellrobust eval` that wrote {str(run_dir)!r}) && {update}"
