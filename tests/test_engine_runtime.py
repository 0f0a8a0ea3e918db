"""CPU runtime: threads applied or governed by the free cores, OpenMP spin bounded before torch loads, allocator
tuned where glibc allows; the governor is driven by a fake clock (no timings in unit tests)."""
from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest
import torch

from minkseg.engine import runtime


def test_threads_applied_and_restorable():
    before = torch.get_num_threads()
    try:
        runtime.configure_cpu_runtime(1)
        assert torch.get_num_threads() == 1
        runtime.configure_cpu_runtime(0)  # 0 = the governor, starting on every available core
        governor = runtime.current_governor()
        if governor is not None:  # None where schedstat is missing or there is one core
            assert torch.get_num_threads() == governor.max_threads == len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None,
                    reason="mallopt is a glibc feature")
def test_allocator_setting_accepted_by_glibc_and_idempotent():
    assert runtime._keep_freed_memory() is True
    assert runtime._keep_freed_memory() is True
    # Allocations still work and memory is reusable after the setting (the heap keeps freed pages).
    for _ in range(3):
        x = torch.ones(1 << 22)
        assert float(x.sum()) == float(1 << 22)
        del x


class _FakeMachine:
    """A clock and a run-queue-wait counter the test drives: each unit of work takes 1 s and waits ``wait`` s."""

    def __init__(self) -> None:
        self.now, self.waited, self.threads = 0.0, 0, []

    def work(self, governor: runtime.ThreadGovernor, seconds_waited: float) -> int:
        self.now += 1.0
        self.waited += int(seconds_waited * 1e9)
        return governor.tick()


def _governor(machine: _FakeMachine, **kwargs) -> runtime.ThreadGovernor:
    return runtime.ThreadGovernor(2, clock=lambda: machine.now, wait_reader=lambda: machine.waited,
                                  set_threads=machine.threads.append, **kwargs)


def test_governor_keeps_all_cores_on_a_quiet_machine_and_ignores_a_blip():
    machine = _FakeMachine()
    governor = _governor(machine)
    counts = [machine.work(governor, 0.01) for _ in range(30)]
    counts.append(machine.work(governor, 0.9))  # one busy unit (a short command elsewhere): no change
    counts += [machine.work(governor, 0.01) for _ in range(5)]
    assert set(counts) == {2} and governor.changes == 0 and machine.threads == [2]


def test_governor_gives_a_thread_to_a_busy_neighbour_and_takes_it_back():
    machine = _FakeMachine()
    governor = _governor(machine, probe_every=5, max_probe_every=20)
    assert [machine.work(governor, 0.7) for _ in range(2)] == [2, 1]  # two contended units in a row: drop one
    seen = [machine.work(governor, 0.0) for _ in range(5)]  # 1 thread next to the neighbour: no waiting
    assert seen[-1] == 2  # after probe_every units it tries the second thread again
    assert machine.work(governor, 0.7) == 1 and governor.probe_every == 10  # neighbour still there: back off
    for _ in range(9):
        assert machine.work(governor, 0.0) == 1
    assert machine.work(governor, 0.0) == 2  # next probe after the doubled interval
    assert machine.work(governor, 0.0) == 2 and governor.probe_every == 5  # neighbour gone: keep both cores
    assert machine.threads == [2, 1, 2, 1, 2] and governor.changes == 4 and governor.min_threads_used == 1


def test_pinned_threads_turn_the_governor_off(monkeypatch):
    before = torch.get_num_threads()
    try:
        runtime.configure_cpu_runtime(1)
        assert runtime.current_governor() is None and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        runtime.configure_cpu_runtime(0)
        assert runtime.current_governor() is None
        runtime.balance_threads()  # a no-op without a governor
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="schedstat is Linux's")
def test_run_queue_wait_is_readable_here():
    assert isinstance(runtime._run_queue_wait_ns(), int)


def test_openmp_spin_bound_is_set_before_torch_loads_and_user_values_win():
    code = ("import os, minkseg, torch; from minkseg.openmp_env import openmp_defaults_applied as a; "
            "print(os.environ.get('GOMP_SPINCOUNT'), a())")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "30000"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None {}"
    out = subprocess.run([sys.executable, "-c", "import torch, minkseg, os; print(os.environ.get('GOMP_SPINCOUNT'))"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"  # torch came first: too late to matter, so nothing is set
