"""The ``synthia4d`` dataset: one PLY per frame, 16 raw labels mapped to the 12 evaluated classes, samples of
``voxelize.temporal_numseq`` frames (4D).

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
from collections import defaultdict
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from minkseg.data.cleaning import finite_points
from minkseg.data.download import archive_name, download as download_url, split_checksum
from minkseg.data.extract import extract_archive
from minkseg.errors import DataError
from minkseg.data.ply import first_present, read_ply
from minkseg.data.scenefile import STORED_IGNORE, Scene
from minkseg.datasets.base import RawReport, SegmentationDataset
from minkseg.datasets.registry import register_dataset

log = logging.getLogger(__name__)

RAW_CLASS_NAMES = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign",
    "pedestrian", "bicycle", "lanemarking", "reserved", "reserved", "traffic light",
)
IGNORED_RAW = (0, 1, 13, 14)  # void, sky, reserved, reserved
CLASS_NAMES = tuple(n for i, n in enumerate(RAW_CLASS_NAMES) if i not in IGNORED_RAW)
SPLIT_FILES = {"train": "train_cvpr19.txt", "val": "val_cvpr19.txt", "test": "test_cvpr19.txt"}
SYNTHIA4D_URL = "http://cvgl.stanford.edu/data2/Synthia4D.tar"

FRAME_RE = re.compile(r"^(?P<seq>[^/]+)/point_clouds/(?P<frame>\d+)\.ply$")
EXTRINSICS_PATH = "CameraParams/Stereo_Right/Omni_F/{frame}.txt"
CM_TO_M = 0.01
GET_SYNTHIA = "run the download stage (dataset synthia4d) or extract Synthia4D.tar and its *.tar.bz2 there"


@lru_cache(maxsize=1)
def raw_to_class() -> np.ndarray:
    """Lookup table uint8[256]: raw Synthia label -> 0..11, ignored/unknown labels -> 255."""
    table = np.full(256, STORED_IGNORE, dtype=np.uint8)
    kept = [i for i in range(len(RAW_CLASS_NAMES)) if i not in IGNORED_RAW]
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


def check_synthia_root(spec: "Synthia4D", root: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
    root = Path(root)
    splits = spec.check_splits(splits)
    if not root.is_dir():
        raise DataError(f"Synthia4D root {root} does not exist; {GET_SYNTHIA}")
    counts, missing = {}, []
    for split in splits:
        entries = spec.split_entries(split, root)
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
    bad = (raw < 0) | (raw >= len(RAW_CLASS_NAMES))
    if bad.any():
        log.warning("%s: %d points have labels outside 0..15 %s; they are ignored", rel_path, int(bad.sum()),
                    np.unique(raw[bad])[:5].tolist())
    raw_label = np.where(bad, STORED_IGNORE, raw).astype(np.uint8)
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


def temporal_windows(records: list[dict], numseq: int, dilation: int) -> list[list[int]]:
    """Record indices of every window of ``numseq`` frames ``dilation`` apart within each sequence.

    Why from the manifest: samples are frames ``idx, idx+d, ..., idx+(T-1)d`` of one sequence (positions in the
    sorted frame list of that sequence within the split, as in the original), and the manifest already carries every
    frame's sequence and number, so no scene file is opened to build the index."""
    by_sequence: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_sequence[r["sequence"]].append(i)
    span = (numseq - 1) * dilation
    windows, skipped = [], []
    for sequence in sorted(by_sequence):
        ids = sorted(by_sequence[sequence], key=lambda i: records[i]["frame"])
        if len(ids) <= span:
            skipped.append(f"{sequence} ({len(ids)} frames)")
            continue
        windows += [[ids[start + k * dilation] for k in range(numseq)] for start in range(len(ids) - span)]
    if skipped:
        log.warning("sequences shorter than the temporal window (%d frames) are skipped: %s", span + 1,
                    ", ".join(skipped))
    return windows


@register_dataset
class Synthia4D(SegmentationDataset):
    """Synthia4D (CVPR'19 splits): driving sequences, y up, 12 classes; 4D samples of several frames.

    Synthia4D PLYs are in cm; the reader converts them to metres so every dataset shares one unit. The paper's
    numbers (clip +-1800 cm train / +-2500 cm test, elastic (80, 300) cm) are converted accordingly."""

    name = "synthia4d"
    class_names = CLASS_NAMES
    dimension = 4
    up_axis = 1
    rotation_bound = (None, (-np.pi, np.pi), None)
    scale_bound = (0.9, 1.1)
    translation_ratio_bound = ((-0.1, 0.1), (0.0, 0.0), (-0.1, 0.1))
    elastic_params = ((0.8, 3.0),)
    clip_bound_train = ((-18.0, 18.0),) * 3
    clip_bound_test = ((-25.0, 25.0),) * 3
    max_extent = 2000.0
    download_params = ("base.dataset", "download.synthia_root")
    split_files = SPLIT_FILES

    def raw_root(self, download: Any) -> Path | None:
        return Path(download.synthia_root).expanduser() if download.synthia_root else None

    def params_problems(self, params: Any) -> list[str]:
        if params.download.synthia_root:
            return []
        return ["download.synthia_root: required when base.dataset is synthia4d; set it to the Synthia4D folder "
                "(filled from download.synthia_urls when empty)"]

    def check_raw(self, raw_dir: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
        return check_synthia_root(self, raw_dir, splits)

    def read_scene(self, raw_dir: str | os.PathLike, split: str, entry: str) -> Scene:
        return read_synthia_frame(raw_dir, entry, dataset=self.name)

    def scene_record(self, scene: Scene) -> dict[str, Any]:
        return {"sequence": str(scene.extra["sequence"]), "frame": int(scene.extra["frame"]),
                "world_frame": bool(scene.extra["world_frame"])}

    def is_temporal(self, temporal_numseq: int) -> bool:
        """More than one frame per sample is 4D; a single frame (the paper's 3D baseline) is 3D."""
        return temporal_numseq > 1

    def sample_groups(self, records: list[dict], temporal_numseq: int, temporal_dilation: int) -> list[list[int]]:
        if not self.is_temporal(temporal_numseq):
            return super().sample_groups(records, temporal_numseq, temporal_dilation)
        return temporal_windows(records, temporal_numseq, temporal_dilation)

    def fetch(self, raw_dir: Path, download: Any, *, seed: int, splits: Sequence[str], workers: int,
              progress: bool, made_by: Mapping[str, Any] | None, retries: int = 5) -> RawReport:
        """A folder that already holds the split frames is only checked; otherwise every archive of
        ``download.synthia_urls`` (default: the paper's ``Synthia4D.tar``; ``<url>#sha256=<hex>`` pins its
        checksum) is downloaded resumably, checked against its size/sha256 record, and safely extracted together
        with the ``*.tar.bz2`` inside."""
        raw_dir = Path(raw_dir)
        raw_dir.mkdir(parents=True, exist_ok=True)
        try:
            return RawReport(self.name, str(raw_dir), self.check_raw(raw_dir, splits))
        except DataError:
            pass  # not there yet: fetch it
        records = []
        for entry in download.synthia_urls or [SYNTHIA4D_URL]:
            url, sha256 = split_checksum(entry)
            target = raw_dir / archive_name(url)
            record = download_url(url, target, sha256=sha256, retries=retries, progress=progress)
            extract_archive(target, raw_dir, record["sha256"])
            records.append(record)
        return RawReport(self.name, str(raw_dir), self.check_raw(raw_dir, splits), records)
