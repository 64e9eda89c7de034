"""``ellrobust collapse``: per-layer representation collapse of one or more models on the same images.

A thin layer over ``eval``: it builds the same :class:`~ellrobust.engine.EvalConfig` (no attacks, a
:class:`~ellrobust.collapse.CollapseConfig`) and runs the same engine, so the results table, the run
folder and resuming are shared with ``ellrobust eval --collapse``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ellrobust.cli import options
from ellrobust.parsing import parse_elliptical_layers, parse_int_range, parse_name_list, parse_workers

if TYPE_CHECKING:  # pandas, rich and torch load only when a command runs: `ellrobust --help` stays fast
    import pandas as pd
    from rich.table import Table

#: Parsing bounds only: CollapseConfig rejects negative layers, the stage checks each model's depth.
_MAX_LAYER = 10_000

#: The collapse metrics in display order, with their cell format.
_METRICS = {"token_cosine": "{:.3f}", "attention_entropy": "{:.3f}", "effective_rank": "{:.2f}"}


def register(app: typer.Typer) -> None:
    @app.command("collapse")
    def collapse_cmd(
        model: list[str] = options.MODELS,
        checkpoint: list[str] = options.CHECKPOINTS,
        data: str = typer.Option("digits", "--data", "-d", help="Dataset (see `ellrobust datasets`); its test/val split is used."),
        data_root: Path | None = options.DATA_ROOT,
        n: int = typer.Option(256, "--n", "-n", help="Number of images, a seeded subset of the split (all if the split is smaller)."),
        seed: int = typer.Option(0, help="Seed for the image subset."),
        batch_size: int = options.BATCH_SIZE,
        feature: str = typer.Option("residual", "--feature", help="Tokens to measure: residual (stream after each block) or attention (attention-branch output)."),
        no_cls: bool = typer.Option(False, "--no-cls", help="Leave the class token out (the paper keeps it)."),
        per_head: bool = typer.Option(False, "--per-head", help="Also report each head (needs --feature attention)."),
        layers: str | None = typer.Option(None, "--layers", help="0-based blocks to measure, e.g. 0,3,5 or 0-5 (default: all)."),
        metrics: str = typer.Option("token_cosine,attention_entropy,effective_rank", "--metrics", help="Metrics, comma-separated; token_cosine alone is nearly free on top of a forward pass."),
        precision: str = typer.Option("fp32", "--precision", help="Precision of the measuring forward passes: fp32, tf32 or bf16 (clean accuracy stays fp32)."),
        elliptical_layers: list[str] = options.ELLIPTICAL_LAYERS,
        workers: str = options.WORKERS,
        out: Path | None = options.OUT,
        json_out: bool = options.JSON,
        device: str = options.DEVICE,
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
        from ellrobust.cli.render import print_json, stdout
        from ellrobust.collapse import CollapseConfig
        from ellrobust.engine import EvalConfig

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
            checkpoints=tuple(checkpoint),
            dataset=data,
            data_root=str(data_root) if data_root else None,
            n=n,
            seed=seed,
            batch_size=batch_size,
            attacks=(),
            collapse=collapse,
            elliptical_layers=parse_elliptical_layers(elliptical_layers),
            workers=parse_workers(workers),
            device=device,
        )
        result = execute(config, out)
        if result is None:
            return  # under torchrun, rank 0 alone prints and writes
        if json_out:
            print_json(result.table)
        else:
            stdout.print(collapse_table(result.table))


def collapse_table(df: pd.DataFrame) -> Table | None:
    """Layers as rows, models as columns, one block of rows per metric (token cosine first).

    Models side by side make the comparison the eye needs (elliptical vs baseline at each layer).
    With attacks in the run there is one block per image set: the clean images first, then each
    attack × eps × m_grad. A baseline has no m_grad (''), so its rows are shown next to every
    m_grad mode of an elliptical model, as in the paired comparison. Returns None when the table
    holds no collapse rows.
    """
    import pandas as pd
    from rich.table import Table

    from ellrobust.cli.render import fmt_eps

    rows = df[df["metric"].isin(list(_METRICS)) & df["layer"].notna()]
    if rows.empty:
        return None
    values: dict[tuple, float] = {}
    modes: dict[tuple, set[str]] = {}  # (method, eps) -> m_grad modes of elliptical models
    heads: set[int] = set()
    for r in rows.itertuples(index=False):
        head = json.loads(r.params).get("head")
        eps = None if pd.isna(r.eps) else float(r.eps)
        mode = "" if pd.isna(r.m_grad) else str(r.m_grad)
        modes.setdefault((r.method, eps), set()).update({mode} - {""})
        values[(r.method, eps, mode, r.metric, int(r.layer), head, r.model)] = float(r.value)
        if head is not None:
            heads.add(head)
    models = list(dict.fromkeys(rows["model"]))
    metrics = [m for m in _METRICS if m in set(rows["metric"])]
    layer_ids = sorted({int(v) for v in rows["layer"]})
    attacked = any(method != "collapse" for method, _ in modes)
    params = json.loads(rows["params"].iloc[0])
    cls = "class token included" if params.get("cls", True) else "class token excluded"
    table = Table(
        title=f"Representation collapse per layer ({params.get('feature')} tokens, {cls})",
        caption="more collapsed: higher token_cosine, lower effective_rank",
    )
    for col in (("images", "eps", "m_grad") if attacked else ()) + ("metric", "layer") + (("head",) if heads else ()):
        table.add_column(col, justify="right" if col in ("eps", "layer", "head") else "left")
    for name in models:
        table.add_column(name, justify="right")

    def order(condition: tuple) -> tuple:
        method, eps = condition
        return (method != "collapse", method, eps or 0.0)  # clean images first

    for method, eps in sorted(modes, key=order):
        for mode in sorted(modes[(method, eps)]) or [""]:
            condition = ("clean" if method == "collapse" else str(method), fmt_eps(eps), mode) if attacked else ()
            for metric in metrics:
                for layer in layer_ids:
                    for head in [None, *sorted(heads)]:
                        cells = []
                        for name in models:
                            value = values.get((method, eps, mode, metric, layer, head, name))
                            if value is None:  # a baseline's rows hold for every m_grad mode
                                value = values.get((method, eps, "", metric, layer, head, name))
                            cells.append("" if value is None else _METRICS[metric].format(value))
                        if any(cells):
                            head_cell = (("all" if head is None else str(head)),) if heads else ()
                            table.add_row(*condition, metric, str(layer), *head_cell, *cells)
                table.add_section()
    return table
