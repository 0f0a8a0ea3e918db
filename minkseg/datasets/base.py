"""What each dataset *is*: class names, label space, dimension, units and its default voxelisation/augmentation.

Why one table: the stages, the trainer and the evaluator all need the same facts (how many classes, which label is
ignored, the voxel size unit, the rotation axis); keeping them here means a dataset is described once and a typo
in ``params.yaml`` becomes one clear error listing the valid names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from minkseg.data.errors import DataError

IGNORE_LABEL = 255

SCANNET_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)
# nyu40 ids of the 20 ScanNet benchmark classes, in class-index order.
SCANNET_VALID_NYU40 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

SYNTHIA_RAW_CLASS_NAMES = (
    "void", "sky", "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign",
    "pedestrian", "bicycle", "lanemarking", "reserved", "reserved", "traffic light",
)
SYNTHIA_IGNORED_RAW = (0, 1, 13, 14)  # void, sky, reserved, reserved
SYNTHIA_CLASS_NAMES = tuple(n for i, n in enumerate(SYNTHIA_RAW_CLASS_NAMES) if i not in SYNTHIA_IGNORED_RAW)

# Classes the synthetic ScanNet generator produces (indices into SCANNET_CLASS_NAMES).
SYNTHETIC_SCANNET_CLASSES = tuple(SCANNET_CLASS_NAMES.index(n) for n in (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "desk", "curtain"))
# Classes the synthetic Synthia4D generator produces (indices into SYNTHIA_CLASS_NAMES).
SYNTHETIC_SYNTHIA_CLASSES = tuple(SYNTHIA_CLASS_NAMES.index(n) for n in (
    "building", "road", "sidewalk", "fence", "vegetation", "pole", "car", "traffic sign", "pedestrian",
    "lanemarking", "traffic light"))

Bound = tuple[float, float]

# Voxel sizes that can be right for coordinates in a unit: below 1 mm a voxel is finer than any scanner's noise
# (and a 10 m room needs ten thousand voxels per axis); above 10 m a voxel swallows whole cars. A size outside is
# a unit mix-up (1e-9, or centimetres typed for metres), refused by the params check with the key path.
VOXEL_SIZE_RANGE = {"m": (0.001, 10.0)}


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of one dataset; every number here is a default the params may override."""

    name: str
    family: str  # raw layout: "scannet" or "synthia4d"
    synthetic: bool
    class_names: tuple[str, ...]
    evaluated_classes: tuple[int, ...]  # class indices that can occur in the ground truth
    dimension: int  # coordinate columns of one sample (3, or 4 with time as the last column)
    voxel_size: float  # in ``unit``
    unit: str  # unit of the preprocessed coordinates (always metres)
    up_axis: int  # 0=x, 1=y, 2=z
    rotation_bound: tuple[Bound | None, Bound | None, Bound | None]  # radians per axis (x, y, z)
    scale_bound: Bound | None
    translation_ratio_bound: tuple[Bound, Bound, Bound] | None  # shifts the clip box centre only
    elastic_params: tuple[tuple[float, float], ...] | None  # (granularity, magnitude) in ``unit``
    clip_bound_train: tuple[Bound, Bound, Bound] | None
    clip_bound_test: tuple[Bound, Bound, Bound] | None
    test_has_labels: bool
    max_extent: float  # metres: a scene spanning more is taken for millimetres or centimetres (minkseg predict)
    ignore_label: int = IGNORE_LABEL

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def voxel_size_range(self) -> Bound:
        """The voxel sizes (in ``unit``) that can be right for this dataset."""
        return VOXEL_SIZE_RANGE[self.unit]

    @property
    def is_temporal(self) -> bool:
        return self.dimension == 4


_SCANNET_COMMON = dict(
    family="scannet", class_names=SCANNET_CLASS_NAMES, dimension=3, unit="m", up_axis=2,
    rotation_bound=((-math.pi / 64, math.pi / 64), (-math.pi / 64, math.pi / 64), (-math.pi, math.pi)),
    scale_bound=(0.9, 1.1), translation_ratio_bound=None, elastic_params=((0.2, 0.4), (0.8, 1.6)),
    clip_bound_train=None, clip_bound_test=None, test_has_labels=False, max_extent=200.0,
)
# Synthia4D PLYs are in cm; preprocess converts them to metres so every dataset shares one unit. The paper's
# numbers (15 cm voxels, clip +-1800 cm train / +-2500 cm test, elastic (80, 300) cm) are converted accordingly.
_SYNTHIA_COMMON = dict(
    family="synthia4d", class_names=SYNTHIA_CLASS_NAMES, dimension=4, unit="m", up_axis=1,
    rotation_bound=(None, (-math.pi, math.pi), None), scale_bound=(0.9, 1.1),
    translation_ratio_bound=((-0.1, 0.1), (0.0, 0.0), (-0.1, 0.1)), elastic_params=((0.8, 3.0),),
    clip_bound_train=((-18.0, 18.0),) * 3, clip_bound_test=((-25.0, 25.0),) * 3, test_has_labels=True,
    max_extent=2000.0,
)

DATASETS: dict[str, DatasetSpec] = {
    "synthetic-scannet": DatasetSpec(name="synthetic-scannet", synthetic=True, voxel_size=0.05,
                                     evaluated_classes=SYNTHETIC_SCANNET_CLASSES, **_SCANNET_COMMON),
    "scannet": DatasetSpec(name="scannet", synthetic=False, voxel_size=0.02,
                           evaluated_classes=tuple(range(len(SCANNET_CLASS_NAMES))), **_SCANNET_COMMON),
    "synthia4d": DatasetSpec(name="synthia4d", synthetic=False, voxel_size=0.15,
                             evaluated_classes=tuple(range(len(SYNTHIA_CLASS_NAMES))), **_SYNTHIA_COMMON),
    "synthetic-synthia4d": DatasetSpec(name="synthetic-synthia4d", synthetic=True, voxel_size=0.15,
                                       evaluated_classes=SYNTHETIC_SYNTHIA_CLASSES, **_SYNTHIA_COMMON),
}
DEFAULT_DATASET = "synthetic-scannet"


def dataset_names() -> list[str]:
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name; an unknown name is a :class:`DataError` listing the valid ones."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown dataset {name!r}; set dataset to one of: {', '.join(DATASETS)}") from None
