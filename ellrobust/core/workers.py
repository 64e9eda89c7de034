"""One pool of worker processes for the whole run: decoding images and generating corruptions.

Why one long-lived pool instead of a DataLoader per unit: a DataLoader starts fresh workers for every
unit (seconds each at ImageNet scale, with numba's glass_blur compiled again in every worker), and it
hands out whole batches, so a unit of 16 images keeps one worker busy and the rest idle. Here the
workers are forked once, before the models are loaded (small processes, no CUDA context), and take
work at image granularity; results come back in submission order while at most ``window`` tasks are
in flight, so generation runs ahead of the models' forward passes without unbounded memory.

What workers need from the parent (the dataset, the run's image store) is placed in :data:`SHARED`
before the fork and inherited, never pickled per task. Tasks are small picklable callables that
read it. With ``workers == 0`` every task runs inline in the calling process, in the same order.

Why not :class:`multiprocessing.Pool`: it cannot tell that a worker died. It replaces a worker that
the kernel's out-of-memory killer took, but the task that worker held is never finished and the run
waits for it forever; a worker killed while waiting for work holds the shared task queue's lock, and
every other worker then waits too; a worker whose initializer fails is replaced, fails again, forever.
Here each worker has its own pipe, so the parent knows which tasks each one holds: a dead worker is
noticed at once (its pipe closes), its tasks go to a fresh worker, and a second death stops the run
with one line (:class:`~ellrobust.core.errors.WorkerError`). Tasks are deterministic functions of their
arguments (each image has its own seed), so a task run again gives the same result.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TypeVar

from ellrobust.core.errors import EllrobustError, WorkerError

T = TypeVar("T")

#: Objects the workers inherit at the fork (the dataset, the image store); read by task callables.
SHARED: dict[str, object] = {}

#: Upper bound of ``auto`` workers: beyond it, decoding and corruption stop scaling on one node.
MAX_AUTO_WORKERS = 32

#: Worker deaths a run survives: the tasks of the first dead worker go to a fresh one; the next death stops the run.
DEATHS_SURVIVED = 1

#: Tasks a worker holds at once: the one it runs and the next, so that it never waits for the parent in between.
TASKS_PER_WORKER = 2

#: Seconds a worker gets to end after SIGTERM when the pool closes, before SIGKILL.
STOP_TIMEOUT = 5.0


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_workers(on_disk: bool, local_world_size: int = 1) -> int:
    """``--workers auto``: the usable cores (shared by the ranks of a node) for on-disk data, else 0.

    Decoding JPEGs and corrupting ImageNet-sized images is the work that pays for processes. Data
    already in memory as tensors (the embedded digits, the synthetic set) needs no decoding, and
    its 32 px corruptions cost about as much as the models' forward passes on the same cores, so
    worker processes would only compete with the main process there.
    """
    if not on_disk:
        return 0
    return max(1, min(MAX_AUTO_WORKERS, usable_cores() // max(1, local_world_size)))


def _init_worker(cv2_inherited: bool) -> None:
    """One thread per worker: the pool provides the parallelism, nested thread pools only contend.

    OpenCV is the exception to setting this in the worker: its thread pool is not fork-safe, and
    ``cv2.setNumThreads`` in a child joins threads that only existed in the parent (a hang). When the
    parent had imported OpenCV it set one thread before forking (:meth:`WorkerPool.__init__`); otherwise
    the worker imports it fresh and may set it here.
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


def _worker_main(conn: Connection, cv2_inherited: bool, inherited: list[Connection]) -> None:
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
        _init_worker(cv2_inherited)
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


def _death_cause(exitcode: int | None) -> str:
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


def _stop(live: list[_Worker]) -> None:
    """End workers: SIGTERM (a task may be running; nothing in it needs cleaning up), SIGKILL after
    :data:`STOP_TIMEOUT`."""
    for worker in live:
        worker.process.terminate()
    for worker in live:
        worker.process.join(STOP_TIMEOUT)
        if worker.process.exitcode is None:
            worker.process.kill()
            worker.process.join()
        worker.conn.close()


