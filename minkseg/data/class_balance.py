"""Class weights from the training split's label counts (``train.class_weights: balanced``).

Why inverse square root: mIoU weighs every class equally while scenes are dominated by walls and floors; the
square root (as in ScanNet/S3DIS practice) lifts rare classes without letting a handful of points dominate the
loss the way plain inverse frequency would.
"""
from __future__ import annotations

import os

import numpy as np

from minkseg.errors import DataError
from minkseg.data.scenefile import load_manifest

__all__ = ["balanced_class_weights"]


def balanced_class_weights(preprocessed_dir: str | os.PathLike, split: str = "train") -> list[float]:
    """One weight per class, ``(count_c / total) ** -0.5`` normalised to mean 1 over the classes present.

    Classes without a point in the split get weight 1 (they never appear as a target, so it only matters if they
    are present in later data).
    """
    manifest = load_manifest(preprocessed_dir)
    counts = manifest.get("label_counts", {}).get(split)
    if counts is None:
        raise DataError(f"{preprocessed_dir}: the manifest has no label counts for split {split!r}; re-run the "
                        "preprocess stage (dvc repro -f preprocess)")
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise DataError(f"{preprocessed_dir}: split {split!r} has no labelled point, so train.class_weights: "
                        "balanced has nothing to balance; use null")
    weights = np.ones_like(counts)
    weights[present] = (counts[present] / counts.sum()) ** -0.5
    weights[present] /= weights[present].mean()
    return weights.round(6).tolist()
