"""TensorField as MinkowskiEngine 0.5.4 uses it: quantise to a sparse tensor (every mode), slice back to every point,
splat / interpolate, pointwise layers on fields, fields inside a network (ME's ModelNet40 classification pattern)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import minkseg.sparse as ME

Q = ME.SparseTensorQuantizationMode
COORDS = torch.IntTensor([[0, 1], [0, 1], [0, 2], [0, 2], [1, 0], [1, 0], [1, 1]])
FEATS = torch.FloatTensor([[0, 1, 2, 3, 5, 6, 7]]).T


@pytest.mark.parametrize("mode, expected", [
    (None, {0.5, 2.5, 5.5, 7}),  # a field's default is UNWEIGHTED_AVERAGE
    (Q.UNWEIGHTED_AVERAGE, {0.5, 2.5, 5.5, 7}),
    (Q.MAX_POOL, {1, 3, 6, 7}),
    (Q.UNWEIGHTED_SUM, {1, 5, 11, 7}),
    (Q.RANDOM_SUBSAMPLE, {0, 2, 5, 7}),
])
def test_sparse_quantisation_modes(mode, expected):
    field = ME.TensorField(FEATS, COORDS)
    x = field.sparse() if mode is None else field.sparse(quantization_mode=mode)
    assert isinstance(x, ME.SparseTensor) and set(x.F.flatten().tolist()) == expected
    assert x.coordinate_manager is field.coordinate_manager


def test_slice_returns_every_point_in_input_order():
    coords = torch.tensor([[0, 0.2, 0.3], [0, 0.7, 0.1], [0, 1.5, 0.5], [1, 0.1, 0.1]])
    field = ME.TensorField(torch.tensor([[1.0], [3.0], [5.0], [7.0]]), coords)
    x = field.sparse()  # voxels (0,0,0) avg 2, (0,1,0) 5, (1,0,0) 7
    assert sorted(x.F.flatten().tolist()) == [2.0, 5.0, 7.0]
    back = x.slice(field)
    assert isinstance(back, ME.TensorField) and len(back) == 4
    assert back.F.flatten().tolist() == [2.0, 2.0, 5.0, 7.0]
    assert torch.equal(back.C, field.C)
    cat = x.cat_slice(field)
    assert cat.F.tolist() == [[2.0, 1.0], [2.0, 3.0], [5.0, 5.0], [7.0, 7.0]]


def test_slice_through_a_strided_network_reaches_every_point():
    torch.manual_seed(0)
    coords = torch.cat([torch.zeros(300, 1), torch.rand(300, 3) * 20], 1)
    field = ME.TensorField(torch.rand(300, 3), coords)
    net = nn.Sequential(ME.MinkowskiLinear(3, 8), ME.MinkowskiBatchNorm(8), ME.MinkowskiReLU(),
                        ME.MinkowskiToSparseTensor(),
                        ME.MinkowskiConvolution(8, 16, kernel_size=3, stride=4, dimension=3))
    out = net(field)
    assert out.tensor_stride == [4, 4, 4]
    back = out.slice(field)
    assert len(back) == 300 and back.F.shape == (300, 16)
    # each point gets the feature of the stride-4 voxel that holds it
    voxel = torch.floor(coords[:, 1:] / 4) * 4
    rows = [out.C.tolist().index([0] + v) for v in voxel.int().tolist()]
    assert torch.equal(back.F, out.F[rows])
    # quantising the field straight onto the network's output set: one row per output voxel
    onto = field.sparse(coordinate_map_key=out.coordinate_map_key)
    assert len(onto) == len(out)


def test_pointwise_layers_keep_fields():
    field = ME.TensorField(torch.rand(10, 3), torch.rand(10, 3) * 5)
    y = ME.MinkowskiReLU()(ME.MinkowskiLinear(3, 4)(field))
    assert isinstance(y, ME.TensorField) and y.F.shape == (10, 4) and torch.equal(y.C, field.C)
    assert (y.F >= 0).all()


def test_splat_and_interpolate_are_linear_and_transposed():
    field = ME.TensorField(torch.FloatTensor([[1], [2]]), torch.FloatTensor([[0, 0.1], [0, 1.1]]))
    x = field.splat()
    by_coord = {tuple(c): f for c, f in zip(x.C.tolist(), x.F.flatten().tolist())}
    assert by_coord == pytest.approx({(0, 0): 0.9, (0, 1): 0.1 + 1.8, (0, 2): 0.2})
    back = x.interpolate(field)  # transpose of the splat weights
    assert back.F.flatten().tolist() == pytest.approx([0.9 * 0.9 + 0.1 * 1.9, 0.9 * 1.9 + 0.1 * 0.2])
    two_d = ME.TensorField(torch.FloatTensor([[1], [2]]), torch.FloatTensor([[0, 0.1, 0.1], [0, 1.1, 1.1]])).splat()
    assert float(two_d.F.sum()) == pytest.approx(3.0)  # weights of each point sum to 1


def test_inverse_mapping_per_stride_and_batches():
    field = ME.TensorField(torch.ones(4, 1), torch.tensor([[0, 0.5], [0, 3.5], [2, 1.0], [2, 5.0]]))
    x = field.sparse(tensor_stride=2)
    assert x.tensor_stride == [2] and sorted(x.C.tolist()) == [[0, 0], [0, 2], [2, 0], [2, 4]]
    assert torch.equal(x.C[field.inverse_mapping(x.coordinate_map_key)],
                       torch.IntTensor([[0, 0], [0, 2], [2, 0], [2, 4]]))
    assert [len(c) for c in field.decomposed_coordinates] == [2, 0, 2]


def test_bad_fields_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        ME.TensorField(torch.ones(1, 1), torch.tensor([[0, float("nan")]]))
    with pytest.raises(ValueError, match="splat"):
        ME.TensorField(FEATS, COORDS).sparse(quantization_mode=Q.SPLAT_LINEAR_INTERPOLATION)
