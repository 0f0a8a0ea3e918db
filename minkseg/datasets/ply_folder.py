"""The ``ply-folder`` dataset: a user's own folder of labelled PLY point clouds (or meshes) and a class list.

params.yaml (``base.dataset: ply-folder``)::

    download:
      ply_folder:
        root: /data/my_scans        # *.ply files, searched in subfolders too; only read, never written
        class_names: [floor, wall, table]   # label value i of the PLYs is class_names[i]
        label_property: label       # the vertex property holding the label
        unlabelled: null            # a label value meaning "not annotated" (left out of loss and metrics), or null
        unit: m                     # m | cm | mm: the unit of x, y, z (converted to metres)
        up_axis: z                  # x | y | z: the vertical axis (augmentation rotates about it)
        splits: null                # {train: [a.ply, ...], val: [...], test: [...]} (paths relative to root), or
        val_every: 5                #   null: every val_every-th file in name order is val, the others train

Colours come from ``red/green/blue`` (or ``r/g/b``); a file without them is read with grey colours and a warning.
A label value outside ``0..len(class_names)-1`` (other than ``unlabelled``) stops preprocessing with the file, the
values and the fix, rather than guessing what it means. Why the split rule is by position in name order: it needs
no extra file and is the same on every machine; adding a file can move others, so a fixed split is given as lists.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from minkseg.data.cleaning import finite_points
from minkseg.errors import DataError
from minkseg.data.ply import read_ply
from minkseg.data.scenefile import STORED_IGNORE, Scene
from minkseg.datasets.base import SegmentationDataset
from minkseg.datasets.registry import register_dataset

log = logging.getLogger(__name__)

AXES = {"x": 0, "y": 1, "z": 2}
TO_METRES = {"m": 1.0, "cm": 0.01, "mm": 0.001}
GREY = 128  # colour of files without colours: the middle of the range the network's inputs are centred on
_KEY = "download.ply_folder"


class PlyFolderOptions(BaseModel):
    """``download.ply_folder`` in params.yaml (every key required)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Annotated[str, Field(min_length=1)]
    # The scene files store labels as uint8 with 255 for "not annotated", so at most 255 classes.
    class_names: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=STORED_IGNORE)]
    label_property: Annotated[str, Field(min_length=1)]
    unlabelled: int | None
    unit: Literal["m", "cm", "mm"]
    up_axis: Literal["x", "y", "z"]
    splits: dict[Literal["train", "val", "test"], list[Annotated[str, Field(min_length=1)]]] | None
    val_every: Annotated[int, Field(ge=2)]

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"class names must differ; repeated: {', '.join(repeated)}")
        return names


