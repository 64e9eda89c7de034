"""The ``ellrobust`` application: the Typer app, its error handling, ``--debug``/``--version``, and ``main``.

An :class:`~ellrobust.core.errors.EllrobustError` from anywhere becomes one line on stderr and its exit
code: 2 for a :class:`~ellrobust.core.errors.UsageError`, 3 for a resource fault (a worker that died, a
full disk); ``--debug`` shows the traceback instead. Exit 130 after Ctrl-C, 143 after SIGTERM (the same
clean-up and message). The commands are the
sibling modules, one per command, registered on :data:`app` below.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import typer
from typer.core import TyperGroup

from ellrobust.cli import check, collapse, convert, evaluate, listing, report, train
from ellrobust.core.allocator import keep_freed_memory
from ellrobust.core.errors import DISK_ERRNOS, EllrobustError, disk_error
from ellrobust.core.version import __version__

try:  # Typer ≥ 0.16 vendors click; older releases use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException


class _Group(TyperGroup):
    """Turns user errors and resource faults into one-line messages, inside Typer (so CliRunner sees it)."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return list(self.commands)  # registration order, not alphabetical

    def invoke(self, ctx: typer.Context):
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except EllrobustError as exc:  # bad input (exit 2) or a resource fault: a dead worker, a full disk (exit 3)
            if _debug(ctx):
                raise
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS or _debug(ctx):
                raise
            what = f"file {os.path.basename(exc.filename)!r}" if exc.filename else "output"
            # a write that no narrower handler knew about: the same line and exit code
            error = disk_error(exc, None, what)
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(error.exit_code) from None
        except ClickException as exc:  # option parsing: one line instead of a usage panel
            sub = getattr(exc, "ctx", None)
            path = sub.command_path if sub is not None else "ellrobust"
            message = _one_line(exc.format_message()).rstrip()
            message += "" if message.endswith((".", "?", "!")) else "."
            typer.echo(f"error: {message} See `{path} --help`.", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            typer.echo("interrupted: finished units are saved; run the same command again to resume.", err=True)
            raise typer.Exit(128 + getattr(exc, "signum", signal.SIGINT)) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's cancel, ``kill``), raised where Ctrl-C would raise: the same clean-up and message."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind the command as Ctrl-C does, so ``finally`` blocks remove the run's temporary image store.

    Only this process raises: a forked child (a pool or DataLoader worker) that inherited the handler
    dies of the signal as it would have without it. Outside the main thread nothing is installed.
    """
    owner = os.getpid()

    def terminate(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(exc: Exception | str) -> str:
    """The message itself, also when a DataLoader worker wrapped it in a copy of its traceback."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1:
        last = lines[-1]
        return (
            last.split(": ", 1)[1]
            if last.startswith(("ellrobust.core.errors.", "UsageError")) and ": " in last
            else last
        )
    return lines[0] if lines else type(exc).__name__


def _debug(ctx: typer.Context) -> bool:
    root = ctx.find_root()
    return bool((root.params or {}).get("debug")) or os.environ.get("ELLROBUST_DEBUG") == "1"


app = typer.Typer(
    cls=_Group,
    name="ellrobust",
    help="Is an Elliptical Attention ViT more robust than the same DeiT? Attacks, corruptions and "
    "representation-collapse metrics with paired statistics, reports and CI checks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    """``--version``: answered while the options are parsed, so it needs no command after it."""
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Options for every command (the callback above answers ``--version``)."""


def _register_commands(app: typer.Typer) -> None:
    """Every command, in the order ``--help`` lists them; each module registers its own command(s)."""
    for module in (evaluate, collapse, train, listing, convert, report, check):
        module.register(app)


_register_commands(app)


def main() -> None:
    """Console-script entry point: this process keeps the memory it frees (:mod:`ellrobust.core.allocator`)."""
    keep_freed_memory()
    sys.exit(app())
