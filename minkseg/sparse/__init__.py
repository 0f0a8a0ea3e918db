"""minkseg.sparse: MinkSeg's own sparse-convolution engine, with MinkowskiEngine 0.5.4's public API.

ME model code ports by changing one import (``import minkseg.sparse as ME``), or runs unchanged through the opt-in
alias (``python -m minkseg.sparse.alias script.py``). Pure PyTorch, CPU and CUDA, any dimension D, cube / cross /
hybrid / custom kernel regions. README: the ME compatibility table.
"""
import torch as _torch

from minkseg.sparse.conversion import (MinkowskiToDenseTensor, MinkowskiToFeature, MinkowskiToSparseTensor,
                                       dense_coordinates, to_sparse, to_sparse_all)
from minkseg.sparse.convolution import (MinkowskiConvolution, MinkowskiConvolutionTranspose,
                                        MinkowskiGenerativeConvolutionTranspose)
from minkseg.sparse.coordinates import CoordinateManager, KernelMap
from minkseg.sparse.field import TensorField
from minkseg.sparse.kernel import KernelGenerator, RegionType, kernel_offsets
from minkseg.sparse.keys import CoordinateMapKey, CoordinateMapType, GPUMemoryAllocatorType, MinkowskiAlgorithm
from minkseg.sparse import pointwise as _pointwise
from minkseg.sparse.broadcast import (MinkowskiBroadcast, MinkowskiBroadcastAddition, MinkowskiBroadcastConcatenation,
                                      MinkowskiBroadcastMultiplication)
from minkseg.sparse.pointwise import (MinkowskiBatchNorm, MinkowskiInstanceNorm, MinkowskiStableInstanceNorm,
                                      MinkowskiSyncBatchNorm, MinkowskiLinear, MinkowskiNetwork,
                                      MinkowskiSinusoidal, MinkowskiStackCat, MinkowskiStackMean, MinkowskiStackSum,
                                      MinkowskiStackVar, cat, mean, var)
from minkseg.sparse.pooling import (MinkowskiAvgPooling, MinkowskiGlobalAvgPooling, MinkowskiGlobalMaxPooling,
                                    MinkowskiGlobalPooling, MinkowskiGlobalSumPooling, MinkowskiMaxPooling,
                                    MinkowskiPoolingTranspose, MinkowskiSumPooling, PoolingMode)
from minkseg.sparse.channelwise import MinkowskiChannelwiseConvolution
from minkseg.sparse.structure import MinkowskiPruning, MinkowskiUnion
from minkseg.sparse.functions import (BroadcastMode, ConvolutionMode, MinkowskiBroadcastFunction,
                                      MinkowskiConvolutionFunction, MinkowskiConvolutionTransposeFunction,
                                      MinkowskiDirectMaxPoolingFunction, MinkowskiGlobalPoolingFunction,
                                      MinkowskiInstanceNormFunction, MinkowskiInterpolationFunction,
                                      MinkowskiLocalPoolingFunction, MinkowskiLocalPoolingTransposeFunction,
                                      MinkowskiPruningFunction, MinkowskiSPMMAverageFunction, MinkowskiSPMMFunction,
                                      MinkowskiInterpolation, MinkowskiUnionFunction, spmm)
from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse.tensor_base import (SparseTensorOperationMode, SparseTensorQuantizationMode,
                                        clear_global_coordinate_manager, global_coordinate_manager,
                                        set_global_coordinate_manager, set_sparse_tensor_operation_mode,
                                        sparse_tensor_operation_mode)
from minkseg.sparse import utils
from minkseg.sparse.utils import batched_coordinates, sparse_collate, sparse_quantize

from minkseg.sparse import functional as MinkowskiFunctional  # noqa: E402  (ME's module name)
from minkseg.sparse import modules  # noqa: E402

CoordinateManagerType = CoordinateManager
globals().update({name: getattr(_pointwise, name) for name in _pointwise.ACTIVATIONS})


