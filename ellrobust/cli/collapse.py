"""``ellrobust collapse``: per-layer representation collapse of one or more models on the same images.

A thin layer over ``eval``: it builds the same :class:`~ellrobust.engine.runner.EvalConfig` (no attacks, a
:class:`~ellrobust.measures.collapse_probe.CollapseConfig`) and runs the same engine, so the results table, the run
folder and resuming are shared with ``ellrobust eval --collapse``.
"""

from __future__ import annotations

import typer

from ellrobust.cli import options
from ellrobust.core.parsing import parse_int_range, parse_name_list

#: Parsing bounds only: CollapseConfig rejects negative layers, the stage checks each model's depth.
_MAX_LAYER = 10_000


def register(app: typer.Typer) -> None:
    @options.command(app, "collapse")
    def collapse_cmd(**values: object) -> None:
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
        from ellrobust.cli.terminal import measure_table, print_json, stdout
        from ellrobust.measures.collapse_probe import CollapseConfig
        from ellrobust.request.build import build_config
        from ellrobust.request.spec import Caller

        out, max_image_pixels, json_out = values.pop("out"), values.pop("max_image_pixels"), values.pop("json")
        layers = values.pop("layers")
        collapse = CollapseConfig(
            feature=values.pop("feature"),
            include_cls=not values.pop("no_cls"),
            per_head=values.pop("per_head"),
            layers=parse_int_range(layers, "--layers", -_MAX_LAYER, _MAX_LAYER) if layers is not None else None,
            metrics=parse_name_list(values.pop("metrics"), "--metrics"),
            precision=values.pop("precision"),
        )
        config = build_config({**values, "attacks": "none", "collapse": True}, Caller.CLI, default_collapse=collapse)
        result = execute(config, out, max_image_pixels)
        if result is None:
            return  # under torchrun, rank 0 alone prints and writes
        if json_out:
            print_json(result.table)
        else:
            stdout.print(measure_table(result.table, "collapse"))
