"""Run independent tasks across worker processes without oversubscribing the CPU.

``workers`` is the CPU budget (Snakemake ``threads``): that many single-threaded processes, started
with the ``spawn`` context (no fork of a multi-threaded parent), each capping OpenMP/BLAS/ITK at one
thread. Task submission is bounded (2 per worker in flight), so the parent never holds every task's
crop at once. If a worker dies (segfault, out-of-memory kill), the tasks it may have been running
are reported through ``on_crash`` and the pool is restarted for the rest.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ctsam.radiomics.worker import THREAD_ENV_VARS, init_worker, limit_native_threads

log = logging.getLogger(__name__)

#: A pool that dies is restarted for the remaining tasks at most this many times.
MAX_POOL_RESTARTS = 2

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def single_threaded_env() -> Iterator[None]:
    """Set the thread-cap variables to 1 for the duration (inherited by processes started meanwhile)."""
    saved = {v: os.environ.get(v) for v in THREAD_ENV_VARS}
    os.environ.update({v: "1" for v in THREAD_ENV_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@contextlib.contextmanager
def native_threads(n: int) -> Iterator[None]:
    """Cap this process's SimpleITK and BLAS pools at ``n`` threads, restoring ITK's default after."""
    previous = limit_native_threads(n)
    try:
        yield
    finally:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def run_tasks(
    fn: Callable[[T], R],
    tasks: Iterable[T],
    *,
    workers: int,
    on_crash: Callable[[T, BaseException], R],
) -> Iterator[R]:
    """Yield ``fn(task)`` for every task, in completion order.

    ``workers <= 1`` runs in this process (single-threaded native code). Otherwise tasks go to a
    ``spawn`` process pool of ``workers`` processes. ``fn`` must catch its own errors; a task whose
    worker process died yields ``on_crash(task, error)`` instead.
    """
    if workers <= 1:
        with native_threads(1):
            for task in tasks:
                yield fn(task)
        return
    yield from _run_pool(fn, iter(tasks), workers, on_crash)


def _run_pool(fn, tasks: Iterator, workers: int, on_crash) -> Iterator:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    window = 2 * workers
    pending: dict = {}
    exhausted = False
    restarts_left = MAX_POOL_RESTARTS
    with single_threaded_env(), native_threads(1):
        while True:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker)
            broken = False
            try:
                while not broken and (pending or not exhausted):
                    while not exhausted and len(pending) < window:
                        task = next(tasks, None)
                        if task is None:
                            exhausted = True
                        else:
                            pending[pool.submit(fn, task)] = task
                    if not pending:
                        break
                    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                    for future in done:
                        task = pending.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool as err:
                            broken = True
                            result = on_crash(task, err)
                        except Exception as err:  # noqa: BLE001 - e.g. a task that cannot be pickled
                            result = on_crash(task, err)
                        yield result
                if broken:
                    log.error("a radiomics worker process died; %d task(s) in flight marked failed", len(pending) + 1)
                    for task in pending.values():
                        yield on_crash(task, BrokenProcessPool("a worker process died while this task was in flight"))
                    pending.clear()
            finally:
                pool.shutdown(wait=not broken, cancel_futures=True)
            if not broken or exhausted:
                return
            if restarts_left == 0:
                log.error("radiomics worker processes keep dying; the remaining tasks are marked failed")
                for task in tasks:
                    yield on_crash(task, BrokenProcessPool(f"worker pool died {MAX_POOL_RESTARTS + 1} times"))
                return
            restarts_left -= 1