@dataclass(eq=False)
class _Worker:
    """A worker process, the parent's end of its pipe, and the ids of the tasks it holds (oldest first)."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    tasks: collections.deque[int] = field(default_factory=collections.deque)


class WorkerPool:
    """A fork-started process pool that lives for one run (inline when ``workers == 0``).

    Use it as a context manager: the processes end when the run ends, also on errors.

    Inside, a thread of the parent (the *pump*) collects outcomes from the workers' pipes and hands
    each worker its next task, so workers stay busy while the main thread runs the models. A worker
    that dies is noticed there (its pipe closes); the main thread forks its replacement, since forking
    from the main thread, between two of its own steps, is the safe place. The replacement may fork
    after the models went to the GPU: workers never touch CUDA, so that is harmless.

    Attributes:
        deaths: one entry per worker that died during the run (pid, exit code, how it ended, tasks it
            held), recorded in run.json.
    """

    def __init__(self, workers: int, shared: dict[str, object] | None = None) -> None:
        self.workers = workers
        self.deaths: list[dict] = []
        SHARED.clear()
        SHARED.update(shared or {})
        self._context = multiprocessing.get_context("fork")
        self._live: list[_Worker] = []
        self._tasks: dict[int, Callable] = {}  # submitted and still wanted, by id
        self._backlog: collections.deque[int] = collections.deque()  # submitted, not yet sent to a worker
        self._outcomes: dict[int, tuple[bool, object, str | None]] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._failure: BaseException | None = None
        self._replace = 0  # dead workers the main thread is to replace
        self._closing = False
        self._thread: threading.Thread | None = None
        if workers > 0:
            self._wake_r, self._wake_w = self._context.Pipe(duplex=False)
            self._cv2_inherited = "cv2" in sys.modules
            try:
                self._fork(workers)
            except BaseException:  # some workers may have started: end them before the error propagates
                _stop(self._live)
                raise
            self._thread = threading.Thread(target=self._pump, name="ellrobust-pool", daemon=True)
            self._thread.start()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the pump thread, then the workers."""
        if self._thread is not None:
            with self._cond:
                self._closing = True
                live, self._live = self._live, []
            self._wake_w.send_bytes(b"")
            self._thread.join()
            self._thread = None
            _stop(live)
            self._wake_r.close()
            self._wake_w.close()
        SHARED.clear()

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        """While the workers compute, the main process's torch keeps one thread.

        The workers take the cores; torch's default of one intra-op thread per core in the main
        process would then oversubscribe them, and OpenMP's spin-waiting threads slow a contended
        process by several times (measured: a forward pass 5× slower beside busy workers). With one
        thread the main process only takes what is left. Nothing changes without workers.
        """
        if self.workers == 0:
            yield
            return
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def default_window(self) -> int:
        """Tasks in flight: enough to keep every worker busy while results wait to be consumed."""
        return max(4, 4 * self.workers)

    def run(self, tasks: Iterable[Callable[[], T]], window: int | None = None) -> Iterator[T]:
        """Results of ``tasks`` in order; at most ``window`` tasks are submitted ahead of the consumer.

        ``tasks`` may be a lazy iterator spanning several units: the pool then starts the next unit's
        work while the current one's last results are consumed. A task's exception is raised here,
        when its result is reached: an :class:`~ellrobust.core.errors.EllrobustError` as it is, any other as
        a :class:`~ellrobust.core.errors.WorkerError` naming what the task worked on. A second worker death
        raises a :class:`~ellrobust.core.errors.WorkerError` naming the signal and the fix.
        """
        if self.workers == 0:
            for task in tasks:
                try:
                    result = task()
                except EllrobustError:
                    raise
                except Exception as exc:
                    raise task_failed(describe(task), exc) from exc
                yield result
            return
        window = window or self.default_window()
        pending: collections.deque[int] = collections.deque()
        source = iter(tasks)
        try:
            for task in itertools.islice(source, window):
                pending.append(self._submit(task))
            while pending:
                result = self._result(pending.popleft())
                nxt = next(source, None)
                if nxt is not None:
                    pending.append(self._submit(nxt))
                yield result
        finally:
            if pending:  # the consumer stopped early (an error, an abandoned stream): drop what it will not read
                self._forget(pending)

    # --- the main thread's side ---------------------------------------------------------------------

    def _submit(self, task: Callable[[], T]) -> int:
        with self._cond:
            self._check()
            task_id = next(self._ids)
            self._tasks[task_id] = task
            self._backlog.append(task_id)
            self._dispatch()
        return task_id

    def _result(self, task_id: int):
        with self._cond:
            while task_id not in self._outcomes:
                self._check()
                if self._replace:
                    self._fork(self._replace)
                    self._replace = 0
                    self._dispatch()
                    self._wake_w.send_bytes(b"")  # the pump waits on the new workers' pipes too
                self._cond.wait(timeout=1.0)
            ok, value, remote = self._outcomes.pop(task_id)
            task = self._tasks.pop(task_id)
        if ok:
            return value
        if remote is not None:
            value.__cause__ = RemoteTraceback(remote)
        if isinstance(value, EllrobustError):
            raise value
        raise task_failed(describe(task), value) from value

    def _check(self) -> None:
        """Raise what stopped the pool: a second death, or the pump thread itself failing (never a silent hang)."""
        if self._failure is not None:
            raise self._failure
        if self._thread is None or not self._thread.is_alive():
            raise WorkerError("the worker pool has stopped; re-run the same command (finished units are kept).")

    def _forget(self, ids: Iterable[int]) -> None:
        with self._cond:
            gone = set(ids)
            for task_id in gone:
                self._tasks.pop(task_id, None)
                self._outcomes.pop(task_id, None)
            self._backlog = collections.deque(i for i in self._backlog if i not in gone)

    def _fork(self, count: int) -> None:
        """Start ``count`` workers (the pool's lock held, or in ``__init__``).

        OpenCV's threads are set to one around the fork (see :func:`_init_worker`), so that no worker
        inherits a thread pool whose threads it does not have.
        """
        cv2 = sys.modules.get("cv2")
        threads = cv2.getNumThreads() if cv2 is not None else None
        if cv2 is not None:
            cv2.setNumThreads(1)
        try:
            for _ in range(count):
                parent_end, child_end = self._context.Pipe()
                inherited = [w.conn for w in self._live] + [parent_end, self._wake_r, self._wake_w]
                process = self._context.Process(
                    target=_worker_main, args=(child_end, self._cv2_inherited, inherited), daemon=True
                )
                try:
                    process.start()
                except OSError as exc:
                    raise WorkerError(
                        f"cannot start a worker process ({exc.strerror or exc}); "
                        f"pass fewer --workers (this run has {self.workers})."
                    ) from exc
                finally:
                    child_end.close()
                self._live.append(_Worker(process, parent_end))
        finally:
            if cv2 is not None:
                cv2.setNumThreads(threads)

    # --- both threads, the pool's lock held, then the pump thread ------------------------------------

    def _dispatch(self) -> None:
        """Send waiting tasks to workers with room (the pool's lock held: called from both threads)."""
        for worker in self._live:
            while self._backlog and len(worker.tasks) < TASKS_PER_WORKER:
                task_id = self._backlog.popleft()
                try:
                    worker.conn.send((task_id, self._tasks[task_id]))
                except OSError:  # the worker is dying: the pump buries it and requeues what it held
                    self._backlog.appendleft(task_id)
                    break
                except Exception as exc:  # the task does not pickle: it fails, like a task that raised
                    self._outcomes[task_id] = (False, exc, None)
                    self._cond.notify_all()
                    continue
                worker.tasks.append(task_id)

    def _pump(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closing:
                        return
                    live = list(self._live)
                by_conn = {w.conn: w for w in live}
                by_sentinel = {w.process.sentinel: w for w in live}
                for ready in wait([*by_conn, *by_sentinel, self._wake_r]):
                    if ready is self._wake_r:
                        self._wake_r.recv_bytes()
                        continue
                    worker = by_conn.get(ready) or by_sentinel[ready]
                    if worker in self._live and not self._receive(worker):
                        self._bury(worker)
        except BaseException as exc:  # a bug here must stop the run, not leave it waiting
            with self._cond:
                self._failure = exc
                self._cond.notify_all()

    def _receive(self, worker: _Worker) -> bool:
        """Take every outcome waiting in a worker's pipe; False when the pipe has closed (the worker died)."""
        while True:
            try:
                if not worker.conn.poll():
                    return True
                message = worker.conn.recv()
            except (EOFError, OSError):
                return False
            except Exception as exc:  # an outcome that does not unpickle here: its task fails
                message = (
                    worker.tasks[0],
                    False,
                    RuntimeError(f"the task's outcome cannot be read ({type(exc).__name__}: {exc})"),
                    None,
                )
            task_id, *outcome = message
            with self._cond:
                if worker.tasks and worker.tasks[0] == task_id:
                    worker.tasks.popleft()
                if task_id in self._tasks:
                    self._outcomes[task_id] = tuple(outcome)
                self._dispatch()
                self._cond.notify_all()

    def _bury(self, worker: _Worker) -> None:
        """A worker died: record it, give its tasks to a fresh worker, or stop the run at the second death."""
        with self._cond:
            worker.process.join(STOP_TIMEOUT)
            worker.conn.close()
            self._live.remove(worker)
            lost = [task_id for task_id in worker.tasks if task_id in self._tasks]
            cause = _death_cause(worker.process.exitcode)
            self.deaths.append(
                {
                    "pid": worker.process.pid,
                    "exitcode": worker.process.exitcode,
                    "cause": cause,
                    "lost_tasks": len(lost),
                }
            )
            if len(self.deaths) > DEATHS_SURVIVED:
                doing = f", while {describe(self._tasks[lost[0]])}" if lost else ", while idle"
                self._failure = WorkerError(
                    f"a worker process died again: {cause}{doing}. "
                    f"The run stops after {len(self.deaths)} worker deaths; "
                    "finished units are kept: "
                    f"re-run the same command with fewer --workers (this run has {self.workers}) "
                    "or a smaller --memory-budget."
                )
            else:
                self._backlog.extendleft(reversed(lost))
                self._replace += 1
            self._cond.notify_all()
