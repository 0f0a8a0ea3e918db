"""Broadcast a per-sample vector (a global pooling's output: one row per batch index) back onto every row of a
sparse tensor: copy, add, multiply or concatenate, as ME's broadcast layers (squeeze-excitation, global context)."""
from __future__ import annotations

import enum

import torch
from torch import nn

from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse.tensor_base import CoordinatesMismatchError, Tensor

__all__ = ["BroadcastMode", "broadcast_rows", "MinkowskiBroadcast", "MinkowskiBroadcastAddition", "MinkowskiBroadcastMultiplication",
           "MinkowskiBroadcastConcatenation"]


class BroadcastMode(enum.Enum):
    ELEMENTWISE_ADDITON = 0  # ME's spelling
    ELEMENTWISE_MULTIPLICATION = 1


def broadcast_rows(input: Tensor, glob: SparseTensor) -> torch.Tensor:
    """``glob``'s feature row for every row of ``input``, matched by batch index (a batch ``glob`` lacks raises)."""
    if input.coordinate_manager is not glob.coordinate_manager:
        raise CoordinatesMismatchError("broadcast: both tensors must share one coordinate manager")
    glob_batch = glob.C[:, 0].long()
    batch = input.C[:, 0]
    batch = torch.round(batch).long() if batch.is_floating_point() else batch.long()
    size = int(max(int(batch.max()) if batch.numel() else 0, int(glob_batch.max()) if glob_batch.numel() else 0)) + 1
    row_of = torch.full((size,), -1, dtype=torch.long, device=glob_batch.device)
    row_of[glob_batch] = torch.arange(glob_batch.numel(), device=glob_batch.device)
    rows = row_of[batch]
    if (rows < 0).any():
        raise ValueError("broadcast: the global tensor has no row for some batch index of the input")
    return glob.F[rows]


class MinkowskiBroadcast(nn.Module):
    """``broadcast(x, glob)``: ``glob``'s features copied onto ``x``'s coordinates."""

    def forward(self, input: Tensor, input_glob: SparseTensor) -> Tensor:
        return input.replace_features(broadcast_rows(input, input_glob))


class MinkowskiBroadcastAddition(nn.Module):
    """``x.F + glob.F[batch of each row]``."""

    operation_type = BroadcastMode.ELEMENTWISE_ADDITON

    def forward(self, input: Tensor, input_glob: SparseTensor) -> Tensor:
        return input.replace_features(input.F + broadcast_rows(input, input_glob))


class MinkowskiBroadcastMultiplication(nn.Module):
    """``x.F * glob.F[batch of each row]`` (squeeze-excitation's channel gates)."""

    operation_type = BroadcastMode.ELEMENTWISE_MULTIPLICATION

    def forward(self, input: Tensor, input_glob: SparseTensor) -> Tensor:
        return input.replace_features(input.F * broadcast_rows(input, input_glob))


class MinkowskiBroadcastConcatenation(nn.Module):
    """``[x.F, glob.F[batch of each row]]`` along channels."""

    def forward(self, input: Tensor, input_glob: SparseTensor) -> Tensor:
        return input.replace_features(torch.cat([input.F, broadcast_rows(input, input_glob)], 1))
