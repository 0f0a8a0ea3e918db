"""Property-based checks (hypothesis) over random point clouds: quantisation invariants and conv == dense oracle."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import minkseg.sparse as ME
from tests.sparse_oracle import dense_grid, dense_weight, values_at

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(points=arrays(np.float32, st.tuples(st.integers(1, 300), st.just(3)), elements=finite),
       voxel=st.sampled_from([0.05, 0.5, 1.0, 3.0]),
       labels_seed=st.integers(0, 10))
def test_quantisation_invariants(points, voxel, labels_seed):
    labels = np.random.default_rng(labels_seed).integers(0, 3, len(points))
    coords, vlabels, index, inverse = ME.sparse_quantize(points, labels=labels, quantization_size=voxel,
                                                         return_index=True, return_inverse=True)
    expected = np.floor(points.astype(np.float64) / np.float64(voxel)).astype(np.int32)
    assert len({tuple(c) for c in coords.tolist()}) == len(coords)  # every voxel once
    assert np.array_equal(coords[inverse], expected)  # inverse map consistent with every point
    assert np.array_equal(coords[inverse[index]], coords)  # index picks a point of each voxel
    for v in range(len(coords)):
        members = labels[inverse == v]
        want = members[0] if (members == members[0]).all() else 255
        assert vlabels[v] == want


@settings(max_examples=25, deadline=None)
@given(sites=st.sets(st.tuples(st.integers(0, 1), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                     min_size=1, max_size=60),
       kernel_size=st.sampled_from([1, 2, 3]), stride=st.sampled_from([1, 2]), seed=st.integers(0, 100))
def test_conv_equals_dense_oracle_on_random_sites(sites, kernel_size, stride, seed):
    coords = torch.tensor(sorted(sites), dtype=torch.int32)
    feats = torch.randn(coords.shape[0], 3, generator=torch.Generator().manual_seed(seed))
    x = ME.SparseTensor(feats, coords)
    layer = ME.MinkowskiConvolution(3, 2, kernel_size, stride=stride, dimension=3)
    out = layer(x)
    weight, lo = dense_weight(layer)
    pad = []
    for d in reversed(range(3)):
        pad += [int(-lo[d]), weight.shape[2 + d] + stride]
    dense = F.conv3d(F.pad(dense_grid(x, 6), pad), weight, stride=stride)
    torch.testing.assert_close(out.F, values_at(dense, out.C, out.tensor_stride), rtol=1e-5, atol=1e-5)
