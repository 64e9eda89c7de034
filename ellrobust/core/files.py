"""Files on disk that are never half-written: atomic writes, free-space checks, the run folder's lock.

Every file ellrobust writes (units, tables, reports, store sidecars, checkpoints' metadata) goes
through :func:`atomic_write`, so a crash, a kill or a full disk leaves the old content or the new,
never a mixture, and a full disk is one line naming the folder (:func:`~ellrobust.core.errors.disk_error`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

from ellrobust.core.errors import DISK_ERRNOS, DISK_FIX, DiskFullError, UsageError, disk_error, format_bytes, quote

#: The longest file or folder name, in bytes, of the usual file systems (ext4, XFS, APFS, NTFS).
NAME_MAX = 255


def default_mode() -> int:
    """The permissions a plain ``open`` would give (mkstemp's 0600 would hide results from others)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see either the old or the new content, never half of it.

    A full disk, a disk quota or a read-only file system ends in a one-line
    :class:`~ellrobust.core.errors.DiskFullError` naming the folder and the file's size, and the temporary
    file is removed, so no partial file is ever left behind.
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise disk_error(exc, path, f"file {path.name!r}", len(payload)) from exc
        raise


def check_destination(path: str | os.PathLike, flag: str, *, folder: bool) -> Path:
    """Refuse, before any work, a destination that cannot be written: a name too long, a file in the way.

    Args:
        path: the folder (``--out``) or file (``convert``'s destination) to write.
        flag: how messages name it (``--out``, ``destination``).
        folder: whether ``path`` is to be a folder (else a file: an existing folder there is refused).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path).expanduser()
    for part in path.parts:
        if len(part.encode()) > NAME_MAX:
            raise UsageError(
                f"{flag} {quote(path)}: the name {quote(part, 60)} has {len(part.encode())} bytes, more than the "
                f"{NAME_MAX} a file system takes; pass a shorter name."
            )
    if not folder and path.is_dir():
        raise UsageError(f"{flag} {quote(path)} is a folder; name the file to write inside it.")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {quote(path)} is a file; pass a folder.")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"{flag} {quote(path)} lies inside {quote(blocking)}, which is a file; pass a folder path.")
    return path


def require_free_space(folder: Path, needed: int, what: str, fix: str = DISK_FIX) -> None:
    """Refuse at once, before large files are created in ``folder``, when its disk has less than ``needed`` bytes free.

    Large files (a memory-mapped image store, a cache of corrupted images) are checked before they
    are created: a run then stops in seconds with the size it needs, not hours later half-way.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(exc, folder / ".", what, needed) from exc
        raise
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFullError(
            f"the {what} need {format_bytes(needed)} in {str(folder)!r}, which has {format_bytes(free)} free; {fix}."
        )


class RunLock:
    """An exclusive lock on a run folder: two runs on the same ``--out`` would corrupt it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"--out {str(self.path.parent)!r} is (inside) a file; pass a folder.") from None
        except PermissionError:
            raise UsageError(
                f"--out {str(self.path.parent)!r} is not writable; pass a folder you can write to."
            ) from None
        except OSError as exc:
            if exc.errno in DISK_ERRNOS:
                raise disk_error(exc, self.path, "run folder's lock file") from exc
            raise
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(
                    f"another ellrobust run is writing to {str(self.path.parent)!r}; wait for it or pass another --out."
                ) from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
