"""The voxelised evaluation file: one ``.npz`` per evaluation sample, written by the voxelize stage.

Why a file per sample: evaluation and validation during training read the same deterministic voxelisation many
times; storing it once makes them pure reads, and the file carries everything point-level scoring needs.

Format (``FORMAT_VERSION`` 1), atomic writes:

================  ===============  =================================================================================
key               dtype / shape    meaning
================  ===============  =================================================================================
``coordinates``   int32 [M, D]     voxel coordinates (D = 3, or 4 with the frame position last), no batch column
``features``      float32 [M, 3]   rgb / 255 - 0.5 of each voxel's representative point
``labels``        uint8 [M]        voxel label, 255 = ignore (unlabelled, or points of different classes)
``inverse``       int64 [N]        voxel index of every original point; -1 = outside the clip box
``point_labels``  uint8 [N]        label of every original point (0..C-1, 255 = ignore)
``transform``     float64 [4, 4]   voxel = floor(transform @ [x, y, z, 1]) for every kept point
``voxel_size``    float64 scalar   metres
``name``          str scalar       scene name (4D: first frame's name + the other frame numbers)
``sources``       str [T]          preprocessed files of the sample, relative to the preprocessed directory
``frames``        int64 [T]        4D only: Synthia frame numbers of the window
``point_frames``  int64 [N]        4D only: window position (0..T-1) of every point
================  ===============  =================================================================================

``manifest.json`` next to the split folders: ``{"format_version", "dataset", "class_names", "ignore_label",
"dimension", "voxel_size", "splits": {split: [{"name", "file", "num_points", "num_voxels"}, ...]}, ["made_by"]}``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from minkseg.atomic import save_npz_atomic
from minkseg.data.scenefile import STORED_IGNORE
from minkseg.errors import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = ("coordinates", "features", "labels", "inverse", "point_labels", "name")


def save_voxelized_sample(path: str | os.PathLike, sample: dict[str, Any], transform: np.ndarray,
                          voxel_size: float) -> None:
    for key in ("labels", "point_labels"):  # stored form: 0..C-1 and STORED_IGNORE, as the voxelize stage makes
        values = np.asarray(sample[key])
        if values.size and (values.min() < 0 or values.max() > STORED_IGNORE):
            raise ValueError(f"{key} must be stored labels (0..{STORED_IGNORE}), got {values.min()}..{values.max()}")
    arrays = {
        "coordinates": np.ascontiguousarray(sample["coordinates"], dtype=np.int32),
        "features": np.ascontiguousarray(sample["features"], dtype=np.float32),
        "labels": np.asarray(sample["labels"]).astype(np.uint8),
        "inverse": np.asarray(sample["inverse"], dtype=np.int64),
        "point_labels": np.asarray(sample["point_labels"]).astype(np.uint8),
        "transform": np.asarray(transform, dtype=np.float64),
        "voxel_size": np.array(voxel_size, dtype=np.float64),
        "name": np.array(sample["name"]),
        "sources": np.array(sample["sources"]),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
    }
    if "frames" in sample:
        arrays["frames"] = np.asarray(sample["frames"], dtype=np.int64)
        arrays["point_frames"] = np.asarray(sample["point_frames"], dtype=np.int64)
    save_npz_atomic(path, arrays)


def load_voxelized_sample(path: str | os.PathLike) -> dict[str, Any]:
    """Read one evaluation file back as a sample dict (the same keys/dtypes as the datasets produce)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError(f"{path}: voxelised sample not found; re-run the voxelize stage") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable voxelised sample ({exc}); re-run the voxelize stage") from None
    if int(arrays.get("format_version", -1)) != FORMAT_VERSION or any(k not in arrays for k in REQUIRED):
        raise DataError(f"{path}: not a voxelised sample of format {FORMAT_VERSION}; re-run the voxelize stage")
    sample: dict[str, Any] = {
        "coordinates": arrays["coordinates"],
        "features": arrays["features"],
        "labels": arrays["labels"].astype(np.int64),
        "inverse": arrays["inverse"],
        "point_labels": arrays["point_labels"].astype(np.int64),
        "name": str(arrays["name"]),
        "sources": [str(s) for s in arrays["sources"]],
        "transform": arrays["transform"],
    }
    if "frames" in arrays:
        sample["frames"] = arrays["frames"].tolist()
        sample["point_frames"] = arrays["point_frames"]
    return sample


def load_voxelized_manifest(voxelized_dir: str | os.PathLike) -> dict:
    path = Path(voxelized_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found; run the voxelize stage first") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt manifest ({exc.msg}); re-run the voxelize stage") from None
    if manifest.get("format_version") != FORMAT_VERSION or "splits" not in manifest:
        raise DataError(f"{path}: manifest format is not {FORMAT_VERSION}; re-run the voxelize stage")
    return manifest
