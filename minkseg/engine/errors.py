"""Exceptions of the training/evaluation engine.

Stages catch these and print the message as one line with a non-zero exit, so every message says what went
wrong, where (file, param key) and how to fix it.
"""

from __future__ import annotations

from minkseg.errors import MinkSegError

__all__ = ["EngineError", "CheckpointError"]


class EngineError(MinkSegError, RuntimeError):
    """A training/evaluation run cannot proceed (bad device, inconsistent inputs, diverged loss, ...)."""


class CheckpointError(EngineError):
    """A checkpoint or weights file is unreadable, unsafe, or belongs to another model."""
