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
        kmap = manager.kernel_map(key, out_key, gen, is_transpose=self.is_transpose)
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
        features, batch = input.F, input.C[:, 0].long()
        n_batch = int(batch.max()) + 1
        if self.mode == "max":
            index = batch[:, None].expand(-1, features.shape[1])
            empty = torch.zeros(n_batch, features.shape[1], dtype=features.dtype, device=features.device)
            pooled = empty.scatter_reduce(0, index, features, reduce="amax", include_self=False)
        else:
            pooled = torch.zeros(n_batch, features.shape[1], dtype=features.dtype, device=features.device)
            pooled = pooled.index_add(0, batch, features)
            if self.mode == "avg":
                pooled = pooled / torch.bincount(batch, minlength=n_batch).clamp_(min=1).to(features.dtype)[:, None]
        coords = torch.zeros(n_batch, input.D + 1, dtype=torch.int32, device=features.device)
        coords[:, 0] = torch.arange(n_batch, dtype=torch.int32, device=features.device)
        manager = input.coordinate_manager
        key = manager.insert(coords, input.tensor_stride, tag=f"global:{input.coordinate_map_key.tag}:{n_batch}")
        return SparseTensor(pooled, coordinate_map_key=key, coordinate_manager=manager)


class MinkowskiGlobalSumPooling(_GlobalPooling):
    mode = "sum"


class MinkowskiGlobalAvgPooling(_GlobalPooling):
    mode = "avg"


class MinkowskiGlobalMaxPooling(_GlobalPooling):
    mode = "max"
