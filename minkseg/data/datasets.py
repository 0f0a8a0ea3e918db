"""``torch.utils.data`` datasets: the shared base of training and evaluation samples, evaluation samples with
inverse maps (augmented training samples: :mod:`minkseg.data.train_dataset`).

Why training voxelises on the fly: every epoch sees a new rotation, scale, elastic warp and colour jitter of each
scene, which the voxelised files of the voxelize stage cannot provide. Evaluation samples are deterministic and
carry what point-level scoring needs: the inverse map (point -> voxel, -1 if clipped) and the point labels.

Every sample is a dict::

    coordinates  int32 [M, D]   voxel coordinates (D = 3, or 4 with the frame position 0..T-1 last), no batch column
    features     float32 [M, 3] rgb / 255 - 0.5
    labels       int64 [M]      voxel labels, the caller's ignore_label where unlabelled or conflicting
    name         str
    inverse      int64 [N]      eval only: voxel of every original point (-1: outside the clip box)
    point_labels int64 [N]      eval only: label of every original point
    frames       list[int]      4D only: Synthia frame numbers of the window
    point_frames int64 [N]      4D eval only: window position of every point
    transform    float64 [4,4]  eval only: voxel = floor(transform @ [x, y, z, 1]) for every kept point
    sources      list[str]      preprocessed files of the sample (relative to the preprocessed directory)

Randomness: ``dataset[(index, seed)]`` (what ``minkseg.engine.sampling.ResumableBatchSampler`` yields) uses
``numpy.random.default_rng(seed)``; ``dataset[index]`` draws that seed from numpy's global RNG, so wrapping the
dataset in ``minkseg.engine.sampling.SeededDataset`` (which seeds it per (seed, epoch, index)) is deterministic too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from minkseg.errors import DataError
from minkseg.data.evalfile import load_voxelized_manifest, load_voxelized_sample
from minkseg.data.samples import SceneSamples
from minkseg.data.quantize import DATASET_BOUND, VoxelParams, Voxelizer, axis_rotation
from minkseg.data.scenefile import STORED_IGNORE, Scene, with_ignore_label

if TYPE_CHECKING:  # the caller passes the dataset object; data/ does not import the datasets above it
    from minkseg.datasets.base import SegmentationDataset


def normalize_color(rgb: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> float32 in [-0.5, 0.5] (the network input of the original)."""
    return (np.asarray(rgb, dtype=np.float32) / 255.0 - 0.5).astype(np.float32)


def _frames(scenes: Sequence[Scene]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    return [(s.coords, s.colors.astype(np.float32), s.labels, s.extra.get("center")) for s in scenes]


def _key(key: Any) -> tuple[int, np.random.Generator]:
    if isinstance(key, (tuple, list)):
        index, seed = key
        return int(index), np.random.default_rng(int(seed))
    return int(key), np.random.default_rng(int(np.random.randint(0, 2**31 - 1)))


class _VoxelDataset(Dataset):
    """Samples of one split of a preprocessed dataset. Labels leave as int64 with ``voxel.ignore_label`` for
    unannotated points (the files store :data:`~minkseg.data.scenefile.STORED_IGNORE`, mapped on the way out)."""

    def __init__(self, preprocessed_dir: str | os.PathLike, split: str, dataset: "SegmentationDataset",
                 voxel: VoxelParams, *, augment: bool) -> None:
        self.samples = SceneSamples(preprocessed_dir, split, dataset, temporal_numseq=voxel.temporal_numseq,
                                    temporal_dilation=voxel.temporal_dilation)
        self.spec = dataset
        self.split = split
        self.voxel = voxel
        self.ignore_label = int(voxel.ignore_label)
        self.voxel_size = voxel.voxel_size
        clip_bound = voxel.clip_bound
        if clip_bound == DATASET_BOUND:
            clip_bound = self.spec.clip_bound_train if augment else self.spec.clip_bound_test
        self.voxelizer = Voxelizer(
            self.voxel_size, clip_bound=clip_bound,
            rotation_bound=self.spec.rotation_bound if augment else None,
            scale_bound=self.spec.scale_bound if augment else None,
            translation_ratio_bound=self.spec.translation_ratio_bound if augment else None,
            ignore_label=STORED_IGNORE, label_mode=voxel.label_mode)

    @property
    def dimension(self) -> int:
        """Coordinate columns of a sample (without the batch column)."""
        return self.samples.dimension

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def num_points(self, index: int) -> int:
        """Points (before voxelisation) of sample ``index``, from the manifest (cheap, for batch packing)."""
        return self.samples.num_points(index)

    def _base(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"name": self.samples.name(index), "sources": self.samples.files(index)}
        if self.samples.temporal:
            sample["frames"] = self.samples.frames(index)
        return sample


def evaluation_view(voxelizer: Voxelizer, frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                  np.ndarray | None]],
                    *, temporal: bool, rotation: np.ndarray | None = None) -> dict[str, Any]:
    """One deterministic voxelisation of a scene (or 4D window) as the network sees it at test time.

    The one place that turns points into an evaluation view, shared by :class:`EvalDataset` (the evaluate stage)
    and :class:`minkseg.engine.predictor.Predictor` (``minkseg predict``), so both quantise a scene identically.
    ``frames`` are ``(xyz [N, 3], rgb 0..255 [N, 3], labels [N], clip-box centre or None)`` per frame.
    """
    vox = voxelizer.voxelize_frames(frames, temporal=temporal, rotation=rotation)
    return {"coordinates": vox.coords, "features": normalize_color(vox.feats), "labels": vox.labels,
            "inverse": vox.inverse, "transform": vox.transform}


