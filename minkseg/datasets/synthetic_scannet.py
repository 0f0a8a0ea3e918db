"""The ``synthetic-scannet`` dataset (the default run): procedural rooms generated straight into ScanNet's raw
layout, so everything after the download stage is ScanNet's own code path.

Why a generated stand-in: ScanNet needs its terms of use and 1.3 TB; the default pipeline must train in minutes on a
CPU without either. The generator (:mod:`minkseg.datasets.generators.rooms`) is a pure function of
``(base.seed, download.synthetic)``, so those keys are what the download record holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from minkseg.atomic import atomic_directory
from minkseg.datasets.base import GeneratedDataset, RawReport, generator_config, write_made_by
from minkseg.datasets.generators.rooms import SyntheticScanNetConfig, generate_synthetic_scannet
from minkseg.datasets.registry import register_dataset
from minkseg.datasets.scannet import CLASS_NAMES, ScanNet
from minkseg.data.splits import SPLITS

# Classes the generator produces (indices into the 20 ScanNet classes); the others never occur in its labels.
SYNTHETIC_SCANNET_CLASSES = tuple(CLASS_NAMES.index(n) for n in (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "desk", "curtain"))


@register_dataset
class SyntheticScanNet(GeneratedDataset, ScanNet):
    """ScanNet's classes, layout, reader and augmentations on generated rooms; the split lists are generated too."""

    name = "synthetic-scannet"

    def fetch(self, raw_dir: Path, download: Any, *, seed: int, splits: Sequence[str], workers: int,
              progress: bool, made_by: Mapping[str, Any] | None) -> RawReport:
        """Generate every split (the raw folder is built aside and swapped in whole, so a re-run never mixes two
        generations); ``splits`` does not matter: the lists of all three are written."""
        config = generator_config(SyntheticScanNetConfig, self.name, seed, download)
        with atomic_directory(raw_dir) as staging:
            generate_synthetic_scannet(staging, config, workers=workers, progress=progress)
            write_made_by(staging, made_by)
        return RawReport(self.name, str(raw_dir), self.check_raw(raw_dir, SPLITS))

