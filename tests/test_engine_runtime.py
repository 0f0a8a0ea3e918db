"""configure_cpu_runtime: threads applied, allocator tuned where glibc allows, safe to call repeatedly."""
from __future__ import annotations

import ctypes.util
import sys

import pytest
import torch

from minkseg.engine import runtime


def test_threads_applied_and_restorable():
    before = torch.get_num_threads()
    try:
        runtime.configure_cpu_runtime(1)
        assert torch.get_num_threads() == 1
        runtime.configure_cpu_runtime(0)  # 0 = leave torch's setting alone
        assert torch.get_num_threads() == 1
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
