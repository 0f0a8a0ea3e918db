"""Learning-rate schedules as pure functions of the iteration.

A schedule that is only a function of (iteration, params) has no state of its own to checkpoint or to get out
of sync on resume: the trainer sets ``lr = base_lr * factor(iteration)`` before every optimizer step.
"""

from __future__ import annotations

import math
from typing import Callable

__all__ = ["poly_factor", "step_factor", "onecycle_factor", "make_schedule", "set_learning_rate"]


def poly_factor(iteration: int, total: int, power: float) -> float:
    """(1 - it / total) ** power: the paper's PolyLR, reaching ~0 at the last step."""
    return max(0.0, 1.0 - iteration / total) ** power


def step_factor(iteration: int, step_size: int, gamma: float) -> float:
    """gamma ** (it // step_size)."""
    return gamma ** (iteration // step_size)


def onecycle_factor(iteration: int, total: int, pct_start: float, div_factor: float,
                    final_div_factor: float) -> float:
    """Cosine warm-up from 1/div_factor to 1, then cosine decay to 1/(div_factor*final_div_factor) (LR only)."""
    start = 1.0 / div_factor
    end = start / final_div_factor
    warmup = max(1.0, pct_start * total)
    if iteration < warmup:
        progress = iteration / warmup
        low, high = start, 1.0
    else:
        progress = min(1.0, (iteration - warmup) / max(1.0, total - 1 - warmup))
        low, high = 1.0, end
    return high + (low - high) * (1.0 + math.cos(math.pi * progress)) / 2.0


def make_schedule(name: str, total: int, *, poly_power: float = 0.9, step_size: int = 1, step_gamma: float = 0.1,
                  pct_start: float = 0.3, div_factor: float = 25.0,
                  final_div_factor: float = 1e4) -> Callable[[int], float]:
    """The lr multiplier ``factor(iteration)`` for ``name`` in {poly, step, onecycle}."""
    if total <= 0:
        raise ValueError(f"a schedule needs total iterations > 0 (got {total})")
    if name == "poly":
        return lambda it: poly_factor(it, total, poly_power)
    if name == "step":
        return lambda it: step_factor(it, step_size, step_gamma)
    if name == "onecycle":
        return lambda it: onecycle_factor(it, total, pct_start, div_factor, final_div_factor)
    raise ValueError(f"unknown scheduler {name!r}; use poly, step or onecycle")


def set_learning_rate(optimizer, base_lrs: list[float], factor: float) -> float:
    """Apply ``base_lr * factor`` to every param group; returns the first group's lr (for logging)."""
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor
    return optimizer.param_groups[0]["lr"]
