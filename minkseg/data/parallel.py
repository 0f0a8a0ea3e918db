"""Run one function over many independent tasks, in worker processes, with a progress bar.

Why one helper: preprocessing, voxelising and generating synthetic data all map a pure per-scene function over a
list; they share the same process pool, progress bar and result order (the order of the tasks, so outputs do not
depend on the number of workers). Workers are *spawned*, not forked: a forked child of a process whose torch/OpenMP
thread pool is already running can deadlock inside the first parallel torch op (sparse_quantize uses torch).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from typing import Callable, Sequence, TypeVar

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
            with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
                futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
                for future in cf.as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
    return results
