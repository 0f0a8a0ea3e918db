"""The ``scannet`` dataset (ScanNet v2): checking a local copy, reading one scene, mapping nyu40 ids to the 20
benchmark classes.

Why a check with instructions: ScanNet cannot be downloaded without signing its terms of use, so the "download"
step for ScanNet only verifies the local copy and says exactly which files are missing and how to get them.

Layout (as the official ``download-scannet.py`` leaves it)::

    <root>/scans/<scene>/<scene>_vh_clean_2.ply          vertices x,y,z,red,green,blue[,alpha] (+ faces)
    <root>/scans/<scene>/<scene>_vh_clean_2.labels.ply   the same vertices, property ``label`` = nyu40 id
    <root>/scans_test/<scene>/<scene>_vh_clean_2.ply     test scenes, no labels

Scans MinkSeg did not write are read leniently where a point-wise fix exists and strictly where none does:

* NaN/inf coordinates or colours: those points are dropped with a warning and a count
  (:func:`minkseg.data.cleaning.finite_points` says why). The label file is aligned with the mesh before the
  drop, so every remaining point keeps its own label.
* Label ids beyond nyu40, and scenes without a single point of a benchmark class: kept, with a warning (their
  points are unlabelled and ignored by the loss and the metrics).
* Everything that cannot be repaired point by point -- a truncated or malformed PLY, missing x/y/z/colour
  properties, a label file with another vertex count or other vertex positions -- is a DataError naming the file.
"""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from minkseg.data.cleaning import finite_points
from minkseg.errors import DataError
from minkseg.data.ply import read_ply
from minkseg.data.scenefile import STORED_IGNORE, Scene
from minkseg.datasets.base import META_DIR, SegmentationDataset
from minkseg.datasets.registry import register_dataset

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)
# nyu40 ids of the 20 ScanNet benchmark classes, in class-index order.
SCANNET_VALID_NYU40 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SPLIT_FILES = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt", "test": "scannetv2_test.txt"}

MESH_SUFFIX = "_vh_clean_2.ply"
LABEL_SUFFIX = "_vh_clean_2.labels.ply"
NYU40_MAX = 40
GET_SCANNET = ("request access at http://kaldir.vc.in.tum.de/scannet_benchmark/documentation, then run "
               "download-scannet.py -o <root> --type _vh_clean_2.ply and --type _vh_clean_2.labels.ply")


@lru_cache(maxsize=1)
def nyu40_to_class() -> np.ndarray:
    """Lookup table uint8[65536]: nyu40 id -> benchmark class 0..19, every other id -> 255 (ignore)."""
    table = np.full(1 << 16, STORED_IGNORE, dtype=np.uint8)
    table[np.array(SCANNET_VALID_NYU40)] = np.arange(len(SCANNET_VALID_NYU40), dtype=np.uint8)
    return table


@lru_cache(maxsize=1)
def nyu40_class_names() -> dict[int, str]:
    """nyu40 id -> nyu40 class name, from the shipped ``scannetv2-labels.combined.tsv``."""
    lines = (META_DIR / "scannetv2-labels.combined.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    id_col, name_col = header.index("nyu40id"), header.index("nyu40class")
    names = {}
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) > max(id_col, name_col) and cols[id_col].isdigit():
            names[int(cols[id_col])] = cols[name_col]
    return names


def scene_dir(root: Path, scene: str, split: str) -> Path:
    return root / ("scans_test" if split == "test" else "scans") / scene


def scene_files(root: str | os.PathLike, scene: str, split: str) -> tuple[Path, Path | None]:
    """Mesh path and label path (None for the unlabelled test split)."""
    d = scene_dir(Path(root), scene, split)
    return d / f"{scene}{MESH_SUFFIX}", (None if split == "test" else d / f"{scene}{LABEL_SUFFIX}")


