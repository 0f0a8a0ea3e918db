"""Reference implementations the engine is checked against: dense torch ops on the densified grid, and a
brute-force per-site loop over a Python dict for any dimension and region."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import minkseg.sparse as ME


def random_sparse_coords(n_batch: int, size: int, density: float, D: int = 3, seed: int = 0,
                         multiple: int = 1) -> torch.Tensor:
    """Batch-first int32 coordinates of random active sites in [0, size)^D (times ``multiple``)."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for b in range(n_batch):
        grid = torch.rand((size,) * D, generator=g) < density
        idx = torch.nonzero(grid)
        parts.append(torch.cat([torch.full((idx.shape[0], 1), b), idx * multiple], 1))
    return torch.cat(parts).int()


def dense_weight(layer: torch.nn.Module, transpose: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's kernel as a dense conv weight, plus the per-axis minimum kernel offset (for padding)."""
    offsets = layer.kernel_offsets
    kernel = layer.kernel if layer.kernel.dim() == 3 else layer.kernel.unsqueeze(0)
    lo = offsets.min(0).values
    extent = (offsets.max(0).values - lo + 1).tolist()
    cin, cout = kernel.shape[1], kernel.shape[2]
    shape = [cin, cout] + extent if transpose else [cout, cin] + extent
    weight = torch.zeros(shape, dtype=kernel.dtype)
    for k, off in enumerate(offsets):
        idx = tuple((off - lo).tolist())
        weight[(slice(None), slice(None)) + idx] = kernel[k] if transpose else kernel[k].t()
    return weight, lo


def dense_grid(x: ME.SparseTensor, size: int) -> torch.Tensor:
    """[B, C, size...] grid in units of the tensor stride, anchored at coordinate 0."""
    D = x.D
    n_batch = int(x.C[:, 0].max()) + 1
    shape = torch.Size([n_batch, x.F.shape[1]] + [size] * D)
    return x.dense(shape=shape, min_coordinate=torch.zeros(D, dtype=torch.long))[0]


def values_at(dense: torch.Tensor, coords: torch.Tensor, stride: list[int]) -> torch.Tensor:
    """Rows of a dense [B, C, ...] grid at the given batch-first coordinates (divided by the stride)."""
    c = coords.long()
    idx = tuple((c[:, 1 + d] // stride[d]) for d in range(c.shape[1] - 1))
    return dense[(c[:, 0], slice(None)) + idx]


def brute_force_conv(in_coords: torch.Tensor, features: torch.Tensor, out_coords: torch.Tensor,
                     offsets: torch.Tensor, kernel: torch.Tensor, scale: list[int]) -> torch.Tensor:
    """out[j] = sum_k features[i] @ kernel[k] where in_coords[i] = out_coords[j] + offsets[k] * scale."""
    lookup = {tuple(c): i for i, c in enumerate(in_coords.tolist())}
    out = torch.zeros(out_coords.shape[0], kernel.shape[2], dtype=torch.float64)
    scale_t = torch.tensor(scale)
    for j, oc in enumerate(out_coords.tolist()):
        for k, off in enumerate(offsets):
            target = (oc[0],) + tuple((torch.tensor(oc[1:]) + off * scale_t).tolist())
            i = lookup.get(target)
            if i is not None:
                out[j] += features[i].double() @ kernel[k].double()
    return out


def dense_pool(grid: torch.Tensor, mask: torch.Tensor, layer: torch.nn.Module, mode: str) -> torch.Tensor:
    """Dense sum/avg/max pooling over active sites only, with ME's kernel offsets and stride."""
    gen = layer.kernel_generator
    offsets = gen.offsets
    lo = offsets.min(0).values
    hi = offsets.max(0).values
    dil = list(gen.kernel_dilation)
    pad = []
    for d in reversed(range(offsets.shape[1])):
        pad += [int(-lo[d]) * dil[d], int(hi[d]) * dil[d] + gen.kernel_stride[d]]
    ksize = (hi - lo + 1).tolist()
    stride = list(gen.kernel_stride)
    if mode == "max":
        filled = torch.where(mask.bool(), grid, torch.full_like(grid, float("-inf")))
        padded = F.pad(filled, pad, value=float("-inf"))
        return F.max_pool3d(padded, ksize, stride=stride, dilation=dil)
    ones = torch.ones([grid.shape[1], 1] + ksize, dtype=grid.dtype)
    summed = F.conv3d(F.pad(grid, pad), ones, stride=stride, dilation=dil, groups=grid.shape[1])
    if mode == "sum":
        return summed
    count = F.conv3d(F.pad(mask, pad), ones[:1], stride=stride, dilation=dil)
    return summed / count.clamp(min=1)