def is_cuda_available() -> bool:
    """ME: whether the engine can run on CUDA (here: whether torch sees a CUDA device)."""
    return _torch.cuda.is_available()


def cuda_version() -> int:
    """ME: the CUDA version as an int (e.g. 12040 for 12.4), 0 without CUDA."""
    if _torch.version.cuda is None:
        return 0
    major, minor = (_torch.version.cuda.split(".") + ["0"])[:2]
    return int(major) * 1000 + int(minor) * 10


def get_gpu_memory_info(device: int | None = None) -> tuple[int, int]:
    """ME: (free, total) bytes of a CUDA device."""
    return _torch.cuda.mem_get_info(device)


def set_gpu_allocator(backend: GPUMemoryAllocatorType) -> None:
    """ME: choose the CUDA allocator. Accepted for compatibility; memory always comes from torch's allocator."""
    if not isinstance(backend, GPUMemoryAllocatorType):
        raise TypeError(f"backend must be a GPUMemoryAllocatorType, got {backend!r}")


set_memory_manager_backend = set_gpu_allocator

__all__ = [
    "SparseTensor", "TensorField", "SparseTensorOperationMode", "SparseTensorQuantizationMode",
    "set_sparse_tensor_operation_mode", "sparse_tensor_operation_mode", "global_coordinate_manager",
    "set_global_coordinate_manager", "clear_global_coordinate_manager", "CoordinateManager", "CoordinateMapKey",
    "CoordinateMapType", "MinkowskiAlgorithm", "GPUMemoryAllocatorType", "KernelMap", "KernelGenerator",
    "RegionType", "kernel_offsets", "MinkowskiConvolution", "MinkowskiConvolutionTranspose", "MinkowskiGenerativeConvolutionTranspose",
    "MinkowskiPruning", "MinkowskiUnion", "MinkowskiBatchNorm",
    "MinkowskiInstanceNorm", "MinkowskiLinear", "MinkowskiSinusoidal", "MinkowskiNetwork", "cat", "mean", "var",
    "MinkowskiStackCat", "MinkowskiStackSum", "MinkowskiStackMean", "MinkowskiStackVar", "MinkowskiBroadcast",
    "MinkowskiBroadcastAddition", "MinkowskiBroadcastMultiplication", "MinkowskiBroadcastConcatenation",
    "MinkowskiFunctional", "modules", "BroadcastMode", "ConvolutionMode", "MinkowskiBroadcastFunction",
    "MinkowskiConvolutionFunction", "MinkowskiConvolutionTransposeFunction", "MinkowskiDirectMaxPoolingFunction",
    "MinkowskiGlobalPoolingFunction", "MinkowskiInstanceNormFunction", "MinkowskiInterpolationFunction",
    "MinkowskiLocalPoolingFunction", "MinkowskiLocalPoolingTransposeFunction", "MinkowskiPruningFunction",
    "MinkowskiSPMMAverageFunction", "MinkowskiSPMMFunction", "MinkowskiUnionFunction", "spmm",
    "MinkowskiChannelwiseConvolution", "MinkowskiInterpolation", "MinkowskiSyncBatchNorm",
    "MinkowskiStableInstanceNorm", "MinkowskiSumPooling", "MinkowskiAvgPooling", "MinkowskiMaxPooling",
    "MinkowskiPoolingTranspose", "MinkowskiGlobalPooling", "PoolingMode", "MinkowskiGlobalSumPooling", "MinkowskiGlobalAvgPooling",
    "MinkowskiGlobalMaxPooling", "MinkowskiToSparseTensor", "MinkowskiToDenseTensor", "MinkowskiToFeature",
    "to_sparse", "to_sparse_all", "dense_coordinates", "utils", "sparse_quantize", "batched_coordinates",
    "sparse_collate", "is_cuda_available", "cuda_version", "get_gpu_memory_info", "set_gpu_allocator",
    "set_memory_manager_backend", "CoordinateManagerType",
]
__all__ += _pointwise.ACTIVATIONS
