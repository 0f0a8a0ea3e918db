"""Layers that act on each row's features alone (norm, activations, dropout, linear) and channel concatenation.

They never touch coordinates, so each one applies a torch module to ``F`` and keeps the coordinates: a SparseTensor
stays on its coordinate map key, a TensorField on its points. Each holds its torch module under ME's attribute name
(``.bn``, ``.linear``) so ME state dicts load.
"""
from __future__ import annotations

import torch
from torch import nn

from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse.tensor_base import CoordinatesMismatchError, Tensor

__all__ = ["MinkowskiBatchNorm", "MinkowskiInstanceNorm", "MinkowskiReLU", "MinkowskiLeakyReLU", "MinkowskiELU",
           "MinkowskiGELU", "MinkowskiSigmoid", "MinkowskiTanh", "MinkowskiSoftmax", "MinkowskiDropout",
           "MinkowskiLinear", "MinkowskiNetwork", "cat"]


def _check_sparse(layer: nn.Module, input: object) -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"{type(layer).__name__} expects a SparseTensor or TensorField, got {type(input).__name__}")
    return input


class MinkowskiBatchNorm(nn.Module):
    """Batch norm over all active sites of the batch (nn.SyncBatchNorm.convert_sync_batchnorm converts ``.bn``)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=affine,
                                 track_running_stats=track_running_stats)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return _check_sparse(self, input).replace_features(self.bn(input.F))


class MinkowskiInstanceNorm(nn.Module):
    """Normalises each sample of the batch on its own (statistics per batch index), with an affine transform."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_features))
        self.bias = nn.Parameter(torch.zeros(1, num_features))

    def forward(self, input: SparseTensor) -> SparseTensor:
        features = _check_sparse(self, input).F
        batch = torch.round(input.C[:, 0]).long() if input.C.is_floating_point() else input.C[:, 0].long()
        n_batch = int(batch.max()) + 1 if batch.numel() else 0
        count = torch.bincount(batch, minlength=n_batch).clamp_(min=1).to(features.dtype)[:, None]
        mean = torch.zeros(n_batch, features.shape[1], dtype=features.dtype, device=features.device)
        mean = mean.index_add(0, batch, features) / count
        centred = features - mean[batch]
        var = torch.zeros_like(mean).index_add(0, batch, centred * centred) / count
        normed = centred / torch.sqrt(var[batch] + self.eps)
        return input.replace_features(normed * self.weight + self.bias)


class _Pointwise(nn.Module):
    """Wraps a torch module that maps [N, C] -> [N, C']."""

    module_attr = "module"

    def forward(self, input: SparseTensor) -> SparseTensor:
        return _check_sparse(self, input).replace_features(getattr(self, self.module_attr)(input.F))


class MinkowskiReLU(_Pointwise):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.module = nn.ReLU(inplace=inplace)


class MinkowskiLeakyReLU(_Pointwise):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.module = nn.LeakyReLU(negative_slope, inplace=inplace)


class MinkowskiELU(_Pointwise):
    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.module = nn.ELU(alpha, inplace=inplace)


class MinkowskiGELU(_Pointwise):
    def __init__(self) -> None:
        super().__init__()
        self.module = nn.GELU()


class MinkowskiSigmoid(_Pointwise):
    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Sigmoid()


class MinkowskiTanh(_Pointwise):
    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Tanh()


class MinkowskiSoftmax(_Pointwise):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.module = nn.Softmax(dim=dim)


class MinkowskiDropout(_Pointwise):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.module = nn.Dropout(p, inplace=inplace)


class MinkowskiLinear(_Pointwise):
    module_attr = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)


class MinkowskiNetwork(nn.Module):
    """Base class of ME networks: an nn.Module that knows its spatial dimension."""

    def __init__(self, D: int) -> None:
        super().__init__()
        self.D = D


def cat(*sparse_tensors: Tensor) -> Tensor:
    """Concatenate channels of tensors on the same coordinates (a U-Net skip connection); fields work too."""
    if len(sparse_tensors) == 1 and isinstance(sparse_tensors[0], (list, tuple)):
        sparse_tensors = tuple(sparse_tensors[0])
    if not sparse_tensors:
        raise ValueError("cat needs at least one SparseTensor")
    first = sparse_tensors[0]
    for other in sparse_tensors[1:]:
        if type(other) is not type(first) or other.coordinate_manager is not first.coordinate_manager or \
                other.coordinate_map_key != first.coordinate_map_key:
            raise CoordinatesMismatchError("cat: tensors must share coordinates (same manager and coordinate_map_key); "
                             f"got {first.coordinate_map_key} and {other.coordinate_map_key}")
    return first.replace_features(torch.cat([t.F for t in sparse_tensors], 1))


# ME's MinkowskiOps module also holds the dense/sparse conversions; ported code imports them from there.
from minkseg.sparse.conversion import (MinkowskiToDenseTensor, MinkowskiToFeature,  # noqa: E402,F401
                                       MinkowskiToSparseTensor, dense_coordinates, to_sparse, to_sparse_all)
