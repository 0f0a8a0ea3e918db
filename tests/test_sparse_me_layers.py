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


@pytest.mark.parametrize("layer", ["MinkowskiGlobalPooling", "MinkowskiGlobalSumPooling", "MinkowskiGlobalAvgPooling",
                                   "MinkowskiGlobalMaxPooling"])
def test_global_pooling_gives_one_row_per_present_batch_index(layer):
    """Issue 17, item 7: batch indices {0, 2} gave an extra all-zero row for the absent batch 1; ME gives one row
    per batch index present."""
    x = ME.SparseTensor(torch.tensor([[1.0], [2.0], [4.0]]), torch.IntTensor([[0, 0, 0], [2, 1, 1], [2, 0, 1]]))
    out = getattr(ME, layer)()(x)
    assert out.C.tolist() == [[0, 0, 0], [2, 0, 0]] and out.F.shape == (2, 1)
    expected = {"MinkowskiGlobalSumPooling": [1.0, 6.0], "MinkowskiGlobalMaxPooling": [1.0, 4.0]}  # others: mean
    assert out.F[:, 0].tolist() == expected.get(layer, [1.0, 3.0])


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


def _tensor(channels: int = 4, seed: int = 0) -> ME.SparseTensor:
    torch.manual_seed(seed)
    coords = torch.unique(torch.cat([torch.randint(0, 3, (40, 1)), torch.randint(0, 6, (40, 3))], 1), dim=0).int()
    return ME.SparseTensor(torch.randn(len(coords), channels, dtype=torch.float64), coords)


@pytest.mark.parametrize("name", ME.pointwise.ACTIVATIONS)
def test_every_me_nonlinearity_is_its_torch_module_on_the_features(name):
    x = _tensor()
    args = (0.1, 20.0) if name == "MinkowskiThreshold" else ()  # torch's Threshold has required arguments
    layer = getattr(ME, name)(*args).double().eval()
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    expected = layer.module(x.F)
    assert out.coordinate_map_key == x.coordinate_map_key and torch.equal(out.F, expected)
    assert "module." in "".join(layer.state_dict()) or not list(layer.state_dict())  # ME's state-dict names


def test_functional_api_on_sparse_tensors_and_fields():
    x = _tensor()
    assert torch.equal(ME.MinkowskiFunctional.relu(x).F, torch.relu(x.F))
    assert torch.allclose(ME.MinkowskiFunctional.softmax(x, dim=1).F.sum(1), torch.ones(len(x), dtype=x.dtype))
    target = torch.zeros(len(x), dtype=torch.long)
    assert torch.equal(ME.MinkowskiFunctional.cross_entropy(x, target), torch.nn.functional.cross_entropy(x.F, target))
    field = ME.TensorField(torch.randn(5, 2), torch.rand(5, 3))
    assert isinstance(ME.MinkowskiFunctional.sigmoid(field), ME.TensorField)


def test_stack_layers_apply_every_branch_to_the_same_input():
    x = _tensor()
    relu, tanh = ME.MinkowskiReLU(), ME.MinkowskiTanh()
    assert torch.equal(ME.MinkowskiStackCat(relu, tanh)(x).F, torch.cat([torch.relu(x.F), torch.tanh(x.F)], 1))
    assert torch.allclose(ME.MinkowskiStackSum(relu, tanh)(x).F, torch.relu(x.F) + torch.tanh(x.F))
    assert torch.allclose(ME.MinkowskiStackMean(relu, tanh)(x).F, (torch.relu(x.F) + torch.tanh(x.F)) / 2)
    var = ME.MinkowskiStackVar(relu, tanh)(x).F
    assert torch.allclose(var, ((torch.relu(x.F) - torch.tanh(x.F)) / 2) ** 2)


def test_broadcast_layers_match_a_per_row_loop():
    x = _tensor()
    glob = ME.MinkowskiGlobalAvgPooling()(x)
    per_row = torch.stack([glob.F[glob.C[:, 0].tolist().index(b)] for b in x.C[:, 0].tolist()])
    assert torch.equal(ME.MinkowskiBroadcast()(x, glob).F, per_row)
    assert torch.equal(ME.MinkowskiBroadcastAddition()(x, glob).F, x.F + per_row)
    assert torch.equal(ME.MinkowskiBroadcastMultiplication()(x, glob).F, x.F * per_row)
    assert torch.equal(ME.MinkowskiBroadcastConcatenation()(x, glob).F, torch.cat([x.F, per_row], 1))


