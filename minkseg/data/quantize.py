"""Points -> voxels: optional clip box, random rotation and scale, quantisation with an inverse map.

Why the inverse map matters: the network predicts one label per voxel, but ScanNet and Synthia4D are scored per
*point*; ``inverse[i]`` is the voxel of point ``i`` so predictions go back to every original point (``-1`` for a
point removed by the clip box). Voxel labels follow MinkowskiEngine: a voxel whose points disagree is ignored
(``label_mode="ignore"``, the original), or, as an option, it takes the most frequent valid label
(``label_mode="majority"``, ties -> smallest label). Both are vectorised (one sort, no Python loop over points).

Order: clip around the scene's median point or the camera (shifted by the translation augmentation), optional
elastic warp, rotate (random order of the axes), scale by U(scale_bound) / voxel_size, floor, shift so the minimum
is 0, quantise. The original warped before clipping; with no clip box (ScanNet) that is the same, and warping after the clip keeps the
noise grid bounded on large outdoor frames. ``transform`` describes the un-warped mapping.

Why the median and not the bounding-box centre (the original's choice): one corrupt vertex a kilometre away moves
the bounding-box centre half a kilometre, so a clip box around it holds no point of the scene and the advice "set
voxelize.clip_bound" could not work; the median stays inside the scene. Datasets clipped by default (Synthia4D)
clip around the camera, and ScanNet is not clipped by default, so the default runs are unaffected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from minkseg.errors import DataError

LABEL_MODES = ("ignore", "majority")
AXES = {"x": 0, "y": 1, "z": 2}
DATASET_BOUND = "dataset"  # clip_bound: the dataset's own box (its spec's train box when augmenting, else its test box)
Bound = tuple[float, float]


@dataclass(frozen=True)
class VoxelParams:
    """How a scene becomes voxels, as one value: the voxelize stage, training, evaluation and ``minkseg predict``
    all take this object rather than six loose keyword arguments, so none of them can drift from the others.

    The pipeline fills every field from params.yaml (``voxelize.*`` and ``base.ignore_label``), the model file
    stores them for prediction; the defaults describe a plain 3D sample clipped by the dataset's own box.
    ``clip_bound`` is ``None`` (no box), :data:`DATASET_BOUND`, or three ``(min, max)`` pairs in metres;
    ``temporal_numseq`` frames ``temporal_dilation`` apart make one 4D sample (1: a 3D sample).
    """

    voxel_size: float
    clip_bound: tuple[Bound, Bound, Bound] | str | None = DATASET_BOUND
    label_mode: str = "ignore"
    ignore_label: int = 255
    temporal_numseq: int = 1
    temporal_dilation: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.voxel_size, bool) or not isinstance(self.voxel_size, (int, float)) or \
                not self.voxel_size > 0:
            raise DataError(f"voxel_size must be > 0 metres (got {self.voxel_size!r}); fix voxelize.voxel_size in "
                            "params.yaml")
        if self.label_mode not in LABEL_MODES:
            raise DataError(f"unknown voxel label mode {self.label_mode!r}; use one of {', '.join(LABEL_MODES)}")
        if self.temporal_numseq < 1 or self.temporal_dilation < 1:
            raise DataError(f"temporal_numseq and temporal_dilation must be >= 1 (got {self.temporal_numseq}, "
                            f"{self.temporal_dilation}); fix voxelize.* in params.yaml")
        clip = self.clip_bound
        if clip is not None and clip != DATASET_BOUND:
            if isinstance(clip, str) or len(clip) != 3 or any(len(pair) != 2 for pair in clip):
                raise DataError(f"clip_bound must be None, {DATASET_BOUND!r} or three (min, max) pairs in metres "
                                f"(got {clip!r}); fix voxelize.clip_bound in params.yaml")
            object.__setattr__(self, "clip_bound", tuple((float(lo), float(hi)) for lo, hi in clip))
        object.__setattr__(self, "voxel_size", float(self.voxel_size))
        object.__setattr__(self, "ignore_label", int(self.ignore_label))
        object.__setattr__(self, "temporal_numseq", int(self.temporal_numseq))
        object.__setattr__(self, "temporal_dilation", int(self.temporal_dilation))

    def as_dict(self) -> dict:
        """Plain values (lists, not tuples) for JSON and the model file; ``VoxelParams(**as_dict())`` is equal."""
        clip = self.clip_bound
        return {"voxel_size": self.voxel_size,
                "clip_bound": [list(pair) for pair in clip] if isinstance(clip, tuple) else clip,
                "label_mode": self.label_mode, "ignore_label": self.ignore_label,
                "temporal_numseq": self.temporal_numseq, "temporal_dilation": self.temporal_dilation}


def axis_rotation(axis: str | int, angle: float) -> np.ndarray:
    """3x3 right-handed rotation by ``angle`` radians about axis ``x``/``y``/``z`` (or 0/1/2).

    The one rotation of the project: training's random rotations (radians, as the original's ``M(axis, theta)``)
    and test-time voting (degrees: pass ``np.deg2rad(degrees)``) both use it, so a vote at 90 degrees about z turns
    a scene exactly as an augmentation of the same angle would.
    """
    axis = AXES[axis] if isinstance(axis, str) else int(axis)
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def majority_labels(labels: np.ndarray, inverse: np.ndarray, num_voxels: int, ignore_label: int) -> np.ndarray:
    """Most frequent non-ignored label per voxel (ties -> smallest label); all-ignored voxels -> ignore."""
    labels = np.asarray(labels).astype(np.int64)
    out = np.full(num_voxels, ignore_label, dtype=np.int64)
    valid = labels != ignore_label
    if not valid.any():
        return out
    span = int(labels[valid].max()) + 1
    keys, counts = np.unique(inverse[valid].astype(np.int64) * span + labels[valid], return_counts=True)
    voxel, label = keys // span, keys % span
    order = np.lexsort((label, -counts, voxel))  # per voxel: highest count first, then smallest label
    voxel, label = voxel[order], label[order]
    first = np.ones(len(voxel), dtype=bool)
    first[1:] = voxel[1:] != voxel[:-1]
    out[voxel[first]] = label[first]
    return out


def far_outliers(xyz: np.ndarray, tail: float = 0.01) -> np.ndarray:
    """Points far outside the bulk of a scene: beyond, on some axis, the range holding all but the outer ``tail``
    of the points on each side, widened by that range's own length (a room's points all lie well inside)."""
    low = np.quantile(xyz, tail, axis=0, method="higher")
    high = np.quantile(xyz, 1 - tail, axis=0, method="lower")
    reach = high - low
    return np.any((xyz < low - reach) | (xyz > high + reach), axis=1)


@dataclass
class Voxelized:
    """One voxelised sample. ``coords`` has D columns (3, or 4 with time last); no batch column yet."""

    coords: np.ndarray  # int32 [M, D]
    feats: np.ndarray  # [M, F] features of one representative point per voxel
    labels: np.ndarray  # int64 [M], ignore_label where unlabelled/conflicting
    inverse: np.ndarray  # int64 [N] voxel of every input point, -1 if clipped away
    index: np.ndarray  # int64 [M] input point chosen as each voxel's representative
    transform: np.ndarray  # float64 [4, 4]: voxel = floor(transform @ [xyz, 1]) for every kept point


class Voxelizer:
    """Clip, augment (rotation/scale/translation when given an RNG) and quantise point clouds."""

    def __init__(self, voxel_size: float, *, clip_bound: Sequence[Bound] | None = None,
                 rotation_bound: Sequence[Bound | None] | None = None, scale_bound: Bound | None = None,
                 translation_ratio_bound: Sequence[Bound] | None = None, ignore_label: int = 255,
                 label_mode: str = "ignore") -> None:
        if not voxel_size > 0:
            raise DataError(f"voxel_size must be > 0 (got {voxel_size}); fix voxelize.voxel_size in params.yaml")
        if label_mode not in LABEL_MODES:
            raise DataError(f"unknown voxel label mode {label_mode!r}; use one of {', '.join(LABEL_MODES)}")
        self.voxel_size = float(voxel_size)
        self.clip_bound = None if clip_bound is None else np.asarray(clip_bound, dtype=np.float64)
        self.rotation_bound = rotation_bound
        self.scale_bound = scale_bound
        self.translation_ratio_bound = translation_ratio_bound
        self.ignore_label = ignore_label
        self.label_mode = label_mode

    # -- transforms ----------------------------------------------------------------------------------------------
    def sample_linear(self, rng: np.random.Generator | None) -> np.ndarray:
        """3x3 map from points to continuous voxel coordinates: (random rotation, random scale) / voxel_size.

        Without an RNG (evaluation) it is the plain 1/voxel_size scaling.
        """
        rotation, scale = np.eye(3), 1.0
        if rng is not None:
            if self.rotation_bound is not None:
                mats = [axis_rotation(a, rng.uniform(*b) if b is not None else 0.0)
                        for a, b in enumerate(self.rotation_bound)]
                for a in rng.permutation(3):  # random order of the axes, as in the original
                    rotation = mats[a] @ rotation
            if self.scale_bound is not None:
                scale = rng.uniform(*self.scale_bound)
        return rotation * (scale / self.voxel_size)

    def sample_translation_ratio(self, rng: np.random.Generator | None) -> np.ndarray:
        if rng is None or self.translation_ratio_bound is None:
            return np.zeros(3)
        return np.array([rng.uniform(*b) for b in self.translation_ratio_bound])

    def clip_mask(self, xyz: np.ndarray, center: np.ndarray | None, ratio: np.ndarray) -> np.ndarray:
        """Points inside the clip box around ``center`` (default: the median point), shifted by ``ratio``."""
        if self.clip_bound is None or len(xyz) == 0:
            return np.ones(len(xyz), dtype=bool)
        lo, hi = xyz.min(0), xyz.max(0)
        c = np.median(xyz, axis=0) if center is None else np.asarray(center, dtype=np.float64).copy()
        c = c + ratio * (hi - lo)
        return np.all((xyz >= self.clip_bound[:, 0] + c) & (xyz < self.clip_bound[:, 1] + c), axis=1)

    def _overflow_error(self, xyz: np.ndarray, span: float) -> DataError:
        """Why the voxel grid does not fit int32, blaming what the user can change: a few far-away points (with
        the clip box that leaves them out) or a voxel size too small for the scene."""
        far = far_outliers(xyz)
        kept = xyz[~far]
        extent = float((kept.max(0) - kept.min(0)).max())
        int32_max = np.iinfo(np.int32).max
        if not far.any() or extent / self.voxel_size > int32_max:
            return DataError(f"voxelize.voxel_size {self.voxel_size:g} is too small for this scene: its {extent:.3g} "
                             f"m extent needs {extent / self.voxel_size:.3g} voxels per axis, more than int32 voxel "
                             "coordinates hold; raise voxelize.voxel_size (metres, e.g. 0.02 to 0.2)")
        median = np.median(xyz, axis=0)
        half = np.maximum(np.abs(kept.min(0) - median), np.abs(kept.max(0) - median))
        box = ", ".join(f"[-{h}, {h}]" for h in (np.ceil(half).astype(int) + 1))
        distance = float(np.abs(xyz[far] - median).max())
        return DataError(f"{int(far.sum())} of {len(xyz)} points lie far outside the rest of the scene (up to "
                         f"{distance:.3g} m from its median point), so the points span {span:.3g} voxels, more than "
                         f"int32 voxel coordinates hold; set voxelize.clip_bound: [{box}] (metres around each "
                         "scene's median point) to leave them out, or remove them from the scan")

    # -- quantisation --------------------------------------------------------------------------------------------
    def _quantize(self, grid: np.ndarray, feats: np.ndarray, labels: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if len(grid) == 0:
            raise DataError("no points left to voxelise (empty scene or everything outside the clip box); "
                            "check voxelize.clip_bound")
        # Imported here: VoxelParams (this module) is read by stages that never quantise (download), and the sparse
        # package loads torch.
        from minkseg.sparse.utils import quantize_points

        labels = np.asarray(labels).astype(np.int64)
        coords, vfeats, vlabels, index, inverse = quantize_points(grid, feats, labels, ignore_label=self.ignore_label)
        if self.label_mode == "majority":
            vlabels = majority_labels(labels, inverse, len(coords), self.ignore_label)
        return coords, vfeats, vlabels.astype(np.int64), index.astype(np.int64), inverse.astype(np.int64)

    def voxelize(self, xyz: np.ndarray, feats: np.ndarray, labels: np.ndarray, *,
                 rng: np.random.Generator | None = None, center: np.ndarray | None = None,
                 rotation: np.ndarray | None = None) -> Voxelized:
        """Voxelise one point cloud (3 coordinate columns)."""
        return self.voxelize_frames([(xyz, feats, labels, center)], rng=rng, temporal=False, rotation=rotation)

    def voxelize_frames(self, frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]], *,
                        rng: np.random.Generator | None = None, temporal: bool = True,
                        rotation: np.ndarray | None = None,
                        warp: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None) -> Voxelized:
        """Voxelise frames with ONE rotation/scale/translation; with ``temporal`` the frame position is a 4th
        coordinate column. Each frame is clipped around its own centre (the camera for Synthia4D).

        ``rng`` draws the augmentation (None: none); ``rotation`` is an extra fixed 3x3 rotation applied first
        (test-time voting rotates every scene by given angles); ``warp(xyz, rng)`` (the elastic distortion) is
        applied to the clipped points of all frames at once, i.e. one displacement field per sample."""
        linear = self.sample_linear(rng)
        if rotation is not None:
            linear = linear @ np.asarray(rotation, dtype=np.float64)
        ratio = self.sample_translation_ratio(rng)
        points, feats, labels, kept_ids, times = [], [], [], [], []
        offset = 0
        for t, (xyz, f, lab, center) in enumerate(frames):
            xyz = np.asarray(xyz, dtype=np.float64)
            ids = np.nonzero(self.clip_mask(xyz, center, ratio))[0]
            points.append(xyz[ids])
            feats.append(np.asarray(f)[ids])
            labels.append(np.asarray(lab)[ids])
            kept_ids.append(ids + offset)
            times.append(np.full(len(ids), t))
            offset += len(xyz)
        xyz = np.concatenate(points)
        if warp is not None and rng is not None and len(xyz):
            xyz = warp(xyz, rng)
        grid = np.floor(xyz @ linear.T)
        if temporal:
            grid = np.column_stack([grid, np.concatenate(times)])
        shift = np.zeros(grid.shape[1])
        if len(grid):
            shift[:3] = grid[:, :3].min(0)
        grid = grid - shift
        if len(grid) and grid.max() > np.iinfo(np.int32).max:  # would wrap around silently in the int32 cast
            raise self._overflow_error(xyz, float(grid.max()))
        grid = grid.astype(np.int32)
        coords, vfeats, vlabels, index, inv_kept = self._quantize(grid, np.concatenate(feats), np.concatenate(labels))
        kept = np.concatenate(kept_ids)
        inverse = np.full(offset, -1, dtype=np.int64)
        inverse[kept] = inv_kept
        transform = np.eye(4)
        transform[:3, :3] = linear
        transform[:3, 3] = -shift[:3]
        return Voxelized(coords=coords.astype(np.int32), feats=vfeats, labels=vlabels, inverse=inverse,
                         index=kept[index], transform=transform)
