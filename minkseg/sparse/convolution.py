"""MinkowskiConvolution, MinkowskiConvolutionTranspose and MinkowskiGenerativeConvolutionTranspose, with ME's
argument names and weight layout."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from minkseg.sparse.coordinates import CoordinateMapKey
from minkseg.sparse.kernel import KernelGenerator
from minkseg.sparse.ops import sparse_conv
from minkseg.sparse.tensor import SparseTensor, explicit_output_key

__all__ = ["MinkowskiConvolution", "MinkowskiConvolutionTranspose", "MinkowskiGenerativeConvolutionTranspose"]


def _make_generator(kernel_size, stride, dilation, kernel_generator, dimension, is_transpose) -> KernelGenerator:
    if kernel_generator is not None:
        return kernel_generator
    if dimension is None or dimension <= 0:
        raise ValueError("pass dimension=D (or a kernel_generator) to a Minkowski layer")
    return KernelGenerator(kernel_size, stride, dilation, is_transpose=is_transpose, dimension=dimension)


class _MinkowskiConvolutionBase(nn.Module):
    is_transpose = False
    generative = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = -1,
                 stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1, bias: bool = False,
                 kernel_generator: KernelGenerator | None = None, expand_coordinates: bool = False,
                 convolution_mode: object = None, dimension: int | None = None) -> None:
        """``convolution_mode`` (ME's choice of GEMM backend) is accepted and changes nothing: one
        gather-GEMM-scatter path serves every layer."""
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"channel counts must be positive, got in={in_channels} out={out_channels}")
        self.kernel_generator = _make_generator(kernel_size, stride, dilation, kernel_generator, dimension,
                                                self.is_transpose)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.expand_coordinates = expand_coordinates
        self.convolution_mode = convolution_mode
        self.dimension = self.kernel_generator.dimension
        volume = self.kernel_generator.kernel_volume
        shape = (volume, in_channels, out_channels) if volume > 1 else (in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ME's init, so freshly built networks train like the original: U(+-1/sqrt(fan)), fan over the kernel."""
        fan = (self.out_channels if self.is_transpose else self.in_channels) * self.kernel_generator.kernel_volume
        bound = 1.0 / math.sqrt(fan)
        with torch.no_grad():
            self.kernel.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @property
    def kernel_offsets(self) -> torch.Tensor:
        """Kernel-index offsets [kernel_volume, D] in the order of ``self.kernel``'s first axis."""
        return self.kernel_generator.offsets.clone()

    def _output_key(self, input: SparseTensor) -> CoordinateMapKey:
        manager, key, gen = input.coordinate_manager, input.coordinate_map_key, self.kernel_generator
        if self.generative:
            return manager.generated_key(key, gen)
        if self.expand_coordinates and not self.is_transpose:
            return manager.expanded_key(key, gen)
        if all(s == 1 for s in gen.kernel_stride):
            return key
        if self.is_transpose:
            return manager.transposed_key(key, gen)
        return manager.stride_key(key, gen.kernel_stride)

    def forward(self, input: SparseTensor, coordinates: object = None) -> SparseTensor:
        """``coordinates`` (ME's optional second argument): write the output on this set (an int coordinate
        tensor, registered at the stride the layer outputs; a CoordinateMapKey; or a SparseTensor's set)."""
        if not isinstance(input, SparseTensor):
            raise TypeError(f"{type(self).__name__} expects a SparseTensor, got {type(input).__name__}")
        if input.D != self.dimension:
            raise ValueError(f"{type(self).__name__} is {self.dimension}-D but the input is {input.D}-D")
        if input.F.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, "
                             f"got {input.F.shape[1]}")
        if coordinates is not None:
            stride = [t // s if self.is_transpose else t * s
                      for t, s in zip(input.coordinate_map_key.tensor_stride, self.kernel_generator.kernel_stride)]
            out_key = explicit_output_key(input, coordinates, stride)
        else:
            out_key = self._output_key(input)
        kernel = self.kernel if self.kernel.dim() == 3 else self.kernel.unsqueeze(0)
        if kernel.shape[0] == 1 and out_key == input.coordinate_map_key and \
                not self.kernel_generator.offsets.any():
            features = input.F @ kernel[0].to(input.F.dtype)  # a 1x1 conv on the same set is a plain matmul
        else:
            kmap = input.coordinate_manager.kernel_map_for(input.coordinate_map_key, out_key, self.kernel_generator,
                                                       is_transpose=self.is_transpose)
            features = sparse_conv(input.F, kernel, kmap)
        if self.bias is not None:
            features = features + self.bias.to(features.dtype)
        return SparseTensor(features, coordinate_map_key=out_key, coordinate_manager=input.coordinate_manager)

    def extra_repr(self) -> str:
        g = self.kernel_generator
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={list(g.kernel_size)}, "
                f"stride={list(g.kernel_stride)}, dilation={list(g.kernel_dilation)}, region={g.region_type.name}, "
                f"volume={g.kernel_volume}, bias={self.bias is not None}, dimension={self.dimension}")


class MinkowskiConvolution(_MinkowskiConvolutionBase):
    """Stride 1: output on the input coordinates. Stride s: output on floor(c / (t*s)) * (t*s)."""

    is_transpose = False


class MinkowskiConvolutionTranspose(_MinkowskiConvolutionBase):
    """Up-samples onto the finer stride's stored coordinates, reusing the kernel map of the strided conv it mirrors."""

    is_transpose = True


class MinkowskiGenerativeConvolutionTranspose(_MinkowskiConvolutionBase):
    """Up-samples onto *new* coordinates: every input coordinate expanded by the kernel at the finer stride (ME's
    generative transpose, for completion and decoders that create geometry), never the stored finer set."""

    is_transpose = True
    generative = True
