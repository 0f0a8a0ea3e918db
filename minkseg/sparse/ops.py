"""Gather-GEMM-scatter convolution as one autograd Function, plus map-driven pooling.

A custom Function (instead of letting autograd trace the per-offset gathers) is what keeps memory flat: autograd
would keep every gathered [pairs, C] copy alive until backward, which for a 27-offset conv on 300k voxels is
several times the size of the features themselves. Backward here re-gathers from the saved inputs instead.
Half-precision inputs are multiplied in their own dtype (tensor cores on CUDA) and accumulated in float32.
"""
from __future__ import annotations

import torch

from minkseg.sparse.coordinates import KernelMap

__all__ = ["sparse_conv", "sparse_pool", "accumulation_dtype"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 sums go through float32: thousands of small products lose too much in half precision."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        ctx.save_for_backward(features, kernel)
        ctx.kmap = kmap
        acc = accumulation_dtype(features.dtype)
        out = torch.zeros(kmap.n_out, kernel.shape[2], dtype=acc, device=features.device)
        for k in range(kernel.shape[0]):
            in_rows, out_rows = kmap.in_maps[k], kmap.out_maps[k]
            if in_rows.numel() == 0:
                continue
            if kmap.identity[k]:
                out += torch.mm(features, kernel[k]).to(acc)
            else:
                out.index_add_(0, out_rows, torch.mm(features.index_select(0, in_rows), kernel[k]).to(acc))
        return out.to(features.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, kernel = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        need_input, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous().to(features.dtype)
        acc = accumulation_dtype(features.dtype)
        grad_in = torch.zeros(features.shape, dtype=acc, device=features.device) if need_input else None
        grad_kernel = torch.zeros(kernel.shape, dtype=acc, device=kernel.device) if need_kernel else None
        for k in range(kernel.shape[0]):
            in_rows, out_rows = kmap.in_maps[k], kmap.out_maps[k]
            if in_rows.numel() == 0:
                continue
            if kmap.identity[k]:
                g, x = grad_out, features
            else:
                g = grad_out.index_select(0, out_rows)
                x = features.index_select(0, in_rows) if need_kernel else None
            if need_kernel:
                grad_kernel[k] = torch.mm(x.t(), g).to(acc)
            if need_input:
                contrib = torch.mm(g, kernel[k].t()).to(acc)
                if kmap.identity[k]:
                    grad_in += contrib
                else:
                    grad_in.index_add_(0, in_rows, contrib)
        return (grad_in.to(features.dtype) if need_input else None,
                grad_kernel.to(kernel.dtype) if need_kernel else None, None)


def sparse_conv(features: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """out[j] = sum_k sum_{(i, j) in map_k} features[i] @ kernel[k]; kernel is [K, C_in, C_out]."""
    if kernel.shape[0] != len(kmap.in_maps):
        raise ValueError(f"kernel has {kernel.shape[0]} offsets but the kernel map has {len(kmap.in_maps)}")
    if features.device.type != "cpu" and torch.is_autocast_enabled(features.device.type):
        dtype = torch.get_autocast_dtype(features.device.type)
        features, kernel = features.to(dtype), kernel.to(dtype)
        with torch.autocast(features.device.type, enabled=False):
            return _SparseConvFunction.apply(features, kernel, kmap)
    kernel = kernel.to(features.dtype)
    return _SparseConvFunction.apply(features, kernel, kmap)


def sparse_pool(features: torch.Tensor, kmap: KernelMap, mode: str) -> torch.Tensor:
    """Sum / average / max over each output's active neighbours (average divides by how many are active, as ME)."""
    in_rows = torch.cat(kmap.in_maps)
    out_rows = torch.cat(kmap.out_maps)
    gathered = features.index_select(0, in_rows)
    if mode == "max":
        index = out_rows[:, None].expand(-1, features.shape[1])
        empty = torch.zeros(kmap.n_out, features.shape[1], dtype=features.dtype, device=features.device)
        return empty.scatter_reduce(0, index, gathered, reduce="amax", include_self=False)
    acc = accumulation_dtype(features.dtype)
    out = torch.zeros(kmap.n_out, features.shape[1], dtype=acc, device=features.device)
    out = out.index_add(0, out_rows, gathered.to(acc))
    if mode == "avg":
        count = torch.bincount(out_rows, minlength=kmap.n_out).clamp_(min=1).to(acc)
        out = out / count[:, None]
    elif mode != "sum":
        raise ValueError(f"unknown pooling mode {mode!r}")
    return out.to(features.dtype)
