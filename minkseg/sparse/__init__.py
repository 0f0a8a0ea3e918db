"""minkseg.sparse: MinkSeg's own sparse-convolution engine, with MinkowskiEngine's public names.

ME model code ports by changing one import: ``import minkseg.sparse as ME``. Pure PyTorch, CPU and CUDA, any
dimension D, cube / cross / hybrid / custom kernel regions.
"""
from minkseg.sparse.convolution import MinkowskiConvolution, MinkowskiConvolutionTranspose
from minkseg.sparse.coordinates import CoordinateManager, CoordinateMapKey, KernelMap
from minkseg.sparse.kernel import KernelGenerator, RegionType, kernel_offsets
from minkseg.sparse.pointwise import (MinkowskiBatchNorm, MinkowskiDropout, MinkowskiELU, MinkowskiGELU,
                                      MinkowskiInstanceNorm, MinkowskiLeakyReLU, MinkowskiLinear, MinkowskiNetwork,
                                      MinkowskiReLU, MinkowskiSigmoid, MinkowskiSoftmax, MinkowskiTanh, cat)
from minkseg.sparse.pooling import (MinkowskiAvgPooling, MinkowskiGlobalAvgPooling, MinkowskiGlobalMaxPooling,
                                    MinkowskiGlobalSumPooling, MinkowskiMaxPooling, MinkowskiPoolingTranspose,
                                    MinkowskiSumPooling)
from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse import utils
from minkseg.sparse.utils import batched_coordinates, sparse_collate, sparse_quantize

CoordinateManagerType = CoordinateManager

__all__ = [
    "SparseTensor", "CoordinateManager", "CoordinateMapKey", "KernelMap", "KernelGenerator", "RegionType",
    "kernel_offsets", "MinkowskiConvolution", "MinkowskiConvolutionTranspose", "MinkowskiBatchNorm",
    "MinkowskiInstanceNorm", "MinkowskiReLU", "MinkowskiLeakyReLU", "MinkowskiELU", "MinkowskiGELU",
    "MinkowskiSigmoid", "MinkowskiTanh", "MinkowskiSoftmax", "MinkowskiDropout", "MinkowskiLinear",
    "MinkowskiNetwork", "cat", "MinkowskiSumPooling", "MinkowskiAvgPooling", "MinkowskiMaxPooling",
    "MinkowskiPoolingTranspose", "MinkowskiGlobalSumPooling", "MinkowskiGlobalAvgPooling",
    "MinkowskiGlobalMaxPooling", "utils", "sparse_quantize", "batched_coordinates", "sparse_collate",
]
