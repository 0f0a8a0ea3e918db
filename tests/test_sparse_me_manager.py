"""CoordinateManager, keys and utils with MinkowskiEngine 0.5.4's method names, signatures and return values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import minkseg.sparse as ME

DUP = torch.IntTensor([[0, 1], [0, 1], [0, 2], [0, 2], [1, 0], [1, 0], [1, 1]])


def test_insert_and_map_recovers_the_input():
    manager = ME.CoordinateManager(D=1, coordinate_map_type=ME.CoordinateMapType.CPU)
    key, (unique_map, inverse_map) = manager.insert_and_map(DUP, [1])
    assert torch.equal(DUP[unique_map][inverse_map], DUP)
    assert torch.equal(manager.get_coordinates(key)[inverse_map], DUP)
    assert key.get_key() == ([1], "") and key.get_tensor_stride() == [1] and key.get_coordinate_size() == 2
    assert key.is_key_set() and not ME.CoordinateMapKey(3).is_key_set()
    assert manager.size(key) == 4 and manager.get_coordinates(1) is manager.get_coordinates(key)  # stride shorthand


def test_stride_floors_negative_coordinates():
    manager = ME.CoordinateManager(D=1)
    key, _ = manager.insert_and_map(torch.IntTensor([[0, -3], [0, -2], [0, -1], [0, 0], [0, 1], [0, 2], [0, 3]]), [1])
    strided = manager.get_coordinates(manager.stride(key, [2])).tolist()
    assert sorted(strided) == [[0, -4], [0, -2], [0, 0], [0, 2]]
    key4 = manager.stride(key, 4)
    assert manager.get_coordinates(key4).tolist() == [[0, -4], [0, 0]]
    in_rows, out_rows = manager.stride_map(key, key4)
    assert [manager.get_coordinates(key4)[o, 1].item() for o in out_rows] == [-4, -4, -4, 0, 0, 0, 0]
    assert in_rows.tolist() == list(range(7))


def test_kernel_map_dict_matches_brute_force():
    coords = ME.utils.batched_coordinates([np.argwhere(np.array([[0, 0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 1, 0, 0],
                                                                  [0, 1, 1, 1, 1, 1, 0]]))] * 2)
    x = ME.SparseTensor(torch.rand(len(coords), 2).double(), coordinates=coords)
    out = ME.MinkowskiConvolution(2, 3, kernel_size=3, stride=2, bias=True, dimension=2).double()(x)
    maps = out.coordinate_manager.kernel_map(1, 2, stride=2, kernel_size=3)
    # ME's definition (src/kernel_region.hpp, coordinate_map_cpu.hpp): output o and offset k pair with input
    # o + k * input tensor stride * dilation. (ME's own test_kernelmap asserts 16 pairs on this data; the
    # definition gives 26, which is what the brute force below counts.)
    assert sum(m.shape[1] for m in maps.values()) == 26
    offsets = ME.kernel_offsets((3, 3)).tolist()
    iC, oC = x.C.tolist(), out.C.tolist()
    pairs = {(k, i, o) for k, m in maps.items() for i, o in m.t().tolist()}
    brute = {(k, i, o) for k, off in enumerate(offsets) for o, oc in enumerate(oC) for i, ic in enumerate(iC)
             if ic == [oc[0], oc[1] + off[0], oc[2] + off[1]]}
    assert pairs == brute and all(m.dtype == torch.int32 and m.shape[0] == 2 for m in maps.values())


def test_origin_and_batch_indices():
    manager = ME.CoordinateManager(D=1)
    key, _ = manager.insert_and_map(torch.IntTensor([[0, -3], [0, -2], [2, 1], [2, 2], [2, 3]]), [1])
    batches, rows = manager.origin_map(key)
    assert batches.tolist() == [0, 2] and [r.tolist() for r in rows] == [[0, 1], [], [2, 3, 4]]
    origin = manager.get_coordinates(manager.origin())
    assert origin.tolist() == [[0, 0], [2, 0]] and manager.number_of_unique_batch_indices() == 2


def test_union_map_fills_an_unset_key():
    manager = ME.CoordinateManager(D=1)
    a, _ = manager.insert_and_map(torch.IntTensor([[0, 0], [0, 1]]))
    b, _ = manager.insert_and_map(torch.IntTensor([[0, 1], [0, 5]]))
    out = ME.CoordinateMapKey(2)
    (ai, ao), (bi, bo) = manager.union_map([a, b], out)
    assert out.is_key_set() and manager.get_coordinates(out).tolist() == [[0, 0], [0, 1], [0, 5]]
    assert ao.tolist() == [0, 1] and bo.tolist() == [1, 2] and ai.tolist() == bi.tolist() == [0, 1]


def test_unique_coordinate_map_and_collation():
    unique_map, inverse_map = ME.utils.unique_coordinate_map(torch.IntTensor([[0, 0], [0, 0], [0, 1], [0, 2]]))
    assert unique_map.tolist() == [0, 2, 3] and inverse_map.tolist() == [0, 0, 1, 2]
    data = [(np.array([[1, 2]]), np.ones((1, 3)), np.array([4])), (np.array([[5, 6], [7, 8]]), np.zeros((2, 3)),
                                                                    np.array([1, 2]))]
    coords, feats, labels = ME.utils.batch_sparse_collate(data)
    assert coords.tolist() == [[0, 1, 2], [1, 5, 6], [1, 7, 8]] and labels.tolist() == [4, 1, 2]
    coords, feats, labels = ME.utils.SparseCollation(limit_numpoints=2)(data)
    assert coords.tolist() == [[0, 1, 2]] and feats.shape == (1, 3)  # the second sample would pass the limit


def test_sparse_quantize_as_me():
    rng = np.random.default_rng(0)
    coords = (rng.random((500, 3)) * 10).astype(np.int32)
    coords[:3] = 0
    feats = rng.random((500, 4))
    q, f = ME.utils.sparse_quantize(coords, feats)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.int32  # torch coordinates even for numpy input (ME)
    assert isinstance(f, np.ndarray) and len(f) == len(q)
    index = ME.utils.sparse_quantize(coords, return_maps_only=True)
    assert torch.equal(q, torch.from_numpy(coords)[index]) and index.tolist() == sorted(index.tolist())
    index, inverse = ME.utils.sparse_quantize(coords, return_maps_only=True, return_index=True, return_inverse=True)
    assert (coords[index.numpy()][inverse.numpy()] == coords).all()
    # labels: numpy in -> numpy out, conflicts -> ME's default ignore label -100
    lc = np.array([[0, 0], [0, 0], [0, 0], [0, 1]], dtype=np.int32)
    q, lab = ME.utils.sparse_quantize(lc, labels=np.array([0, 1, 2, 3], dtype=np.int32))
    assert isinstance(q, np.ndarray) and q.tolist() == [[0, 0], [0, 1]] and lab.tolist() == [-100, 3]
    q, lab = ME.utils.sparse_quantize(lc, labels=np.array([[5], [5], [5], [3]]), ignore_label=255)
    assert lab.shape == (2,) and lab.tolist() == [5, 3]  # [N, 1] labels give [M] voxel labels, as ME
    # quantization_size on torch floats
    pts = torch.tensor([[0.05, 0.05, 0.05], [0.07, 0.01, 0.02], [0.15, 0.0, 0.0]])
    q, f = ME.utils.sparse_quantize(pts, torch.arange(3.0)[:, None], quantization_size=0.1)
    assert q.tolist() == [[0, 0, 0], [1, 0, 0]] and f.flatten().tolist() == [0.0, 2.0]


def test_batched_coordinates_keeps_floats_when_asked():
    xyz = [np.array([[0.5, 1.25, -0.5]]), np.array([[2.75, 0.0, 1.0]])]
    assert ME.utils.batched_coordinates(xyz).tolist() == [[0, 0, 1, -1], [1, 2, 0, 1]]  # int32: floored
    floats = ME.utils.batched_coordinates(xyz, dtype=torch.float32)
    assert floats.dtype == torch.float32 and floats.tolist() == [[0, 0.5, 1.25, -0.5], [1, 2.75, 0.0, 1.0]]


def test_global_pooling_gives_one_row_per_present_batch():
    coords = torch.IntTensor([[0, 0], [0, 1], [0, 2], [2, 0], [2, 2]])
    feats = torch.FloatTensor([[1.0, 2.0, 3.0, 4.0, 5.0]]).t()
    x = ME.SparseTensor(feats, coords)
    pooled = ME.MinkowskiGlobalSumPooling()(x)
    assert pooled.C.tolist() == [[0, 0], [2, 0]] and pooled.F.flatten().tolist() == [6.0, 9.0]
    assert ME.MinkowskiGlobalMaxPooling()(x).F.flatten().tolist() == [3.0, 5.0]
    assert ME.MinkowskiGlobalAvgPooling()(x).F.flatten().tolist() == [2.0, 4.5]


def test_expand_coordinates_output_set():
    coords = torch.IntTensor([[0, 0, 0], [0, 1, 1]])
    x = ME.SparseTensor(torch.ones(2, 1).double(), coords)
    conv = ME.MinkowskiConvolution(1, 1, kernel_size=3, stride=2, expand_coordinates=True, bias=False,
                                   dimension=2).double()
    out = conv(x)
    expected = {(0, a + dx, b + dy) for _, a, b in coords.tolist() for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                if (a + dx) % 2 == 0 and (b + dy) % 2 == 0}
    assert {tuple(c) for c in out.C.tolist()} == expected and out.tensor_stride == [2, 2]
    with torch.no_grad():
        conv.kernel.fill_(1.0)
    assert conv(x).F.sum().item() == pytest.approx(sum(  # each output sums the inputs in its 3x3 window
        sum(1 for _, a, b in coords.tolist() if abs(a - o[1]) <= 1 and abs(b - o[2]) <= 1) for o in expected))
    same = ME.MinkowskiConvolution(1, 1, kernel_size=3, expand_coordinates=True, dimension=2).double()(x)
    assert len(same) == len({(0, a + dx, b + dy) for _, a, b in coords.tolist() for dx in (-1, 0, 1)
                             for dy in (-1, 0, 1)})
