"""OpenMP wait settings that must be in the environment before torch loads its OpenMP runtime.

Why: torch's CPU kernels run in OpenMP parallel regions, and GNU OpenMP (libgomp, what torch's Linux wheels use)
makes a thread that waits at the end of a region spin for up to 300,000 iterations before it sleeps. On a machine
whose cores are all taken (a second training, a test run, a browser), the thread being waited for is often not
running, and the spinning waiter burns the very core it needs: the train stage measured 61x slower next to one busy
process. A bounded spin (``GOMP_SPINCOUNT``) caps that waste; the thread count itself is adapted at run time by
:mod:`minkseg.engine.runtime`. libgomp reads its environment once, when it is loaded, which is why this module is
imported by ``minkseg/__init__.py`` and must not import torch itself.

A value the user set (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) is always kept.
"""
from __future__ import annotations

import os
import sys

__all__ = ["SPIN_COUNT", "apply_openmp_defaults", "openmp_defaults_applied"]

# Spins before a waiting OpenMP thread sleeps: ~30 microseconds here (libgomp's default is 300,000). Measured with
# benchmarks/contention.py: the quiet step time is unchanged within noise, and the spinning a descheduled partner
# can cost is cut tenfold (README, "CPU runtime").
SPIN_COUNT = "30000"

_applied: dict[str, str] = {}


def apply_openmp_defaults() -> dict[str, str]:
    """Set the bounded spin unless the user chose a wait policy, or torch (and its OpenMP) is already loaded.

    Returns the variables this call set (empty when it changed nothing).
    """
    if "torch" in sys.modules:  # too late: libgomp has read its environment already
        return {}
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return {}
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    _applied["GOMP_SPINCOUNT"] = SPIN_COUNT
    return dict(_applied)


def openmp_defaults_applied() -> dict[str, str]:
    """What :func:`apply_openmp_defaults` set in this process (for logs and tests)."""
    return dict(_applied)
