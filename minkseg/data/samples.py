"""Which preprocessed scenes form one sample: a single scene (3D) or a temporal window of frames (4D).

Why the dataset object decides: how scenes group into samples is a fact of the dataset (Synthia4D stacks
``temporal_numseq`` frames of one sequence, :meth:`minkseg.datasets.synthia4d.Synthia4D.sample_groups`); this
module only reads the manifest and loads the scenes of a group.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from minkseg.errors import DataError
from minkseg.data.scenefile import Scene, load_manifest, load_scene, manifest_split

if TYPE_CHECKING:  # the caller passes the dataset object; data/ does not import the datasets above it
    from minkseg.datasets.base import SegmentationDataset


class SceneSamples:
    """The preprocessed scenes of one split grouped into samples; ``load(i)`` returns the scenes of sample i."""

    def __init__(self, preprocessed_dir: str | os.PathLike, split: str, dataset: "SegmentationDataset", *,
                 temporal_numseq: int, temporal_dilation: int) -> None:
        self.root = Path(preprocessed_dir)
        manifest = load_manifest(self.root)
        if manifest.get("dataset") != dataset.name:
            raise DataError(f"{self.root / 'manifest.json'}: preprocessed from dataset {manifest.get('dataset')!r}, "
                            f"not {dataset.name!r}; re-run the preprocess stage (dvc repro)")
        self.spec = dataset
        self.records = manifest_split(manifest, split, self.root / "manifest.json")
        if not self.records:
            raise DataError(f"{self.root}: split {split!r} has no scenes; check the split lists and re-run "
                            f"preprocess")
        if temporal_numseq < 1 or temporal_dilation < 1:
            raise DataError(f"temporal_numseq and temporal_dilation must be >= 1 (got {temporal_numseq}, "
                            f"{temporal_dilation}); fix voxelize.* in params.yaml")
        self.temporal = dataset.is_temporal(temporal_numseq)
        self.groups = dataset.sample_groups(self.records, temporal_numseq, temporal_dilation)
        if not self.groups:
            raise DataError(f"{self.root}: no sequence of split {split!r} has the "
                            f"{(temporal_numseq - 1) * temporal_dilation + 1} frames a window of "
                            f"temporal_numseq={temporal_numseq}, temporal_dilation={temporal_dilation} needs; "
                            f"lower them in params.yaml")

    @property
    def dimension(self) -> int:
        return 4 if self.temporal else 3

    def __len__(self) -> int:
        return len(self.groups)

    def name(self, index: int) -> str:
        group = self.groups[index]
        if not self.temporal:
            return self.records[group[0]]["name"]
        first = self.records[group[0]]
        return f"{first['name']}+" + ",".join(str(self.records[i]["frame"]) for i in group[1:])

    def files(self, index: int) -> list[str]:
        return [self.records[i]["file"] for i in self.groups[index]]

    def frames(self, index: int) -> list[int]:
        return [int(self.records[i]["frame"]) for i in self.groups[index]] if self.temporal else []

    def num_points(self, index: int) -> int:
        return sum(int(self.records[i]["num_points"]) for i in self.groups[index])

    def load(self, index: int) -> list[Scene]:
        return [load_scene(self.root / f) for f in self.files(index)]
