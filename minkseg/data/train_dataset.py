"""Augmented training samples: the one dataset that imports the augmentations.

Why a module of its own: the voxelize stage and evaluation use the deterministic samples of
:mod:`minkseg.data.datasets`; keeping the augmentations out of that import graph means editing them re-runs only the
train stage (dvc.yaml's deps are each stage's imports). Sample format and randomness: :mod:`minkseg.data.datasets`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from minkseg.data.augment import ElasticDistortion, training_transforms
from minkseg.data.datasets import _frames, _key, _VoxelDataset, normalize_color
from minkseg.data.quantize import VoxelParams
from minkseg.data.scenefile import with_ignore_label
from minkseg.errors import DataError

if TYPE_CHECKING:  # the caller passes the dataset object; data/ does not import the datasets above it
    from minkseg.datasets.base import SegmentationDataset

__all__ = ["TrainDataset"]


class TrainDataset(_VoxelDataset):
    """Augmented, voxelised training samples from the preprocessed scenes (see module docstring)."""

    def __init__(self, preprocessed_dir: str | os.PathLike, split: str, dataset: "SegmentationDataset",
                 voxel: VoxelParams, *, augment: bool, elastic: bool = True, color_trans_ratio: float = 0.1,
                 color_jitter_std: float = 0.05, crop_voxels: int = 0) -> None:
        super().__init__(preprocessed_dir, split, dataset, voxel, augment=augment)
        self.augment = augment
        self.elastic = ElasticDistortion(self.spec.elastic_params) if (augment and elastic and
                                                                        self.spec.elastic_params) else None
        self.post = training_transforms(self.spec.up_axis, self.dimension, color_trans_ratio=color_trans_ratio,
                                        color_jitter_std=color_jitter_std,
                                        crop_voxels=crop_voxels) if augment else None

    def __getitem__(self, key: Any) -> dict[str, Any]:
        index, rng = _key(key)
        scenes = self.samples.load(index)
        try:
            vox = self.voxelizer.voxelize_frames(_frames(scenes), rng=rng if self.augment else None,
                                                 temporal=self.samples.temporal, warp=self._warp)
        except DataError as exc:  # name the training scene: the loader would otherwise only say what went wrong
            raise DataError(f"{self.samples.name(index)}: {exc}") from None
        coords, feats, labels = vox.coords, vox.feats.astype(np.float32), vox.labels
        if self.post is not None:
            coords, feats, labels = self.post(coords, feats, labels, rng)
        sample = self._base(index)
        sample.update(coordinates=np.ascontiguousarray(coords, dtype=np.int32),
                      features=normalize_color(feats), labels=with_ignore_label(labels, self.ignore_label))
        return sample

    def _warp(self, xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.elastic is None:
            return xyz
        return self.elastic(xyz, None, None, rng)[0]
