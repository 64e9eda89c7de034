"""The Typer options of ``eval`` and ``collapse``, generated from the request spec (:mod:`ellrobust.request.spec`).

A command is a function of keyword arguments whose ``__signature__`` this module builds: Typer reads
``inspect.signature``, so each flag, its type, default, help and ``--help`` panel come from the one
table, and the command receives its values by the spec's names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import typer

from ellrobust.request.spec import options_of


def option(name: str, command: str = "eval") -> typer.models.OptionInfo:
    """The Typer option of the spec's ``name`` (for commands that share one, such as ``train``)."""
    o = options_of(command)[name]
    return typer.Option(o.default, *o.flags, help=o.help, rich_help_panel=o.panel.capitalize())


def typer_signature(command: str) -> inspect.Signature:
    """The signature Typer reads for ``command``: one keyword parameter per option of the spec."""
    params = [
        inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=option(o.name, command), annotation=o.kind)
        for o in options_of(command).values()
    ]
    return inspect.Signature(params, return_annotation=None)


def command(app: typer.Typer, name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``function(**values)`` as ``name`` with the spec's options of that command."""

    def register(function: Callable[..., None]) -> Callable[..., None]:
        function.__signature__ = typer_signature(name)
        return app.command(name)(function)

    return register
