"""ME's squeeze-excitation blocks (``MinkowskiEngine.modules.senet_block``): per-sample channel gates from a global
average, multiplied back onto every row. ME's SE blocks pass ``D=`` to a base class that takes ``dimension=`` (a
TypeError in ME 0.5.4); here both spellings work."""
from __future__ import annotations

from torch import nn

from minkseg.sparse.broadcast import MinkowskiBroadcastMultiplication
from minkseg.sparse.modules.resnet_block import BasicBlock, Bottleneck
from minkseg.sparse.pointwise import MinkowskiLinear, MinkowskiReLU, MinkowskiSigmoid
from minkseg.sparse.pooling import MinkowskiGlobalPooling
from minkseg.sparse.tensor import SparseTensor

__all__ = ["SELayer", "SEBasicBlock", "SEBottleneck"]


class SELayer(nn.Module):
    def __init__(self, channel: int, reduction: int = 16, D: int = -1) -> None:
        super().__init__()
        self.fc = nn.Sequential(MinkowskiLinear(channel, channel // reduction), MinkowskiReLU(inplace=True),
                                MinkowskiLinear(channel // reduction, channel), MinkowskiSigmoid())
        self.pooling = MinkowskiGlobalPooling()
        self.broadcast_mul = MinkowskiBroadcastMultiplication()

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.broadcast_mul(x, self.fc(self.pooling(x)))


class SEBasicBlock(BasicBlock):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, reduction: int = 16, D: int = -1, dimension: int = -1) -> None:
        super().__init__(inplanes, planes, stride=stride, dilation=dilation, downsample=downsample,
                         dimension=dimension if dimension > 0 else D)
        self.se = SELayer(planes, reduction=reduction, D=D)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.se(self.norm2(self.conv2(out)))
        out += self.downsample(x) if self.downsample is not None else x
        return self.relu(out)


class SEBottleneck(Bottleneck):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, D: int = 3, reduction: int = 16, dimension: int = -1) -> None:
        super().__init__(inplanes, planes, stride=stride, dilation=dilation, downsample=downsample,
                         dimension=dimension if dimension > 0 else D)
        self.se = SELayer(planes * self.expansion, reduction=reduction, D=D)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.se(self.norm3(self.conv3(out)))
        out += self.downsample(x) if self.downsample is not None else x
        return self.relu(out)
