"""Kernel regions (order and content), 4D and cross/hybrid convs against brute force, and kernel-map caching."""
from __future__ import annotations

import pytest
import torch

import minkseg.sparse as ME
from tests.sparse_oracle import brute_force_conv, random_sparse_coords


def test_hyper_cube_order_first_axis_fastest():
    offs = ME.kernel_offsets((3, 3, 3)).tolist()
    assert len(offs) == 27
    assert offs[:4] == [[-1, -1, -1], [0, -1, -1], [1, -1, -1], [-1, 0, -1]]
    assert offs[13] == [0, 0, 0] and offs[-1] == [1, 1, 1]
    assert ME.kernel_offsets((2, 2)).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]  # even: 0..K-1


def test_per_axis_sizes_and_4d_space_only_kernel():
    offs = ME.kernel_offsets((3, 3, 3, 1))
    assert offs.shape == (27, 4) and (offs[:, 3] == 0).all()
    offs = ME.kernel_offsets((2, 2, 2, 1))
    assert offs.shape == (8, 4) and offs[:, :3].min() == 0 and offs[:, :3].max() == 1


def test_hyper_cross_order():
    offs = ME.kernel_offsets((5, 5), ME.RegionType.HYPER_CROSS).tolist()
    assert offs == [[0, 0], [1, 0], [2, 0], [-2, 0], [-1, 0], [0, 1], [0, 2], [0, -2], [0, -1]]


def test_hybrid_is_cube_in_space_cross_in_time_in_me_order():
    C, X = ME.RegionType.HYPER_CUBE, ME.RegionType.HYPER_CROSS
    gen = ME.KernelGenerator(3, region_type=ME.RegionType.HYBRID, axis_types=(C, C, C, X), dimension=4)
    offs = gen.offsets.tolist()
    assert gen.kernel_volume == 29 and len({tuple(o) for o in offs}) == 29
    # ME (MinkowskiKernelGenerator.convert_region_type): centre, then each cube axis grows every offset so far
    # by -1, +1; then the cross axis adds its arm -1, +1
    assert offs[:9] == [[0, 0, 0, 0], [-1, 0, 0, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 1, 0, 0], [-1, -1, 0, 0],
                        [-1, 1, 0, 0], [1, -1, 0, 0], [1, 1, 0, 0]]
    assert offs[27:] == [[0, 0, 0, -1], [0, 0, 0, 1]]
    assert sorted(map(tuple, offs[:27])) == sorted((*o, 0) for o in ME.kernel_offsets((3, 3, 3)).tolist())


def test_layer_exposes_kernel_offsets_in_kernel_order():
    custom = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 2, 0]])
    gen = ME.KernelGenerator(region_type=ME.RegionType.CUSTOM, region_offsets=custom, dimension=3)
    layer = ME.MinkowskiConvolution(2, 3, kernel_generator=gen, dimension=3)
    assert layer.kernel.shape == (3, 2, 3)
    assert torch.equal(layer.kernel_offsets, custom)
    assert ME.MinkowskiConvolution(2, 3, 1, dimension=3).kernel.shape == (2, 3)
    bound = 1 / (2 * 27) ** 0.5
    k = ME.MinkowskiConvolution(2, 3, 3, dimension=3).kernel
    assert k.shape == (27, 2, 3) and k.abs().max() <= bound


def _region_cases():
    C, X = ME.RegionType.HYPER_CUBE, ME.RegionType.HYPER_CROSS
    yield "cross3d", 3, ME.KernelGenerator(3, region_type=X, dimension=3), 1
    yield "cross3d-dil2", 3, ME.KernelGenerator(5, dilation=2, region_type=X, dimension=3), 1
    yield "hybrid4d", 4, ME.KernelGenerator(3, region_type=ME.RegionType.HYBRID, axis_types=(C, C, C, X),
                                            dimension=4), 1
    yield "cube4d", 4, ME.KernelGenerator(3, dimension=4), 1
    yield "cube4d-stride-space", 4, ME.KernelGenerator([2, 2, 2, 1], stride=[2, 2, 2, 1], dimension=4), 1
    yield "custom3d", 3, ME.KernelGenerator(region_type=ME.RegionType.CUSTOM,
                                            region_offsets=[[0, 0, 0], [1, -1, 0], [-2, 0, 1]], dimension=3), 1