@register_dataset
class PlyFolder(SegmentationDataset):
    """Your own labelled PLY files: classes, units and up axis from ``download.ply_folder``; indoor-scene
    augmentations (full turns about the up axis, small tilts, scale 0.9-1.1, ScanNet's elastic distortion)."""

    name = "ply-folder"
    scale_bound = (0.9, 1.1)
    elastic_params = ((0.2, 0.4), (0.8, 1.6))
    max_extent = 2000.0
    download_params = ("base.dataset", _KEY)
    options_key = "ply_folder"
    Options: ClassVar[type[BaseModel]] = PlyFolderOptions

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.class_names = tuple(self.options.class_names)
        self.up_axis = AXES[self.options.up_axis]
        tilt = (-math.pi / 64, math.pi / 64)
        self.rotation_bound = tuple((-math.pi, math.pi) if axis == self.up_axis else tilt for axis in range(3))

    # -- params ------------------------------------------------------------------------------------------------
    def raw_root(self, download: Any) -> Path | None:
        return Path(self.options.root).expanduser()

    def params_problems(self, params: Any) -> list[str]:
        if params.evaluate.rotation_axis != self.options.up_axis:
            return [f"evaluate.rotation_axis: test-time voting would rotate about {params.evaluate.rotation_axis} "
                    f"but {_KEY}.up_axis is {self.options.up_axis}; set both to the vertical axis"]
        return []

    # -- raw side ----------------------------------------------------------------------------------------------
    def _files(self, root: Path) -> list[str]:
        if not root.is_dir():
            raise DataError(f"{_KEY}.root: {root} is not a folder; set it to the folder holding your labelled .ply "
                            "files")
        files = sorted(path.relative_to(root).as_posix() for path in root.rglob("*")
                       if path.suffix.lower() == ".ply" and path.is_file())
        if not files:
            raise DataError(f"{_KEY}.root: {root} holds no .ply file (subfolders included); put your labelled point "
                            "clouds there or fix the path")
        return files

    def split_entries(self, split: str, raw_dir: str | os.PathLike | None = None) -> list[str]:
        split = self.check_splits([split])[0]
        root = Path(raw_dir) if raw_dir is not None else self.raw_root(None)
        if self.options.splits is not None:
            return list(self.options.splits.get(split, []))
        files = self._files(root)
        every = self.options.val_every
        if split == "test":
            return []
        return [name for i, name in enumerate(files) if ((i + 1) % every == 0) == (split == "val")]

    def check_raw(self, raw_dir: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
        root = Path(raw_dir)
        files = set(self._files(root))
        counts = {}
        for split in self.check_splits(splits):
            entries = self.split_entries(split, root)
            missing = [entry for entry in entries if entry not in files]
            if missing:
                raise DataError(f"{_KEY}.splits.{split}: {len(missing)} listed file(s) are not .ply files under "
                                f"{root} (e.g. {missing[0]}); list paths relative to the root")
            if not entries:
                rule = (f"list its files in {_KEY}.splits" if self.options.splits is not None or split == "test"
                        else f"{len(files)} files with {_KEY}.val_every {self.options.val_every} leave it empty; "
                             "lower val_every or list the splits")
                raise DataError(f"{_KEY}: split {split} has no file; {rule} (or drop {split} from preprocess.splits)")
            counts[split] = len(entries)
        return counts

    def read_scene(self, raw_dir: str | os.PathLike, split: str, entry: str) -> Scene:
        path = Path(raw_dir) / entry
        label_key = self.options.label_property
        fields = read_ply(path, required=("x", "y", "z", label_key))
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf: dropped below
            xyz = (np.stack([fields["x"], fields["y"], fields["z"]], axis=1).astype(np.float64)
                   * TO_METRES[self.options.unit]).astype(np.float32)
        colors = _colours(fields, path, len(xyz))
        keep = finite_points(path, xyz, colors)  # NaN/inf points are dropped with a count
        labels = self._train_ids(path, fields[label_key][keep])
        return Scene(name=entry[:-len(".ply")], dataset=self.name, coords=xyz[keep],
                     colors=np.clip(colors[keep], 0, 255).astype(np.uint8), labels=labels)

    def _train_ids(self, path: Path, raw: np.ndarray) -> np.ndarray:
        """The file's label values as train ids (``unlabelled`` -> STORED_IGNORE); anything else out of range is
        refused with the values found, since guessing what they mean would train on wrong labels."""
        label_key = self.options.label_property
        if raw.dtype.kind == "f" and not np.all(raw == np.round(raw)):
            raise DataError(f"{path}: property {label_key!r} holds non-integer values; labels must be class ids "
                            f"0..{self.num_classes - 1} ({_KEY}.class_names)")
        raw = raw.astype(np.int64)
        unlabelled = raw == self.options.unlabelled if self.options.unlabelled is not None else np.zeros(len(raw), bool)
        bad = ~unlabelled & ((raw < 0) | (raw >= self.num_classes))
        if bad.any():
            values = np.unique(raw[bad])
            raise DataError(f"{path}: {int(bad.sum())} points have {label_key} values {values[:5].tolist()} outside "
                            f"0..{self.num_classes - 1} ({len(self.class_names)} names in {_KEY}.class_names); fix "
                            f"the labels, extend class_names, or set {_KEY}.unlabelled to the value of unannotated "
                            "points")
        return np.where(unlabelled, STORED_IGNORE, raw).astype(np.uint8)


def _colours(fields: dict[str, np.ndarray], path: Path, count: int) -> np.ndarray:
    for names in (("red", "green", "blue"), ("r", "g", "b")):
        if all(name in fields for name in names):
            return np.stack([fields[name] for name in names], axis=1)
    log.warning("%s: no red/green/blue properties; read with grey colours (the network then learns from shape "
                "alone)", path)
    return np.full((count, 3), GREY, dtype=np.uint8)
