"""The ``synthetic-synthia4d`` dataset: generated driving sequences packed exactly like the real ``Synthia4D.tar``,
which then goes through the very same record/verify/extract path as a downloaded archive, and Synthia4D's reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from minkseg.atomic import atomic_directory
from minkseg.data.download import record_file, verify_file
from minkseg.data.extract import extract_archive
from minkseg.data.splits import SPLITS
from minkseg.datasets.base import GeneratedDataset, RawReport, generator_config, write_made_by
from minkseg.datasets.generators.streets import SyntheticSynthiaConfig, write_synthetic_synthia_tar
from minkseg.datasets.registry import register_dataset
from minkseg.datasets.synthia4d import Synthia4D


@register_dataset
class SyntheticSynthia4D(GeneratedDataset, Synthia4D):
    """Synthia4D's classes, frames, reader, windows and augmentations on generated streets."""

    name = "synthetic-synthia4d"

    def fetch(self, raw_dir: Path, download: Any, *, seed: int, splits: Sequence[str], workers: int,
              progress: bool, made_by: Mapping[str, Any] | None) -> RawReport:
        """Generate the archive, then treat it exactly like a downloaded one (record, verify, safe extraction).
        The raw folder is built aside and swapped in whole, so a re-run never mixes two generations."""
        config = generator_config(SyntheticSynthiaConfig, self.name, seed, download)
        with atomic_directory(raw_dir) as staging:
            archive = staging / "Synthia4D.tar"
            write_synthetic_synthia_tar(archive, config, workers=workers, progress=progress)
            record_file(archive, url=None)
            record = verify_file(archive)
            extract_archive(archive, staging, record["sha256"])
            self.check_raw(staging, SPLITS)
            write_made_by(staging, made_by)
        return RawReport(self.name, str(raw_dir), self.check_raw(raw_dir, SPLITS), [record])
