"""Split lists: which scenes/frames belong to train, val and test.

Why two sources: the real datasets use the official lists shipped in ``minkseg/data/meta/`` (ScanNet v2 1201/312/
100 scenes, Synthia4D CVPR'19 19,888/815/1,886 frames), while the synthetic generators write lists in the very
same format into the raw directory they create, so one code path reads both.
"""

from __future__ import annotations

import os
from pathlib import Path

from minkseg.data.errors import DataError
from minkseg.data.registry import DatasetSpec

META_DIR = Path(__file__).resolve().parent / "meta"
SPLITS = ("train", "val", "test")
SPLIT_FILES = {
    "scannet": {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt", "test": "scannetv2_test.txt"},
    "synthia4d": {"train": "train_cvpr19.txt", "val": "val_cvpr19.txt", "test": "test_cvpr19.txt"},
}


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


def split_file(spec: DatasetSpec, split: str, raw_dir: str | os.PathLike | None) -> Path:
    """Where the list for ``split`` lives: the raw directory for synthetic datasets, the package otherwise."""
    name = SPLIT_FILES[spec.family][check_split(split)]
    if spec.synthetic:
        if raw_dir is None:
            raise DataError(f"{spec.name}: split lists live in the generated raw directory; pass raw_dir")
        return Path(raw_dir) / name
    return META_DIR / name


def split_entries(spec: DatasetSpec, split: str, raw_dir: str | os.PathLike | None = None) -> list[str]:
    return read_split_list(split_file(spec, split, raw_dir))
