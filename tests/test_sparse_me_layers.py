"""ME layers beyond the tensor API, each against a brute-force oracle: explicit output coordinates, the generative
transposed conv, pruning, union, global pooling modes and fields."""
from __future__ import annotations

import pytest
import torch

import minkseg.sparse as ME


def _brute_conv(in_coords, feats, kernel, offsets, out_coords, scale, transpose=False):
    """out[o] = sum_k feats[i] @ kernel[k] over inputs i at o + k*scale (o - k*scale for a transposed conv)."""
    index = {tuple(c): n for n, c in enumerate(in_coords.tolist())}
    out = torch.zeros(len(out_coords), kernel.shape[2], dtype=feats.dtype)
    for n, o in enumerate(out_coords.tolist()):
        for k, off in enumerate(offsets.tolist()):
            sign = -1 if transpose else 1
            src = (o[0], *[o[d + 1] + sign * off[d] * scale[d] for d in range(len(off))])
            if src in index:
                out[n] += feats[index[src]] @ kernel[k]
    return out


@pytest.mark.parametrize("D", [3, 4])
def test_conv_on_explicit_output_coordinates(D):
    torch.manual_seed(D)
    coords = torch.unique(torch.cat([torch.randint(0, 2, (30, 1)), torch.randint(0, 5, (30, D))], 1), dim=0).int()
    x = ME.SparseTensor(torch.randn(len(coords), 3, dtype=torch.float64), coords)
    conv = ME.MinkowskiConvolution(3, 2, kernel_size=3, dimension=D).double()
    targets = torch.cat([torch.randint(0, 2, (12, 1)), torch.randint(-1, 6, (12, D))], 1).int()
    out = conv(x, targets)
    assert out.C.tolist() == [list(t) for t in dict.fromkeys(map(tuple, targets.tolist()))]  # first occurrences
    expected = _brute_conv(x.C, x.F, conv.kernel, conv.kernel_offsets, out.C, [1] * D)
    assert torch.allclose(out.F, expected, atol=1e-10)
    again = conv(x, out)  # a SparseTensor's set, and a key, name the same output
    assert again.coordinate_map_key == out.coordinate_map_key
    assert conv(x, out.coordinate_map_key).coordinate_map_key == out.coordinate_map_key
    # gradients through the explicit set
    assert torch.autograd.gradcheck(lambda f: conv(ME.SparseTensor(f, coordinate_map_key=x.coordinate_map_key,
                                                                   coordinate_manager=x.coordinate_manager),
                                                   out.coordinate_map_key).F, (x.F.clone().requires_grad_(),))


@pytest.mark.parametrize("D, kernel_size", [(2, 2), (3, 3), (4, 3)])
def test_generative_transpose_creates_the_expanded_set(D, kernel_size):
    torch.manual_seed(0)
    coarse = torch.unique(torch.cat([torch.zeros(6, 1, dtype=torch.long), torch.randint(0, 3, (6, D)) * 2], 1),
                          dim=0).int()
    x = ME.SparseTensor(torch.randn(len(coarse), 2, dtype=torch.float64), coarse, tensor_stride=2)
    layer = ME.MinkowskiGenerativeConvolutionTranspose(2, 3, kernel_size=kernel_size, stride=2, dimension=D).double()
    out = layer(x)
    offsets = layer.kernel_offsets
    expected_set = {(c[0], *[c[d + 1] + o[d] for d in range(D)]) for c in coarse.tolist() for o in offsets.tolist()}
    assert out.tensor_stride == [1] * D and set(map(tuple, out.C.tolist())) == expected_set
    expected = _brute_conv(x.C, x.F, layer.kernel, offsets, out.C, [1] * D, transpose=True)
    assert torch.allclose(out.F, expected, atol=1e-10)
    # a second call makes a new set (generative), never the stored one
    assert layer(x).coordinate_map_key != out.coordinate_map_key


