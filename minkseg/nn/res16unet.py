"""The Res16UNet / MinkUNet family: a residual U-Net with four stride-2 levels (stride 16 at the bottom).

One class builds every variant from a ``UNetSpec`` (block type, blocks per stage, widths, dimension, kernel
region), because the original's dozens of subclasses differ only in those numbers. Module names follow the
original exactly (``conv0p1s1``, ``bn0``, ``block1``, ``convtr4p16s2``, ``bntr4``, ``final``) since they are the
keys of the model-zoo checkpoints.
"""
from __future__ import annotations

import torch
from torch import nn

import minkseg.sparse as ME

from minkseg.nn.blocks import BasicBlock, Bottleneck, make_stage
from minkseg.errors import ModelError
from minkseg.nn.layers import SUPPORTED_DIMENSIONS, batch_norm, conv, conv_tr, spatial
from minkseg.nn.specs import UNetSpec

__all__ = ["UNetSpec", "Res16UNet", "BLOCKS"]

BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
# STS config default for the stem / stage / up-sampling BNs; ME's examples keep torch's 0.1 everywhere.
_DEFAULT_BN_MOMENTUM = {"sts": 0.02, "me": 0.1}
# Blocks' own norms: 0.1 in both code bases (see make_stage).
_DEFAULT_BLOCK_BN_MOMENTUM = 0.1


class Res16UNet(ME.MinkowskiNetwork):
    """Encoder: stem + 4 x (stride-2 conv, BN, ReLU, blocks); decoder: 4 x (transposed conv, BN, ReLU, concat
    with the encoder feature of the same stride, blocks); then a 1x1 classifier with bias."""

    def __init__(self, spec: UNetSpec, in_channels: int, out_channels: int, D: int | None = None,
                 conv1_kernel_size: int | None = None, bn_momentum: float | None = None,
                 block_bn_momentum: float | None = None) -> None:
        D = spec.dimension if D is None else D
        if D not in SUPPORTED_DIMENSIONS:
            raise ModelError(f"{spec.name}: D must be one of {SUPPORTED_DIMENSIONS}, got D={D}")
        if spec.tesseract and D != 4:
            raise ModelError(f"{spec.name} is a 4-D network (full 3^4 kernels); build it with D=4")
        if spec.lineage == "me" and D != 3:
            raise ModelError(f"{spec.name} is MinkowskiEngine's 3-D example network; for 4-D use STRes16UNet* "
                             f"(or Res16UNet* with D=4)")
        if in_channels < 1 or out_channels < 1:
            raise ModelError(f"{spec.name}: in_channels and out_channels must be >= 1, "
                             f"got {in_channels} and {out_channels}")
        kernel = spec.conv1_kernel_size if conv1_kernel_size is None else int(conv1_kernel_size)
        if kernel < 1:
            raise ModelError(f"{spec.name}: conv1_kernel_size must be >= 1, got {kernel}")
        momentum = _DEFAULT_BN_MOMENTUM[spec.lineage] if bn_momentum is None else float(bn_momentum)
        block_momentum = _DEFAULT_BLOCK_BN_MOMENTUM if block_bn_momentum is None else float(block_bn_momentum)
        for label, value in (("bn_momentum", momentum), ("block_bn_momentum", block_momentum)):
            if not 0.0 <= value <= 1.0:
                raise ModelError(f"{spec.name}: {label} must be in [0, 1], got {value}")
        super().__init__(D)
        self.spec = spec
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv1_kernel_size = kernel
        self._build(in_channels, out_channels, kernel, momentum, block_momentum)
        self._initialise()

    def _build(self, in_channels: int, out_channels: int, kernel: int, momentum: float,
               block_momentum: float) -> None:
        spec, D = self.spec, self.D
        block, planes, layers, init_dim = BLOCKS[spec.block], spec.planes, spec.layers, spec.init_dim
        region, two = spec.block_region(D), spatial(2, D)

        def stage(inplanes: int, index: int) -> nn.Sequential:
            return make_stage(block, inplanes, planes[index], layers[index], region, D, block_momentum, momentum)

        self.conv0p1s1 = conv(in_channels, init_dim, kernel_size=spatial(kernel, D), D=D)
        self.bn0 = batch_norm(init_dim, momentum)

        width = init_dim
        encoder_widths = []
        for level, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            setattr(self, name, conv(width, width, kernel_size=two, stride=two, D=D))
            setattr(self, f"bn{level + 1}", batch_norm(width, momentum))
            setattr(self, f"block{level + 1}", stage(width, level))
            width = planes[level] * block.expansion
            encoder_widths.append(width)

        skips = [encoder_widths[2], encoder_widths[1], encoder_widths[0], init_dim]
        for level, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            up = planes[4 + level]
            setattr(self, name, conv_tr(width, up, kernel_size=two, stride=two, D=D))
            setattr(self, f"bntr{4 + level}", batch_norm(up, momentum))
            setattr(self, f"block{5 + level}", stage(up + skips[level], 4 + level))
            width = up * block.expansion

        # The original fed PLANES[7] here, which breaks the Bottleneck variants; the block output is the truth.
        self.final = conv(width, out_channels, kernel_size=1, bias=True, D=D)
        self.relu = ME.MinkowskiReLU(inplace=True)

    def _initialise(self) -> None:
        """STS kept ME's default conv init; ME's examples use Kaiming-normal (fan-out). BN starts at identity."""
        for module in self.modules():
            if isinstance(module, ME.MinkowskiBatchNorm):
                nn.init.ones_(module.bn.weight)
                nn.init.zeros_(module.bn.bias)
            elif self.spec.lineage == "me" and isinstance(module, ME.MinkowskiConvolution):
                volume = module.kernel.shape[0] if module.kernel.dim() == 3 else 1
                std = (2.0 / (module.out_channels * volume)) ** 0.5
                with torch.no_grad():
                    module.kernel.normal_(0.0, std)

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        if not isinstance(x, ME.SparseTensor):
            raise ModelError(f"{self.spec.name} expects a SparseTensor, got {type(x).__name__}")
        if x.D != self.D or x.F.shape[1] != self.in_channels:
            raise ModelError(f"{self.spec.name} was built for {self.D}-D input with {self.in_channels} channels, "
                             f"got {x.D}-D with {x.F.shape[1]}")
        out_p1 = self.relu(self.bn0(self.conv0p1s1(x)))
        skips, out = [out_p1], out_p1
        for level, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2")):
            out = self.relu(getattr(self, f"bn{level + 1}")(getattr(self, name)(out)))
            out = getattr(self, f"block{level + 1}")(out)
            skips.append(out)
        skips.pop()  # the stride-16 output is not a skip
        for level, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            out = self.relu(getattr(self, f"bntr{4 + level}")(getattr(self, name)(out)))
            out = ME.cat(out, skips.pop())
            out = getattr(self, f"block{5 + level}")(out)
        return self.final(out)
