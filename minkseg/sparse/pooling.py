"""Local pooling (sum / average / max over a kernel region) and global pooling per batch sample."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from minkseg.sparse.convolution import _make_generator
from minkseg.sparse.kernel import KernelGenerator
from minkseg.sparse.ops import sparse_pool
from minkseg.sparse.tensor import SparseTensor

__all__ = ["MinkowskiSumPooling", "MinkowskiAvgPooling", "MinkowskiMaxPooling", "MinkowskiPoolingTranspose",
           "MinkowskiGlobalSumPooling", "MinkowskiGlobalAvgPooling", "MinkowskiGlobalMaxPooling"]


class _LocalPooling(nn.Module):
    mode = "sum"
    is_transpose = False

    def __init__(self, kernel_size: int | Sequence[int] = -1, stride: int | Sequence[int] = 1,
                 dilation: int | Sequence[int] = 1, kernel_generator: KernelGenerator | None = None,
                 dimension: int | None = None) -> None:
        super().__init__()
        self.kernel_generator = _make_generator(kernel_size, stride, dilation, kernel_generator, dimension,
                                                self.is_transpose)
        self.dimension = self.kernel_generator.dimension

    def forward(self, input: SparseTensor) -> SparseTensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor, got {type(input).__name__}")
        manager, key, gen = input.coordinate_manager, input.coordinate_map_key, self.kernel_generator
        if all(s == 1 for s in gen.kernel_stride):
            out_key = key
        elif self.is_transpose:
            out_key = manager.transposed_key(key, gen)
        else:
            out_key = manager.stride_key(key, gen.kernel_stride)
        kmap = manager.kernel_map_for(key, out_key, gen, is_transpose=self.is_transpose)
        return SparseTensor(sparse_pool(input.F, kmap, self.mode), coordinate_map_key=out_key,
                            coordinate_manager=manager)

    def extra_repr(self) -> str:
        return repr(self.kernel_generator)


class MinkowskiSumPooling(_LocalPooling):
    mode = "sum"


class MinkowskiAvgPooling(_LocalPooling):
    """Average over the *active* neighbours only (empty sites are not zeros), as in ME."""

    mode = "avg"


class MinkowskiMaxPooling(_LocalPooling):
    mode = "max"


class MinkowskiPoolingTranspose(_LocalPooling):
    """Un-pooling: copies each coarse feature to the finer sites it covers (sum over the transposed map)."""

    mode = "sum"
    is_transpose = True


class _GlobalPooling(nn.Module):
    mode = "sum"

    def forward(self, input: SparseTensor) -> SparseTensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor, got {type(input).__name__}")
        manager, features = input.coordinate_manager, input.F
        out_key = manager.origin_of(input.coordinate_map_key)
        batches = manager.get_coordinates(out_key)[:, 0].long()
        # one row per batch index present, ascending (ME's origin map): batches {0, 2} give 2 rows
        row = torch.searchsorted(batches, input.C[:, 0].long())
        n_out = batches.numel()
        if self.mode == "max":
            index = row[:, None].expand(-1, features.shape[1])
            empty = torch.zeros(n_out, features.shape[1], dtype=features.dtype, device=features.device)
            pooled = empty.scatter_reduce(0, index, features, reduce="amax", include_self=False)
        else:
            pooled = torch.zeros(n_out, features.shape[1], dtype=features.dtype, device=features.device)
            pooled = pooled.index_add(0, row, features)
            if self.mode == "avg":
                pooled = pooled / torch.bincount(row, minlength=n_out).clamp_(min=1).to(features.dtype)[:, None]
        return SparseTensor(pooled, coordinate_map_key=out_key, coordinate_manager=manager)


class MinkowskiGlobalSumPooling(_GlobalPooling):
    mode = "sum"


class MinkowskiGlobalAvgPooling(_GlobalPooling):
    mode = "avg"


class MinkowskiGlobalMaxPooling(_GlobalPooling):
    mode = "max"
