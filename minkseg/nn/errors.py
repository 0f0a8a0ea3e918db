"""Exceptions of the network layer.

One class per kind of mistake a user can make, so stages can catch them and print one clear line
(what went wrong, where, how to fix it) instead of a traceback.
"""
from __future__ import annotations

from minkseg.errors import MinkSegError

__all__ = ["ModelError", "CheckpointError"]


class ModelError(MinkSegError, ValueError):
    """A model was asked for that cannot be built (unknown name, bad channel count, bad option)."""


class CheckpointError(ModelError):
    """A weights file cannot be read or does not fit the model it is loaded into."""
