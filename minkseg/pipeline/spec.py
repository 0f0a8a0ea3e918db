"""The run's dataset object, where its raw data lies, and its voxelisation params: built from params.yaml in one
place for every stage."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from minkseg.config import Params
from minkseg.pipeline.paths import PipelinePaths

if TYPE_CHECKING:
    from minkseg.data.quantize import VoxelParams
    from minkseg.datasets.base import SegmentationDataset

__all__ = ["dataset_spec", "external_root", "raw_location", "voxel_params"]


def dataset_spec(params: Params) -> "SegmentationDataset":
    """The dataset object (minkseg.datasets) every stage asks instead of branching on its name."""
    from minkseg.datasets import dataset_from_params

    return dataset_from_params(params)


def external_root(params: Params) -> Path | None:
    """The user's own dataset folder for real datasets, or None when data/raw holds the raw data itself."""
    return dataset_spec(params).raw_root(params.download)


def raw_location(params: Params, paths: PipelinePaths) -> Path:
    """Where the raw scenes are read from: the user's own folder, or data/raw."""
    return external_root(params) or paths.raw


def voxel_params(params: Params) -> "VoxelParams":
    """The one :class:`minkseg.data.quantize.VoxelParams` of a run (voxelize.* and base.ignore_label), handed to
    the voxelize stage, the training and evaluation datasets alike."""
    from minkseg.data.quantize import VoxelParams

    v = params.voxelize
    return VoxelParams(voxel_size=v.voxel_size, clip_bound=v.clip_bound, label_mode=v.label_mode,
                       ignore_label=params.base.ignore_label, temporal_numseq=v.temporal_numseq,
                       temporal_dilation=v.temporal_dilation)
