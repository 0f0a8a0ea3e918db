"""Property-based checks (hypothesis) over random point clouds: quantisation invariants (every voxel once, inverse
map consistent) and the sparse ops (conv, strided/dilated conv after quantisation, pooling, transposed conv) equal
to the dense oracle."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import minkseg.sparse as ME
from tests.sparse_oracle import dense_grid, dense_pool, dense_weight, values_at

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(points=arrays(np.float32, st.tuples(st.integers(1, 300), st.just(3)), elements=finite),
       voxel=st.sampled_from([0.05, 0.5, 1.0, 3.0]),
       labels_seed=st.integers(0, 10))
def test_quantisation_invariants(points, voxel, labels_seed):
    labels = np.random.default_rng(labels_seed).integers(0, 3, len(points))
    coords, vlabels, index, inverse = ME.sparse_quantize(points, labels=labels, quantization_size=voxel,
                                                         ignore_label=255, return_index=True, return_inverse=True)
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


def _dense_conv_out(x: ME.SparseTensor, layer, size: int) -> torch.Tensor:
    """The layer as a dense conv3d over the densified grid (ME's kernel offsets, stride and dilation)."""
    weight, lo = dense_weight(layer)
    gen = layer.kernel_generator
    dil, stride = list(gen.kernel_dilation), list(gen.kernel_stride)
    pad = []
    for d in reversed(range(3)):
        left = int(-lo[d]) * dil[d]
        pad += [left, (weight.shape[2 + d] - 1) * dil[d] - left + stride[d]]
    return F.conv3d(F.pad(dense_grid(x, size), pad), weight, stride=stride, dilation=dil)


@settings(max_examples=30, deadline=None)
@given(points=arrays(np.float32, st.tuples(st.integers(1, 120), st.just(3)), elements=finite),
       duplicate=st.booleans(), voxel=st.sampled_from([1.5, 3.0, 7.0]), kernel_size=st.sampled_from([2, 3]),
       stride=st.sampled_from([1, 2]), dilation=st.sampled_from([1, 2]), seed=st.integers(0, 100))
def test_point_cloud_quantised_then_convolved_equals_the_dense_oracle(points, duplicate, voxel, kernel_size, stride,
                                                                      dilation, seed):
    """The path real data takes: float points (negative, duplicated, a single one) -> sparse_quantize -> conv."""
    if duplicate:
        points = np.concatenate([points, points[: max(1, len(points) // 3)]])
    feats = np.random.default_rng(seed).normal(size=(len(points), 2)).astype(np.float32)
    coords, vfeats, index, inverse = ME.sparse_quantize(points, features=feats, quantization_size=voxel,
                                                        return_index=True, return_inverse=True)
    coords, index, inverse = coords.numpy(), index.numpy(), inverse.numpy()  # ME returns torch here
    assert np.array_equal(vfeats, feats[index])  # each voxel carries the features of the point it kept
    assert np.array_equal(coords[inverse], np.floor(points.astype(np.float64) / voxel).astype(np.int32))
    # Shift by an even amount so the grid starts near 0: stride-2 outputs land on the same (even) sites.
    shift = 2 * np.floor_divide(coords.min(axis=0), 2)
    grid_coords = torch.from_numpy(np.concatenate([np.zeros((len(coords), 1), np.int32), coords - shift], 1))
    x = ME.SparseTensor(torch.from_numpy(vfeats), grid_coords.int())
    torch.manual_seed(seed)
    dilation = dilation if stride == 1 else 1
    layer = ME.MinkowskiConvolution(2, 3, kernel_size, stride=stride, dilation=dilation, dimension=3)
    out = layer(x)
    assert len({tuple(c) for c in out.C.tolist()}) == out.C.shape[0]  # every output site once
    size = int(grid_coords[:, 1:].max()) + 1
    expected = values_at(_dense_conv_out(x, layer, size), out.C, out.tensor_stride)
    torch.testing.assert_close(out.F, expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(sites=st.sets(st.tuples(st.integers(0, 1), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                     min_size=1, max_size=60),
       mode=st.sampled_from(["avg", "max", "sum"]), kernel_size=st.sampled_from([2, 3]),
       stride=st.sampled_from([1, 2]), seed=st.integers(0, 100))
def test_pooling_equals_the_dense_oracle_on_random_sites(sites, mode, kernel_size, stride, seed):
    coords = torch.tensor(sorted(sites), dtype=torch.int32)
    feats = torch.randn(coords.shape[0], 3, generator=torch.Generator().manual_seed(seed))
    x = ME.SparseTensor(feats, coords)
    layer = {"avg": ME.MinkowskiAvgPooling, "max": ME.MinkowskiMaxPooling,
             "sum": ME.MinkowskiSumPooling}[mode](kernel_size, stride, dimension=3)
    out = layer(x)
    mask = dense_grid(x.replace_features(torch.ones(coords.shape[0], 1)), 6)
    expected = values_at(dense_pool(dense_grid(x, 6), mask, layer, mode), out.C, out.tensor_stride)
    torch.testing.assert_close(out.F, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(sites=st.sets(st.tuples(st.integers(0, 1), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                     min_size=1, max_size=60),
       kernel_size=st.sampled_from([2, 3]), seed=st.integers(0, 100))
def test_transposed_conv_back_to_the_fine_sites_equals_the_dense_oracle(sites, kernel_size, seed):
    fine = ME.SparseTensor(torch.randn(len(sites), 2, generator=torch.Generator().manual_seed(seed)),
                           torch.tensor(sorted(sites), dtype=torch.int32))
    torch.manual_seed(seed)
    down = ME.MinkowskiConvolution(2, 3, kernel_size, stride=2, dimension=3)(fine)
    layer = ME.MinkowskiConvolutionTranspose(3, 2, kernel_size, stride=2, dimension=3)
    out = layer(down)
    assert out.coordinate_map_key == fine.coordinate_map_key  # exactly the fine sites, each once
    weight, lo = dense_weight(layer, transpose=True)
    dense_out = F.conv_transpose3d(dense_grid(down, 6), weight, stride=2)
    c = out.C.long()  # conv_transpose3d writes coarse * stride + (offset - lo)
    expected = dense_out[(c[:, 0], slice(None)) + tuple(c[:, 1 + d] - lo[d] for d in range(3))]
    torch.testing.assert_close(out.F, expected, rtol=1e-5, atol=1e-5)
