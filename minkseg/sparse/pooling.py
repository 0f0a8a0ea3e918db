"""Local pooling (sum / average / max over a kernel region) and global pooling per batch sample.

Every layer takes ME's optional second argument: ``layer(input, coordinates)`` writes the output on an explicit
coordinate set (an int coordinate tensor, a CoordinateMapKey, or a SparseTensor whose set to use).
"""
from __future__ import annotations

from typing import Sequence

import enum

import torch
from torch import nn

from minkseg.sparse.convolution import _make_generator
from minkseg.sparse.kernel import KernelGenerator
from minkseg.sparse.ops import sparse_pool
from minkseg.sparse.tensor import SparseTensor, explicit_output_key
from minkseg.sparse.tensor_base import Tensor

__all__ = ["PoolingMode", "MinkowskiGlobalPooling", "MinkowskiSumPooling", "MinkowskiAvgPooling", "MinkowskiMaxPooling", "MinkowskiPoolingTranspose",
           "MinkowskiGlobalSumPooling", "MinkowskiGlobalAvgPooling", "MinkowskiGlobalMaxPooling"]


class PoolingMode(enum.Enum):
    """ME's pooling modes. The *_DEFAULT / *_KERNEL / *_PYTORCH_INDEX variants pick ME backend kernels; here each
    global variant is the same reduction."""

    LOCAL_SUM_POOLING = 0
    LOCAL_AVG_POOLING = 1
    LOCAL_MAX_POOLING = 2
    GLOBAL_SUM_POOLING_DEFAULT = 3
    GLOBAL_AVG_POOLING_DEFAULT = 4
    GLOBAL_MAX_POOLING_DEFAULT = 5
    GLOBAL_SUM_POOLING_KERNEL = 6
    GLOBAL_AVG_POOLING_KERNEL = 7
    GLOBAL_MAX_POOLING_KERNEL = 8
    GLOBAL_SUM_POOLING_PYTORCH_INDEX = 9
    GLOBAL_AVG_POOLING_PYTORCH_INDEX = 10
    GLOBAL_MAX_POOLING_PYTORCH_INDEX = 11


class _LocalPooling(nn.Module):
    mode = "sum"
    is_transpose = False
    pooling_mode = PoolingMode.LOCAL_SUM_POOLING

    def __init__(self, kernel_size: int | Sequence[int] = -1, stride: int | Sequence[int] = 1,
                 dilation: int | Sequence[int] = 1, kernel_generator: KernelGenerator | None = None,
                 dimension: int | None = None) -> None:
        super().__init__()
        self.kernel_generator = _make_generator(kernel_size, stride, dilation, kernel_generator, dimension,
                                                self.is_transpose)
        self.dimension = self.kernel_generator.dimension

    def forward(self, input: SparseTensor, coordinates: object = None) -> SparseTensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor, got {type(input).__name__}")
        manager, key, gen = input.coordinate_manager, input.coordinate_map_key, self.kernel_generator
        if coordinates is not None:
            stride = [t // s if self.is_transpose else t * s for t, s in zip(key.tensor_stride, gen.kernel_stride)]
            out_key = explicit_output_key(input, coordinates, stride)
        elif all(s == 1 for s in gen.kernel_stride):
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
    pooling_mode = PoolingMode.LOCAL_AVG_POOLING


class MinkowskiMaxPooling(_LocalPooling):
    mode = "max"
    pooling_mode = PoolingMode.LOCAL_MAX_POOLING


class MinkowskiPoolingTranspose(_LocalPooling):
    """Un-pooling: copies each coarse feature to the finer sites it covers (sum over the transposed map)."""

    mode = "sum"
    is_transpose = True


_GLOBAL_MODES = {
    PoolingMode.GLOBAL_SUM_POOLING_DEFAULT: "sum", PoolingMode.GLOBAL_SUM_POOLING_KERNEL: "sum",
    PoolingMode.GLOBAL_SUM_POOLING_PYTORCH_INDEX: "sum", PoolingMode.GLOBAL_AVG_POOLING_DEFAULT: "avg",
    PoolingMode.GLOBAL_AVG_POOLING_KERNEL: "avg", PoolingMode.GLOBAL_AVG_POOLING_PYTORCH_INDEX: "avg",
    PoolingMode.GLOBAL_MAX_POOLING_DEFAULT: "max", PoolingMode.GLOBAL_MAX_POOLING_KERNEL: "max",
    PoolingMode.GLOBAL_MAX_POOLING_PYTORCH_INDEX: "max",
}


def global_pool(features: torch.Tensor, batch: torch.Tensor, batches: torch.Tensor, mode: str) -> torch.Tensor:
    """Sum / average / max of the rows of each batch index in ``batches`` (ascending), one output row each."""
    row = torch.searchsorted(batches, batch)
    n_out = batches.numel()
    if mode == "max":
        empty = torch.zeros(n_out, features.shape[1], dtype=features.dtype, device=features.device)
        return empty.scatter_reduce(0, row[:, None].expand(-1, features.shape[1]), features, reduce="amax",
                                    include_self=False)
    pooled = torch.zeros(n_out, features.shape[1], dtype=features.dtype, device=features.device)
    pooled = pooled.index_add(0, row, features)
    if mode == "avg":
        pooled = pooled / torch.bincount(row, minlength=n_out).clamp_(min=1).to(features.dtype)[:, None]
    return pooled


class MinkowskiGlobalPooling(nn.Module):
    """One output row per batch index present (ascending; batches {0, 2} give 2 rows, as ME's origin map), on
    the origin coordinates (batch, 0, ..., 0). Takes a SparseTensor or a TensorField. ME's default mode: average."""

    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_AVG_POOLING_PYTORCH_INDEX) -> None:
        super().__init__()
        if mode not in _GLOBAL_MODES:
            raise ValueError(f"MinkowskiGlobalPooling needs a GLOBAL_* PoolingMode, got {mode!r}")
        self.pooling_mode = mode

    def forward(self, input: Tensor, coordinates: object = None) -> SparseTensor:
        if not isinstance(input, Tensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor or TensorField, got {type(input).__name__}")
        manager = input.coordinate_manager
        if coordinates is not None:
            out_key = explicit_output_key(input, coordinates, [0] * input.D)  # type: ignore[arg-type]
        else:
            out_key = manager.origin_of(input.coordinate_map_key)
        batches = manager.get_coordinates(out_key)[:, 0].long()
        batch = input.C[:, 0]
        batch = torch.round(batch).long() if batch.is_floating_point() else batch.long()
        pooled = global_pool(input.F, batch, batches, _GLOBAL_MODES[self.pooling_mode])
        return SparseTensor(pooled, coordinate_map_key=out_key, coordinate_manager=manager)

    def extra_repr(self) -> str:
        return f"mode={self.pooling_mode.name}"


class MinkowskiGlobalSumPooling(MinkowskiGlobalPooling):
    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_SUM_POOLING_PYTORCH_INDEX) -> None:
        super().__init__(mode)


class MinkowskiGlobalAvgPooling(MinkowskiGlobalPooling):
    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_AVG_POOLING_PYTORCH_INDEX) -> None:
        super().__init__(mode)


class MinkowskiGlobalMaxPooling(MinkowskiGlobalPooling):
    def __init__(self, mode: PoolingMode = PoolingMode.GLOBAL_MAX_POOLING_PYTORCH_INDEX) -> None:
        super().__init__(mode)
