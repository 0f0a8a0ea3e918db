"""Run one function over many independent tasks, in worker processes, with a progress bar.

Why one helper: preprocessing, voxelising and generating synthetic data all map a pure per-scene function over a
list; they share the same process pool, progress bar and result order (the order of the tasks, so outputs do not
depend on the number of workers). Workers are *spawned*, not forked: a forked child of a process whose torch/OpenMP
thread pool is already running can deadlock inside the first parallel torch op (sparse_quantize uses torch).

Why workers ignore Ctrl-C: a terminal sends SIGINT to every process of the foreground group, so each worker used
to print its own ``KeyboardInterrupt`` traceback (one per worker, even while it was still starting) before the
stage's one-line message. Workers are born with SIGINT ignored (an ignored signal stays ignored across exec, and
Python then installs no handler of its own); the parent alone turns Ctrl-C into ``KeyboardInterrupt`` and stops
them. During the few milliseconds in which the workers are created, Ctrl-C is ignored by the parent too.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import signal
import threading
from typing import Callable, Iterator, Sequence, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(fn: Callable[[T], R], tasks: Sequence[T], workers: int = 1, desc: str = "",
                 unit: str = "scene", progress: bool = True) -> list[R]:
    """``[fn(t) for t in tasks]`` on ``workers`` processes (``fn`` must be a picklable top-level function)."""
    results: list[R] = [None] * len(tasks)  # type: ignore[list-item]
    with tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                results[i] = fn(task)
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with _born_ignoring_ctrl_c():  # the pool starts its helper and worker processes in here
                pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context)
                futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            try:
                for future in cf.as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
                # Inside the try: Ctrl-C while a worker that got no task is still starting must stop it too (it
                # would otherwise wake after this process is gone and print a traceback).
                pool.shutdown()
            except BaseException:  # Ctrl-C, or a task's error: stop the other workers now, not after their tasks
                _stop(pool)
                raise
    return results


@contextlib.contextmanager
def _born_ignoring_ctrl_c() -> Iterator[None]:
    """SIGINT ignored while child processes are created, so that they inherit "ignored" (see module docstring)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may change handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel queued tasks and end running workers (they ignore SIGINT; SIGTERM ends them without output), and
    wait for them: the caller then removes its staging folder, which a live worker could still be writing into."""
    # ProcessPoolExecutor has no public way to end busy workers before Python 3.14 (terminate_workers());
    # its process table is read before shutdown() drops it.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)
