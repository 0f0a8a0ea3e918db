"""Half-precision paths (float32 accumulation) and the CUDA path against the CPU float32 reference.

The CUDA cases run only where a GPU is present (they are skipped on CPU-only CI); the bfloat16 case also runs on
the CPU, so the mixed-precision code path is exercised everywhere.
"""
from __future__ import annotations

import pytest
import torch

import minkseg.sparse as ME
from tests.sparse_oracle import random_sparse_coords

CUDA = torch.cuda.is_available()


def _network_pass(device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A small down/up stack: returns output features and the gradients of input and every kernel."""
    torch.manual_seed(seed)
    layers = [ME.MinkowskiConvolution(4, 8, 3, dimension=3), ME.MinkowskiConvolution(8, 8, 2, stride=2, dimension=3),
              ME.MinkowskiConvolution(8, 8, 3, dimension=3),
              ME.MinkowskiConvolutionTranspose(8, 4, 2, stride=2, dimension=3)]
    coords = random_sparse_coords(2, 10, 0.3, seed=seed)
    feats = torch.randn(coords.shape[0], 4, generator=torch.Generator().manual_seed(seed))
    feats = feats.to(device, dtype).requires_grad_(True)
    x = ME.SparseTensor(feats, coords.to(device))
    for layer in layers:
        layer.to(device)
        x = layer(x)
    loss = (x.F.float() * torch.linspace(-1, 1, x.F.numel(), device=device).view_as(x.F)).sum()
    grads = torch.autograd.grad(loss, [feats] + [layer.kernel for layer in layers])
    return x.F.float().cpu(), [g.float().cpu() for g in grads]


def _assert_close_relative(got, want, tol):
    scale = want.abs().max().clamp(min=1e-6)
    assert ((got - want).abs().max() / scale).item() < tol


def test_bfloat16_on_cpu_matches_float32_reference():
    ref_out, ref_grads = _network_pass(torch.device("cpu"), torch.float32)
    out, grads = _network_pass(torch.device("cpu"), torch.bfloat16)
    _assert_close_relative(out, ref_out, 3e-2)
    for g, r in zip(grads, ref_grads):
        _assert_close_relative(g, r, 3e-2)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_cuda_matches_cpu_float32(dtype, tol):
    ref_out, ref_grads = _network_pass(torch.device("cpu"), torch.float32)
    out, grads = _network_pass(torch.device("cuda"), dtype)
    _assert_close_relative(out, ref_out, tol)
    for g, r in zip(grads, ref_grads):
        _assert_close_relative(g, r, tol)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_kernel_maps_stay_on_device():
    coords = random_sparse_coords(2, 10, 0.3).cuda()
    x = ME.SparseTensor(torch.randn(coords.shape[0], 2, device="cuda"), coords)
    kmap = x.coordinate_manager.kernel_map_for(x.coordinate_map_key, x.coordinate_map_key,
                                           ME.KernelGenerator(3, dimension=3))
    assert all(m.is_cuda for m in kmap.in_maps + kmap.out_maps)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_autocast_runs_convs_in_half_precision():
    coords = random_sparse_coords(1, 10, 0.3).cuda()
    x = ME.SparseTensor(torch.randn(coords.shape[0], 4, device="cuda"), coords)
    layer = ME.MinkowskiConvolution(4, 4, 3, dimension=3).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = layer(x)
    assert out.F.dtype == torch.bfloat16