def test_resnet_and_se_blocks_compute_their_definition():
    from minkseg.sparse.modules.resnet_block import BasicBlock, Bottleneck
    from minkseg.sparse.modules.senet_block import SEBasicBlock
    x = _tensor(channels=8)
    block = BasicBlock(8, 8, dimension=3).double().eval()
    ref = block.norm2(block.conv2(ME.MinkowskiReLU()(block.norm1(block.conv1(x))))).F + x.F
    assert torch.allclose(block(x).F, torch.relu(ref))
    assert set(block.state_dict()) >= {"conv1.kernel", "norm1.bn.weight", "conv2.kernel", "norm2.bn.running_mean"}
    bottleneck = Bottleneck(8, 2, dimension=3).double().eval()  # 2 * expansion 4 = 8 channels out
    assert bottleneck(x).F.shape == (len(x), 8)
    se = SEBasicBlock(8, 8, reduction=4, D=3).double().eval()
    assert se(x).F.shape == (len(x), 8) and (se(x).F >= 0).all()


def test_me_function_objects_match_the_layers_and_pass_gradcheck():
    x = _tensor(channels=2)
    conv = ME.MinkowskiConvolution(2, 3, kernel_size=3, stride=2, dimension=3).double()
    out = conv(x)
    fn = ME.MinkowskiConvolutionFunction()
    args = (x.F.clone().requires_grad_(), conv.kernel, conv.kernel_generator, conv.convolution_mode,
            x.coordinate_map_key, out.coordinate_map_key, x.coordinate_manager)
    assert torch.allclose(fn.apply(*args), out.F)
    assert ME.utils.gradcheck(fn, args)
    tr = ME.MinkowskiConvolutionTranspose(3, 2, kernel_size=3, stride=2, dimension=3).double()
    back = tr(out)
    fn_tr = ME.MinkowskiConvolutionTransposeFunction()
    assert torch.allclose(fn_tr(out.F, tr.kernel, tr.kernel_generator, None, out.coordinate_map_key,
                                back.coordinate_map_key, out.coordinate_manager), back.F)
    pool = ME.MinkowskiMaxPooling(kernel_size=2, stride=2, dimension=3)
    pooled = pool(x)
    assert torch.equal(ME.MinkowskiLocalPoolingFunction()(x.F, pool.pooling_mode, pool.kernel_generator,
                                                          x.coordinate_map_key, pooled.coordinate_map_key,
                                                          x.coordinate_manager), pooled.F)
    gpool = ME.MinkowskiGlobalSumPooling()
    g = gpool(x)
    feats = x.F.clone().requires_grad_()
    gfn = ME.MinkowskiGlobalPoolingFunction()
    assert torch.equal(gfn(feats, gpool.pooling_mode, x.coordinate_map_key, g.coordinate_map_key,
                           x.coordinate_manager), g.F)
    assert ME.utils.gradcheck(gfn, (feats, gpool.pooling_mode, x.coordinate_map_key, g.coordinate_map_key,
                                    x.coordinate_manager))
    bfn = ME.MinkowskiBroadcastFunction()
    assert torch.equal(bfn(x.F, g.F, ME.BroadcastMode.ELEMENTWISE_MULTIPLICATION, x.coordinate_map_key,
                           g.coordinate_map_key, x.coordinate_manager), ME.MinkowskiBroadcastMultiplication()(x, g).F)
    inorm = ME.MinkowskiInstanceNormFunction()(feats, x.coordinate_map_key, None, x.coordinate_manager)
    for b in x.C[:, 0].unique():
        rows = x.C[:, 0] == b
        expected = (x.F[rows] - x.F[rows].mean(0)) / torch.sqrt(x.F[rows].var(0, unbiased=False) + 1e-8)
        assert torch.allclose(inorm[rows], expected)


def test_spmm_and_direct_max_pooling_functions():
    rows, cols = torch.IntTensor([0, 0, 1, 1]), torch.IntTensor([0, 1, 2, 3])
    mat = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    out = ME.spmm(rows, cols, torch.ones(4, dtype=torch.float64), [2, 4], mat)
    assert torch.allclose(out, torch.stack([mat[0] + mat[1], mat[2] + mat[3]]))
    avg = ME.MinkowskiSPMMAverageFunction()
    assert torch.allclose(avg.apply(rows, cols, [2, 4], mat), out / 2)
    assert ME.utils.gradcheck(avg, (rows, cols, [2, 4], mat))
    pooled = ME.MinkowskiDirectMaxPoolingFunction().apply(torch.IntTensor([0, 1, 2]), torch.IntTensor([0, 0, 2]),
                                                          torch.DoubleTensor([[1], [5], [3]]), 3)
    assert pooled.flatten().tolist() == [5, 0, 3]


