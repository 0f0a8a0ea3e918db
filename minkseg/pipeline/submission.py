"""The ScanNet benchmark's 3D semantic label submission: write it, and check it as the benchmark would.

Format (ScanNet benchmark documentation, "Format for 3D Semantic Label Prediction", and its evaluation script
``BenchmarkScripts/3d_evaluation/evaluate_semantic_label.py``): one text file ``<scene>.txt`` per test scan, one
line per vertex of ``<scene>_vh_clean_2.ply`` in the mesh's vertex order, each line the integer nyu40 id of the
predicted class (the 20 benchmark classes are nyu40 ids 1-39, :data:`minkseg.datasets.scannet.SCANNET_VALID_NYU40`);
all files at the root of one zip archive. The paper's 73.6 mIoU is the benchmark's score of such an archive.

Why a validator of our own: a malformed archive costs a submission (the benchmark blocks re-submission for two
weeks), so every scene of the official test list must be there, every file must have exactly as many integer
lines as its mesh has vertices, and every id must be one of the 20 -- checked on the zip as written, not on the
arrays it came from.
"""
from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from minkseg.atomic import atomic_write_bytes
from minkseg.errors import EngineError

log = logging.getLogger(__name__)

__all__ = ["ARCHIVE", "to_nyu40", "encode_scene", "write_archive", "validate_archive"]

ARCHIVE = "scannet_3d_semantic_label.zip"


def _valid_ids() -> np.ndarray:
    from minkseg.datasets.scannet import SCANNET_VALID_NYU40

    return np.asarray(SCANNET_VALID_NYU40, dtype=np.int64)


def to_nyu40(labels: np.ndarray, scene: str) -> np.ndarray:
    """Train ids 0..19 -> nyu40 ids. A point without a prediction (outside a clip box) has no valid answer; it
    gets nyu40 0 (unannotated, scored as wrong) and a warning."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    valid = _valid_ids()
    known = (labels >= 0) & (labels < len(valid))
    if not known.all():
        log.warning("%s: %d of %d vertices have no prediction (outside the model's clip box?); written as nyu40 id 0",
                    scene, int((~known).sum()), len(labels))
    out = np.zeros(len(labels), dtype=np.int64)
    out[known] = valid[labels[known]]
    return out


def encode_scene(nyu40: np.ndarray) -> bytes:
    """One integer per line, ``\\n``-terminated."""
    return "".join(f"{int(v)}\n" for v in np.asarray(nyu40).reshape(-1)).encode("ascii")


def write_archive(path: str | Path, scenes: Mapping[str, bytes]) -> Path:
    """``<scene>.txt`` for every scene at the root of one zip (deflated), written atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for scene in sorted(scenes):
            info = zipfile.ZipInfo(f"{scene}.txt", date_time=(1980, 1, 1, 0, 0, 0))  # same bytes for same labels
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, scenes[scene])
    return atomic_write_bytes(path, buffer.getvalue())


def validate_archive(path: str | Path, vertex_counts: Mapping[str, int], test_list: Iterable[str]) -> dict[str, int]:
    """Check a submission zip against the official test list and the meshes' vertex counts; returns lines per
    scene. Any problem is one EngineError naming the scene and what is wrong."""
    path = Path(path)
    expected = list(test_list)
    valid = set(_valid_ids().tolist())
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise EngineError(f"{path}: not a readable zip ({exc}); re-run the submit stage") from None
    with archive:
        names = archive.namelist()
        nested = [name for name in names if "/" in name or not name.endswith(".txt")]
        if nested:
            raise EngineError(f"{path}: {nested[0]} is not a <scene>.txt at the archive root; re-run the submit stage")
        present = {name[:-4] for name in names}
        missing = [scene for scene in expected if scene not in present]
        if missing:
            raise EngineError(f"{path}: {len(missing)} scene(s) of the test list are missing (e.g. {missing[0]}); "
                              "re-run the submit stage")
        extra = sorted(present - set(expected))
        if extra:
            raise EngineError(f"{path}: {extra[0]}.txt is not a scene of the test list; re-run the submit stage")
        lines = {}
        for scene in expected:
            text = archive.read(f"{scene}.txt").decode("ascii", errors="replace")
            rows = text.split("\n")
            if rows and rows[-1] == "":
                rows = rows[:-1]
            if len(rows) != vertex_counts[scene]:
                raise EngineError(f"{path}: {scene}.txt has {len(rows)} lines but {scene}_vh_clean_2.ply has "
                                  f"{vertex_counts[scene]} vertices; re-run the submit stage")
            try:
                ids = np.array([int(row) for row in rows], dtype=np.int64)
            except ValueError:
                raise EngineError(f"{path}: {scene}.txt has a line that is not one integer; re-run the submit "
                                  "stage") from None
            bad = sorted(set(np.unique(ids).tolist()) - valid - {0})
            if bad:
                raise EngineError(f"{path}: {scene}.txt has ids {bad[:5]} that are not nyu40 ids of the 20 benchmark "
                                  "classes; re-run the submit stage")
            lines[scene] = len(rows)
    return lines
