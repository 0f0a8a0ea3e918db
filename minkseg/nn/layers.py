"""Convolution and norm factories shared by the blocks and the U-Nets.

The original code chose a kernel *region* per layer role (cube for the stem / down / up convs, a space-cube x
time-cross HYBRID for the residual blocks in 4D). Centralising that choice here keeps every network's layers
consistent and lets the checkpoint importer ask one place which region a layer was built with.
"""
from __future__ import annotations

from typing import Sequence

import minkseg.sparse as ME

from minkseg.errors import ModelError

__all__ = ["spatial", "block_axis_types", "conv", "conv_tr", "batch_norm", "SUPPORTED_DIMENSIONS"]

# 3-D scenes and 4-D (space + time) sequences: the only layouts the paper's networks are defined for.
SUPPORTED_DIMENSIONS = (3, 4)


def spatial(size: int, D: int) -> int | list[int]:
    """A size on the three spatial axes only: 4-D stem / down / up convs never mix frames (time size 1)."""
    if D == 3:
        return size
    if D == 4:
        return [size, size, size, 1]
    raise ModelError(f"networks are defined for D in {SUPPORTED_DIMENSIONS}, got D={D}")


def block_axis_types(D: int) -> tuple[ME.RegionType, ...]:
    """Cube on the spatial axes, cross on time: 27 + 2 = 29 offsets in 4-D (the paper's hybrid kernel)."""
    return (ME.RegionType.HYPER_CUBE,) * 3 + (ME.RegionType.HYPER_CROSS,) * (D - 3)


def _generator(kernel_size: int | Sequence[int], stride: int | Sequence[int], dilation: int | Sequence[int],
               region: str, D: int, is_transpose: bool = False) -> ME.KernelGenerator:
    if region == "cube":
        return ME.KernelGenerator(kernel_size, stride, dilation, is_transpose=is_transpose,
                                  region_type=ME.RegionType.HYPER_CUBE, dimension=D)
    if region == "hybrid":
        return ME.KernelGenerator(kernel_size, stride, dilation, is_transpose=is_transpose,
                                  region_type=ME.RegionType.HYBRID, axis_types=block_axis_types(D), dimension=D)
    raise ModelError(f"unknown kernel region {region!r}; use 'cube' or 'hybrid'")


def conv(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
         dilation: int | Sequence[int] = 1, bias: bool = False, region: str = "cube", D: int = 3
         ) -> ME.MinkowskiConvolution:
    """A sparse convolution whose region is named by role ('cube' or 'hybrid'), as in the original models."""
    generator = _generator(kernel_size, stride, dilation, region, D)
    return ME.MinkowskiConvolution(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                   dilation=dilation, bias=bias, kernel_generator=generator, dimension=D)


def conv_tr(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int],
            bias: bool = False, D: int = 3) -> ME.MinkowskiConvolutionTranspose:
    """The U-Net's up-sampling conv (always a cube region, like the original)."""
    generator = _generator(kernel_size, stride, 1, "cube", D, is_transpose=True)
    return ME.MinkowskiConvolutionTranspose(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                            bias=bias, kernel_generator=generator, dimension=D)


def batch_norm(channels: int, momentum: float) -> ME.MinkowskiBatchNorm:
    """ME batch norm (weights under ``.bn`` so original state dicts load)."""
    return ME.MinkowskiBatchNorm(channels, momentum=momentum)