def test_sync_batchnorm_conversion_keeps_parameters_and_runs_outside_ddp():
    net = torch.nn.Sequential(ME.MinkowskiLinear(4, 4), ME.MinkowskiBatchNorm(4), ME.MinkowskiReLU()).double()
    with torch.no_grad():
        net[1].bn.weight.fill_(2.0)
        net[1].bn.running_mean.fill_(0.5)
    synced = ME.MinkowskiSyncBatchNorm.convert_sync_batchnorm(net)
    assert isinstance(synced[1], ME.MinkowskiSyncBatchNorm) and isinstance(synced[1].bn, torch.nn.SyncBatchNorm)
    assert synced[1].bn.weight.tolist() == [2.0] * 4 and synced[1].bn.running_mean.tolist() == [0.5] * 4
    x = _tensor()
    synced.eval()
    reference = torch.nn.functional.batch_norm(net[0](x).F, synced[1].bn.running_mean, synced[1].bn.running_var,
                                               synced[1].bn.weight, synced[1].bn.bias, False, 0.0, 1e-5)
    assert torch.allclose(synced(x).F, torch.relu(reference))
    stable = ME.MinkowskiStableInstanceNorm(4).double()(x)
    assert stable.F.shape == x.F.shape


@pytest.mark.parametrize("D, stride", [(3, 1), (3, 2), (4, 1)])
def test_channelwise_conv_matches_a_per_channel_brute_force(D, stride):
    torch.manual_seed(D + stride)
    coords = torch.unique(torch.cat([torch.randint(0, 2, (40, 1)), torch.randint(0, 6, (40, D))], 1), dim=0).int()
    feats = torch.randn(len(coords), 3, dtype=torch.float64, requires_grad=True)
    x = ME.SparseTensor(feats, coords)
    layer = ME.MinkowskiChannelwiseConvolution(3, kernel_size=3, stride=stride, bias=True, dimension=D).double()
    out = layer(x)
    index = {tuple(c): n for n, c in enumerate(x.C.tolist())}
    expected = torch.zeros(len(out), 3, dtype=torch.float64)
    for n, o in enumerate(out.C.tolist()):
        for k, off in enumerate(layer.kernel_generator.offsets.tolist()):
            src = (o[0], *[o[d + 1] + off[d] for d in range(D)])
            if src in index:
                expected[n] += x.F[index[src]] * layer.kernel[k]
    assert torch.allclose(out.F, expected + layer.bias, atol=1e-10)
    assert torch.autograd.gradcheck(lambda f: layer(ME.SparseTensor(f, coordinate_map_key=x.coordinate_map_key,
                                                                    coordinate_manager=x.coordinate_manager)).F,
                                    (feats,))


def test_interpolation_layer_and_generative_gradients():
    coords = torch.IntTensor([[0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]])
    x = ME.SparseTensor(torch.DoubleTensor([[1.0], [2.0], [3.0], [4.0]]), coords)
    interp = ME.MinkowskiInterpolation(return_kernel_map=True, return_weights=True)
    values, (in_map, out_map), weights = interp(x, torch.DoubleTensor([[0, 0.5, 0.5], [0, 0.25, 0.0]]))
    assert values.flatten().tolist() == pytest.approx([2.5, 1.25])  # bilinear
    assert len(in_map) == len(out_map) == len(weights)
    coarse = ME.SparseTensor(torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
                             torch.IntTensor([[0, 0, 0], [0, 2, 2], [1, 2, 0]]), tensor_stride=2)
    gen = ME.MinkowskiGenerativeConvolutionTranspose(2, 2, kernel_size=2, stride=2, dimension=2).double()
    key, manager = coarse.coordinate_map_key, coarse.coordinate_manager
    out_key = gen(coarse).coordinate_map_key
    fn = ME.MinkowskiConvolutionTransposeFunction()
    assert torch.autograd.gradcheck(lambda f, w: fn(f, w, gen.kernel_generator, None, key, out_key, manager),
                                    (coarse.F, gen.kernel))
