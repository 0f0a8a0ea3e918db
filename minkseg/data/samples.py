"""Which preprocessed scenes form one sample: a single scene (3D) or a temporal window of frames (4D).

Why windows are built from the manifest: Synthia4D samples are frames ``idx, idx+d, ..., idx+(T-1)d`` of one
sequence (positions in the sorted frame list of that sequence within the split, as in the original), and the
manifest already carries every frame's sequence and number, so no scene file is opened to build the index.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

from minkseg.data.errors import DataError
from minkseg.data.preprocess import load_manifest, manifest_split
from minkseg.data.registry import DatasetSpec, get_spec
from minkseg.data.scenefile import Scene, load_scene

log = logging.getLogger(__name__)


def temporal_windows(records: list[dict], numseq: int, dilation: int) -> list[list[int]]:
    """Record indices of every window of ``numseq`` frames ``dilation`` apart within each sequence."""
    by_sequence: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_sequence[r["sequence"]].append(i)
    span = (numseq - 1) * dilation
    windows, skipped = [], []
    for sequence in sorted(by_sequence):
        ids = sorted(by_sequence[sequence], key=lambda i: records[i]["frame"])
        if len(ids) <= span:
            skipped.append(f"{sequence} ({len(ids)} frames)")
            continue
        windows += [[ids[start + k * dilation] for k in range(numseq)] for start in range(len(ids) - span)]
    if skipped:
        log.warning("sequences shorter than the temporal window (%d frames) are skipped: %s", span + 1,
                    ", ".join(skipped))
    return windows


def is_temporal(spec: DatasetSpec, temporal_numseq: int) -> bool:
    """Synthia4D with more than one frame per sample is 4D; a single frame (the paper's 3D baseline) is 3D."""
    return spec.family == "synthia4d" and temporal_numseq > 1


class SceneSamples:
    """The preprocessed scenes of one split grouped into samples; ``load(i)`` returns the scenes of sample i."""

    def __init__(self, preprocessed_dir: str | os.PathLike, split: str, temporal_numseq: int = 3,
                 temporal_dilation: int = 30) -> None:
        self.root = Path(preprocessed_dir)
        manifest = load_manifest(self.root)
        self.spec: DatasetSpec = get_spec(manifest["dataset"])
        self.records = manifest_split(manifest, split, self.root / "manifest.json")
        if not self.records:
            raise DataError(f"{self.root}: split {split!r} has no scenes; check the split lists and re-run "
                            f"preprocess")
        if temporal_numseq < 1 or temporal_dilation < 1:
            raise DataError(f"temporal_numseq and temporal_dilation must be >= 1 (got {temporal_numseq}, "
                            f"{temporal_dilation}); fix voxelize.* in params.yaml")
        self.temporal = is_temporal(self.spec, temporal_numseq)
        if self.temporal:
            self.groups = temporal_windows(self.records, temporal_numseq, temporal_dilation)
            if not self.groups:
                raise DataError(f"{self.root}: no sequence of split {split!r} has the "
                                f"{(temporal_numseq - 1) * temporal_dilation + 1} frames a window of "
                                f"temporal_numseq={temporal_numseq}, temporal_dilation={temporal_dilation} needs; "
                                f"lower them in params.yaml")
        else:
            self.groups = [[i] for i in range(len(self.records))]

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
