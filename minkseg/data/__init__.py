"""MinkSeg data layer: what every dataset shares -- PLY I/O, the on-disk formats, preprocessing and voxelisation
drivers, augmentation, loaders, safe download and extraction. The datasets themselves (facts, raw readers, split
lists, fetch) are the registered modules of :mod:`minkseg.datasets`; functions here take such an object.

Stage entry points (each stage reads params and calls exactly one of these):

* ``dataset.fetch`` (download stage, :mod:`minkseg.datasets`) -> :class:`minkseg.datasets.RawReport`
* :func:`preprocess` (preprocess stage) -> manifest dict; files in :mod:`minkseg.data.scenefile` format
* :func:`voxelize_split` (voxelize stage) -> manifest dict; files in :mod:`minkseg.data.evalfile` format

Training / evaluation: :class:`TrainDataset`, :class:`EvalDataset` (on the fly, optional test-time rotation),
:class:`VoxelizedDataset` (voxelize stage files), :func:`collate` / :class:`Collate` (``train_limit_numpoints``).
Every data problem raises :class:`DataError`.
"""

from minkseg.data.class_balance import balanced_class_weights
from minkseg.data.collate import Collate, collate
from minkseg.data.datasets import EvalDataset, TrainDataset, VoxelizedDataset
from minkseg.errors import DataError
from minkseg.data.evalfile import load_voxelized_manifest, load_voxelized_sample
from minkseg.data.ply import read_ply, write_ply
from minkseg.data.preprocess import load_manifest, preprocess
from minkseg.data.scenefile import STORED_IGNORE, Scene, load_scene, save_scene, with_ignore_label
from minkseg.data.voxelize import voxelize_split
from minkseg.data.quantize import Voxelizer

__all__ = [
    "Collate", "collate", "EvalDataset", "TrainDataset", "VoxelizedDataset", "DataError", "load_voxelized_manifest",
    "load_voxelized_sample", "read_ply", "write_ply", "load_manifest", "preprocess", "STORED_IGNORE", "Scene",
    "load_scene", "save_scene", "with_ignore_label",
    "voxelize_split", "Voxelizer", "balanced_class_weights",
]
