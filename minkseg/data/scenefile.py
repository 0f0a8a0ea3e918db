"""The preprocessed per-scene file: one ``.npz`` per ScanNet scene or Synthia4D frame.

Why a compact numpy archive: training re-reads every scene each epoch, so the file must load in milliseconds with
no parsing; ``.npz`` is uncompressed, memory-friendly and needs nothing beyond numpy.

Format (``FORMAT_VERSION`` 1), written atomically (temp file in the same directory + ``os.replace``):

===================  ==============  =============================================================================
key                  dtype / shape   meaning
===================  ==============  =============================================================================
``coords``           float32 [N,3]   point coordinates in metres (ScanNet: z up; Synthia: y up, converted from cm)
``colors``           uint8   [N,3]   RGB 0..255
``labels``           uint8   [N]     training label 0..C-1, 255 = ignore (unlabelled / not evaluated)
``name``             str  scalar     scene id (``scene0000_00``) or frame id (``SYNTHIA-SEQS-01-DAWN/000123``)
``dataset``          str  scalar     registry name of the dataset (``scannet``, ``synthia4d``, ...)
``format_version``   int64 scalar    ``FORMAT_VERSION``
``nyu40``            uint16  [N]     ScanNet only: raw label id from ``*.labels.ply`` (0 for test scenes)
``sequence``         str  scalar     Synthia4D only: sequence directory name
``frame``            int64 scalar    Synthia4D only: frame number parsed from ``NNNNNN.ply``
``raw_label``        uint8   [N]     Synthia4D only: the 16-class label as stored in the PLY
``center``           float32 [3]     Synthia4D only: camera position in ``coords``' frame (clip-box centre)
``world_frame``      bool scalar     Synthia4D only: True when camera extrinsics moved the frame to world coords
===================  ==============  =============================================================================

The preprocess stage (:mod:`minkseg.pipeline.preprocess`) also writes ``manifest.json`` next to the split folders;
its name, key constants and reader (:func:`load_manifest`, :func:`manifest_split`) live here with the scene files:

``manifest.json``: ``{"format_version", "dataset", "class_names", "ignore_label", "dimension", "unit",
"splits": {split: [{"name", "file", "num_points", ["sequence", "frame", "world_frame"]}, ...]},
"label_counts": {split: [points per class]}, "skipped": {split: [entries without any point]}, ["made_by"],
["dataset_options"] (a dataset's own params group, e.g. ply-folder's class list)}``.

Why a fixed 255 on disk and not ``base.ignore_label``: labels are stored as uint8 (a quarter of int32's bytes for
every point read each epoch), which cannot hold every ignore label the params allow (up to 65535); and the
preprocessed and voxelised files do not depend on a training-only param, so changing it re-runs no data stage.
:data:`STORED_IGNORE` is mapped to ``base.ignore_label`` at one boundary, :func:`with_ignore_label`, where the
loaders (:mod:`minkseg.data.datasets`) hand labels to training and evaluation.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from minkseg.atomic import save_npz_atomic
from minkseg.errors import DataError

FORMAT_VERSION = 1
STORED_IGNORE = 255  # the label of unannotated points in every file MinkSeg writes (scene and voxelised files)
MANIFEST = "manifest.json"
# What made an output (params and inputs; minkseg.pipeline.lineage): a manifest's key.
MADE_BY = "made_by"
REQUIRED = {"coords": (np.float32, 2), "colors": (np.uint8, 2), "labels": (np.uint8, 1)}


@dataclass
class Scene:
    """One preprocessed scene/frame in memory."""

    name: str
    dataset: str
    coords: np.ndarray  # float32 [N,3]
    colors: np.ndarray  # uint8 [N,3]
    labels: np.ndarray  # uint8 [N]
    extra: dict[str, Any] = field(default_factory=dict)  # nyu40 / sequence / frame / raw_label / center / ...

    @property
    def num_points(self) -> int:
        return int(self.coords.shape[0])


def with_ignore_label(stored: np.ndarray, ignore_label: int) -> np.ndarray:
    """Stored labels (uint8, :data:`STORED_IGNORE` = unannotated) as int64 labels with ``ignore_label`` for the
    unannotated points: what the loss, the metrics and the model file call the ignore label."""
    labels = np.asarray(stored).astype(np.int64)
    if ignore_label != STORED_IGNORE:
        labels[labels == STORED_IGNORE] = ignore_label
    return labels


def save_scene(path: str | os.PathLike, scene: Scene) -> None:
    """Validate shapes/dtypes and write the scene atomically."""
    n = scene.coords.shape[0]
    if scene.coords.shape != (n, 3) or scene.colors.shape != (n, 3) or scene.labels.shape != (n,):
        raise ValueError(f"inconsistent scene arrays for {scene.name}: coords {scene.coords.shape}, "
                         f"colors {scene.colors.shape}, labels {scene.labels.shape}")
    arrays: dict[str, np.ndarray] = {
        "coords": np.ascontiguousarray(scene.coords, dtype=np.float32),
        "colors": np.ascontiguousarray(scene.colors, dtype=np.uint8),
        "labels": np.ascontiguousarray(scene.labels, dtype=np.uint8),
        "name": np.array(scene.name),
        "dataset": np.array(scene.dataset),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
    }
    for key, value in scene.extra.items():
        arrays[key] = np.asarray(value)
    save_npz_atomic(path, arrays)


def _scalar(value: np.ndarray) -> Any:
    return value.item() if value.ndim == 0 else value


def load_scene(path: str | os.PathLike) -> Scene:
    """Load and check a preprocessed scene; anything wrong is a :class:`DataError` naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays: Mapping[str, np.ndarray] = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError(f"{path}: preprocessed scene not found; re-run the preprocess stage") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: unreadable preprocessed scene ({exc}); delete it and re-run preprocess") from None
    version = int(arrays.get("format_version", np.array(-1)))
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: scene file format {version}, expected {FORMAT_VERSION}; re-run preprocess")
    for key, (dtype, ndim) in REQUIRED.items():
        if key not in arrays:
            raise DataError(f"{path}: scene file lacks {key!r}; re-run preprocess")
        if arrays[key].dtype != dtype or arrays[key].ndim != ndim:
            raise DataError(f"{path}: {key!r} is {arrays[key].dtype}{list(arrays[key].shape)}, expected "
                            f"{np.dtype(dtype)} with {ndim} dims; re-run preprocess")
    n = arrays["coords"].shape[0]
    if arrays["colors"].shape[0] != n or arrays["labels"].shape[0] != n:
        raise DataError(f"{path}: coords/colors/labels lengths differ; re-run preprocess")
    extra = {k: _scalar(v) for k, v in arrays.items()
             if k not in REQUIRED and k not in ("name", "dataset", "format_version")}
    return Scene(name=str(arrays["name"]), dataset=str(arrays["dataset"]), coords=arrays["coords"],
                 colors=arrays["colors"], labels=arrays["labels"], extra=extra)


def scene_filename(name: str) -> str:
    """The file name of scene ``name`` inside its split folder (Synthia4D's ``SEQ/000123`` -> ``SEQ__000123.npz``)."""
    return name.replace("/", "__") + ".npz"


def load_manifest(preprocessed_dir: str | os.PathLike) -> dict:
    """The preprocess stage's ``manifest.json`` of ``preprocessed_dir``; a missing, damaged or older one is one
    :class:`DataError` naming the stage to re-run."""
    path = Path(preprocessed_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found; run the preprocess stage first") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt manifest ({exc.msg}); re-run the preprocess stage") from None
    if manifest.get("format_version") != FORMAT_VERSION or "splits" not in manifest:
        raise DataError(f"{path}: manifest format {manifest.get('format_version')} is not {FORMAT_VERSION}; "
                        f"re-run the preprocess stage")
    return manifest


def manifest_split(manifest: dict, split: str, path: str | os.PathLike = "") -> list[dict]:
    """The scene records of ``split``; a split that was not preprocessed is one :class:`DataError`."""
    if split not in manifest["splits"]:
        raise DataError(f"{path}: split {split!r} was not preprocessed (have {list(manifest['splits'])}); add it "
                        f"to the preprocess splits and re-run")
    return manifest["splits"][split]
