"""Every engine layer against a dense oracle (values only at active sites), forward and gradients, fp32."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import minkseg.sparse as ME
from tests.sparse_oracle import dense_grid, dense_pool, dense_weight, random_sparse_coords, values_at

SIZE = 8


def _input(cin: int, seed: int = 0, multiple: int = 1, stride: int = 1) -> ME.SparseTensor:
    coords = random_sparse_coords(2, SIZE, 0.3, seed=seed, multiple=multiple)
    g = torch.Generator().manual_seed(seed + 100)
    feats = torch.randn(coords.shape[0], cin, generator=g).requires_grad_(True)
    return ME.SparseTensor(feats, coords, tensor_stride=stride)


def _dense_conv(grid: torch.Tensor, layer, scale: int) -> torch.Tensor:
    """conv3d with ME's offsets: pad by the kernel's reach on each side, stride and dilation as the layer."""
    weight, lo = dense_weight(layer)
    gen = layer.kernel_generator
    dil = gen.kernel_dilation
    extent = [weight.shape[2 + d] for d in range(3)]
    pad = []
    for d in reversed(range(3)):
        left = int(-lo[d]) * dil[d]
        pad += [left, (extent[d] - 1) * dil[d] - left + gen.kernel_stride[d]]
    return F.conv3d(F.pad(grid, pad), weight, stride=list(gen.kernel_stride), dilation=list(dil))


def _check_grads(x: ME.SparseTensor, out: torch.Tensor, dense_in: torch.Tensor, dense_out_active: torch.Tensor,
                 params: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Same random cotangent through both paths: input grads at active sites and weight grads must match."""
    g = torch.Generator().manual_seed(7)
    cot = torch.randn(out.shape, generator=g, dtype=out.dtype)
    grads = torch.autograd.grad((out * cot).sum(), [x.F] + [p for p, _ in params])
    dense_grads = torch.autograd.grad((dense_out_active * cot).sum(), [dense_in] + [d for _, d in params])
    torch.testing.assert_close(grads[0], values_at(dense_grads[0], x.C, x.tensor_stride), rtol=1e-5, atol=1e-5)
    for got, want in zip(grads[1:], dense_grads[1:]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _kernel_grad_view(layer, dense_w: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """Gather a dense weight's rows into the layer's [K, in, out] kernel order (for comparing gradients)."""
    offsets = layer.kernel_offsets
    lo = offsets.min(0).values
    rows = []
    for off in offsets:
        w = dense_w[(slice(None), slice(None)) + tuple((off - lo).tolist())]
        rows.append(w if transpose else w.t())
    stacked = torch.stack(rows)
    return stacked if layer.kernel.dim() == 3 else stacked[0]


@pytest.mark.parametrize("kernel_size,stride,dilation,bias", [
    (3, 1, 1, False), (3, 1, 2, True), (1, 1, 1, True), (2, 1, 1, False), (5, 1, 1, False),
    (2, 2, 1, False), (3, 2, 1, True), ([3, 1, 3], [2, 1, 2], 1, False),
])
def test_convolution_matches_dense_conv3d(kernel_size, stride, dilation, bias):
    x = _input(4)
    layer = ME.MinkowskiConvolution(4, 5, kernel_size, stride=stride, dilation=dilation, bias=bias, dimension=3)
    out = layer(x)
    grid = dense_grid(x, SIZE).detach().requires_grad_(True)
    weight, _ = dense_weight(layer)
    weight = weight.detach().requires_grad_(True)
    gen = layer.kernel_generator

    def dense_forward(w):
        lo = layer.kernel_offsets.min(0).values
        pad = []
        for d in reversed(range(3)):
            left = int(-lo[d]) * gen.kernel_dilation[d]
            pad += [left, (w.shape[2 + d] - 1) * gen.kernel_dilation[d] + gen.kernel_stride[d]]
        return F.conv3d(F.pad(grid, pad), w, stride=list(gen.kernel_stride), dilation=list(gen.kernel_dilation))

    dense_out = dense_forward(weight)
    expected = values_at(dense_out, out.C, out.tensor_stride)
    if bias:
        expected = expected + layer.bias
    torch.testing.assert_close(out.F, expected, rtol=1e-5, atol=1e-5)
    stride_t = torch.tensor(gen.kernel_stride)
    want_coords = torch.unique(torch.cat([x.C[:, :1], (x.C[:, 1:] // stride_t) * stride_t], 1), dim=0)
    assert torch.equal(torch.unique(out.C, dim=0), want_coords)

    g = torch.Generator().manual_seed(7)
    cot = torch.randn(out.F.shape, generator=g)
    gx, gk = torch.autograd.grad((out.F * cot).sum(), [x.F, layer.kernel])
    dgrid, dweight = torch.autograd.grad((expected * cot).sum(), [grid, weight])
    torch.testing.assert_close(gx, values_at(dgrid, x.C, x.tensor_stride), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gk, _kernel_grad_view(layer, dweight), rtol=1e-5, atol=1e-5)


def test_convolution_on_strided_input_uses_tensor_stride():
    """On a stride-2 set, offsets are scaled by the tensor stride: a 3^3 conv reads neighbours 2 apart."""
    x = _input(3, seed=3, multiple=2, stride=2)
    layer = ME.MinkowskiConvolution(3, 4, 3, dimension=3)
    out = layer(x)
    grid = dense_grid(x, SIZE)
    expected = values_at(_dense_conv(grid, layer, 2), out.C, out.tensor_stride)
    torch.testing.assert_close(out.F, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,stride", [(2, 2), (3, 2), (3, 1)])
def test_transposed_convolution_matches_dense_conv_transpose3d(kernel_size, stride):
    fine = _input(3, seed=1)
    down = ME.MinkowskiConvolution(3, 4, kernel_size, stride=stride, dimension=3)(fine)
    coarse = ME.SparseTensor(torch.randn(down.F.shape[0], 4).requires_grad_(True),
                             coordinate_map_key=down.coordinate_map_key, coordinate_manager=down.coordinate_manager)
    layer = ME.MinkowskiConvolutionTranspose(4, 2, kernel_size, stride=stride, bias=True, dimension=3)
    out = layer(coarse)
    assert out.coordinate_map_key == fine.coordinate_map_key  # back on the stored finer coordinates
    weight, lo = dense_weight(layer, transpose=True)
    weight = weight.detach().requires_grad_(True)
    grid = dense_grid(coarse, SIZE).detach().requires_grad_(True)
    dense_out = F.conv_transpose3d(grid, weight, stride=stride)
    # conv_transpose3d writes coarse_index * stride + (offset - lo); ME writes to coarse + offset (fine units)
    c = out.C.long()
    expected = dense_out[(c[:, 0], slice(None)) + tuple(c[:, 1 + d] - lo[d] for d in range(3))] + layer.bias
    torch.testing.assert_close(out.F, expected, rtol=1e-5, atol=1e-5)
    g = torch.Generator().manual_seed(7)
    cot = torch.randn(out.F.shape, generator=g)
    gx, gk = torch.autograd.grad((out.F * cot).sum(), [coarse.F, layer.kernel])
    dgrid, dweight = torch.autograd.grad((expected * cot).sum(), [grid, weight])
    torch.testing.assert_close(gx, values_at(dgrid, coarse.C, coarse.tensor_stride), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gk, _kernel_grad_view(layer, dweight, transpose=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,layer_cls", [("avg", ME.MinkowskiAvgPooling), ("max", ME.MinkowskiMaxPooling),
                                            ("sum", ME.MinkowskiSumPooling)])
@pytest.mark.parametrize("kernel_size,stride", [(2, 2), (3, 1), (3, 2)])
def test_pooling_matches_dense_pooling(mode, layer_cls, kernel_size, stride):
    x = _input(3, seed=2)
    layer = layer_cls(kernel_size, stride, dimension=3)
    out = layer(x)
    grid = dense_grid(x, SIZE).detach().requires_grad_(True)
    mask = dense_grid(x.replace_features(torch.ones(x.F.shape[0], 1)), SIZE)
    dense_out = dense_pool(grid, mask, layer, mode)
    expected = values_at(dense_out, out.C, out.tensor_stride)
    torch.testing.assert_close(out.F, expected, rtol=1e-5, atol=1e-5)
    cot = torch.randn(out.F.shape, generator=torch.Generator().manual_seed(7))
    (gx,) = torch.autograd.grad((out.F * cot).sum(), [x.F])
    (dgrid,) = torch.autograd.grad((expected * cot).sum(), [grid])
    torch.testing.assert_close(gx, values_at(dgrid, x.C, x.tensor_stride), rtol=1e-5, atol=1e-5)


def test_global_pooling_per_sample():
    x = _input(3, seed=4)
    batch = x.C[:, 0].long()
    for layer, reduce in [(ME.MinkowskiGlobalAvgPooling(), "mean"), (ME.MinkowskiGlobalMaxPooling(), "amax"),
                          (ME.MinkowskiGlobalSumPooling(), "sum")]:
        out = layer(x)
        for b in range(2):
            rows = x.F[batch == b]
            want = {"mean": rows.mean(0), "amax": rows.max(0).values, "sum": rows.sum(0)}[reduce]
            torch.testing.assert_close(out.F[out.C[:, 0] == b][0], want, rtol=1e-5, atol=1e-5)


def test_pointwise_layers_keep_coordinates_and_match_torch():
    x = _input(6, seed=5)
    bn = ME.MinkowskiBatchNorm(6)
    torch.testing.assert_close(bn(x).F, torch.nn.functional.batch_norm(
        x.F, None, None, bn.bn.weight, bn.bn.bias, training=True), rtol=1e-5, atol=1e-5)
    assert bn(x).coordinate_map_key == x.coordinate_map_key
    torch.testing.assert_close(ME.MinkowskiReLU()(x).F, torch.relu(x.F))
    lin = ME.MinkowskiLinear(6, 2)
    torch.testing.assert_close(lin(x).F, lin.linear(x.F))
    drop = ME.MinkowskiDropout(0.5).eval()
    torch.testing.assert_close(drop(x).F, x.F)
    both = ME.cat(x, ME.MinkowskiReLU()(x))
    assert both.F.shape == (x.F.shape[0], 12)
    inorm = ME.MinkowskiInstanceNorm(6)(x)
    for b in range(2):
        rows = inorm.F[x.C[:, 0] == b]
        torch.testing.assert_close(rows.mean(0), torch.zeros(6), atol=1e-5, rtol=0)


def test_cat_refuses_tensors_on_different_coordinates():
    x = _input(2)
    y = ME.MinkowskiConvolution(2, 2, 2, stride=2, dimension=3)(x)
    with pytest.raises(ValueError, match="share coordinates"):
        ME.cat(x, y)
