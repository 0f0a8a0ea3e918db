"""ME's autograd function classes under ME's names and call signatures, over this engine's one implementation.

ME code calls them as ``MinkowskiConvolutionFunction().apply(features, kernel, kernel_generator, convolution_mode,
in_key, out_key, manager)`` and hands instances to ``gradcheck`` (which calls the instance). Each class here is a
thin adapter: ``apply`` resolves ME's arguments (keys, managers, modes) and runs the same differentiable
gather-GEMM-scatter / pooling / broadcast code the layers use, so there is no second implementation to drift.
"""
from __future__ import annotations

import enum
from typing import Any, Sequence

import torch

from minkseg.sparse.broadcast import BroadcastMode
from minkseg.sparse.coordinates import CoordinateManager
from minkseg.sparse.kernel import KernelGenerator
from minkseg.sparse.keys import CoordinateMapKey
from minkseg.sparse.ops import sparse_conv, sparse_pool
from minkseg.sparse.pooling import _GLOBAL_MODES, PoolingMode, global_pool

__all__ = ["BroadcastMode", "ConvolutionMode", "MinkowskiConvolutionFunction", "MinkowskiConvolutionTransposeFunction",
           "MinkowskiLocalPoolingFunction", "MinkowskiLocalPoolingTransposeFunction", "MinkowskiGlobalPoolingFunction",
           "MinkowskiBroadcastFunction", "MinkowskiInstanceNormFunction", "MinkowskiInterpolationFunction",
           "MinkowskiPruningFunction", "MinkowskiUnionFunction", "MinkowskiSPMMFunction",
           "MinkowskiSPMMAverageFunction", "MinkowskiDirectMaxPoolingFunction", "MinkowskiInterpolation", "spmm",
           "instance_norm"]


class ConvolutionMode(enum.Enum):
    """ME's GEMM backend choice; accepted and ignored (one path here)."""

    DEFAULT = 0
    DIRECT_GEMM = 1
    COPY_GEMM = 2


_LOCAL_MODES = {PoolingMode.LOCAL_SUM_POOLING: "sum", PoolingMode.LOCAL_AVG_POOLING: "avg",
                PoolingMode.LOCAL_MAX_POOLING: "max"}


class _Adapter:
    """Callable instances (``fn(*args)`` is ``fn.apply(*args)``), as ME's function objects are used."""

    def __call__(self, *args: Any) -> Any:
        return self.apply(*args)


def _is_set(key: CoordinateMapKey | None) -> bool:
    return key is not None and key.is_key_set()


def _fill(target: CoordinateMapKey | None, key: CoordinateMapKey) -> CoordinateMapKey:
    """ME fills an unset output key in place; do the same so callers can read it afterwards."""
    if target is not None and not target.is_key_set():
        target._set(key.tensor_stride, key.tag)
    return key


def _kernel_3d(kernel: torch.Tensor) -> torch.Tensor:
    return kernel if kernel.dim() == 3 else kernel.unsqueeze(0)


def _resolve_out_key(in_key: CoordinateMapKey, out_key: CoordinateMapKey | None, generator: KernelGenerator,
                     manager: CoordinateManager, transpose: bool) -> CoordinateMapKey:
    """The given output key, else the set the layer itself would write to (filled into an unset key, as ME)."""
    if _is_set(out_key):
        return out_key
    if all(s == 1 for s in generator.kernel_stride):
        resolved = in_key
    elif transpose:
        resolved = manager.transposed_key(in_key, generator)
    else:
        resolved = manager.stride_key(in_key, generator.kernel_stride)
    return _fill(out_key, resolved)


def _conv(features: torch.Tensor, kernel: torch.Tensor, generator: KernelGenerator, in_key: CoordinateMapKey,
          out_key: CoordinateMapKey | None, manager: CoordinateManager, transpose: bool) -> torch.Tensor:
    out_key = _resolve_out_key(in_key, out_key, generator, manager, transpose)
    kmap = manager.kernel_map_for(in_key, out_key, generator, is_transpose=transpose)
    return sparse_conv(features, _kernel_3d(kernel), kmap)


class MinkowskiConvolutionFunction(_Adapter):
    transpose = False

    @classmethod
    def apply(cls, input_features: torch.Tensor, kernel_weights: torch.Tensor, kernel_generator: KernelGenerator,
              convolution_mode: Any = None, in_coordinate_map_key: CoordinateMapKey | None = None,
              out_coordinate_map_key: CoordinateMapKey | None = None,
              coordinate_manager: CoordinateManager | None = None) -> torch.Tensor:
        return _conv(input_features, kernel_weights, kernel_generator, in_coordinate_map_key,
                     out_coordinate_map_key, coordinate_manager, transpose=cls.transpose)


class MinkowskiConvolutionTransposeFunction(MinkowskiConvolutionFunction):
    transpose = True


