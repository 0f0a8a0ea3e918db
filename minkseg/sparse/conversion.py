"""Between dense torch tensors, sparse tensors, fields and plain features (part of ME's ``MinkowskiOps``).

Dense tensors are [B, C, *spatial] ("BCXX..."); ``to_sparse`` keeps the sites whose channels are not all zero,
``to_sparse_all`` every site. Coordinates of a dense site are (batch, index_1, ..., index_D).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from minkseg.sparse.field import TensorField
from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse.tensor_base import Tensor

__all__ = ["dense_coordinates", "to_sparse", "to_sparse_all", "MinkowskiToSparseTensor", "MinkowskiToDenseTensor",
           "MinkowskiToFeature"]


def dense_coordinates(shape: torch.Size | Sequence[int]) -> torch.Tensor:
    """int32 coordinates [B * prod(spatial), 1+D] of every site of a [B, C, *spatial] tensor, in row-major order."""
    if len(shape) < 3:
        raise ValueError(f"dense_coordinates: shape must be batch x channel x spatial..., got {list(shape)}")
    axes = [torch.arange(int(s)) for s in [shape[0], *shape[2:]]]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], 1).int()


def to_sparse(x: torch.Tensor, format: str | None = None, coordinates: torch.Tensor | None = None,
              device: torch.device | str | None = None) -> SparseTensor:
    """The non-zero sites of a dense tensor (a site is zero when all its channels are). ``format`` names the axes,
    "B" (batch, first), "C" (channels, anywhere) and "X" (spatial), e.g. "BXXC" for channels-last."""
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise ValueError("to_sparse needs a torch.Tensor with batch, channel and at least one spatial axis")
    format = format or "BC" + "X" * (x.dim() - 2)
    if len(format) != x.dim() or format[0] != "B" or format.count("B") != 1 or format.count("C") != 1:
        raise ValueError(f"invalid format {format!r} for a {x.dim()}-axis tensor: 'B' first, one 'C', 'X' for the rest")
    channel_axis = format.index("C")
    channels_last = x.movedim(channel_axis, -1)
    sites = torch.nonzero(channels_last.abs().sum(-1) != 0)
    features = channels_last[tuple(sites.t())]
    return SparseTensor(features, coordinates=sites.int(), device=device if device is not None else x.device)


def to_sparse_all(dense_tensor: torch.Tensor, coordinates: torch.Tensor | None = None) -> SparseTensor:
    """Every site of a [B, C, *spatial] tensor (zeros included), optionally on precomputed ``dense_coordinates``."""
    if dense_tensor.dim() < 3:
        raise ValueError("to_sparse_all needs a [B, C, *spatial] tensor")
    if coordinates is None:
        coordinates = dense_coordinates(dense_tensor.shape)
    features = dense_tensor.movedim(1, -1).reshape(-1, dense_tensor.shape[1])
    return SparseTensor(features, coordinates.to(dense_tensor.device), device=dense_tensor.device)


class MinkowskiToSparseTensor(nn.Module):
    """A TensorField -> ``field.sparse()``; a dense tensor -> a SparseTensor on ``coordinates`` when given, else
    on its non-zero sites (``remove_zeros=True``) or on every site. This is ME's documented behaviour; ME 0.5.4's
    code inverts the test and keeps every site by default."""

    def __init__(self, remove_zeros: bool = True, coordinates: torch.Tensor | None = None) -> None:
        super().__init__()
        self.remove_zeros, self.coordinates = remove_zeros, coordinates

    def forward(self, input: TensorField | torch.Tensor) -> SparseTensor:
        if isinstance(input, TensorField):
            return input.sparse()
        if isinstance(input, torch.Tensor):
            if self.coordinates is not None or not self.remove_zeros:
                return to_sparse_all(input, self.coordinates)
            return to_sparse(input)
        raise TypeError(f"MinkowskiToSparseTensor takes a TensorField or a dense torch.Tensor, got {type(input).__name__}")


class MinkowskiToDenseTensor(nn.Module):
    """A SparseTensor -> its dense [B, C, *spatial] tensor (of ``shape`` when given)."""

    def __init__(self, shape: torch.Size | None = None) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, input: SparseTensor) -> torch.Tensor:
        return input.dense(shape=self.shape)[0]


class MinkowskiToFeature(nn.Module):
    """A SparseTensor or TensorField -> its feature matrix ``F``."""

    def forward(self, x: Tensor) -> torch.Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"MinkowskiToFeature takes a SparseTensor or TensorField, got {type(x).__name__}")
        return x.F
