"""Evaluation scenes as the evaluator reads them: one voxelised view per test-time voting angle, loaded lazily."""
from __future__ import annotations

from typing import Any

import numpy as np

from minkseg.config import Params
from minkseg.data.datasets import EvalDataset, VoxelizedDataset
from minkseg.data.scenefile import load_scene
from minkseg.engine.predictor import voting_rotations
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.spec import dataset_spec, voxel_params

__all__ = ["VotingScenes"]


class VotingScenes:
    """The evaluation split's scenes, each ``{"name", "labels", "views"[, "points", "colors"]}``: the voxelize
    stage's view for angle 0 and on-the-fly rotated views for the others, in the Predictor's order so that the
    evaluate stage and ``minkseg predict`` sum the same views alike."""

    def __init__(self, params: Params, paths: PipelinePaths) -> None:
        e = params.evaluate
        self.base = VoxelizedDataset(paths.voxelized, e.split, ignore_label=params.base.ignore_label)
        angles = voting_rotations(e.rotation_angles)
        voxel = voxel_params(params)
        spec = dataset_spec(params)
        self.rotated = [EvalDataset(paths.preprocessed, e.split, spec, voxel, rotation_degrees=angle,
                                    rotation_axis=e.rotation_axis)
                        for angle in angles if angle != 0]
        self.include_base = bool(angles) and angles[0] == 0
        self.preprocessed = paths.preprocessed
        self.export_count = e.export_count

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self.base[index]
        views = ([base] if self.include_base else []) + [dataset[index] for dataset in self.rotated]
        scene = {"name": base["name"], "labels": base["point_labels"], "views": views}
        if index < self.export_count:  # exported scenes carry their original points and colours
            frames = [load_scene(self.preprocessed / source) for source in base["sources"]]
            scene["points"] = np.concatenate([frame.coords for frame in frames])
            scene["colors"] = np.concatenate([frame.colors for frame in frames])
        return scene