def _local_pool(features: torch.Tensor, mode: PoolingMode, generator: KernelGenerator, in_key: CoordinateMapKey,
                out_key: CoordinateMapKey | None, manager: CoordinateManager, transpose: bool) -> torch.Tensor:
    if mode not in _LOCAL_MODES:
        raise ValueError(f"local pooling needs a LOCAL_* PoolingMode, got {mode!r}")
    out_key = _resolve_out_key(in_key, out_key, generator, manager, transpose)
    kmap = manager.kernel_map_for(in_key, out_key, generator, is_transpose=transpose)
    return sparse_pool(features, kmap, _LOCAL_MODES[mode])


class MinkowskiLocalPoolingFunction(_Adapter):
    transpose = False

    @classmethod
    def apply(cls, input_features: torch.Tensor, pooling_mode: PoolingMode, kernel_generator: KernelGenerator,
              in_coordinate_map_key: CoordinateMapKey, out_coordinate_map_key: CoordinateMapKey | None = None,
              coordinate_manager: CoordinateManager | None = None) -> torch.Tensor:
        return _local_pool(input_features, pooling_mode, kernel_generator, in_coordinate_map_key,
                           out_coordinate_map_key, coordinate_manager, transpose=cls.transpose)


class MinkowskiLocalPoolingTransposeFunction(MinkowskiLocalPoolingFunction):
    transpose = True


def _batch_column(manager: CoordinateManager, key: CoordinateMapKey) -> torch.Tensor:
    if key in manager:
        return manager.get_coordinates(key)[:, 0].long()
    return torch.round(manager.get_coordinate_field(key)[:, 0]).long()


class MinkowskiGlobalPoolingFunction(_Adapter):
    @staticmethod
    def apply(input_features: torch.Tensor, pooling_mode: PoolingMode, in_coordinate_map_key: CoordinateMapKey,
              out_coordinate_map_key: CoordinateMapKey | None = None,
              coordinate_manager: CoordinateManager | None = None) -> torch.Tensor:
        if pooling_mode not in _GLOBAL_MODES:
            raise ValueError(f"global pooling needs a GLOBAL_* PoolingMode, got {pooling_mode!r}")
        out_key = out_coordinate_map_key if _is_set(out_coordinate_map_key) else _fill(
            out_coordinate_map_key, coordinate_manager.origin_of(in_coordinate_map_key))
        batches = coordinate_manager.get_coordinates(out_key)[:, 0].long()
        return global_pool(input_features, _batch_column(coordinate_manager, in_coordinate_map_key), batches,
                           _GLOBAL_MODES[pooling_mode])


def _broadcast_rows(glob_features: torch.Tensor, in_key: CoordinateMapKey, glob_key: CoordinateMapKey,
                    manager: CoordinateManager) -> torch.Tensor:
    batch = _batch_column(manager, in_key)
    glob_batch = manager.get_coordinates(glob_key)[:, 0].long()
    row_of = torch.full((int(max(batch.max(), glob_batch.max())) + 1,), -1, dtype=torch.long, device=batch.device)
    row_of[glob_batch] = torch.arange(glob_batch.numel(), device=batch.device)
    return glob_features[row_of[batch]]


class MinkowskiBroadcastFunction(_Adapter):
    @staticmethod
    def apply(input_features: torch.Tensor, input_features_global: torch.Tensor, operation_type: BroadcastMode,
              in_coordinate_map_key: CoordinateMapKey, glob_coordinate_map_key: CoordinateMapKey,
              coordinate_manager: CoordinateManager) -> torch.Tensor:
        rows = _broadcast_rows(input_features_global, in_coordinate_map_key, glob_coordinate_map_key,
                               coordinate_manager)
        if getattr(operation_type, "name", "") == "ELEMENTWISE_ADDITON":
            return input_features + rows
        if getattr(operation_type, "name", "") == "ELEMENTWISE_MULTIPLICATION":
            return input_features * rows
        raise ValueError(f"unknown broadcast mode {operation_type!r}")


def instance_norm(features: torch.Tensor, batch: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean_b) / sqrt(var_b + eps) with the mean and (biased) variance of each batch index b, as ME."""
    batches = torch.unique(batch, sorted=True)
    row = torch.searchsorted(batches, batch)
    mean = global_pool(features, batch, batches, "avg")
    centred = features - mean[row]
    variance = global_pool(centred * centred, batch, batches, "avg")
    return centred / torch.sqrt(variance + eps)[row]


class MinkowskiInstanceNormFunction(_Adapter):
    @staticmethod
    def apply(in_feat: torch.Tensor, in_coords_key: CoordinateMapKey, glob_coords_key: CoordinateMapKey | None = None,
              coords_manager: CoordinateManager | None = None, gpooling_mode: PoolingMode | None = None
              ) -> torch.Tensor:
        return instance_norm(in_feat, _batch_column(coords_manager, in_coords_key))


class MinkowskiInterpolationFunction(_Adapter):
    @staticmethod
    def apply(input_features: torch.Tensor, tfield: torch.Tensor, in_coordinate_map_key: CoordinateMapKey,
              coordinate_manager: CoordinateManager | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features at tfield, in_map, out_map, weights)``: N-linear interpolation (missing corners give 0)."""
        rows, samples, weights = coordinate_manager.interpolation_map_weight(in_coordinate_map_key, tfield)
        out = torch.zeros(tfield.shape[0], input_features.shape[1], dtype=input_features.dtype,
                          device=input_features.device)
        out = out.index_add(0, samples, input_features[rows] * weights[:, None].to(input_features.dtype))
        return out, rows, samples, weights


