"""Process-wide CPU settings for long training/evaluation runs (threads that follow the free cores, the C allocator).

Why the thread governor: torch runs every op on all cores by default, and a parallel region ends only when its
slowest thread does. When another process is busy on one of the cores, the thread that lands there waits in the
run queue while its partner spins (see minkseg/openmp_env.py), and a step took 61x its quiet time. The governor
watches how long this process's threads wait for a core (Linux schedstat, the kernel's own count) and drops a
thread when they wait, then tries the extra thread again now and then (backing off while the neighbour stays), so
a busy neighbour costs this process about its share of the machine and a quiet machine keeps every core.
Thread count changes the order of floating-point sums in some kernels, so a run whose thread count changed is not
bit-identical to a quiet one; ``base.num_threads: N`` pins the count (and bit-identity) at the price of the
slowdown under contention.

Why the allocator: every training step allocates and frees the same few hundred large buffers (gathered features,
products, gradients). glibc's malloc hands freed memory at the top of the heap back to the kernel once it exceeds
a trim threshold and then takes fresh zero-filled pages again on the next step, so on the CPU a third of a step's
wall time went to page faults in the kernel (measured: 60.6 s -> 40.4 s for 40 steps of the default run, system
time 27 s -> 1.3 s). Keeping the freed memory in the process is what PyTorch's CPU tuning guide gets by swapping in
jemalloc/tcmalloc; ``mallopt`` gets the same effect with nothing to install. The cost: the process's resident size
stays at its peak instead of shrinking between steps, which is what a training process does anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

__all__ = ["configure_cpu_runtime", "balance_threads", "ThreadGovernor", "current_governor"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_TOP_PAD = -2
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: the largest top-of-heap kept without trimming
_TOP_PAD_BYTES = 1 << 30  # grow the heap in large steps (virtual; pages are only touched when used)
_allocator_tuned = False


def _keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed heap memory; a no-op (False) on other platforms or C libraries."""
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TOP_PAD, _TOP_PAD_BYTES) == 1 and ok
    _allocator_tuned = ok
    return ok


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _run_queue_wait_ns() -> int | None:
    """Nanoseconds this process's threads have spent runnable but waiting for a core (None: not measurable)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            fields = Path(f"/proc/self/task/{tid}/schedstat").read_text().split()
        except OSError:  # the thread ended between listing and reading
            continue
        if len(fields) >= 2:
            total += int(fields[1])
    return total


class ThreadGovernor:
    """Adapts torch's intra-op thread count to the cores that are free, from the run-queue wait per unit of work.

    Call :meth:`tick` after each unit of work (a training step, a validation batch, an evaluated view).
    ``patience`` units in a row in which the threads together waited more than ``wait_threshold`` of a core drop
    one thread (a one-off blip, such as a short command in another terminal, changes nothing); after
    ``probe_every`` units at a reduced count one more thread is tried for a unit, and a failed try doubles the
    interval up to ``max_probe_every`` (a neighbour that stays costs almost no probing).
    """

    def __init__(self, max_threads: int, *, wait_threshold: float = 0.3, patience: int = 2, probe_every: int = 20,
                 max_probe_every: int = 320, clock=time.perf_counter, wait_reader=_run_queue_wait_ns,
                 set_threads=None) -> None:
        self.max_threads = max(1, int(max_threads))
        self.wait_threshold = wait_threshold
        self.patience = max(1, patience)
        self._contended_ticks = 0
        self.base_probe_every = probe_every
        self.probe_every = probe_every
        self.max_probe_every = max_probe_every
        self._clock, self._read_wait = clock, wait_reader
        self._set_threads = set_threads or torch.set_num_threads
        self.threads = self.max_threads
        self._set_threads(self.threads)
        self._probing = False
        self._since_change = 0
        self.changes = 0  # how often the count changed (a changed run is not bit-identical to a quiet one)
        self.min_threads_used = self.threads
        self._last = (self._clock(), self._read_wait())

    @property
    def active(self) -> bool:
        return self.max_threads > 1 and self._last[1] is not None

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            self.threads = threads
            self._set_threads(threads)
            self.changes += 1
            self.min_threads_used = min(self.min_threads_used, threads)
        self._since_change = 0

    def tick(self) -> int:
        """Account one unit of work; returns the thread count for the next one."""
        now, wait = self._clock(), self._read_wait()
        last_t, last_wait = self._last
        self._last = (now, wait)
        if not self.active or wait is None or last_wait is None or now <= last_t:
            return self.threads
        waited_cores = (wait - last_wait) / 1e9 / (now - last_t)
        self._since_change += 1
        contended = waited_cores > self.wait_threshold
        self._contended_ticks = self._contended_ticks + 1 if contended else 0
        if self._probing:
            self._probing = False
            if contended:  # the neighbour is still there: back off longer before the next try
                self.probe_every = min(self.probe_every * 2, self.max_probe_every)
                self._set(self.threads - 1)
            else:
                self.probe_every = self.base_probe_every
                self._since_change = 0
            return self.threads
        if self._contended_ticks >= self.patience and self.threads > 1:
            self._contended_ticks = 0
            self._set(self.threads - 1)
        elif self.threads < self.max_threads and self._since_change >= self.probe_every:
            self._probing = True
            self._set(self.threads + 1)
        return self.threads


_governor: ThreadGovernor | None = None


def current_governor() -> ThreadGovernor | None:
    """The process's thread governor, or None when the thread count is pinned (or not configured yet)."""
    return _governor


def balance_threads() -> None:
    """Between two units of CPU work: let the governor adapt the thread count (a no-op when it is off)."""
    if _governor is not None:
        _governor.tick()


def configure_cpu_runtime(num_threads: int = 0) -> None:
    """Apply ``base.num_threads`` and the allocator setting above; safe to call twice.

    ``num_threads > 0`` pins the count (no governor). 0 starts the governor on all available cores, unless the
    user pinned threads through ``OMP_NUM_THREADS`` (then torch's own setting is kept).
    """
    global _governor
    if num_threads > 0:
        _governor = None
        torch.set_num_threads(num_threads)
    elif "OMP_NUM_THREADS" in os.environ:
        _governor = None
    elif _governor is None:
        _governor = ThreadGovernor(_available_cores())
        if not _governor.active:
            _governor = None
    if not _keep_freed_memory():
        log.debug("malloc tuning not available on this platform; CPU steps may spend time in page faults")
