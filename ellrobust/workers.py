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
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Objects the workers inherit at the fork (the dataset, the image store); read by task callables.
SHARED: dict[str, object] = {}

#: Upper bound of ``auto`` workers: beyond it, decoding and corruption stop scaling on one node.
MAX_AUTO_WORKERS = 32


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


def _call(task: Callable[[], T]) -> T:
    return task()


class WorkerPool:
    """A fork-started process pool that lives for one run (inline when ``workers == 0``).

    Use it as a context manager: the processes end when the run ends, also on errors.
    """

    def __init__(self, workers: int, shared: dict[str, object] | None = None) -> None:
        self.workers = workers
        SHARED.clear()
        SHARED.update(shared or {})
        self._pool = None
        if workers > 0:
            cv2 = sys.modules.get("cv2")
            threads = cv2.getNumThreads() if cv2 is not None else None
            if cv2 is not None:
                cv2.setNumThreads(1)  # no OpenCV threads exist at the fork, so none are inherited dead
            try:
                # fork, explicitly: workers must inherit SHARED (the store's shared mapping), and Python
                # 3.14 changes the default start method on Linux to forkserver.
                self._pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(cv2 is not None,))
            finally:
                if cv2 is not None:
                    cv2.setNumThreads(threads)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        SHARED.clear()

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        """While the workers compute, the main process's torch keeps one thread.

        The workers take the cores; torch's default of one intra-op thread per core in the main
        process would then oversubscribe them, and OpenMP's spin-waiting threads slow a contended
        process by several times (measured: a forward pass 5× slower beside busy workers). With one
        thread the main process only takes what is left. Nothing changes without workers.
        """
        if self._pool is None:
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
        when its result is reached.
        """
        if self._pool is None:
            for task in tasks:
                yield task()
            return
        window = window or self.default_window()
        pending: collections.deque = collections.deque()
        source = iter(tasks)
        for task in source:
            pending.append(self._pool.apply_async(_call, (task,)))
            if len(pending) >= window:
                break
        while pending:
            result = pending.popleft().get()
            nxt = next(source, None)
            if nxt is not None:
                pending.append(self._pool.apply_async(_call, (nxt,)))
            yield result
