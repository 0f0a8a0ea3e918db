"""Layers that change which coordinates a tensor has: pruning (keep a subset) and union (merge sets by summing)."""
from __future__ import annotations

import torch
from torch import nn

from minkseg.sparse.keys import CoordinateMapKey
from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse.tensor_base import CoordinatesMismatchError

__all__ = ["MinkowskiPruning", "MinkowskiUnion"]


class MinkowskiPruning(nn.Module):
    """``pruning(x, keep)``: the rows of ``x`` where the boolean mask ``keep`` [N] is true, on a new coordinate set
    of the same tensor stride and manager (so later layers can still reach the original sets). Gradients flow to the
    kept rows; an all-false mask gives a zero-row tensor."""

    def forward(self, input: SparseTensor, mask: torch.Tensor) -> SparseTensor:
        if not isinstance(input, SparseTensor):
            raise TypeError(f"MinkowskiPruning expects a SparseTensor, got {type(input).__name__}")
        mask = torch.as_tensor(mask, device=input.device)
        if mask.dtype != torch.bool or mask.shape != (len(input),):
            raise ValueError(f"MinkowskiPruning: the mask must be a bool tensor of shape [{len(input)}], got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        manager = input.coordinate_manager
        stride = input.coordinate_map_key.tensor_stride
        key = manager.insert(input.C[mask], stride, tag=manager._fresh_key(stride, "pruned").tag)
        return SparseTensor(input.F[mask], coordinate_map_key=key, coordinate_manager=manager)


class MinkowskiUnion(nn.Module):
    """``union(a, b, ...)``: every coordinate of the inputs once (the first input's rows, then each next input's new
    rows), with the features of the inputs that hold it summed. All inputs: one manager, one tensor stride."""

    def forward(self, *inputs: SparseTensor) -> SparseTensor:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) < 2:
            raise ValueError("MinkowskiUnion needs at least two sparse tensors")
        manager = inputs[0].coordinate_manager
        if any(x.coordinate_manager is not manager for x in inputs):
            raise CoordinatesMismatchError("MinkowskiUnion: all inputs must share one coordinate manager")
        out_key = CoordinateMapKey(inputs[0].D + 1)
        maps = manager.union_map([x.coordinate_map_key for x in inputs], out_key)
        out = torch.zeros(manager.size(out_key), inputs[0].F.shape[1], dtype=inputs[0].dtype, device=inputs[0].device)
        for x, (in_rows, out_rows) in zip(inputs, maps):
            out = out.index_add(0, out_rows, x.F[in_rows])
        return SparseTensor(out, coordinate_map_key=out_key, coordinate_manager=manager)
