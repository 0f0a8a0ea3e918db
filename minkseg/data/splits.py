"""Split lists: which scenes/frames belong to train, val and test, one entry per line.

Why one reader for every dataset: the real datasets ship official lists (``minkseg/datasets/meta/``: ScanNet v2
1201/312/100 scenes, Synthia4D CVPR'19 19,888/815/1,886 frames), and the synthetic generators write lists in the
very same format into the raw directory they create; which file a split reads is the dataset's business
(:meth:`minkseg.datasets.base.SegmentationDataset.split_entries`).
"""

from __future__ import annotations

import os
from pathlib import Path

from minkseg.errors import DataError

SPLITS = ("train", "val", "test")


def read_split_list(path: str | os.PathLike) -> list[str]:
    """First whitespace-separated column of every non-empty, non-comment line (Synthia lists have two)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: split list not found; re-run the download stage (synthetic data) or "
                        f"reinstall minkseg (shipped lists)") from None
    entries = [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise DataError(f"{path}: split list is empty; regenerate it")
    return entries


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    return split
