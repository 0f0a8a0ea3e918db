"""Batching samples for ``torch.utils.data.DataLoader``.

Why a dict: the trainer needs coordinates/features/labels, the evaluator additionally the per-sample inverse maps,
point labels and names; one dict with fixed keys serves both without positional guesswork.

Batch keys:

    coordinates   int32 [N, 1+D]   batch index first (MinkowskiEngine layout), then D voxel coordinates
    features      float32 [N, 3]
    labels        int64 [N]
    offsets       int64 [B+1]      rows of sample b are offsets[b]:offsets[b+1]
    names         list[str]
    inverse_maps  list[int64 tensor [N_b] | None]   per sample (eval samples only)
    point_labels  list[int64 tensor [N_b] | None]
    frames        list[list[int]]  (4D samples)
    point_frames  list[int64 tensor | None]
    sources       list[list[str]]
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from minkseg.sparse.utils import batched_coordinates

log = logging.getLogger(__name__)


def _tensor(value: Any) -> torch.Tensor | None:
    return None if value is None else torch.from_numpy(np.ascontiguousarray(value))


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate samples into one batch (see module docstring for the keys)."""
    if not samples:
        raise ValueError("collate got an empty list of samples")
    counts = [len(s["coordinates"]) for s in samples]
    return {
        "coordinates": batched_coordinates([np.asarray(s["coordinates"], dtype=np.int32) for s in samples]),
        "features": torch.from_numpy(np.concatenate([s["features"] for s in samples]).astype(np.float32)),
        "labels": torch.from_numpy(np.concatenate([s["labels"] for s in samples]).astype(np.int64)),
        "offsets": torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)),
        "names": [s["name"] for s in samples],
        "inverse_maps": [_tensor(s.get("inverse")) for s in samples],
        "point_labels": [_tensor(s.get("point_labels")) for s in samples],
        "frames": [s.get("frames") for s in samples],
        "point_frames": [_tensor(s.get("point_frames")) for s in samples],
        "sources": [s.get("sources") for s in samples],
    }


class Collate:
    """``collate`` that keeps at most ``limit_numpoints`` voxels per batch, like the original's collate.

    Samples are kept in order while the running total fits; the first sample is always kept so an oversized
    scene still trains. 0 disables the limit. A class so it pickles into loader worker processes.
    """

    def __init__(self, limit_numpoints: int = 0) -> None:
        self.limit_numpoints = int(limit_numpoints)

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if self.limit_numpoints > 0:
            kept, total = [], 0
            for sample in samples:
                count = len(sample["coordinates"])
                if kept and total + count > self.limit_numpoints:
                    log.warning("batch limited to %d of %d samples (%d points, limit %d)", len(kept),
                                len(samples), total, self.limit_numpoints)
                    break
                kept.append(sample)
                total += count
            samples = kept
        return collate(samples)
