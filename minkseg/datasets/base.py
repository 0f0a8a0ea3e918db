"""What every dataset answers: its facts (classes, label space, units, up axis, augmentation bounds) and the raw
side (fetch, check, split lists, scene reader, how scenes group into samples).

Why one class per dataset, configured by class attributes (as the paper's SpatioTemporalSegmentation code does):
the stages, the trainer and the evaluator all ask the same questions (how many classes, which axis is up, is this
a 4D dataset, where are its split lists); a subclass answers them in one file, and the stages ask the object
instead of branching on a name. A dataset with settings of its own (``ply-folder``: the folder, the class list)
declares them as a pydantic model (``Options``) read from ``download.<options_key>`` in params.yaml, so
``minkseg/config.py`` validates it without knowing the dataset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from minkseg.atomic import atomic_write_json
from minkseg.errors import DataError
from minkseg.data.scenefile import STORED_IGNORE, Scene
from minkseg.data.splits import check_split, read_split_list

log = logging.getLogger(__name__)

__all__ = ["Bound", "RawReport", "SegmentationDataset", "GeneratedDataset", "MADE_BY_FILE", "VOXEL_SIZE_RANGE",
           "write_made_by", "generator_config"]

Bound = tuple[float, float]

# Voxel sizes that can be right for coordinates in a unit: below 1 mm a voxel is finer than any scanner's noise
# (and a 10 m room needs ten thousand voxels per axis); above 10 m a voxel swallows whole cars. A size outside is
# a unit mix-up (1e-9, or centimetres typed for metres), refused by the params check with the key path.
VOXEL_SIZE_RANGE = {"m": (0.001, 10.0)}
# What made generated raw data (minkseg.engine.lineage): a file in the raw folder, swapped in with the data.
MADE_BY_FILE = "made_by.json"
META_DIR = Path(__file__).resolve().parent / "meta"  # the official split lists (and ScanNet's label table), shipped


@dataclass
class RawReport:
    """What the download stage produced (written as JSON by the stage)."""

    dataset: str
    raw_dir: str
    scenes: dict[str, int]  # scenes/frames per split
    archives: list[dict[str, Any]] = field(default_factory=list)  # size/sha256 records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SegmentationDataset:
    """One dataset. Subclasses set the class attributes below and implement the raw-side methods.

    Coordinates of every preprocessed scene are metres (``unit``); labels are train ids ``0..C-1`` with
    :data:`minkseg.data.scenefile.STORED_IGNORE` for unannotated points (the loaders map it to
    ``base.ignore_label``).
    """

    name: ClassVar[str]  # the registry name, the value of base.dataset
    class_names: tuple[str, ...]
    dimension: ClassVar[int] = 3  # coordinate columns of one sample (3, or 4 with time as the last column)
    unit: ClassVar[str] = "m"  # unit of the preprocessed coordinates (always metres)
    up_axis: int = 2  # 0=x, 1=y, 2=z
    rotation_bound: tuple[Bound | None, Bound | None, Bound | None]  # radians per axis (x, y, z)
    scale_bound: Bound | None = None
    translation_ratio_bound: tuple[Bound, Bound, Bound] | None = None  # shifts the clip box centre only
    elastic_params: tuple[tuple[float, float], ...] | None = None  # (granularity, magnitude) in ``unit``
    clip_bound_train: tuple[Bound, Bound, Bound] | None = None
    clip_bound_test: tuple[Bound, Bound, Bound] | None = None
    max_extent: ClassVar[float] = 200.0  # metres: a scene spanning more is taken for mm or cm (minkseg predict)
    ignore_label: ClassVar[int] = STORED_IGNORE  # label of unannotated points in the preprocessed files
    scannet_benchmark: ClassVar[bool] = False  # the submit stage writes the ScanNet benchmark zip
    split_files: ClassVar[dict[str, str]] = {}  # split -> its list's file name (datasets with split lists)
    split_lists_in_raw: ClassVar[bool] = False  # lists in the raw folder (generated data), else in META_DIR
    # Params keys (flat, as dvc.yaml names them) that make the raw data: what the download record holds.
    download_params: ClassVar[tuple[str, ...]] = ("base.dataset",)
    # A dataset with settings of its own: their params key under ``download`` and their pydantic model.
    options_key: ClassVar[str | None] = None
    Options: ClassVar[type[BaseModel] | None] = None

    def __init__(self, options: Any = None) -> None:
        if self.Options is None:
            self.options = None
            return
        if options is None:
            raise DataError(f"download.{self.options_key}: required when base.dataset is {self.name}; "
                            f"see the {self.name} section of the README")
        try:
            self.options = self.Options.model_validate(options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise DataError(f"download.{self.options_key}.{where}: {first['msg']}") from None

    def __eq__(self, other: object) -> bool:
        # Equal when configured alike: worker processes receive copies, and caches keyed by the dataset must hit.
        return type(other) is type(self) and other.options_record() == self.options_record()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), repr(self.options_record())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options_record() or ''})"

    # -- facts -------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def voxel_size_range(self) -> Bound:
        """The voxel sizes (in ``unit``) that can be right for this dataset."""
        return VOXEL_SIZE_RANGE[self.unit]

    def options_record(self) -> dict[str, Any] | None:
        """The dataset's own settings as JSON (stored in the preprocessed manifest), or None."""
        return None if self.options is None else self.options.model_dump(mode="json")

    # -- params ------------------------------------------------------------------------------------------------
    def raw_root(self, download: Any) -> Path | None:
        """The user's own raw folder named by the ``download`` params, or None when ``data/raw`` holds the raw
        data itself (generated or fetched by the download stage)."""
        return None

    def params_problems(self, params: Any) -> list[str]:
        """Rules across params keys this dataset needs (``key: problem; fix`` lines, without the file name)."""
        return []

    # -- raw side ----------------------------------------------------------------------------------------------
    def fetch(self, raw_dir: Path, download: Any, *, seed: int, splits: Sequence[str], workers: int,
              progress: bool, made_by: Mapping[str, Any] | None) -> RawReport:
        """Make the raw data available in ``raw_dir`` (generate, download, or only check the user's copy).

        ``download`` is the params' download group; ``made_by`` (the record of what made generated data) goes
        into generated raw folders as :data:`MADE_BY_FILE`."""
        return RawReport(self.name, str(raw_dir), self.check_raw(raw_dir, splits))

    def check_raw(self, raw_dir: str | os.PathLike, splits: Iterable[str]) -> dict[str, int]:
        """Scenes/frames per split, or one DataError saying what is missing and how to get it."""
        raise NotImplementedError

    def split_file(self, split: str, raw_dir: str | os.PathLike | None) -> Path:
        """Where the list of ``split`` lives: the raw folder for generated data, the shipped ``meta/`` otherwise."""
        name = self.split_files[check_split(split)]
        if not self.split_lists_in_raw:
            return META_DIR / name
        if raw_dir is None:
            raise DataError(f"{self.name}: split lists live in the generated raw directory; pass raw_dir")
        return Path(raw_dir) / name

    def split_entries(self, split: str, raw_dir: str | os.PathLike | None = None) -> list[str]:
        """The raw entries (scene names, frame paths, files) of ``split``, in a fixed order."""
        return read_split_list(self.split_file(split, raw_dir))

    def read_scene(self, raw_dir: str | os.PathLike, split: str, entry: str) -> Scene:
        """One raw scene as a :class:`Scene` (metres, train ids, :data:`STORED_IGNORE` for unannotated points)."""
        raise NotImplementedError

    def scene_record(self, scene: Scene) -> dict[str, Any]:
        """Extra manifest fields of one preprocessed scene (4D datasets: sequence and frame)."""
        return {}

    # -- samples -----------------------------------------------------------------------------------------------
    def is_temporal(self, temporal_numseq: int) -> bool:
        """Whether samples stack frames (4D) under ``voxelize.temporal_numseq``."""
        return False

    def sample_groups(self, records: list[dict], temporal_numseq: int, temporal_dilation: int) -> list[list[int]]:
        """Manifest record indices of every sample: one scene each, unless the dataset stacks frames."""
        return [[i] for i in range(len(records))]

    def check_splits(self, splits: Iterable[str]) -> list[str]:
        return [check_split(split) for split in splits]


