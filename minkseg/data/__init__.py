"""MinkSeg data layer: raw readers, synthetic datasets, preprocessing, voxelisation, augmentation, loaders.

Stage entry points (each stage reads params and calls exactly one of these):

* :func:`prepare_raw` (download stage) -> :class:`RawReport`
* :func:`preprocess` (preprocess stage) -> manifest dict; files in :mod:`minkseg.data.scenefile` format
* :func:`voxelize_split` (voxelize stage) -> manifest dict; files in :mod:`minkseg.data.evalfile` format

Training / evaluation: :class:`TrainDataset`, :class:`EvalDataset` (on the fly, optional test-time rotation),
:class:`VoxelizedDataset` (voxelize stage files), :func:`collate` / :class:`Collate` (``train_limit_numpoints``).
Dataset facts: :func:`get_spec` / :class:`DatasetSpec`. Every data problem raises :class:`DataError`.
"""

from minkseg.data.class_balance import balanced_class_weights
from minkseg.data.collate import Collate, collate
from minkseg.data.datasets import EvalDataset, TrainDataset, VoxelizedDataset
from minkseg.errors import DataError
from minkseg.data.evalfile import load_voxelized_manifest, load_voxelized_sample
from minkseg.data.ply import read_ply, write_ply
from minkseg.data.prepare import RawReport, prepare_raw
from minkseg.data.preprocess import load_manifest, preprocess
from minkseg.data.registry import DEFAULT_DATASET, DatasetSpec, dataset_names, get_spec
from minkseg.data.scenefile import Scene, load_scene, save_scene
from minkseg.data.voxelize import voxelize_split
from minkseg.data.quantize import Voxelizer

__all__ = [
    "Collate", "collate", "EvalDataset", "TrainDataset", "VoxelizedDataset", "DataError", "load_voxelized_manifest",
    "load_voxelized_sample", "read_ply", "write_ply", "RawReport", "prepare_raw", "load_manifest", "preprocess",
    "DEFAULT_DATASET", "DatasetSpec", "dataset_names", "get_spec", "Scene", "load_scene", "save_scene",
    "voxelize_split", "Voxelizer", "balanced_class_weights",
]
