"""Import path kept for the data modules of issue #14's other half (datasets branch); nothing is defined here.

``DataError`` lives in :mod:`minkseg.errors` with every other MinkSeg error. This re-export lets
data/registry.py, splits.py, samples.py and prepare.py (edited on the datasets branch) keep importing it from here
until both halves are merged; then their imports move to ``minkseg.errors`` and this file goes.
"""
from minkseg.errors import DataError

__all__ = ["DataError"]