class GeneratedDataset:
    """Mixin for a dataset whose raw data the download stage generates into ``data/raw`` (listed first among the
    bases, before the real dataset it imitates): the generator is a pure function of ``(base.seed,
    download.synthetic)``, so those keys are the download record, the split lists are generated beside the scenes,
    and the real dataset's own download settings (its root folder, its rules) do not apply."""

    download_params = ("base.dataset", "base.seed", "download.synthetic")
    split_lists_in_raw = True

    def raw_root(self, download: Any) -> Path | None:
        return None

    def params_problems(self, params: Any) -> list[str]:
        return []


def write_made_by(staging: Path, made_by: Mapping[str, Any] | None) -> None:
    """The record of what made generated data goes into the staging folder: it is swapped in with the data."""
    if made_by is not None:
        atomic_write_json(staging / MADE_BY_FILE, dict(made_by))


def generator_config(cls: type, dataset: str, seed: int, download: Any) -> Any:
    """A synthetic generator's config from ``download.synthetic`` (its sizes) and ``base.seed``; ``download`` is
    the params' download group or a plain mapping with a ``synthetic`` key."""
    synthetic = download.get("synthetic") if isinstance(download, Mapping) else download.synthetic
    options = {} if synthetic is None else (dict(synthetic) if isinstance(synthetic, Mapping)
                                            else synthetic.model_dump())
    valid = {f.name for f in fields(cls)} - {"seed"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise DataError(f"unknown size option(s) {unknown} for {dataset}; valid: {', '.join(sorted(valid))}")
    try:
        return cls(seed=seed, **options)
    except ValueError as exc:
        raise DataError(f"bad synthetic dataset size for {dataset}: {exc}; fix download.synthetic") from None
