"""sparse_quantize / batched_coordinates / sparse_collate: ME's semantics, numpy and torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minkseg.sparse as ME
from minkseg.sparse.utils import quantize_points, unique_rows


def test_voxeliser_core_keeps_every_voxel_once_in_lexicographic_order():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (5000, 3)).astype(np.float32)
    feats = rng.normal(size=(5000, 4)).astype(np.float32)
    coords, qfeats, labels, index, inverse = quantize_points(points, feats, ignore_label=255, quantization_size=0.1)
    assert isinstance(coords, np.ndarray) and coords.dtype == np.int32 and labels is None
    assert len({tuple(c) for c in coords.tolist()}) == len(coords)  # every voxel once
    assert coords.tolist() == sorted(coords.tolist())  # the order the stored samples were made in
    expected = np.floor(points / 0.1).astype(np.int32)
    assert np.array_equal(coords[inverse], expected)  # inverse maps every point to its own voxel
    assert np.array_equal(coords, expected[index]) and np.array_equal(qfeats, feats[index])


def test_me_quantize_returns_me_types_first_points_in_input_order():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (5000, 3)).astype(np.float32)
    feats = rng.normal(size=(5000, 4)).astype(np.float32)
    coords, qfeats, index, inverse = ME.sparse_quantize(points, feats, quantization_size=0.1,
                                                        return_index=True, return_inverse=True)
    assert isinstance(coords, torch.Tensor) and coords.dtype == torch.int32 and isinstance(qfeats, np.ndarray)
    expected = torch.from_numpy(np.floor(points / 0.1).astype(np.int32))
    assert torch.equal(coords[inverse], expected) and torch.equal(coords, expected[index])
    assert index.tolist() == sorted(index.tolist()) and index[0] == 0  # first occurrences, input order
    assert np.array_equal(qfeats, feats[index.numpy()])


def test_conflicting_labels_become_ignore():
    coords = torch.tensor([[0.1, 0.1], [0.2, 0.3], [1.5, 0.2], [1.6, 0.1], [2.5, 2.5]])
    labels = torch.tensor([3, 3, 1, 2, 7])
    q, lab, inv = ME.sparse_quantize(coords, labels=labels, ignore_label=255, return_inverse=True)
    by_voxel = {tuple(c): int(l) for c, l in zip(q.tolist(), lab)}
    assert by_voxel == {(0, 0): 3, (1, 0): 255, (2, 2): 7}
    assert torch.is_tensor(q) and q.dtype == torch.int32


def test_per_axis_quantization_size_and_bad_input():
    q = ME.sparse_quantize(np.array([[0.5, 3.0], [0.6, 3.9]]), quantization_size=[1.0, 2.0])
    assert q.tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="NaN"):
        ME.sparse_quantize(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="> 0"):
        ME.sparse_quantize(np.zeros((2, 3)), quantization_size=0)
    with pytest.raises(ValueError, match="labels for"):
        ME.sparse_quantize(np.zeros((2, 3)), labels=np.zeros(3))


def test_unique_rows_matches_torch_unique():
    rows = torch.randint(-50, 50, (3000, 4))
    uniq, first, inverse = unique_rows(rows)
    ref, ref_inv = torch.unique(rows, dim=0, return_inverse=True)
    assert torch.equal(uniq, ref) and torch.equal(inverse, ref_inv)
    assert torch.equal(rows[first], uniq)


def test_batched_coordinates_and_collate():
    a, b = np.array([[1, 2, 3]]), np.array([[4, 5, 6], [7, 8, 9]])
    bc = ME.batched_coordinates([a, b])
    assert bc.dtype == torch.int32 and bc.tolist() == [[0, 1, 2, 3], [1, 4, 5, 6], [1, 7, 8, 9]]
    coords, feats, labels = ME.sparse_collate([a, b], [np.ones((1, 2)), np.zeros((2, 2))], [np.ones(1), np.zeros(2)])
    assert coords.shape == (3, 4) and feats.shape == (3, 2) and labels.tolist() == [1, 0, 0]


@pytest.mark.parametrize("value", [1e12, -1e12, 2.0**31 * 0.05])
def test_coordinates_beyond_int32_are_refused_not_wrapped(value):
    """Found by the robustness work: 1e12 m at 5 cm used to wrap to -2**31 and merge with unrelated points."""
    points = np.array([[0.0, 0.0, 0.0], [value, 1.0, 2.0]])
    with pytest.raises(ValueError, match="beyond int32"):
        ME.sparse_quantize(points, quantization_size=0.05)
    near_limit = np.array([[0.0, 0.0, 0.0], [(2**31 - 2) * 0.05, 0.0, 0.0]])
    coords = ME.sparse_quantize(near_limit, quantization_size=0.05)
    assert coords.shape == (2, 3) and coords[:, 0].max() >= 2**31 - 3
