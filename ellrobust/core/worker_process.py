"""The worker side of the pool: what a worker process runs, and how its failures and deaths reach the
parent as one line."""

from __future__ import annotations

import signal
import traceback
from multiprocessing.connection import Connection

from ellrobust.core.errors import WorkerError


def init_worker(cv2_inherited: bool) -> None:
    """One thread per worker: the pool provides the parallelism, nested thread pools only contend.

    OpenCV is the exception to setting this in the worker: its thread pool is not fork-safe, and
    ``cv2.setNumThreads`` in a child joins threads that only existed in the parent (a hang). When the
    parent had imported OpenCV it set one thread before forking
    (:meth:`ellrobust.core.workers.WorkerPool.__init__`); otherwise the worker imports it fresh and may
    set it here.
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    if not cv2_inherited:
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # pragma: no cover - opencv comes with imagecorruptions
            pass


def worker_main(conn: Connection, cv2_inherited: bool, inherited: list[Connection]) -> None:
    """A worker's life: set up once, then run the tasks that come through ``conn`` and send back each outcome.

    An outcome is ``(task id, ok, result or exception, remote traceback)``. SIGINT is ignored: Ctrl-C
    reaches the whole process group, and the parent alone handles it (it ends the workers), so no
    worker prints a traceback of its own. A setup error is kept and answers every task, so it reaches
    the user as one line instead of the worker being replaced again and again. The parent's ends of
    the pipes (``inherited`` at the fork) are closed here, so that each pipe closes, and its worker
    ends, when the parent is gone, however it ended.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the CLI's handler, which unwinds the parent alone
    for other in inherited:
        other.close()
    setup_error = None
    try:
        init_worker(cv2_inherited)
    except Exception as exc:
        setup_error = WorkerError(
            f"a worker process could not set up ({type(exc).__name__}: {_one_line(exc)}); reinstall ellrobust's "
            "dependencies, or pass --workers 0 to run without worker processes."
        )
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone (a closing pool ends its workers with SIGTERM instead)
        task_id, task = message
        if setup_error is not None:
            outcome = (task_id, False, setup_error, None)
        else:
            try:
                outcome = (task_id, True, task(), None)
            except Exception as exc:
                outcome = (task_id, False, exc, traceback.format_exc())
        try:
            conn.send(outcome)
        except (EOFError, OSError):
            return
        except Exception as exc:  # a result or an exception that does not pickle: say so instead
            conn.send(
                (
                    task_id,
                    False,
                    RuntimeError(f"the task's outcome cannot be sent to the parent ({type(exc).__name__}: {exc})"),
                    None,
                )
            )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as its cause (what ``--debug`` shows)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


def describe(task: object) -> str:
    """What a task does, for messages (``decoding image '…/x.JPEG'``): its own ``describe()``, else its repr."""
    about = getattr(task, "describe", None)
    return about() if callable(about) else f"running {task!r}"


def task_failed(doing: str, exc: BaseException) -> WorkerError:
    """The one-line error of a task that raised an unexpected exception while ``doing`` (:func:`describe`)."""
    return WorkerError(f"{doing} failed: {type(exc).__name__}: {_one_line(exc)} (--debug shows the traceback).")


def death_cause(exitcode: int | None) -> str:
    """How a worker ended, with the likely reason when its signal tells one."""
    if exitcode is None:
        return "it ended without an exit status"
    if exitcode >= 0:
        return f"it exited with status {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return f"it was killed by signal {-exitcode}"
    hints = {
        "SIGKILL": "most often the kernel's out-of-memory killer (see `dmesg`)",
        "SIGBUS": "a memory-mapped file that could not be paged in (a full disk or a truncated store file)",
        "SIGSEGV": "a crash in native code (Pillow, OpenCV, numba) or memory exhaustion",
        "SIGABRT": "a crash in native code (Pillow, OpenCV, numba) or memory exhaustion",
    }
    return f"killed by {name}" + (f", {hints[name]}" if name in hints else "")
