"""Every error MinkSeg raises on purpose: one class per kind of failure, all here.

Stages catch :class:`MinkSegError` and print its message as one line with exit status 2; anything else is a bug
and keeps its traceback. Messages say what is wrong, where (file, param key, scene) and how to fix it.

Why one module: the classes used to live in four files, with two different ``CheckpointError`` classes, so code
catching one missed the other. A layer raises the class that names the failure, imported from here (the
``minkseg.data``/``minkseg.nn``/``minkseg.engine`` packages re-export the ones their public API documents).
The built-in base next to ``MinkSegError`` keeps older ``except ValueError`` / ``except OSError`` code working.
"""
from __future__ import annotations

__all__ = ["MinkSegError", "ConfigError", "DataError", "CorruptArchiveError", "ModelError", "EngineError",
           "CheckpointError", "StaleInputError", "MetricsError", "AtomicWriteError"]


class MinkSegError(Exception):
    """A problem the user can fix: bad params, bad or missing data, an unusable checkpoint, an unwritable output."""


class ConfigError(MinkSegError, ValueError):
    """params.yaml is missing, unreadable or has an invalid value; the message names the file and key path."""


class DataError(MinkSegError):
    """Bad or missing input data: message = what is wrong, where, and how to fix it (one line)."""


class CorruptArchiveError(DataError):
    """The archive cannot be read to its end; ``detail`` is the reader's own words (for a caller's message)."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class ModelError(MinkSegError, ValueError):
    """A model was asked for that cannot be built (unknown name, bad channel count, bad option)."""


class EngineError(MinkSegError, RuntimeError):
    """A training/evaluation run cannot proceed (bad device, inconsistent inputs, diverged loss, ...)."""


class CheckpointError(ModelError, EngineError):
    """A weights file (training checkpoint, ``models/model.pt``, an original model-zoo file) is unreadable, would
    run code when unpickled, or does not fit the network it is loaded into.

    Both a model error and an engine error: the network layer raises it when importing weights, the engine when
    resuming or evaluating, and code catching either family catches it."""


class StaleInputError(EngineError):
    """An input was made by other params or from other data than the current ones."""


class MetricsError(MinkSegError, ValueError):
    """Labels, predictions or scores that cannot be scored (wrong shape, out-of-range class id)."""


class AtomicWriteError(MinkSegError, OSError):
    """An output could not be written; the previous version of the file (if any) is untouched."""

    def __str__(self) -> str:
        # OSError would print "[Errno 28] cannot write ..."; the stage's one line is the message alone.
        return str(self.strerror) if self.strerror else super().__str__()
