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


# Offsets are processed in groups whose gathered rows x channels stay under this many elements (64 MiB of
# float32): one gather and one scatter per group instead of one per offset. Few large ops matter on the CPU, where
# every op is an OpenMP fork/join that stalls badly when cores are shared (data workers, other jobs), and on CUDA,
# where they are kernel launches; the budget keeps the transient gathered copies bounded on huge scenes.
_GROUP_ELEMENTS = 1 << 24


def _offset_groups(kmap: KernelMap, width: int) -> list[tuple[list[int], list[tuple[int, int]], torch.Tensor,
                                                                torch.Tensor]]:
    """Non-identity offsets grouped under the element budget: (offsets, row ranges, input rows, output rows)."""
    budget = max(1, _GROUP_ELEMENTS // max(width, 1))
    cache = kmap.__dict__.setdefault("_groups", {})
    if budget in cache:
        return cache[budget]
    groups, current, total = [], [], 0
    for k, rows in enumerate(kmap.in_maps):
        if kmap.identity[k] or rows.numel() == 0:
            continue
        if current and total + rows.numel() > budget:
            groups.append(current)
            current, total = [], 0
        current.append(k)
        total += rows.numel()
    if current:
        groups.append(current)
    built = []
    for ks in groups:
        bounds, start = [], 0
        for k in ks:
            bounds.append((start, start + kmap.in_maps[k].numel()))
            start = bounds[-1][1]
        in_rows = torch.cat([kmap.in_maps[k] for k in ks]) if len(ks) > 1 else kmap.in_maps[ks[0]]
        out_rows = torch.cat([kmap.out_maps[k] for k in ks]) if len(ks) > 1 else kmap.out_maps[ks[0]]
        built.append((ks, bounds, in_rows, out_rows))
    cache[budget] = built
    return built


class _SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        ctx.save_for_backward(features, kernel)
        ctx.kmap = kmap
        acc = accumulation_dtype(features.dtype)
        c_in, c_out = kernel.shape[1], kernel.shape[2]
        out = torch.zeros(kmap.n_out, c_out, dtype=acc, device=features.device)
        for k in range(kernel.shape[0]):
            if kmap.identity[k]:
                out += torch.mm(features, kernel[k]).to(acc)
        for ks, bounds, in_rows, out_rows in _offset_groups(kmap, max(c_in, c_out)):
            gathered = features.index_select(0, in_rows)
            products = torch.empty(in_rows.numel(), c_out, dtype=features.dtype, device=features.device)
            for k, (lo, hi) in zip(ks, bounds):
                torch.mm(gathered[lo:hi], kernel[k], out=products[lo:hi])
            out.index_add_(0, out_rows, products.to(acc))
        return out.to(features.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, kernel = ctx.saved_tensors
        kmap: KernelMap = ctx.kmap
        need_input, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_out = grad_out.contiguous().to(features.dtype)
        acc = accumulation_dtype(features.dtype)
        c_in, c_out = kernel.shape[1], kernel.shape[2]
        grad_in = torch.zeros(features.shape, dtype=acc, device=features.device) if need_input else None
        grad_kernel = torch.zeros(kernel.shape, dtype=acc, device=kernel.device) if need_kernel else None
        for k in range(kernel.shape[0]):
            if kmap.identity[k]:
                if need_kernel:
                    grad_kernel[k] = torch.mm(features.t(), grad_out).to(acc)
                if need_input:
                    grad_in += torch.mm(grad_out, kernel[k].t()).to(acc)
        for ks, bounds, in_rows, out_rows in _offset_groups(kmap, max(c_in, c_out)):
            grads = grad_out.index_select(0, out_rows)
            inputs = features.index_select(0, in_rows) if need_kernel else None
            contrib = torch.empty(in_rows.numel(), c_in, dtype=features.dtype, device=features.device) \
                if need_input else None
            for k, (lo, hi) in zip(ks, bounds):
                if need_kernel:
                    grad_kernel[k] = torch.mm(inputs[lo:hi].t(), grads[lo:hi]).to(acc)
                if need_input:
                    torch.mm(grads[lo:hi], kernel[k].t(), out=contrib[lo:hi])
            if need_input:
                grad_in.index_add_(0, in_rows, contrib.to(acc))
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
