"""ME's residual blocks (``MinkowskiEngine.modules.resnet_block``), with ME's constructor arguments and attribute
names (``conv1``, ``norm1``, ... ``downsample``) so ME networks and their state dicts work unchanged."""
from __future__ import annotations

from torch import nn

from minkseg.sparse.convolution import MinkowskiConvolution
from minkseg.sparse.pointwise import MinkowskiBatchNorm, MinkowskiReLU
from minkseg.sparse.tensor import SparseTensor

__all__ = ["BasicBlock", "Bottleneck"]


class BasicBlock(nn.Module):
    """3^3 conv (stride, dilation) - BN - ReLU - 3^3 conv (dilation) - BN, plus the (downsampled) input, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, bn_momentum: float = 0.1, dimension: int = -1) -> None:
        super().__init__()
        if dimension <= 0:
            raise ValueError("BasicBlock needs dimension=D")
        self.conv1 = MinkowskiConvolution(inplanes, planes, kernel_size=3, stride=stride, dilation=dilation,
                                          dimension=dimension)
        self.norm1 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = MinkowskiConvolution(planes, planes, kernel_size=3, stride=1, dilation=dilation,
                                          dimension=dimension)
        self.norm2 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.relu = MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def _residual(self, x: SparseTensor) -> SparseTensor:
        return self.downsample(x) if self.downsample is not None else x

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += self._residual(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1^3 conv - BN - ReLU - 3^3 conv (stride, dilation) - BN - ReLU - 1^3 conv to 4x planes - BN, plus the
    (downsampled) input, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, bn_momentum: float = 0.1, dimension: int = -1) -> None:
        super().__init__()
        if dimension <= 0:
            raise ValueError("Bottleneck needs dimension=D")
        self.conv1 = MinkowskiConvolution(inplanes, planes, kernel_size=1, dimension=dimension)
        self.norm1 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = MinkowskiConvolution(planes, planes, kernel_size=3, stride=stride, dilation=dilation,
                                          dimension=dimension)
        self.norm2 = MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv3 = MinkowskiConvolution(planes, planes * self.expansion, kernel_size=1, dimension=dimension)
        self.norm3 = MinkowskiBatchNorm(planes * self.expansion, momentum=bn_momentum)
        self.relu = MinkowskiReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        out += self.downsample(x) if self.downsample is not None else x
        return self.relu(out)
