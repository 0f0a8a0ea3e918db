"""What happens to points whose coordinates or colours are NaN or infinite: they are dropped, counted and reported.

Decision (issue 6, case 3): drop with a warning, do not refuse. Why not refuse: one bad vertex must not stop the
preprocessing of 1,500 scenes, and the official split lists cannot be edited to leave a scene out. Why not keep
them: a NaN voxel coordinate is undefined, an infinite one overflows the int32 voxel grid, and a NaN colour has no
uint8 value. A scene left with no points at all is then left out of its split by the preprocess stage, again with a
warning. Every reader of raw scans (ScanNet meshes, Synthia4D frames) goes through :func:`finite_points`.
"""

from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger(__name__)


def finite_points(path: str | os.PathLike, coords: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Boolean mask of the points whose coordinates (and float colours) are all finite; logs how many are not."""
    keep = np.isfinite(coords).all(axis=1)
    if colors.dtype.kind == "f":
        keep &= np.isfinite(colors).all(axis=1)
    dropped = int(len(keep) - np.count_nonzero(keep))
    if dropped:
        log.warning("%s: dropped %d of %d points with NaN/inf coordinates or colours", path, dropped, len(keep))
    return keep
