"""Kernel regions: which neighbour offsets a convolution or pooling layer reads, in MinkowskiEngine's order.

The order matters because ``layer.kernel[k]`` is the weight of offset ``k``: original ME checkpoints only load
correctly if our offsets come out in ME's order. Offsets here are *kernel-index* offsets; the coordinate manager
multiplies them by tensor stride x dilation when it builds a kernel map.
"""
from __future__ import annotations

import enum
from typing import Sequence

import torch

__all__ = ["RegionType", "KernelGenerator", "kernel_offsets", "to_tuple", "convert_to_int_list"]


class RegionType(enum.IntEnum):
    """ME's region types. HYBRID picks CUBE or CROSS per axis (the paper's 4D kernel: cube in space, cross in time)."""

    HYPER_CUBE = 0
    HYPER_CROSS = 1
    CUSTOM = 2
    HYBRID = 3


def to_tuple(value: int | Sequence[int], dimension: int, name: str) -> tuple[int, ...]:
    """Expand an int to one value per axis; reject per-axis lists of the wrong length with the argument's name."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, int):
        return (int(value),) * dimension
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return values * dimension
    if len(values) != dimension:
        raise ValueError(f"{name}={list(values)} has {len(values)} entries for a {dimension}-D layer")
    return values


def _axis_range(size: int) -> list[int]:
    """Odd sizes are centred (-K//2..K//2); even sizes start at 0 (0..K-1), as in ME."""
    if size <= 0:
        raise ValueError(f"kernel size must be >= 1, got {size}")
    return list(range(-(size // 2), size // 2 + 1)) if size % 2 == 1 else list(range(size))


def _cube(sizes: Sequence[int]) -> list[list[int]]:
    """All offsets of a box, first axis varying fastest."""
    offsets: list[list[int]] = [[]]
    for size in sizes:  # prepend later axes as slower-varying: build from the first axis outwards
        offsets = [prev + [v] for v in _axis_range(size) for prev in offsets]
    return offsets


def _cross_arm(dimension: int, axis: int, size: int) -> list[list[int]]:
    """One axis of a cross: +1..+r then -r..-1 (ME's order), zero on the other axes."""
    if size % 2 == 0:
        raise ValueError(f"cross regions need an odd kernel size, got {size}")
    radius = size // 2
    arm = []
    for v in list(range(1, radius + 1)) + list(range(-radius, 0)):
        off = [0] * dimension
        off[axis] = v
        arm.append(off)
    return arm


def _hybrid(kernel_size: Sequence[int], axis_types: Sequence[RegionType]) -> list[list[int]]:
    """ME's HYBRID expansion: start at the centre; each cube axis in turn appends every offset found so far moved
    by -r..-1, +1..+r along that axis; then each cross axis appends its own arm -r..-1, +1..+r alone."""
    dimension = len(kernel_size)
    offsets = [[0] * dimension]
    for axis, (size, kind) in enumerate(zip(kernel_size, axis_types)):
        if kind not in (RegionType.HYPER_CUBE, RegionType.HYPER_CROSS):
            raise ValueError(f"HYBRID axis_types must be HYPER_CUBE or HYPER_CROSS, got {kind!r}")
        if kind == RegionType.HYPER_CUBE:
            steps = [v for v in _axis_range(size) if v != 0] if size % 2 else list(range(1, size))
            grown = []
            for base in offsets:
                for v in steps:
                    moved = list(base)
                    moved[axis] = v
                    grown.append(moved)
            offsets += grown
    for axis, (size, kind) in enumerate(zip(kernel_size, axis_types)):
        if kind == RegionType.HYPER_CROSS and size > 1:
            if size % 2 == 0:
                raise ValueError(f"cross axes need an odd kernel size, got {size}")
            for v in _axis_range(size):
                if v != 0:
                    arm = [0] * dimension
                    arm[axis] = v
                    offsets.append(arm)
    return offsets


def kernel_offsets(
    kernel_size: Sequence[int],
    region_type: RegionType = RegionType.HYPER_CUBE,
    axis_types: Sequence[RegionType] | None = None,
    region_offsets: torch.Tensor | Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Kernel-index offsets [kernel_volume, D] (int64) of a region, in ME's order."""
    dimension = len(kernel_size)
    if region_type == RegionType.HYPER_CUBE:
        offsets = _cube(kernel_size)
    elif region_type == RegionType.HYPER_CROSS:
        offsets = [[0] * dimension]
        for axis, size in enumerate(kernel_size):
            offsets += _cross_arm(dimension, axis, size) if size > 1 else []
    elif region_type == RegionType.HYBRID:
        if axis_types is None or len(axis_types) != dimension:
            raise ValueError(f"HYBRID region needs axis_types with {dimension} entries, got {axis_types}")
        offsets = _hybrid(kernel_size, axis_types)
    elif region_type == RegionType.CUSTOM:
        if region_offsets is None:
            raise ValueError("CUSTOM region needs region_offsets [K, D]")
        custom = torch.as_tensor(region_offsets, dtype=torch.long)
        if custom.dim() != 2 or custom.shape[1] != dimension or custom.shape[0] == 0:
            raise ValueError(f"region_offsets must be [K, {dimension}], got shape {tuple(custom.shape)}")
        return custom.clone()
    else:
        raise ValueError(f"unknown region type {region_type!r}")
    return torch.tensor(offsets, dtype=torch.long).reshape(len(offsets), dimension)


class KernelGenerator:
    """Everything that defines a layer's neighbourhood, hashable so kernel maps can be cached by it."""

    def __init__(
        self,
        kernel_size: int | Sequence[int] = -1,
        stride: int | Sequence[int] = 1,
        dilation: int | Sequence[int] = 1,
        is_transpose: bool = False,
        region_type: RegionType = RegionType.HYPER_CUBE,
        region_offsets: torch.Tensor | Sequence[Sequence[int]] | None = None,
        axis_types: Sequence[RegionType] | None = None,
        dimension: int = -1,
        expand_coordinates: bool = False,
    ) -> None:
        if dimension <= 0:
            raise ValueError(f"KernelGenerator needs dimension >= 1, got {dimension}")
        if region_type == RegionType.CUSTOM and kernel_size == -1 and region_offsets is not None:
            kernel_size = 3
        self.dimension = dimension
        self.kernel_size = to_tuple(kernel_size, dimension, "kernel_size")
        self.kernel_stride = to_tuple(stride, dimension, "stride")
        self.kernel_dilation = to_tuple(dilation, dimension, "dilation")
        for name, vals in (("kernel_size", self.kernel_size), ("stride", self.kernel_stride),
                           ("dilation", self.kernel_dilation)):
            if any(v < 1 for v in vals):
                raise ValueError(f"{name} must be >= 1 on every axis, got {list(vals)}")
        self.is_transpose = is_transpose
        self.region_type = RegionType(region_type)
        self.axis_types = tuple(RegionType(t) for t in axis_types) if axis_types is not None else None
        self.expand_coordinates = expand_coordinates
        self.offsets = kernel_offsets(self.kernel_size, self.region_type, self.axis_types, region_offsets)
        self.kernel_volume = int(self.offsets.shape[0])
        self.region_key = (int(self.region_type), tuple(map(tuple, self.offsets.tolist())))

    def __repr__(self) -> str:
        return (f"KernelGenerator(kernel_size={list(self.kernel_size)}, stride={list(self.kernel_stride)}, "
                f"dilation={list(self.kernel_dilation)}, region_type={self.region_type.name}, "
                f"volume={self.kernel_volume}, dimension={self.dimension})")


def convert_to_int_list(arg: int | Sequence[int] | torch.Tensor, dimension: int) -> list[int]:
    """ME's ``MinkowskiCommon.convert_to_int_list``: one int per axis."""
    return list(to_tuple(arg, dimension, "argument"))
