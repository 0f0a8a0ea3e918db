"""The root of every error MinkSeg raises on purpose.

Stages catch exactly this type and print its message as one line with a non-zero exit; anything else is a bug and
keeps its traceback. Messages say what is wrong, where (file, param key, scene) and how to fix it.
"""
from __future__ import annotations

__all__ = ["MinkSegError"]


class MinkSegError(Exception):
    """A problem the user can fix: bad params, bad or missing data, an unusable checkpoint, an unwritable output."""
