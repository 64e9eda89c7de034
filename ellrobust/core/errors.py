"""Exceptions that carry a message meant for the user.

The CLI turns any :class:`EllrobustError` into one line on stderr and its :attr:`~EllrobustError.exit_code`:
2 for bad input (:class:`UsageError`), 3 for a resource fault (:class:`ResourceError`: a worker process
died, the disk is full). Anything else is a bug and keeps its traceback (shown with ``--debug``).
"""

from __future__ import annotations

import errno
from pathlib import Path


class EllrobustError(Exception):
    """Base class of every error ellrobust raises on purpose."""

    #: The CLI's exit status for this kind of error.
    exit_code = 1


class UsageError(EllrobustError):
    """Bad input from the user: the message names the problem and how to fix it."""

    exit_code = 2


class CheckpointError(UsageError):
    """A checkpoint that cannot be loaded safely or does not fit the architecture."""


class DataWarning(UserWarning):
    """Data that loads but probably not as meant (numbered class folders sorted as text).

    A warning, not an error, since the data may be right; the CLI prints it as one line on stderr.
    """


class ResourceError(EllrobustError):
    """The machine could not carry the run (memory, disk, a crashed process), not the input.

    The message names what failed and the fix; finished units are saved, so the same command resumes
    once the fix is made. Exit code 3 tells scripts that the request itself was fine.
    """

    exit_code = 3


class WorkerError(ResourceError):
    """A worker process of the run's pool died twice, could not start, or failed inside a task."""


class DiskFullError(ResourceError):
    """A file could not be written: no space left, a disk quota reached, or a read-only file system."""


#: ``errno`` values that mean "this folder cannot take the file", whatever the file.
DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}


#: The most characters of one user input that a message quotes (a 2 MB line is not echoed whole).
QUOTE_LIMIT = 200


def quote(text: object, limit: int = QUOTE_LIMIT, *, marks: bool = True) -> str:
    """User input (a path, a line, a name) as a message quotes it: ``repr``-quoted, at most ``limit`` characters.

    Longer input keeps its start and end around ``…`` and says how long it was, so the message stays one
    readable line whatever the input; ``marks=False`` leaves out the quotes (for text inside a message).
    """
    text = str(text)
    if len(text) <= limit:
        return repr(text) if marks else text
    keep = max(limit // 2 - 10, 1)
    short = f"{text[:keep]}…{text[-keep:]}"
    return f"{repr(short) if marks else short} ({len(text):,} characters)"


def format_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``: sizes in messages."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    k = 0
    while abs(n) >= 1024 and k < len(units) - 1:
        n /= 1024
        k += 1
    return f"{n:.0f} B" if k == 0 else f"{n:.1f} {units[k]}"


#: What a write that ran out of room should suggest (run folder, cache); the same command then resumes.
DISK_FIX = (
    "free space there or pass --out (the run folder) or --cache on another disk, "
    "then re-run the same command: finished units are kept"
)


def disk_error(exc: OSError, path: str | Path | None, what: str, needed: int | None = None) -> DiskFullError:
    """The one-line error of a write of ``path`` that ``exc`` (an errno of :data:`DISK_ERRNOS`) stopped.

    Args:
        exc: the error from the write.
        path: the file being written (its folder is named); None: the error's own file name.
        what: what was being written, for the message ("unit file", "decoded images").
        needed: bytes the write needed, when known.
    """
    target = path if path is not None else exc.filename
    where = f" in {str(Path(target).parent)!r}" if target else ""
    size = f" (about {format_bytes(needed)} needed)" if needed is not None else ""
    reason = DISK_ERRNOS.get(exc.errno, exc.strerror or type(exc).__name__)
    fix = (
        DISK_FIX
        if exc.errno != errno.EROFS
        else DISK_FIX.replace("free space there or pass", "pass").replace("another disk", "a writable disk")
    )
    return DiskFullError(f"cannot write the {what}{where}{size}: {reason}; {fix}.")
