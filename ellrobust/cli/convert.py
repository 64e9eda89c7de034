"""``ellrobust convert``: turn a pickled checkpoint into safetensors, unpickling only with --trust."""

from __future__ import annotations

from pathlib import Path

import typer


def convert_cmd(
    src: Path = typer.Argument(..., help="Checkpoint to read (.pth/.pt/.safetensors)."),
    dst: Path = typer.Argument(..., help="safetensors file to write."),
    trust: bool = typer.Option(
        False,
        "--trust",
        help=(
            "Allow full unpickling of SRC. This runs any code the file contains: "
            "only for files from a source you trust."
        ),
    ),
) -> None:
    """Convert a checkpoint to safetensors (weights only), once, so it never needs unpickling again."""
    from ellrobust.cli.terminal import stdout
    from ellrobust.core.errors import UsageError, quote
    from ellrobust.core.files import check_destination
    from ellrobust.models import convert_checkpoint

    check_destination(dst, "destination", folder=False)
    if dst.suffix != ".safetensors":
        raise UsageError(f"destination {quote(dst)} must end in .safetensors.")
    path = convert_checkpoint(src, dst, trust=trust)
    stdout.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
