"""``ellrobust eval``: clean, adversarial, corruption and collapse evaluation of one or more models."""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

import typer

from ellrobust.cli import options


def default_run_dir(config) -> Path:
    """A folder named after the request, so re-running the same command resumes the same run."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return Path("reports") / "runs" / f"{config.dataset}-{digest}"


def register(app: typer.Typer) -> None:
    @options.command(app, "eval")
    def eval_cmd(**values: object) -> None:
        """Evaluate models on the same images: clean accuracy, attacks, corruptions, collapse.

        Examples:

          ellrobust eval --model deit-elliptical --model deit --attack pgd

          ellrobust eval -m deit-elliptical -m deit --attack fgsm,pgd,spsa --eps 1/255,4/255 --m-grad both

          ellrobust eval -m deit-elliptical -m deit --corruption all --severity 1-5 --n 200
        """
        from ellrobust.cli.terminal import (
            accuracy_table,
            measure_tables,
            print_json,
            stderr,
            stdout,
            summary,
            verdict,
            warn_sanity,
        )
        from ellrobust.measures.collapse_probe import CollapseConfig
        from ellrobust.report.trackers import log_run, requested_trackers
        from ellrobust.request.build import build_config
        from ellrobust.request.spec import Caller
        from ellrobust.results import read_run_json
        from ellrobust.verdict.rules import elliptical_models

        out, max_image_pixels = values.pop("out"), values.pop("max_image_pixels")
        json_out, report, details = values.pop("json"), values.pop("report"), values.pop("details")
        trackers = requested_trackers(values.pop("log"), Caller.CLI)
        config = build_config(values, Caller.CLI, default_collapse=CollapseConfig())
        result = execute(config, out, max_image_pixels)
        if result is None:
            return  # under torchrun, rank 0 alone prints and writes
        run_dir, table = result.run_dir, result.table
        if json_out:
            print_json(table)
        else:
            if details:
                stdout.print(
                    accuracy_table(
                        table, f"Accuracy (%) · {config.dataset} · n={table['n'].iloc[0]} · seed={config.seed}"
                    )
                )
                for tables in measure_tables(table):
                    stdout.print(tables)
            stdout.print(summary(table, f"{config.dataset} · n={table['n'].iloc[0]} · seed={config.seed}"))
            lines = verdict(table, elliptical_models(read_run_json(run_dir)))
            if lines is not None:
                stdout.print(lines, soft_wrap=False)  # wrapped at the terminal's width, unlike the tables
        warn_sanity(table)
        if report:
            from ellrobust.report.writer import write_report

            stderr.print(f"report: {write_report([run_dir], run_dir)}")
        for line in log_run(run_dir, trackers):
            stderr.print(line)


def execute(config, out: Path | None, max_image_pixels: int | None = None):
    """Run an evaluation with progress on stderr; its :class:`~ellrobust.api.Results` (None on torchrun's other ranks).

    Shared by ``eval`` and ``collapse``. It calls :func:`ellrobust.api.run_config`, as
    ``ellrobust.evaluate`` does; here the default run folder is named after the request under
    ``reports/runs/``, and the command line is recorded in run.json so that reports can say how to
    reproduce them.
    ``--max-image-pixels`` is not part of the request (it changes no number, only which files may be
    read), so raising it after a refused image resumes the same run folder.
    """
    from ellrobust.api import run_config
    from ellrobust.cli.terminal import data_warnings, stderr, unit_progress
    from ellrobust.core.distributed import is_main_process
    from ellrobust.data import image_pixel_limit
    from ellrobust.results import read_run_json

    run_dir = out if out is not None else default_run_dir(config)
    command = (
        shlex.join(["ellrobust", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("ellrobust", "__main__.py") else None
    )
    with (
        image_pixel_limit(max_image_pixels),
        data_warnings(),
        unit_progress(enabled=is_main_process()) as progress,
    ):
        result = run_config(config, out=run_dir, progress=progress, command=command)
    if not is_main_process():
        return None
    stderr.print(f"results: {run_dir}/results.csv ({result.computed} units computed, {result.reused} reused)")
    meta = read_run_json(run_dir)
    for death in meta.get("worker_deaths", []):
        stderr.print(
            f"warning: a worker process died ({death['cause']}); "
            f"a fresh worker ran its {death['lost_tasks']} task(s) again (see run.json)."
        )
    if config.collapse is not None:
        models = meta["models"]
        skipped = [name for name, info in models.items() if not info.get("tokens", True)]
        if skipped:
            stderr.print(
                f"collapse: not measured for {', '.join(skipped)} (no tokens); the other models were measured."
            )
    return result
