"""Residual blocks of the Res16UNet family.

Attribute names (conv1, norm1, ..., downsample.0 / downsample.1) are part of the checkpoint format: the model
zoo's state dicts address weights as ``block1.0.conv1.kernel`` and ``block1.0.downsample.1.bn.weight``.
"""
from __future__ import annotations

from torch import nn

import minkseg.sparse as ME

from minkseg.nn.layers import batch_norm, conv

__all__ = ["BasicBlock", "Bottleneck", "make_stage"]


class BasicBlock(nn.Module):
    """Two 3-wide convs with BN; the residual is projected (1x1 conv + BN) when the width changes."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, region: str, D: int, bn_momentum: float,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv(inplanes, planes, kernel_size=3, region=region, D=D)
        self.norm1 = batch_norm(planes, bn_momentum)
        self.conv2 = conv(planes, planes, kernel_size=3, region=region, D=D)
        self.norm2 = batch_norm(planes, bn_momentum)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 reduce, 3-wide conv, 1x1 expand (x4): the 50/101-layer variants."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, region: str, D: int, bn_momentum: float,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv(inplanes, planes, kernel_size=1, D=D)
        self.norm1 = batch_norm(planes, bn_momentum)
        self.conv2 = conv(planes, planes, kernel_size=3, region=region, D=D)
        self.norm2 = batch_norm(planes, bn_momentum)
        self.conv3 = conv(planes, planes * self.expansion, kernel_size=1, D=D)
        self.norm3 = batch_norm(planes * self.expansion, bn_momentum)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def make_stage(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, count: int, region: str,
               D: int, block_bn_momentum: float, downsample_bn_momentum: float) -> nn.Sequential:
    """``count`` blocks at one resolution; only the first may change the width (hence the projection).

    The two momenta differ on purpose: the original ``_make_layer`` passed the configured momentum to the
    projection's BN but never to the blocks, whose norms kept 0.1.
    """
    width = planes * block.expansion
    downsample = None
    if inplanes != width:
        downsample = nn.Sequential(conv(inplanes, width, kernel_size=1, D=D),
                                   batch_norm(width, downsample_bn_momentum))
    blocks = [block(inplanes, planes, region, D, block_bn_momentum, downsample)]
    blocks += [block(width, planes, region, D, block_bn_momentum) for _ in range(1, count)]
    return nn.Sequential(*blocks)
