"""Reading back what ellrobust wrote: one guard for every file of a run folder, a baseline or the image cache.

A run folder outlives the process that wrote it: a disk fills, a copy is cut short, someone deletes
``adversarial/`` or edits a JSON file by hand. Every file ellrobust reads back (run.json, unit files,
the results table, ``examples.csv.gz``, adversarial images, OOD scores, baselines, the ``--cache`` image
store) goes through :func:`reading` or :func:`read_json`, so a damaged or missing file is one line
naming the file and the fix (:class:`DamagedFileError`), never a traceback from gzip, pandas,
safetensors or numpy. Unit files are the exception that proves the rule: the engine recomputes a
damaged unit instead of stopping.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from ellrobust.core.errors import UsageError, quote

#: The fix for a damaged file that the run which wrote it can write again.
RECOMPUTE = "recompute it with the same command"


class DamagedFileError(UsageError):
    """A file ellrobust wrote (or was given to read back) is missing, truncated or not what it should hold."""


def _decode_errors() -> tuple[type[BaseException], ...]:
    """What a parser raises on bytes that are not its format (safetensors' own error where it is installed)."""
    errors: tuple[type[BaseException], ...] = (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        zlib.error,
    )
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    return errors


@contextlib.contextmanager
def reading(path: str | Path, what: str, fix: str = RECOMPUTE) -> Iterator[None]:
    """Turn any failure to read or parse ``path`` inside the block into one :class:`DamagedFileError` line.

    Args:
        path: the file being read (named in the message).
        what: what the file is, for the message ("run.json", "per-example table").
        fix: what the user should do, e.g. :data:`RECOMPUTE` or "delete it and run the same command".

    ``MemoryError`` is caught too: a garbage header can announce a size no machine holds.
    """
    try:
        yield
    except DamagedFileError:
        raise
    except FileNotFoundError:
        raise DamagedFileError(f"the {what} {quote(path)} is missing; {fix}.") from None
    except (*_decode_errors(), MemoryError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise DamagedFileError(f"the {what} {quote(path)} is damaged ({_reason(exc)}); {fix}.") from None


def _reason(exc: BaseException) -> str:
    """A short cause for the message: the error's type and at most a line of its text."""
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {quote(text, 120, marks=False)}" if text else type(exc).__name__


def read_json(path: str | Path, what: str, fix: str = RECOMPUTE, kind: type = dict):
    """The JSON value of ``path``, which must be a ``kind`` (an object unless told); one line otherwise."""
    path = Path(path)
    with reading(path, what, fix):
        data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, kind):
        expected = {dict: "an object", list: "a list"}.get(kind, kind.__name__)
        raise DamagedFileError(
            f"the {what} {quote(path)} holds {type(data).__name__}, not {expected} as ellrobust writes it; {fix}."
        )
    return data