def test_pruning_keeps_masked_rows_and_their_gradients():
    feats = torch.randn(5, 2, requires_grad=True)
    x = ME.SparseTensor(feats, torch.IntTensor([[0, 0], [0, 1], [0, 2], [1, 0], [1, 3]]))
    keep = torch.tensor([True, False, True, False, True])
    y = ME.MinkowskiPruning()(x, keep)
    assert y.C.tolist() == [[0, 0], [0, 2], [1, 3]] and torch.equal(y.F, feats[keep])
    y.F.sum().backward()
    assert feats.grad[:, 0].tolist() == [1, 0, 1, 0, 1]
    assert len(ME.MinkowskiPruning()(x, torch.zeros(5, dtype=torch.bool))) == 0
    with pytest.raises(ValueError, match="mask"):
        ME.MinkowskiPruning()(x, torch.ones(4, dtype=torch.bool))


def test_union_sums_features_per_coordinate():
    a = ME.SparseTensor(torch.FloatTensor([[1], [2]]), torch.IntTensor([[0, 0], [0, 1]]))
    b = ME.SparseTensor(torch.FloatTensor([[10], [20]]), torch.IntTensor([[0, 1], [0, 7]]),
                        coordinate_manager=a.coordinate_manager)
    u = ME.MinkowskiUnion()(a, b)
    assert u.C.tolist() == [[0, 0], [0, 1], [0, 7]] and u.F.flatten().tolist() == [1, 12, 20]
    with pytest.raises(AssertionError):  # ME asserts one manager
        ME.MinkowskiUnion()(a, ME.SparseTensor(torch.ones(1, 1), torch.IntTensor([[0, 0]])))


@pytest.mark.parametrize("mode, reduce", [(ME.PoolingMode.GLOBAL_SUM_POOLING_DEFAULT, "sum"),
                                          (ME.PoolingMode.GLOBAL_AVG_POOLING_KERNEL, "mean"),
                                          (ME.PoolingMode.GLOBAL_MAX_POOLING_PYTORCH_INDEX, "amax")])
def test_global_pooling_modes_on_tensors_and_fields(mode, reduce):
    torch.manual_seed(1)
    coords = torch.tensor([[0, 0.2, 0.1], [0, 3.5, 1.0], [3, 1.0, 1.0], [3, 2.5, 0.0], [3, 0.0, 4.0]])
    feats = torch.randn(5, 2)
    expected = torch.stack([getattr(torch, reduce)(feats[:2], 0) if reduce != "amax" else feats[:2].amax(0),
                            getattr(torch, reduce)(feats[2:], 0) if reduce != "amax" else feats[2:].amax(0)])
    pool = ME.MinkowskiGlobalPooling(mode)
    for tensor in (ME.TensorField(feats, coords), ME.SparseTensor(feats, torch.floor(coords).int())):
        out = pool(tensor)
        assert out.C.tolist() == [[0, 0, 0], [3, 0, 0]]
        assert torch.allclose(out.F, expected)
    with pytest.raises(ValueError, match="GLOBAL"):
        ME.MinkowskiGlobalPooling(ME.PoolingMode.LOCAL_MAX_POOLING)


def test_local_pooling_on_explicit_coordinates():
    x = ME.SparseTensor(torch.FloatTensor([[1], [2], [4]]), torch.IntTensor([[0, 0], [0, 1], [0, 3]]))
    out = ME.MinkowskiSumPooling(kernel_size=3, dimension=1)(x, torch.IntTensor([[0, 2], [0, 0]]))
    assert out.C.tolist() == [[0, 2], [0, 0]] and out.F.flatten().tolist() == [6, 3]


def test_kaiming_normal_uses_me_fan_for_kernels():
    torch.manual_seed(0)
    kernel = torch.empty(27, 64, 32)
    ME.utils.kaiming_normal_(kernel, mode="fan_out", nonlinearity="relu")
    assert kernel.std().item() == pytest.approx((2 ** 0.5) / (32 * 27) ** 0.5, rel=0.02)
    linear = torch.empty(100, 400)
    ME.utils.kaiming_normal_(linear)  # [out, in]: fan_in 400, leaky_relu gain sqrt(2)
    assert linear.std().item() == pytest.approx((2 ** 0.5) / 20, rel=0.03)
