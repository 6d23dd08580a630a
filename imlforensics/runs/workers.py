"""Worker processes, one policy for every command that runs several (``ensemble``, ``eval``,
``make-mask --pairs``).

* Workers are spawned (fresh interpreters) with one BLAS/OpenMP thread each, so N workers use N
  cores and inherit no thread pools or locks from the parent.
* Ctrl-C is the parent's business: workers ignore SIGINT (a terminal sends it to the whole process
  group, and each worker would print its own traceback), and the parent, on KeyboardInterrupt,
  cancels what has not started, ends the workers and lets the interrupt go on to the command,
  which prints one line.
* Workers never outlive the parent: on Linux the kernel sends them SIGTERM when it dies
  (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread in each worker exits once its parent
  is gone (``kill -9`` of the parent included).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="imlf-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the watch began
        os._exit(1)


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def end_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: nothing queued starts, running workers are terminated."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        try:
            p.terminate()
        except (OSError, ValueError):
            pass
    for p in processes:
        p.join(timeout=5)


def pool_map(fn: Callable[[T], R], items: Iterable[T], jobs: int, initializer: Callable[..., None] | None = None,
             initargs: tuple = (), chunksize: int = 1) -> Iterator[R]:
    """``fn`` over ``items`` in ``jobs`` spawned workers (see the module docstring), results in order."""
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))
    finished = False
    try:
        yield from pool.map(fn, items, chunksize=chunksize)
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # Ctrl-C, an error, or the caller stopped reading
            end_workers(pool)


def one_thread_per_library() -> None:
    """In a worker: OpenCV and (when loaded) torch on one thread."""
    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:  # only deep models import torch (its import alone takes seconds)
        sys.modules["torch"].set_num_threads(1)


__all__: list[Any] = ["end_workers", "one_thread_per_library", "pool_map"]
