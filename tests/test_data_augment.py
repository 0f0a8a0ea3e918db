"""Each augmentation: seeded, does what it says with p=1, nothing with p=0; the original order and probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minkseg.data.augment import (ChromaticAutoContrast, ChromaticJitter, ChromaticTranslation, ElasticDistortion,
                                  RandomDropout, RandomHorizontalFlip, RandomSphereCrop,
                                  training_transforms)
from minkseg.data.datasets import normalize_color
from minkseg.data.quantize import Voxelizer
from minkseg.datasets import build_dataset


def _cloud(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 4, (n, 3))
    feats = rng.uniform(40, 200, (n, 3)).astype(np.float32)
    labels = rng.integers(0, 5, n)
    return coords, feats, labels


TRANSFORMS = [
    lambda p: ElasticDistortion(p=p), lambda p: RandomDropout(0.2, p=p), lambda p: RandomHorizontalFlip(2, 3, p=p),
    lambda p: ChromaticAutoContrast(p=p), lambda p: ChromaticTranslation(0.1, p=p),
    lambda p: ChromaticJitter(0.05, p=p),
]


@pytest.mark.parametrize("make", TRANSFORMS)
def test_seeded_and_identity_at_p0(make):
    coords, feats, labels = _cloud()
    out1 = make(1.0)(coords.copy(), feats.copy(), labels.copy(), np.random.default_rng(5))
    out2 = make(1.0)(coords.copy(), feats.copy(), labels.copy(), np.random.default_rng(5))
    out3 = make(1.0)(coords.copy(), feats.copy(), labels.copy(), np.random.default_rng(6))
    for a, b in zip(out1, out2):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape != c.shape or not np.array_equal(a, c) for a, c in zip(out1, out3))
    same = make(0.0)(coords, feats, labels, np.random.default_rng(5))
    for a, b in zip(same, (coords, feats, labels)):
        np.testing.assert_array_equal(a, b)


def test_elastic_distortion_is_smooth_and_bounded():
    coords, feats, labels = _cloud(2000)
    twins = coords + np.random.default_rng(9).normal(0, 0.01, coords.shape)  # a 1 cm neighbour of every point
    both = np.concatenate([coords, twins])
    out, f2, l2 = ElasticDistortion(((0.2, 0.4), (0.8, 1.6)), p=1.0)(both.copy(), feats, labels,
                                                                      np.random.default_rng(1))
    shift = out - both
    assert 0.005 < np.abs(shift).mean() < 0.6
    near = np.linalg.norm(shift[:2000] - shift[2000:], axis=1).mean()  # neighbours move alike ...
    far = np.linalg.norm(shift[:1000] - shift[1000:2000], axis=1).mean()  # ... unlike random pairs
    assert near < 0.25 * far
    assert f2 is feats and l2 is labels


def test_dropout_keeps_aligned_rows():
    coords, feats, labels = _cloud(1000)
    c, f, lab = RandomDropout(0.2, p=1.0)(coords, feats, labels, np.random.default_rng(0))
    assert len(c) == 800
    rows = {tuple(r) for r in coords.tolist()}
    assert all(tuple(r) in rows for r in c.tolist())
    index = {tuple(r): i for i, r in enumerate(coords.tolist())}
    ids = np.array([index[tuple(r)] for r in c.tolist()])
    np.testing.assert_array_equal(f, feats[ids])
    np.testing.assert_array_equal(lab, labels[ids])


@pytest.mark.parametrize("dimension,upright,axes", [(3, 2, {0, 1}), (4, 1, {0, 2, 3})])
def test_horizontal_flip_mirrors_only_horizontal_axes(dimension, upright, axes):
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 50, (500, dimension))
    flipped_axes = set()
    for seed in range(30):
        c, _, _ = RandomHorizontalFlip(upright, dimension, p=1.0)(coords, None, None, np.random.default_rng(seed))
        np.testing.assert_array_equal(c[:, upright], coords[:, upright])
        for a in range(dimension):
            if not np.array_equal(c[:, a], coords[:, a]):
                np.testing.assert_array_equal(c[:, a], coords[:, a].max() - coords[:, a])
                flipped_axes.add(a)
    assert flipped_axes == axes  # time is among the flipped axes of 4D samples, as in the original


def test_chromatic_transforms():
    coords, feats, labels = _cloud()
    _, f, _ = ChromaticAutoContrast(p=1.0, randomize_blend_factor=False, blend_factor=1.0)(
        coords, feats, labels, np.random.default_rng(0))
    np.testing.assert_allclose(f.min(0), 0, atol=1e-3)
    np.testing.assert_allclose(f.max(0), 255, atol=1e-3)
    _, f, _ = ChromaticTranslation(0.1, p=1.0)(coords, feats, labels, np.random.default_rng(0))
    shift = f - feats
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-4)  # one offset for all
    assert np.abs(shift[0]).max() <= 25.5
    _, f, _ = ChromaticJitter(0.05, p=1.0)(coords, feats, labels, np.random.default_rng(0))
    assert abs((f - feats).std() - 0.05 * 255) < 0.5
    assert f.min() >= 0 and f.max() <= 255
    norm = normalize_color(np.array([[0, 255, 127.5]]))
    np.testing.assert_allclose(norm, [[-0.5, 0.5, 0.0]])


def test_training_pipeline_order_and_probabilities():
    transforms = training_transforms(upright_axis=2, dimension=3).transforms
    assert [type(t).__name__ for t in transforms] == ["RandomDropout", "RandomHorizontalFlip",
                                                      "ChromaticAutoContrast", "ChromaticTranslation",
                                                      "ChromaticJitter"]
    assert [t.p for t in transforms] == [0.2, 0.95, 0.2, 0.95, 0.95]
    assert transforms[0].ratio == 0.2 and transforms[3].ratio == 0.1 and transforms[4].std == 0.05
    assert ElasticDistortion().params == ((0.2, 0.4), (0.8, 1.6)) and ElasticDistortion().p == 0.95


def test_sphere_crop_keeps_the_nearest_voxels_around_a_seeded_centre():
    rng = np.random.default_rng(3)
    coords = rng.integers(0, 60, (3000, 3)).astype(np.int32)
    feats, labels = rng.uniform(0, 255, (3000, 3)).astype(np.float32), np.arange(3000)
    crop = RandomSphereCrop(500)
    kept = crop(coords, feats, labels, np.random.default_rng(1))
    again = crop(coords, feats, labels, np.random.default_rng(1))
    for a, b in zip(kept, again):
        np.testing.assert_array_equal(a, b)
    assert len(kept[0]) == 500 and np.array_equal(kept[2], np.sort(kept[2]))  # rows stay aligned, original order
    np.testing.assert_array_equal(kept[0], coords[kept[2]])
    np.testing.assert_array_equal(kept[1], feats[kept[2]])
    # A ball: every kept voxel is at least as near the centre as every dropped one (the centre is a kept voxel).
    dist = lambda c: ((coords.astype(float) - c) ** 2).sum(1)  # noqa: E731
    assert any(dist(c)[kept[2]].max() <= np.delete(dist(c), kept[2]).min() for c in kept[0])
    small = coords[:400], feats[:400], labels[:400]
    for a, b in zip(crop(*small, np.random.default_rng(1)), small):  # a scene within the budget passes unchanged
        np.testing.assert_array_equal(a, b)
    assert [type(t).__name__ for t in training_transforms(2, 3, crop_voxels=500).transforms][:2] == [
        "RandomSphereCrop", "RandomDropout"]


def test_voxelizer_rotation_and_scale_stay_in_the_scannet_bounds():
    spec = build_dataset("scannet")
    vox = Voxelizer(0.05, rotation_bound=spec.rotation_bound, scale_bound=spec.scale_bound)
    for seed in range(50):
        linear = vox.sample_linear(np.random.default_rng(seed)) * 0.05
        scale = np.cbrt(np.linalg.det(linear))
        assert 0.9 <= scale <= 1.1
        rotation = linear / scale
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
        tilt = math.acos(min(1.0, rotation[2, 2]))  # angle between the rotated and the original up axis
        assert tilt <= 2 * math.pi / 64 + 1e-9