@pytest.mark.parametrize("name,D,gen,_", list(_region_cases()), ids=[c[0] for c in _region_cases()])
def test_conv_matches_brute_force(name, D, gen, _):
    size = 6 if D == 3 else 4
    coords = random_sparse_coords(2, size, 0.35, D=D, seed=11)
    feats = torch.randn(coords.shape[0], 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    x = ME.SparseTensor(feats, coords)
    layer = ME.MinkowskiConvolution(3, 4, kernel_generator=gen, dimension=D)
    out = layer(x)
    scale = [d for d in gen.kernel_dilation]
    want = brute_force_conv(x.C, feats.detach(), out.C, gen.offsets, layer.kernel.detach(), scale)
    torch.testing.assert_close(out.F.double(), want, rtol=1e-5, atol=1e-5)
    # gradients: the conv is linear, so grad wrt features equals the brute-force adjoint
    cot = torch.randn(out.F.shape, generator=torch.Generator().manual_seed(2))
    gx, gk = torch.autograd.grad((out.F * cot).sum(), [feats, layer.kernel])
    feats64 = feats.detach().double().requires_grad_(True)
    kernel64 = layer.kernel.detach().double().requires_grad_(True)
    want_fn = brute_force_conv(x.C, feats64, out.C, gen.offsets, kernel64, scale)
    wx, wk = torch.autograd.grad((want_fn * cot.double()).sum(), [feats64, kernel64])
    torch.testing.assert_close(gx.double(), wx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gk.double(), wk, rtol=1e-5, atol=1e-5)


def test_4d_transposed_conv_returns_to_fine_set():
    coords = random_sparse_coords(1, 4, 0.4, D=4, seed=3)
    x = ME.SparseTensor(torch.randn(coords.shape[0], 2), coords)
    down = ME.MinkowskiConvolution(2, 3, [2, 2, 2, 1], stride=[2, 2, 2, 1], dimension=4)(x)
    assert down.tensor_stride == [2, 2, 2, 1]
    assert (down.C[:, 1:4] % 2 == 0).all()
    up = ME.MinkowskiConvolutionTranspose(3, 2, [2, 2, 2, 1], stride=[2, 2, 2, 1], dimension=4)(down)
    assert up.coordinate_map_key == x.coordinate_map_key and up.F.shape == (coords.shape[0], 2)


def test_kernel_maps_are_built_once_per_key_and_reused_by_transpose():
    coords = random_sparse_coords(2, 8, 0.3, seed=5)
    x = ME.SparseTensor(torch.randn(coords.shape[0], 4), coords)
    manager = x.coordinate_manager
    c1, c2 = ME.MinkowskiConvolution(4, 4, 3, dimension=3), ME.MinkowskiConvolution(4, 4, 3, dimension=3)
    y = c2(c1(x))
    assert manager.kernel_map_builds == 1  # two 3^3 convs on the same set share one map
    down = ME.MinkowskiConvolution(4, 8, 2, stride=2, dimension=3)(y)
    assert manager.kernel_map_builds == 2
    ME.MinkowskiConvolution(8, 8, 3, dimension=3)(down)
    assert manager.kernel_map_builds == 3
    up = ME.MinkowskiConvolutionTranspose(8, 4, 2, stride=2, dimension=3)(down)
    assert manager.kernel_map_builds == 3  # the transpose reused the strided conv's map
    ME.MinkowskiConvolution(4, 4, 3, dilation=2, dimension=3)(up)
    assert manager.kernel_map_builds == 4  # a different dilation is a different key


def test_coordinates_validation_messages():
    with pytest.warns(UserWarning, match="floored"):  # float coordinates: floored with a warning, as ME
        assert ME.SparseTensor(torch.randn(3, 2), torch.rand(3, 4) * 0.9).C.abs().sum() == 0
    with pytest.raises(ValueError, match="NaN"):
        ME.SparseTensor(torch.randn(1, 2), torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="coordinates for"):
        ME.SparseTensor(torch.randn(3, 2), torch.zeros(4, 4, dtype=torch.int32))
    x = ME.SparseTensor(torch.randn(3, 2), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
    with pytest.raises(ValueError, match="input channels"):
        ME.MinkowskiConvolution(3, 4, 3, dimension=3)(x)
    with pytest.raises(ValueError, match="kernel_size"):
        ME.MinkowskiConvolution(2, 4, [3, 3], dimension=3)


@pytest.mark.parametrize("table_entries", [0, 1, 1 << 25])
def test_lookup_strategies_give_the_same_maps(monkeypatch, table_entries):
    """Dense-table (one chunk or one sample per chunk) and binary-search lookups must agree pair for pair."""
    import minkseg.sparse.coordinates as coordinates

    coords = random_sparse_coords(3, 7, 0.3, seed=9)
    reference = {}
    for entries in (1 << 25, table_entries):
        monkeypatch.setattr(coordinates, "_DENSE_TABLE_ENTRIES", entries)
        x = ME.SparseTensor(torch.randn(coords.shape[0], 2), coords)
        down = ME.MinkowskiConvolution(2, 2, 3, stride=2, dimension=3)(x)
        maps = []
        for key_in, key_out in ((x.coordinate_map_key, x.coordinate_map_key),
                                (x.coordinate_map_key, down.coordinate_map_key)):
            kmap = x.coordinate_manager.kernel_map_for(key_in, key_out, ME.KernelGenerator(3, dimension=3))
            maps.append([sorted(zip(i.tolist(), o.tolist())) for i, o in zip(kmap.in_maps, kmap.out_maps)])
        reference.setdefault("maps", maps)
        assert maps == reference["maps"]
