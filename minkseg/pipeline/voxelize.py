"""The voxelize stage: preprocessed scenes -> voxelised evaluation files (format in :mod:`minkseg.data.evalfile`).

Why only evaluation splits: training voxelises on the fly with fresh augmentation every epoch
(:class:`minkseg.data.datasets.TrainDataset`); validation and test need one fixed voxelisation plus the inverse
maps, which this stage computes once. The output directory is replaced as a whole, so a failure leaves the
previous one intact.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from minkseg.atomic import atomic_directory, atomic_write_json, check_writable
from minkseg.config import Params
from minkseg.data.datasets import EvalDataset
from minkseg.data.evalfile import FORMAT_VERSION, MANIFEST, save_voxelized_sample
from minkseg.data.parallel import run_parallel
from minkseg.data.quantize import VoxelParams
from minkseg.data.scenefile import MADE_BY, STORED_IGNORE, scene_filename
from minkseg.errors import DataError
from minkseg.pipeline.lineage import checked_inputs, make_record
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.spec import dataset_spec, voxel_params

if TYPE_CHECKING:
    from minkseg.datasets.base import SegmentationDataset

__all__ = ["run_voxelize", "voxelize_split"]


def run_voxelize(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    """The stage: the evaluation split (``evaluate.split``) of ``data/preprocessed`` into ``data/voxelized``."""
    check_writable(paths.voxelized.parent)
    made_by = make_record("voxelize", params, checked_inputs(params, paths, "voxelize"))
    return voxelize_split(paths.preprocessed, paths.voxelized, (params.evaluate.split,), dataset_spec(params),
                          voxel_params(params), workers=params.preprocess.num_workers, progress=progress,
                          made_by=made_by)


@lru_cache(maxsize=4)
def _dataset(preprocessed_dir: str, split: str, spec: "SegmentationDataset", voxel: VoxelParams) -> EvalDataset:
    # The files keep the stored ignore label (minkseg.data.scenefile): base.ignore_label is mapped on reading.
    return EvalDataset(preprocessed_dir, split, spec, replace(voxel, ignore_label=STORED_IGNORE))


def _voxelize_one(task: tuple[str, str, "SegmentationDataset", VoxelParams, int, str]) -> tuple[dict | None, str | None]:
    preprocessed_dir, split, spec, voxel, index, out_dir = task
    dataset = _dataset(preprocessed_dir, split, spec, voxel)
    name = dataset.samples.name(index)
    filename = scene_filename(name.replace("+", "__").replace(",", "_"))
    try:
        sample = dataset[index]
        save_voxelized_sample(Path(out_dir) / split / filename, sample, sample["transform"], dataset.voxel_size)
    except DataError as exc:
        return None, f"{name}: {exc}"
    return {"name": name, "file": f"{split}/{filename}", "num_points": int(len(sample["inverse"])),
            "num_voxels": int(len(sample["coordinates"]))}, None


def voxelize_split(preprocessed_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   splits: str | Sequence[str], dataset: "SegmentationDataset", voxel: VoxelParams, *,
                   workers: int = 1, progress: bool = True, made_by: Mapping[str, Any] | None = None) -> dict:
    """Write one evaluation file per sample of ``splits`` plus ``manifest.json`` into ``out_dir``; returns it.
    ``voxel.clip_bound`` is :data:`~minkseg.data.quantize.DATASET_BOUND` (the dataset's own), None or three [min, max]
    pairs; ``made_by`` (what made the output: params and inputs) is stored in the manifest as is."""
    splits = [splits] if isinstance(splits, str) else list(splits)
    source = str(Path(preprocessed_dir).resolve())
    _dataset.cache_clear()  # the scenes may have been re-preprocessed since a previous call in this process
    datasets = {split: _dataset(source, split, dataset, voxel) for split in splits}
    first = datasets[splits[0]]
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "dataset": first.spec.name, "class_names": list(first.spec.class_names),
        "ignore_label": first.spec.ignore_label, "dimension": first.dimension, "voxel_size": first.voxel_size,
        "label_mode": voxel.label_mode, "splits": {},
    }
    if made_by is not None:
        manifest[MADE_BY] = dict(made_by)
    with atomic_directory(out_dir) as staging:
        for split in splits:
            (staging / split).mkdir()
            tasks = [(source, split, dataset, voxel, i, str(staging)) for i in range(len(datasets[split]))]
            results = run_parallel(_voxelize_one, tasks, workers, desc=f"voxelize {split}", unit="sample",
                                   progress=progress)
            failed = [error for _, error in results if error is not None]
            if failed:
                raise DataError(f"voxelize failed for {len(failed)} sample(s) of split {split!r}; first: {failed[0]}")
            manifest["splits"][split] = [record for record, _ in results]
        atomic_write_json(staging / MANIFEST, manifest)
    return manifest