class MinkowskiPruningFunction(_Adapter):
    @staticmethod
    def apply(in_feat: torch.Tensor, mask: torch.Tensor, in_coords_key: CoordinateMapKey | None = None,
              out_coords_key: CoordinateMapKey | None = None,
              coords_manager: CoordinateManager | None = None) -> torch.Tensor:
        return in_feat[mask.to(in_feat.device).bool()]


class MinkowskiUnionFunction(_Adapter):
    @staticmethod
    def apply(in_coords_keys: Sequence[CoordinateMapKey], out_coords_key: CoordinateMapKey | None,
              coordinate_manager: CoordinateManager, *in_feats: torch.Tensor) -> torch.Tensor:
        out_key = out_coords_key if out_coords_key is not None else CoordinateMapKey(coordinate_manager.D + 1)
        maps = coordinate_manager.union_map(list(in_coords_keys), out_key)
        out = torch.zeros(coordinate_manager.size(out_key), in_feats[0].shape[1], dtype=in_feats[0].dtype,
                          device=in_feats[0].device)
        for features, (in_rows, out_rows) in zip(in_feats, maps):
            out = out.index_add(0, out_rows, features[in_rows])
        return out


def spmm(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, size: Sequence[int], mat: torch.Tensor,
         is_sorted: bool = False, cuda_spmm_alg: Any = None) -> torch.Tensor:
    """``S @ mat`` for the sparse [size[0], size[1]] matrix S with entries ``vals`` at (rows, cols)."""
    rows, cols = rows.long().to(mat.device), cols.long().to(mat.device)
    out = torch.zeros(int(size[0]), mat.shape[1], dtype=mat.dtype, device=mat.device)
    return out.index_add(0, rows, mat[cols] * vals.to(mat.dtype)[:, None])


class MinkowskiSPMMFunction(_Adapter):
    @staticmethod
    def apply(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, size: Sequence[int],
              mat: torch.Tensor, cuda_spmm_alg: Any = None) -> torch.Tensor:
        return spmm(rows, cols, vals, size, mat)


class MinkowskiSPMMAverageFunction(_Adapter):
    @staticmethod
    def apply(rows: torch.Tensor, cols: torch.Tensor, size: Sequence[int], mat: torch.Tensor,
              cuda_spmm_alg: Any = None) -> torch.Tensor:
        """Row-averaging ``S @ mat`` with unit entries: each output row is the mean of its columns' rows."""
        rows = rows.long().to(mat.device)
        counts = torch.bincount(rows, minlength=int(size[0])).clamp_(min=1).to(mat.dtype)
        return spmm(rows, cols, torch.ones(rows.numel(), dtype=mat.dtype, device=mat.device), size, mat) / \
            counts[:, None]


class MinkowskiDirectMaxPoolingFunction(_Adapter):
    @staticmethod
    def apply(in_map: torch.Tensor, out_map: torch.Tensor, in_feat: torch.Tensor, out_nrows: int,
              is_sorted: bool = False) -> torch.Tensor:
        """Max over the rows ``in_map`` sends to each of ``out_nrows`` outputs ``out_map`` (0 for an empty one)."""
        in_map, out_map = in_map.long().to(in_feat.device), out_map.long().to(in_feat.device)
        out = torch.zeros(int(out_nrows), in_feat.shape[1], dtype=in_feat.dtype, device=in_feat.device)
        return out.scatter_reduce(0, out_map[:, None].expand(-1, in_feat.shape[1]), in_feat[in_map], reduce="amax",
                                  include_self=False)


class MinkowskiInterpolation(torch.nn.Module):
    """``interp(x, tfield)``: x's features N-linearly interpolated at the continuous coordinates ``tfield``
    [M, 1+D]; with ``return_kernel_map`` also ``(in_map, out_map)``, with ``return_weights`` the weights."""

    def __init__(self, return_kernel_map: bool = False, return_weights: bool = False) -> None:
        super().__init__()
        self.return_kernel_map, self.return_weights = return_kernel_map, return_weights

    def forward(self, input: Any, tfield: torch.Tensor) -> Any:
        out, in_map, out_map, weights = MinkowskiInterpolationFunction.apply(
            input.F, tfield.to(input.device, input.dtype), input.coordinate_map_key, input.coordinate_manager)
        result: list[Any] = [out]
        if self.return_kernel_map:
            result.append((in_map, out_map))
        if self.return_weights:
            result.append(weights)
        return result[0] if len(result) == 1 else tuple(result)
