"""SparseTensor as MinkowskiEngine 0.5.4 documents and tests it: construction, duplicates, batches, dense views,
arithmetic on different coordinate sets, operation modes. Expected values are worked out by hand from ME's docs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minkseg.sparse as ME

# ME's tests/python data: 1-D coordinates with duplicates, batch first
DUP_COORDS = torch.IntTensor([[0, 1], [0, 1], [0, 2], [0, 2], [1, 0], [1, 0], [1, 1]])
DUP_FEATS = torch.FloatTensor([[0, 1, 2, 3, 5, 6, 7]]).T
Q = ME.SparseTensorQuantizationMode


def test_duplicates_removed_by_default_first_row_kept_with_maps():
    x = ME.SparseTensor(DUP_FEATS, DUP_COORDS)
    assert len(x) == 4 and x.C.tolist() == [[0, 1], [0, 2], [1, 0], [1, 1]]  # first occurrences, input order
    assert x.F.flatten().tolist() == [0, 2, 5, 7]
    assert x.unique_index.tolist() == [0, 2, 4, 6]
    assert x.inverse_mapping.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert torch.equal(x.C[x.inverse_mapping], DUP_COORDS)


@pytest.mark.parametrize("mode, expected", [
    (Q.RANDOM_SUBSAMPLE, [0, 2, 5, 7]),
    (Q.UNWEIGHTED_AVERAGE, [0.5, 2.5, 5.5, 7]),
    (Q.UNWEIGHTED_SUM, [1, 5, 11, 7]),
    (Q.MAX_POOL, [1, 3, 6, 7]),
])
def test_quantization_modes(mode, expected):
    x = ME.SparseTensor(coordinates=DUP_COORDS, features=DUP_FEATS, quantization_mode=mode)
    assert x.F.flatten().tolist() == expected
    assert len(x.slice(x)) == len(DUP_COORDS)  # slice goes back to every input row


def test_no_quantization_with_duplicates_is_refused_not_misaligned():
    with pytest.raises(ValueError, match="NO_QUANTIZATION"):
        ME.SparseTensor(DUP_FEATS, DUP_COORDS, quantization_mode=Q.NO_QUANTIZATION)
    unique = ME.SparseTensor(torch.ones(2, 1), torch.IntTensor([[0, 0], [0, 1]]), quantization_mode=Q.NO_QUANTIZATION)
    assert len(unique) == 2


def test_average_quantization_is_differentiable():
    feats = DUP_FEATS.clone().requires_grad_()
    x = ME.SparseTensor(feats, DUP_COORDS, quantization_mode=Q.UNWEIGHTED_AVERAGE)
    x.F.sum().backward()
    assert feats.grad.flatten().tolist() == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0]


def test_duplicate_input_convolves_like_its_deduplicated_form():
    """The silent wrong result this fixes: duplicates used to stay, so a conv summed them twice."""
    rng = np.random.default_rng(0)
    coords = torch.from_numpy(rng.integers(0, 6, (60, 3))).int()
    coords = torch.cat([torch.zeros(60, 1, dtype=torch.int32), coords], 1)
    coords = torch.cat([coords, coords[:20]])  # 20 duplicated rows
    feats = torch.from_numpy(rng.normal(size=(80, 4))).float()
    conv = ME.MinkowskiConvolution(4, 5, kernel_size=3, dimension=3)
    out_dup = conv(ME.SparseTensor(feats, coords))
    uniq, first_feats = ME.utils.sparse_quantize(coords, feats)  # ME-quantised: first point of each voxel
    out_ref = conv(ME.SparseTensor(first_feats, uniq))
    assert len(out_dup) == len(uniq) < 80
    assert torch.equal(out_dup.C, out_ref.C)
    assert torch.allclose(out_dup.F, out_ref.F, atol=1e-6)


def test_float_coordinates_are_floored_with_a_warning():
    with pytest.warns(UserWarning, match="floored"):
        x = ME.SparseTensor(torch.ones(3, 1), torch.tensor([[0, 0.5], [0, 1.7], [0, -0.2]]))
    assert x.C.tolist() == [[0, 0], [0, 1], [0, -1]] and x.C.dtype == torch.int32


def test_zero_row_tensor_and_its_dense_form():
    x = ME.SparseTensor(torch.zeros(0, 16), torch.zeros(0, 4, dtype=torch.int32))
    assert len(x) == 0 and x.D == 3
    conv = ME.MinkowskiConvolution(16, 8, kernel_size=3, dimension=3)
    assert conv(x).F.shape == (0, 8)
    dense, _, _ = x.dense(shape=torch.Size([2, 16, 3, 3, 3]))
    assert dense.shape == (2, 16, 3, 3, 3) and not dense.any()


def test_constructor_arguments():
    feats = torch.rand(4, 2)
    coords = torch.IntTensor([[0, 4, 2], [0, 4, 0], [0, 0, 4], [1, 8, 4]])
    x = ME.SparseTensor(feats, coordinates=coords, tensor_stride=4, requires_grad=True,
                        minkowski_algorithm=ME.MinkowskiAlgorithm.SPEED_OPTIMIZED, device="cpu")
    assert x.tensor_stride == [4, 4] and x.requires_grad and x.device.type == "cpu"
    y = ME.SparseTensor(torch.rand(4, 3), coordinate_map_key=x.coordinate_map_key,
                        coordinate_manager=x.coordinate_manager)
    assert torch.equal(y.C, x.C)
    z = ME.SparseTensor(feats, coordinates=coords, coordinate_manager=x.coordinate_manager)  # forced second insert
    assert z.coordinate_map_key != x.coordinate_map_key and z.coordinate_manager is x.coordinate_manager
    with pytest.raises(ValueError, match="coordinate_map_key"):
        ME.SparseTensor(feats)


def test_batch_access_with_an_absent_batch_index():
    coords = torch.IntTensor([[0, 0], [0, 1], [0, 2], [2, 0], [2, 2]])
    feats = torch.FloatTensor([[1.1, 2.1, 3.1, 4.1, 5.1]]).t()
    x = ME.SparseTensor(feats, coords)
    assert [len(c) for c in x.decomposed_coordinates] == [3, 0, 2]  # entry i is batch i
    assert x.coordinates_at(0).flatten().tolist() == [0, 1, 2]
    assert x.features_at(2).flatten().tolist() == pytest.approx([4.1, 5.1])
    assert x.coordinates_at(1).shape == (0, 1)
    c, f = x.decomposed_coordinates_and_features
    assert [len(t) for t in f] == [3, 0, 2] and torch.equal(c[2], torch.IntTensor([[0], [2]]))
    assert [p.tolist() for p in x.decomposition_permutations] == [[0, 1, 2], [], [3, 4]]
    cc, ff = x.coordinates_and_features_at(0)
    assert torch.equal(cc, x.coordinates_at(0)) and torch.equal(ff, x.features_at(0))


def test_features_at_coordinates_exact_and_interpolated():
    coords = torch.IntTensor([[0, 0], [0, 1], [0, 2], [2, 0], [2, 2]])
    feats = torch.FloatTensor([[1.1, 2.1, 3.1, 4.1, 5.1]]).t()
    x = ME.SparseTensor(features=feats, coordinates=coords)
    out = x.features_at_coordinates(torch.FloatTensor([[0, 0], [0, 1], [0, 2], [2, 2], [0, 0], [0, 0.5], [2, 1],
                                                       [1, 0]])).flatten()
    assert out[:5].tolist() == pytest.approx([1.1, 2.1, 3.1, 5.1, 1.1])
    assert out[5].item() == pytest.approx(0.5 * 1.1 + 0.5 * 2.1)  # linear between 0 and 1
    assert out[6].item() == pytest.approx(0.0)  # corners (2, 1) and (2, 2): weights 1 and 0
    assert out[7].item() == 0.0  # batch 1 holds nothing
    with pytest.raises(TypeError, match="dtype"):
        x.features_at_coordinates(torch.zeros(1, 2, dtype=torch.float64))


def test_dense_as_me():
    coords1 = torch.IntTensor([[0, 0], [0, 1], [1, 1]])
    coords2 = torch.IntTensor([[1, 1], [1, 2], [2, 1]])
    feats = torch.DoubleTensor([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]])
    coords, _ = ME.utils.sparse_collate([coords1, coords2], [feats[:3], feats[3:]])
    x = ME.SparseTensor(feats, coords)
    dense, min_coord, stride = x.dense()
    assert dense.shape == (2, 2, 3, 3)
    assert dense[0, :, 0, 1].tolist() == [3, 4] and dense[1, :, 2, 1].tolist() == [11, 12]
    assert min_coord.tolist() == [0, 0] and stride.tolist() == [1, 1]
    # indices are absolute coordinates without min_coordinate, relative with it
    shifted = ME.SparseTensor(feats, coords + torch.IntTensor([0, 2, 2]))
    assert shifted.dense()[0][0, :, 2, 3].tolist() == [3, 4]
    assert shifted.dense(min_coordinate=torch.IntTensor([2, 2]))[0][0, :, 0, 1].tolist() == [3, 4]
    strided = ME.SparseTensor(torch.ones(2, 1), torch.IntTensor([[0, 2, 4], [0, 6, 0]]), tensor_stride=2)
    d, _, _ = strided.dense(min_coordinate=torch.IntTensor([-2, -2]))
    assert d.shape == (1, 1, 5, 4) and d[0, 0, 2, 3] == 1 and d[0, 0, 4, 1] == 1
    with pytest.raises(ValueError, match="min_coordinate"):
        ME.SparseTensor(torch.ones(1, 1), torch.IntTensor([[0, -1, 0]])).dense()


def test_dense_is_differentiable_and_to_sparse_round_trips():
    dense = torch.rand(3, 4, 5, 6)
    dense[:, :, 0, 0] = 0
    x = ME.to_sparse(dense)
    assert len(x) == 3 * 5 * 6 - 3 and x.F.shape[1] == 4
    assert torch.equal(x.dense(shape=dense.shape)[0], dense)
    assert len(ME.to_sparse(torch.rand(3, 4, 5, 6), format="BXXC")) == 3 * 4 * 5
    assert ME.dense_coordinates(torch.Size([2, 1, 2, 3])).tolist()[:4] == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0]]
    feats = torch.rand(3, 2, requires_grad=True)
    y = ME.SparseTensor(feats, torch.IntTensor([[0, 0, 0], [0, 1, 1], [1, 2, 0]]))
    y.dense()[0].sum().backward()
    assert torch.equal(feats.grad, torch.ones(3, 2))


def test_union_arithmetic_on_different_coordinate_sets():
    ME.set_sparse_tensor_operation_mode(ME.SparseTensorOperationMode.SHARE_COORDINATE_MANAGER)
    try:
        a = ME.SparseTensor(torch.FloatTensor([[1], [2]]), torch.IntTensor([[0, 0], [0, 1]]))
        b = ME.SparseTensor(torch.FloatTensor([[10], [20]]), torch.IntTensor([[0, 1], [0, 2]]))
        assert a.coordinate_manager is b.coordinate_manager is ME.global_coordinate_manager()
        a.requires_grad_(True)
        b.requires_grad_(True)
        c = a + b
        assert c.C.tolist() == [[0, 0], [0, 1], [0, 2]] and c.F.flatten().tolist() == [1, 12, 20]
        c.F.sum().backward()
        assert a.F.grad.flatten().tolist() == [1, 1] and b.F.grad.flatten().tolist() == [1, 1]
        # ME fills the union with A, then applies op(., B) where B exists: a site only A has keeps A's value as is
        assert (a - b).F.flatten().tolist() == [1, -8, -20]
        assert (a * b).F.flatten().tolist() == [1, 20, 0]
    finally:
        ME.clear_global_coordinate_manager()
        ME.set_sparse_tensor_operation_mode(ME.SparseTensorOperationMode.SEPARATE_COORDINATE_MANAGER)
    assert ME.global_coordinate_manager() is None
    assert ME.sparse_tensor_operation_mode() == ME.SparseTensorOperationMode.SEPARATE_COORDINATE_MANAGER


def test_arithmetic_with_scalars_tensors_and_in_place():
    x = ME.SparseTensor(torch.FloatTensor([[1], [2]]), torch.IntTensor([[0, 0], [0, 1]]))
    assert (x + 1).F.flatten().tolist() == [2, 3] and (2 * x).F.flatten().tolist() == [2, 4]
    assert (x / 2).F.flatten().tolist() == [0.5, 1] and (x ** 2).F.flatten().tolist() == [1, 4]
    d = ME.SparseTensor(torch.FloatTensor([[4], [5]]), coordinate_map_key=x.coordinate_map_key,
                        coordinate_manager=x.coordinate_manager)
    x += d
    x *= d
    x -= d
    x /= d
    assert x.F.flatten().tolist() == pytest.approx([(5 * 4 - 4) / 4, (7 * 5 - 5) / 5])
    other = ME.SparseTensor(torch.ones(1, 1), torch.IntTensor([[0, 0]]))
    with pytest.raises(ValueError, match="same coordinate manager"):
        x + other


def test_dtype_device_and_grad_helpers():
    x = ME.SparseTensor(torch.rand(3, 2), torch.IntTensor([[0, 0], [0, 1], [1, 1]]))
    assert x.double().dtype == torch.float64 and x.float().dtype == torch.float32 and x.half().dtype == torch.float16
    x.float()
    assert x.size() == torch.Size([3, 2]) and x.shape == (3, 2) and len(x) == 3
    y = x.to(torch.float64)
    assert y.dtype == torch.float64 and y.coordinate_map_key == x.coordinate_map_key
    assert x.cpu().device.type == "cpu"
    x.requires_grad_(True)
    assert x.requires_grad
    x.detach()  # in place, as ME
    assert not x.requires_grad and x.features is x.F and torch.equal(x.coordinates, x.C)


def test_utility_functions():
    assert ME.is_cuda_available() == torch.cuda.is_available()
    assert isinstance(ME.cuda_version(), int)
