"""MinkowskiChannelwiseConvolution: a depthwise sparse convolution (one weight per kernel offset and channel)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from minkseg.sparse.convolution import _make_generator
from minkseg.sparse.kernel import KernelGenerator
from minkseg.sparse.tensor import SparseTensor, explicit_output_key

__all__ = ["MinkowskiChannelwiseConvolution"]


class MinkowskiChannelwiseConvolution(nn.Module):
    """``out[o, c] = sum_k in[o + k, c] * kernel[k, c]`` (+ bias): channels stay apart, as ME's channel-wise conv.
    Kernel [kernel_volume, in_channels], bias [1, in_channels]; output on the strided set (or ``coords``)."""

    def __init__(self, in_channels: int, kernel_size: int | Sequence[int] = -1, stride: int | Sequence[int] = 1,
                 dilation: int | Sequence[int] = 1, bias: bool = False,
                 kernel_generator: KernelGenerator | None = None, dimension: int = -1) -> None:
        super().__init__()
        self.kernel_generator = _make_generator(kernel_size, stride, dilation, kernel_generator, dimension, False)
        self.in_channels = self.out_channels = in_channels
        self.dimension = self.kernel_generator.dimension
        self.kernel_shape = (self.kernel_generator.kernel_volume, in_channels)
        self.kernel = nn.Parameter(torch.empty(self.kernel_shape))
        self.bias = nn.Parameter(torch.empty(1, in_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_generator.kernel_volume)
        with torch.no_grad():
            self.kernel.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, input: SparseTensor, coords: object = None) -> SparseTensor:
        if not isinstance(input, SparseTensor) or input.D != self.dimension or input.F.shape[1] != self.in_channels:
            raise ValueError(f"MinkowskiChannelwiseConvolution expects a {self.dimension}-D SparseTensor with "
                             f"{self.in_channels} channels")
        manager, key, gen = input.coordinate_manager, input.coordinate_map_key, self.kernel_generator
        stride = [t * s for t, s in zip(key.tensor_stride, gen.kernel_stride)]
        out_key = explicit_output_key(input, coords, stride) if coords is not None else (
            key if all(s == 1 for s in gen.kernel_stride) else manager.stride_key(key, gen.kernel_stride))
        kmap = manager.kernel_map_for(key, out_key, gen)
        out = torch.zeros(manager.size(out_key), self.in_channels, dtype=input.dtype, device=input.device)
        in_rows = torch.cat(kmap.in_maps)
        out_rows = torch.cat(kmap.out_maps)
        offset = torch.cat([torch.full((m.numel(),), k, dtype=torch.long, device=input.device)
                            for k, m in enumerate(kmap.in_maps)])
        out = out.index_add(0, out_rows, input.F[in_rows] * self.kernel.to(input.dtype)[offset])
        if self.bias is not None:
            out = out + self.bias.to(input.dtype)
        return SparseTensor(out, coordinate_map_key=out_key, coordinate_manager=manager)
