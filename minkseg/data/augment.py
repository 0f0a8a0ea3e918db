"""Training augmentations of the original code, in its order and with its probabilities.

Why each is a tiny callable taking an explicit ``numpy.random.Generator``: a sample's augmentation must be a pure
function of (seed, epoch, index) so a resumed or re-run training is bit-identical, whatever the number of loader
workers. Signature of every transform: ``(coords, feats, labels, rng) -> (coords, feats, labels)``; ``feats`` holds
RGB in 0..255 (float) in its first three columns.

Pipeline (see :func:`training_transforms`): before quantisation ``ElasticDistortion`` on the float coordinates
(inside the clip box, one field for all frames of a 4D sample), then the voxeliser's rotation and scale; after
voxelisation an optional ``RandomSphereCrop`` (``train.crop_voxels``), ``RandomDropout``, ``RandomHorizontalFlip``,
``ChromaticAutoContrast``, ``ChromaticTranslation``, ``ChromaticJitter``; finally
:func:`minkseg.data.datasets.normalize_color` (training and evaluation alike).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import uniform_filter1d

from minkseg.errors import DataError

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


class ElasticDistortion:
    """Smoothly warp space with noise on a grid of ``granularity`` scaled by ``magnitude`` (p=0.95).

    ``params`` are (granularity, magnitude) pairs in the coordinate unit, applied in turn; only the first three
    coordinate columns are warped.
    """

    MAX_CELLS = 8_000_000  # noise grid cells (x3 float32): ~100 MB

    def __init__(self, params: Sequence[tuple[float, float]] = ((0.2, 0.4), (0.8, 1.6)), p: float = 0.95) -> None:
        self.params, self.p = tuple(params), p

    @classmethod
    def warp(cls, xyz: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator) -> np.ndarray:
        lo = xyz.min(0)
        dims = ((xyz - lo).max(0) // granularity).astype(int) + 3
        if int(np.prod(dims)) > cls.MAX_CELLS:
            raise DataError(f"elastic distortion grid of {dims.tolist()} cells for a scene spanning "
                            f"{np.round(xyz.max(0) - lo, 1).tolist()} m is too large; set a smaller "
                            f"voxelize.clip_bound")
        noise = rng.standard_normal((*dims, 3)).astype(np.float32)
        for _ in range(2):  # two passes of a 3-wide box blur along each axis: a smooth displacement field
            for axis in range(3):
                noise = uniform_filter1d(noise, 3, axis=axis, mode="constant", cval=0.0)
        axes = [np.linspace(lo[d] - granularity, lo[d] + granularity * (dims[d] - 2), dims[d]) for d in range(3)]
        field = RegularGridInterpolator(axes, noise, bounds_error=False, fill_value=0.0)
        return xyz + field(xyz) * magnitude

    def __call__(self, coords: np.ndarray, feats: np.ndarray, labels: np.ndarray, rng: np.random.Generator
                 ) -> Sample:
        if self.params and len(coords) and rng.random() < self.p:
            coords = np.array(coords, dtype=np.float64)
            for granularity, magnitude in self.params:
                coords[:, :3] = self.warp(coords[:, :3], granularity, magnitude, rng)
        return coords, feats, labels


class RandomDropout:
    """With probability ``p`` keep a random ``1 - ratio`` of the points (original: ratio 0.2, p 0.2)."""

    def __init__(self, ratio: float = 0.2, p: float = 0.2) -> None:
        self.ratio, self.p = ratio, p

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        if len(coords) > 1 and rng.random() < self.p:
            keep = np.sort(rng.choice(len(coords), int(len(coords) * (1 - self.ratio)), replace=False))
            return coords[keep], feats[keep], labels[keep]
        return coords, feats, labels


class RandomHorizontalFlip:
    """With probability ``p``, mirror each non-up axis with probability 1/2 (``x -> max - x``).

    As in the original, 4D samples include the time axis among the flipped ones (the sequence is reversed).
    """

    def __init__(self, upright_axis: int, dimension: int = 3, p: float = 0.95) -> None:
        self.axes = [a for a in range(dimension) if a != upright_axis]
        self.p = p

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            coords = coords.copy()
            for axis in self.axes:
                if rng.random() < 0.5:
                    coords[:, axis] = coords[:, axis].max() - coords[:, axis]
        return coords, feats, labels


class ChromaticAutoContrast:
    """With probability ``p`` (0.2) blend colours with their per-channel min-max stretched version."""

    def __init__(self, p: float = 0.2, randomize_blend_factor: bool = True, blend_factor: float = 0.5) -> None:
        self.p, self.randomize, self.blend = p, randomize_blend_factor, blend_factor

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        if len(feats) and rng.random() < self.p:
            feats = np.array(feats, dtype=np.float32)
            rgb = feats[:, :3]
            lo, hi = rgb.min(0, keepdims=True), rgb.max(0, keepdims=True)
            scale = 255.0 / np.maximum(hi - lo, 1e-6)
            contrast = (rgb - lo) * scale
            blend = rng.random() if self.randomize else self.blend
            feats[:, :3] = (1 - blend) * rgb + blend * contrast
        return coords, feats, labels


class ChromaticTranslation:
    """With probability ``p`` (0.95) shift all colours by one random offset of up to ``ratio`` * 255."""

    def __init__(self, ratio: float = 0.1, p: float = 0.95) -> None:
        self.ratio, self.p = ratio, p

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            feats = np.array(feats, dtype=np.float32)
            shift = (rng.random((1, 3)) - 0.5) * 255 * 2 * self.ratio
            feats[:, :3] = np.clip(feats[:, :3] + shift, 0, 255)
        return coords, feats, labels


class ChromaticJitter:
    """With probability ``p`` (0.95) add per-point Gaussian colour noise of std ``std`` * 255."""

    def __init__(self, std: float = 0.05, p: float = 0.95) -> None:
        self.std, self.p = std, p

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        if rng.random() < self.p:
            feats = np.array(feats, dtype=np.float32)
            feats[:, :3] = np.clip(feats[:, :3] + rng.standard_normal((len(feats), 3)) * self.std * 255, 0, 255)
        return coords, feats, labels


class RandomSphereCrop:
    """Keep the ``max_voxels`` voxels nearest to a randomly chosen voxel (spatial distance; time is ignored).

    Why: a step's time and memory grow with its voxels, and a crop bounds both for scenes too large to train on
    whole (Pointcept's SphereCrop does the same). It is off by default because on the synthetic rooms it costs
    accuracy (README, "Spread over seeds"): their classes are told apart by room context a crop cuts away.
    Scenes with at most ``max_voxels`` voxels pass unchanged; 0 = off.
    """

    def __init__(self, max_voxels: int) -> None:
        self.max_voxels = max_voxels

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        if self.max_voxels <= 0 or len(coords) <= self.max_voxels:
            return coords, feats, labels
        space = coords[:, :3].astype(np.float64)
        center = space[rng.integers(len(space))]
        distance = ((space - center) ** 2).sum(axis=1)
        # Stable order (ties broken by index) and sorted indices: the crop is a pure function of the rng draw.
        keep = np.sort(np.argsort(distance, kind="stable")[:self.max_voxels])
        return coords[keep], feats[keep], labels[keep]


class Compose:
    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, coords, feats, labels, rng: np.random.Generator) -> Sample:
        for transform in self.transforms:
            coords, feats, labels = transform(coords, feats, labels, rng)
        return coords, feats, labels


def training_transforms(upright_axis: int, dimension: int, *, color_trans_ratio: float = 0.1,
                        color_jitter_std: float = 0.05, crop_voxels: int = 0) -> Compose:
    """The post-voxelisation augmentations of the original, in order; first a :class:`RandomSphereCrop` if asked."""
    return Compose([
        *([RandomSphereCrop(crop_voxels)] if crop_voxels > 0 else []),
        RandomDropout(0.2),
        RandomHorizontalFlip(upright_axis, dimension),
        ChromaticAutoContrast(),
        ChromaticTranslation(color_trans_ratio),
        ChromaticJitter(color_jitter_std),
    ])