class EvalDataset(_VoxelDataset):
    """Deterministic voxelised samples with inverse maps and point labels, optionally rotated (test-time voting)."""

    def __init__(self, preprocessed_dir: str | os.PathLike, split: str, dataset: "SegmentationDataset",
                 voxel: VoxelParams, *, rotation_degrees: float = 0.0, rotation_axis: str | int | None = None) -> None:
        super().__init__(preprocessed_dir, split, dataset, voxel, augment=False)
        axis = self.spec.up_axis if rotation_axis is None else rotation_axis
        self.rotation = axis_rotation(axis, np.deg2rad(rotation_degrees)) if rotation_degrees else None

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index = key[0] if isinstance(key, (tuple, list)) else int(key)
        scenes = self.samples.load(index)
        sample = self._base(index)
        sample.update(evaluation_view(self.voxelizer, _frames(scenes), temporal=self.samples.temporal,
                                      rotation=self.rotation))
        sample["labels"] = with_ignore_label(sample["labels"], self.ignore_label)
        sample["point_labels"] = with_ignore_label(np.concatenate([s.labels for s in scenes]), self.ignore_label)
        if self.samples.temporal:
            sample["point_frames"] = np.concatenate([np.full(s.num_points, t, dtype=np.int64)
                                                     for t, s in enumerate(scenes)])
        return sample


class VoxelizedDataset(Dataset):
    """Evaluation samples read from the voxelize stage's files (format: :mod:`minkseg.data.evalfile`)."""

    def __init__(self, voxelized_dir: str | os.PathLike, split: str, *, ignore_label: int) -> None:
        self.root = Path(voxelized_dir)
        self.ignore_label = int(ignore_label)
        manifest = load_voxelized_manifest(self.root)
        if split not in manifest["splits"]:
            raise DataError(f"{self.root}: split {split!r} was not voxelised (have {list(manifest['splits'])}); add "
                            f"it to the voxelize splits and re-run")
        self.records = manifest["splits"][split]
        self.dimension = int(manifest["dimension"])
        self.num_classes = len(manifest["class_names"])
        self.voxel_size = float(manifest["voxel_size"])

    def __len__(self) -> int:
        return len(self.records)

    def num_points(self, index: int) -> int:
        return int(self.records[index]["num_points"])

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index = key[0] if isinstance(key, (tuple, list)) else int(key)
        sample = load_voxelized_sample(self.root / self.records[index]["file"])
        for name in ("labels", "point_labels"):
            sample[name] = with_ignore_label(sample[name], self.ignore_label)
        return sample
