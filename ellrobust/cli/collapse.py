"""``ellrobust collapse``: per-layer representation collapse of one or more models on the same images.

A thin layer over ``eval``: it builds the same :class:`~ellrobust.engine.runner.EvalConfig` (no attacks, a
:class:`~ellrobust.measures.collapse_probe.CollapseConfig`) and runs the same engine, so the results table, the run
folder and resuming are shared with ``ellrobust eval --collapse``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ellrobust.cli import options
from ellrobust.core.parsing import MAX_IMAGES, parse_checkpoints, parse_int_range, parse_name_list, parse_workers

#: Parsing bounds only: CollapseConfig rejects negative layers, the stage checks each model's depth.
_MAX_LAYER = 10_000


def register(app: typer.Typer) -> None:
    @app.command("collapse")
    def collapse_cmd(
        model: list[str] = options.MODELS,
        checkpoint: list[str] = options.CHECKPOINTS,
        data: str = typer.Option(
            "digits", "--data", "-d", help="Dataset (see `ellrobust datasets`); its test/val split is used."
        ),
        data_root: Path | None = options.DATA_ROOT,
        n: int = typer.Option(
            256,
            "--n",
            "-n",
            help=(
                f"Number of images, a seeded subset of the split (all if the split is smaller; at most {MAX_IMAGES:,})."
            ),
        ),
        seed: int = typer.Option(0, help="Seed for the image subset."),
        batch_size: int = options.BATCH_SIZE,
        feature: str = typer.Option(
            "residual",
            "--feature",
            help="Tokens to measure: residual (stream after each block) or attention (attention-branch output).",
        ),
        no_cls: bool = typer.Option(False, "--no-cls", help="Leave the class token out (the paper keeps it)."),
        per_head: bool = typer.Option(False, "--per-head", help="Also report each head (needs --feature attention)."),
        layers: str | None = typer.Option(
            None, "--layers", help="0-based blocks to measure, e.g. 0,3,5 or 0-5 (default: all)."
        ),
        metrics: str = typer.Option(
            "token_cosine,attention_entropy,effective_rank",
            "--metrics",
            help="Metrics, comma-separated; token_cosine alone is nearly free on top of a forward pass.",
        ),
        precision: str = typer.Option(
            "fp32",
            "--precision",
            help="Precision of the measuring forward passes: fp32, tf32 or bf16 (clean accuracy stays fp32).",
        ),
        elliptical_layers: list[str] = options.ELLIPTICAL_LAYERS,
        heads: list[str] = options.HEADS,
        mean: list[str] = options.MEAN,
        std: list[str] = options.STD,
        img_size: int | None = options.IMG_SIZE,
        workers: str = options.WORKERS,
        max_image_pixels: int | None = options.MAX_IMAGE_PIXELS,
        out: Path | None = options.OUT,
        json_out: bool = options.JSON,
        device: str = options.DEVICE,
        deterministic: bool = options.DETERMINISTIC,
    ) -> None:
        """Token cosine similarity, attention entropy and effective rank, layer by layer.

        Higher token cosine and lower effective rank mean more collapsed tokens. Clean accuracy is
        computed as well (it is part of every run).

        Examples:

          ellrobust collapse --model deit-elliptical --model deit

          ellrobust collapse -m deit-elliptical -m deit --feature attention --per-head --layers 0,3,5

        On adversarial images (those the attack stage attacks: the clean-correct ones):

          ellrobust eval -m deit-elliptical -m deit --attack pgd --collapse
        """
        from ellrobust.cli.evaluate import execute
        from ellrobust.cli.terminal import collapse_table, print_json, stdout
        from ellrobust.engine.runner import EvalConfig
        from ellrobust.measures.collapse_probe import CollapseConfig

        collapse = CollapseConfig(
            feature=feature,
            include_cls=not no_cls,
            per_head=per_head,
            layers=parse_int_range(layers, "--layers", -_MAX_LAYER, _MAX_LAYER) if layers is not None else None,
            metrics=parse_name_list(metrics, "--metrics"),
            precision=precision,
        )
        config = EvalConfig(
            models=tuple(model),
            checkpoints=parse_checkpoints(checkpoint),
            dataset=data,
            data_root=str(data_root) if data_root else None,
            n=n,
            seed=seed,
            batch_size=batch_size,
            attacks=(),
            collapse=collapse,
            **options.model_settings(elliptical_layers, heads, mean, std, img_size),
            workers=parse_workers(workers),
            device=device,
            deterministic=deterministic,
        )
        result = execute(config, out, max_image_pixels)
        if result is None:
            return  # under torchrun, rank 0 alone prints and writes
        if json_out:
            print_json(result.table)
        else:
            stdout.print(collapse_table(result.table))