def check_scannet_root(spec: "ScanNet", root: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
    """Verify every scene of ``splits`` has its files; return scenes per split or raise one clear DataError."""
    root = Path(root)
    splits = spec.check_splits(splits)
    if not root.is_dir():
        raise DataError(f"ScanNet root {root} does not exist; {GET_SCANNET}, then set the path in params.yaml")
    counts, missing = {}, []
    for split in splits:
        scenes = spec.split_entries(split, root)
        counts[split] = len(scenes)
        for scene in scenes:
            mesh, labels = scene_files(root, scene, split)
            absent = [p for p in (mesh, labels) if p is not None and not p.is_file()]
            missing += [(split, scene, p) for p in absent]
    if missing and spec.split_lists_in_raw:
        # The list was generated next to the scenes; a mismatch means the raw folder is incomplete or was edited.
        split = missing[0][0]
        scenes = list(dict.fromkeys(scene for s, scene, _ in missing if s == split))
        examples = list(dict.fromkeys(path for s, _, path in missing if s == split and path.parent.name in scenes))
        shown = ", ".join(str(next(p for p in examples if p.parent.name == scene).relative_to(root))
                          for scene in scenes[:3])
        raise DataError(f"{spec.split_file(split, root)} names {len(scenes)} scene(s) whose files are missing under "
                        f"{root} (e.g. {shown}); re-run the download stage (dvc repro -f download)")
    if missing:
        shown = ", ".join(str(path.relative_to(root)) for _, _, path in missing[:3])
        raise DataError(f"ScanNet root {root} lacks {len(missing)} required files (e.g. {shown}); {GET_SCANNET}")
    return counts


def read_scannet_scene(root: str | os.PathLike, scene: str, split: str, dataset: str = "scannet") -> Scene:
    """Read one raw scene into a :class:`Scene` (labels mapped to the 20 classes, nyu40 ids kept)."""
    mesh_path, label_path = scene_files(root, scene, split)
    mesh = read_ply(mesh_path, required=("x", "y", "z", "red", "green", "blue"))
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf: dropped below
        coords = np.stack([mesh["x"], mesh["y"], mesh["z"]], axis=1).astype(np.float32)
    colors = np.stack([mesh["red"], mesh["green"], mesh["blue"]], axis=1)
    keep = finite_points(mesh_path, coords, colors)
    coords = coords[keep]
    colors = colors[keep]
    if colors.dtype != np.uint8:
        colors = np.clip(colors, 0, 255).astype(np.uint8)
    if label_path is None:
        nyu40 = np.zeros(len(coords), dtype=np.uint16)
    else:
        labelled = read_ply(label_path, required=("x", "y", "z", "label"))
        if len(labelled["label"]) != len(keep):
            raise DataError(f"{label_path}: {len(labelled['label'])} vertices but the mesh has {len(keep)}; "
                            f"re-download both files of {scene}")
        label_xyz = np.stack([labelled["x"], labelled["y"], labelled["z"]], axis=1)[keep]
        if not np.allclose(label_xyz, coords, atol=1e-4):
            raise DataError(f"{label_path}: vertex positions differ from {mesh_path.name}; "
                            f"re-download both files of {scene}")
        raw = labelled["label"][keep]
        if raw.dtype.kind == "f" or (raw.dtype.kind == "i" and raw.min(initial=0) < 0):
            raise DataError(f"{label_path}: label property must hold non-negative integer nyu40 ids, got "
                            f"{raw.dtype}; re-download the label file")
        nyu40 = raw.astype(np.uint16)
        beyond = np.unique(nyu40[nyu40 > NYU40_MAX])
        if beyond.size:
            # The original code patched scene0270_00/02 and scene0384_00 (ids 50, 149); we ignore such points.
            log.warning("%s: label ids %s are beyond nyu40; their %d points are ignored", scene,
                        beyond.tolist(), int(np.isin(nyu40, beyond).sum()))
    labels = nyu40_to_class()[nyu40]
    if label_path is not None and len(labels) and (labels == STORED_IGNORE).all():
        log.warning("%s: no point has a label of the 20 benchmark classes; it adds nothing to training or scoring",
                    scene)
    return Scene(name=scene, dataset=dataset, coords=coords, colors=colors, labels=labels,
                 extra={"nyu40": nyu40})


@register_dataset
class ScanNet(SegmentationDataset):
    """ScanNet v2 (the user's own copy, which needs ScanNet's terms of use): indoor rooms, z up, 20 classes."""

    name = "scannet"
    class_names = CLASS_NAMES
    up_axis = 2
    rotation_bound = ((-math.pi / 64, math.pi / 64), (-math.pi / 64, math.pi / 64), (-math.pi, math.pi))
    scale_bound = (0.9, 1.1)
    elastic_params = ((0.2, 0.4), (0.8, 1.6))
    max_extent = 200.0
    scannet_benchmark = True
    download_params = ("base.dataset", "download.scannet_root")
    split_files = SPLIT_FILES

    def raw_root(self, download: Any) -> Path | None:
        return Path(download.scannet_root).expanduser() if download.scannet_root else None

    def params_problems(self, params: Any) -> list[str]:
        if params.download.scannet_root:
            return []
        return ["download.scannet_root: required when base.dataset is scannet; set it to the folder holding "
                "ScanNet v2's scans/"]

    def check_raw(self, raw_dir: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
        return check_scannet_root(self, raw_dir, splits)

    def read_scene(self, raw_dir: str | os.PathLike, split: str, entry: str) -> Scene:
        return read_scannet_scene(raw_dir, entry, split, dataset=self.name)
