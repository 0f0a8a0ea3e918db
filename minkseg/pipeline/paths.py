"""Where each stage reads and writes: the output names of dvc.yaml, relative to the repository root."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PipelinePaths", "EXTERNAL_SOURCE"]

EXTERNAL_SOURCE = "source.json"  # what data/raw holds when the raw data lives in the user's own folder


@dataclass(frozen=True)
class PipelinePaths:
    """Where each stage writes; the same names appear in dvc.yaml (DVC runs every stage in the repository root)."""

    root: Path = Path(".")

    @property
    def params_checked(self) -> Path:
        return self.root / "data" / "params-checked.txt"

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "data" / "preprocessed"

    @property
    def voxelized(self) -> Path:
        return self.root / "data" / "voxelized"

    @property
    def checkpoints(self) -> Path:
        return self.root / "data" / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "models" / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def submission(self) -> Path:
        return self.root / "submission"
