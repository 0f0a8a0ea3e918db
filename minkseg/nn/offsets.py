"""Kernel-offset orders of the code that wrote the original checkpoints, derived independently of our engine.

A kernel's first axis is indexed by offset, so a weights file is only meaningful together with the offset
order of the code that trained it. Two orders matter for the Res16UNet family (read from MinkowskiEngine's
v0.3-v0.5 ``convert_region_type`` and its C++ region iterator, re-expressed here):

* HYPER_CUBE: every offset of the box, first axis varying fastest; odd sizes centred (-k//2..k//2),
  even sizes 0..k-1 (a stride-2, size-2 kernel covers the cell and its +1 neighbour).
* HYBRID (expanded by ME into a custom list): start from the centre; for each cube axis in turn, append, for
  every offset already listed, its copies displaced along that axis (-1 then +1 for size 3); then append the
  cross arms (-1 then +1) of the cross axes. For a 3x3x3 cube: centre, -x, +x, -y, +y, (-x,-y), (-x,+y), ...

The checkpoint importer maps a file's rows onto our engine's rows by matching these offsets to
``layer.kernel_offsets``, so it does not depend on which order our engine happens to use.
"""
from __future__ import annotations

from typing import Sequence

import torch

import minkseg.sparse as ME

__all__ = ["me_cube_offsets", "me_hybrid_offsets", "row_permutation"]


def me_cube_offsets(kernel_size: Sequence[int]) -> torch.Tensor:
    """HYPER_CUBE offsets [volume, D] in ME's order (first axis fastest)."""
    axes = [list(range(-(k // 2), k // 2 + 1)) if k % 2 else list(range(k)) for k in kernel_size]
    grids = torch.meshgrid(*[torch.tensor(a) for a in reversed(axes)], indexing="ij")
    # meshgrid over reversed axes, flattened row-major, makes the *last* listed (our first) axis fastest
    return torch.stack([g.reshape(-1) for g in reversed(grids)], dim=1)


def _displacements(size: int) -> list[int]:
    """Non-centre positions of one axis, in increasing order, as ME's HYBRID expansion lists them."""
    centre = (size - 1) // 2
    return [position - centre for position in range(size) if position != centre]


def me_hybrid_offsets(kernel_size: Sequence[int], axis_types: Sequence[ME.RegionType]) -> torch.Tensor:
    """HYBRID offsets [volume, D] in the order ME's ``convert_region_type`` expands them."""
    dimension = len(kernel_size)
    offsets: list[list[int]] = [[0] * dimension]
    for axis, (size, kind) in enumerate(zip(kernel_size, axis_types)):
        if kind == ME.RegionType.HYPER_CUBE:
            grown = []
            for offset in offsets:
                for value in _displacements(size):
                    moved = list(offset)
                    moved[axis] = value
                    grown.append(moved)
            offsets += grown
    for axis, (size, kind) in enumerate(zip(kernel_size, axis_types)):
        if kind == ME.RegionType.HYPER_CROSS:
            for value in _displacements(size):
                arm = [0] * dimension
                arm[axis] = value
                offsets.append(arm)
    return torch.tensor(offsets, dtype=torch.long)


def row_permutation(file_offsets: torch.Tensor, layer_offsets: torch.Tensor) -> torch.Tensor | None:
    """Index ``p`` with ``file_rows[p]`` in the layer's order, or None when the two regions differ as sets."""
    if file_offsets.shape != layer_offsets.shape:
        return None
    position = {tuple(row): index for index, row in enumerate(file_offsets.tolist())}
    if len(position) != file_offsets.shape[0]:
        return None
    permutation = [position.get(tuple(row), -1) for row in layer_offsets.tolist()]
    if -1 in permutation or len(set(permutation)) != len(permutation):
        return None
    return torch.tensor(permutation, dtype=torch.long)
