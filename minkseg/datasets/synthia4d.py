"""Synthia4D raw layout: one PLY per frame, 16 raw labels mapped to the 12 evaluated classes.

Layout after extracting ``Synthia4D.tar`` and its inner ``*.tar.bz2``::

    <root>/SYNTHIA-SEQS-XX-<WEATHER>/point_clouds/NNNNNN.ply      vertex x,y,z,r,g,b,l   (cm, y up)

The reader returns metres (``CM_TO_M``) so that voxel sizes and clip boxes use one unit for every dataset.
    <root>/SYNTHIA-SEQS-XX-<WEATHER>/CameraParams/Stereo_Right/Omni_F/NNNNNN.txt   (optional, 4x4 extrinsics)

Why the optional camera files: the original 4D experiments moved every frame into world coordinates with the
SYNTHIA camera extrinsics, so a static object keeps its coordinates across the frames of a 4D sample. When the
archive carries them we do the same (sign conventions of the original: y/z flipped around the transform, rotation
row 0 negated, translation in metres in row 3); when it does not, frames stay in camera coordinates and a 4D sample
relies on the ego-motion being small over the temporal window. ``world_frame`` in the preprocessed file says which.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np

from minkseg.data.cleaning import finite_points
from minkseg.data.errors import DataError
from minkseg.data.ply import first_present, read_ply
from minkseg.data.registry import IGNORE_LABEL, SYNTHIA_IGNORED_RAW, SYNTHIA_RAW_CLASS_NAMES, DatasetSpec
from minkseg.data.scenefile import Scene
from minkseg.data.splits import split_entries

log = logging.getLogger(__name__)

FRAME_RE = re.compile(r"^(?P<seq>[^/]+)/point_clouds/(?P<frame>\d+)\.ply$")
EXTRINSICS_PATH = "CameraParams/Stereo_Right/Omni_F/{frame}.txt"
CM_TO_M = 0.01
GET_SYNTHIA = "run the download stage (dataset synthia4d) or extract Synthia4D.tar and its *.tar.bz2 there"


@lru_cache(maxsize=1)
def raw_to_class() -> np.ndarray:
    """Lookup table uint8[256]: raw Synthia label -> 0..11, ignored/unknown labels -> 255."""
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    kept = [i for i in range(len(SYNTHIA_RAW_CLASS_NAMES)) if i not in SYNTHIA_IGNORED_RAW]
    table[np.array(kept)] = np.arange(len(kept), dtype=np.uint8)
    return table


def parse_frame_path(rel_path: str) -> tuple[str, int]:
    """``SEQ/point_clouds/000123.ply`` -> (``SEQ``, 123)."""
    match = FRAME_RE.match(PurePosixPath(rel_path).as_posix())
    if match is None:
        raise DataError(f"split entry {rel_path!r} is not of the form <SEQUENCE>/point_clouds/<NNNNNN>.ply; "
                        f"fix the split list")
    return match["seq"], int(match["frame"])


def frame_name(sequence: str, frame: int, width: int = 6) -> str:
    return f"{sequence}/{frame:0{width}d}"


def load_extrinsics(path: Path) -> np.ndarray:
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: camera extrinsics must be 16 numbers; re-extract the archive") from None
    if values.size != 16:
        raise DataError(f"{path}: camera extrinsics have {values.size} numbers, expected 16; re-extract")
    return values.reshape(4, 4)


def _rotation_translation(extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rotation = extrinsics[:3, :3].copy()
    rotation[0, :] *= -1.0
    translation = extrinsics[3, :3] * 100.0  # metres -> cm
    return rotation, translation


def camera_to_world(xyz: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    flip = np.array([1.0, -1.0, -1.0])
    rotation, translation = _rotation_translation(extrinsics)
    return ((xyz * flip) @ rotation - translation) * flip


def world_to_camera(xyz: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`camera_to_world` (used by the synthetic generator)."""
    flip = np.array([1.0, -1.0, -1.0])
    rotation, translation = _rotation_translation(extrinsics)
    return ((xyz * flip + translation) @ rotation.T) * flip


def check_synthia_root(spec: DatasetSpec, root: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Synthia4D root {root} does not exist; {GET_SYNTHIA}")
    counts, missing = {}, []
    for split in splits:
        entries = split_entries(spec, split, root)
        counts[split] = len(entries)
        missing += [e for e in entries if not (root / e).is_file()]
    if missing:
        raise DataError(f"Synthia4D root {root} lacks {len(missing)} frames of the split lists "
                        f"(e.g. {', '.join(missing[:3])}); {GET_SYNTHIA}")
    return counts


def read_synthia_frame(root: str | os.PathLike, rel_path: str, dataset: str = "synthia4d") -> Scene:
    """Read one frame PLY (+ optional camera extrinsics) into a :class:`Scene`."""
    root = Path(root)
    sequence, frame = parse_frame_path(rel_path)
    path = root / rel_path
    fields = read_ply(path, required=("x", "y", "z"))
    xyz = np.stack([fields["x"], fields["y"], fields["z"]], axis=1).astype(np.float64)
    colors = np.stack([first_present(fields, path, "r", "red"), first_present(fields, path, "g", "green"),
                       first_present(fields, path, "b", "blue")], axis=1)
    keep = finite_points(path, xyz, colors)  # NaN/inf points are dropped with a count (minkseg.data.cleaning)
    xyz, colors = xyz[keep], colors[keep]
    colors = np.clip(colors, 0, 255).astype(np.uint8)
    raw = first_present(fields, path, "l", "label")[keep]
    if raw.dtype.kind == "f":
        if not np.all(raw == np.round(raw)):
            raise DataError(f"{path}: label property holds non-integer values; re-extract the archive")
    raw = raw.astype(np.int64)
    bad = (raw < 0) | (raw >= len(SYNTHIA_RAW_CLASS_NAMES))
    if bad.any():
        log.warning("%s: %d points have labels outside 0..15 %s; they are ignored", rel_path, int(bad.sum()),
                    np.unique(raw[bad])[:5].tolist())
    raw_label = np.where(bad, IGNORE_LABEL, raw).astype(np.uint8)
    coords, center, world = frame_in_metres(root / sequence, path.stem, xyz)
    return Scene(name=frame_name(sequence, frame, len(path.stem)), dataset=dataset,
                 coords=coords, colors=colors, labels=raw_to_class()[raw_label],
                 extra={"sequence": np.array(sequence), "frame": np.array(frame, dtype=np.int64),
                        "raw_label": raw_label, "center": center, "world_frame": np.array(world)})


def frame_in_metres(sequence_dir: Path, stem: str, xyz_cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """A frame's points (cm, camera frame) as the network sees them: metres, in world coordinates when the
    sequence has the frame's camera extrinsics. Returns ``(xyz float32, camera centre float32, world)``; shared by
    the dataset reader and ``minkseg predict`` on a sequence folder."""
    xyz = np.asarray(xyz_cm, dtype=np.float64)
    extrinsics_file = Path(sequence_dir) / EXTRINSICS_PATH.format(frame=stem)
    center = np.zeros(3)
    world = extrinsics_file.is_file()
    if world:
        extrinsics = load_extrinsics(extrinsics_file)
        xyz = camera_to_world(xyz, extrinsics)
        center = camera_to_world(np.zeros((1, 3)), extrinsics)[0]
    return (xyz * CM_TO_M).astype(np.float32), (center * CM_TO_M).astype(np.float32), world
