"""Layers that act on each row's features alone (norm, activations, dropout, linear) and channel concatenation.

They never touch coordinates, so each one applies a torch module to ``F`` and keeps the coordinates: a SparseTensor
stays on its coordinate map key, a TensorField on its points. Each holds its torch module under ME's attribute name
(``.bn``, ``.linear``) so ME state dicts load.
"""
from __future__ import annotations

import torch
from torch import nn

from minkseg.sparse.tensor import SparseTensor
from minkseg.sparse.tensor_base import CoordinatesMismatchError, Tensor

__all__ = ["MinkowskiBatchNorm", "MinkowskiSyncBatchNorm", "MinkowskiInstanceNorm", "MinkowskiStableInstanceNorm", "MinkowskiLinear", "MinkowskiNetwork", "MinkowskiSinusoidal",
           "cat", "mean", "var", "MinkowskiStackCat", "MinkowskiStackSum", "MinkowskiStackMean", "MinkowskiStackVar", "ACTIVATIONS", "MinkowskiELU", "MinkowskiHardshrink", "MinkowskiHardsigmoid", "MinkowskiHardtanh",
           "MinkowskiHardswish", "MinkowskiLeakyReLU", "MinkowskiLogSigmoid", "MinkowskiPReLU", "MinkowskiReLU",
           "MinkowskiReLU6", "MinkowskiRReLU", "MinkowskiSELU", "MinkowskiCELU", "MinkowskiGELU", "MinkowskiSigmoid",
           "MinkowskiSiLU", "MinkowskiSoftplus", "MinkowskiSoftshrink", "MinkowskiSoftsign", "MinkowskiTanh",
           "MinkowskiTanhshrink", "MinkowskiThreshold", "MinkowskiSoftmin", "MinkowskiSoftmax", "MinkowskiLogSoftmax",
           "MinkowskiDropout", "MinkowskiAlphaDropout"]


def _check_sparse(layer: nn.Module, input: object) -> Tensor:
    if not isinstance(input, Tensor):
        raise TypeError(f"{type(layer).__name__} expects a SparseTensor or TensorField, got {type(input).__name__}")
    return input


class MinkowskiBatchNorm(nn.Module):
    """Batch norm over all active sites of the batch (nn.SyncBatchNorm.convert_sync_batchnorm converts ``.bn``)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=affine,
                                 track_running_stats=track_running_stats)

    def forward(self, input: SparseTensor) -> SparseTensor:
        return _check_sparse(self, input).replace_features(self.bn(input.F))


class MinkowskiInstanceNorm(nn.Module):
    """Normalises each sample of the batch on its own (mean and variance per batch index, eps 1e-8 as ME's
    function), then ME's affine ``weight`` [1, C] and ``bias`` [1, C]."""

    def __init__(self, num_features: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, num_features))
        self.bias = nn.Parameter(torch.zeros(1, num_features))

    def forward(self, input: Tensor) -> Tensor:
        from minkseg.sparse.functions import instance_norm  # functions -> pooling -> convolution: import late
        batch = _check_sparse(self, input).C[:, 0]
        batch = torch.round(batch).long() if batch.is_floating_point() else batch.long()
        return input.replace_features(instance_norm(input.F, batch, self.eps) * self.weight + self.bias)


class MinkowskiSyncBatchNorm(MinkowskiBatchNorm):
    """Batch norm whose statistics are reduced over every DDP process (``torch.nn.SyncBatchNorm`` under ``.bn``);
    outside a process group it is plain batch norm."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: object = None) -> None:
        nn.Module.__init__(self)
        self.bn = nn.SyncBatchNorm(num_features, eps=eps, momentum=momentum, affine=affine,
                                   track_running_stats=track_running_stats, process_group=process_group)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: object = None) -> nn.Module:
        """Every MinkowskiBatchNorm in ``module`` replaced by a MinkowskiSyncBatchNorm with its parameters and
        running statistics (what ME's ``convert_sync_batchnorm`` does before wrapping a model in DDP)."""
        if isinstance(module, MinkowskiBatchNorm) and not isinstance(module, MinkowskiSyncBatchNorm):
            old = module.bn
            converted = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats,
                            process_group)
            reference = next(iter(old.state_dict().values()), None)
            if reference is not None:  # same dtype and device as the layer it replaces
                converted = converted.to(device=reference.device, dtype=reference.dtype)
            converted.bn.load_state_dict(old.state_dict())
            converted.train(module.training)
            return converted
        for name, child in module.named_children():
            module.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return module


class MinkowskiStableInstanceNorm(MinkowskiInstanceNorm):
    """ME's "stable" instance norm: the same per-sample normalisation with eps 1e-6, then ``weight`` / ``bias``."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=1e-6)


class _Pointwise(nn.Module):
    """Wraps a torch module that maps [N, C] -> [N, C']."""

    module_attr = "module"

    def forward(self, input: Tensor) -> Tensor:
        return _check_sparse(self, input).replace_features(getattr(self, self.module_attr)(input.F))


class _Activation(_Pointwise):
    """ME's nonlinearity layers: ``MODULE(*args, **kwargs)`` under ``.module`` (ME's state-dict name)."""

    MODULE: type[nn.Module] = nn.Identity

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.module = self.MODULE(*args, **kwargs)


def _activation(name: str, module: type[nn.Module]) -> type[_Activation]:
    return type(name, (_Activation,), {"MODULE": module, "__doc__": f"``torch.nn.{module.__name__}`` on the features.",
                                       "__module__": __name__})


# every nonlinearity ME 0.5.4 lists, each the torch module of the same name applied to the features
MinkowskiELU = _activation("MinkowskiELU", nn.ELU)
MinkowskiHardshrink = _activation("MinkowskiHardshrink", nn.Hardshrink)
MinkowskiHardsigmoid = _activation("MinkowskiHardsigmoid", nn.Hardsigmoid)
MinkowskiHardtanh = _activation("MinkowskiHardtanh", nn.Hardtanh)
MinkowskiHardswish = _activation("MinkowskiHardswish", nn.Hardswish)
MinkowskiLeakyReLU = _activation("MinkowskiLeakyReLU", nn.LeakyReLU)
MinkowskiLogSigmoid = _activation("MinkowskiLogSigmoid", nn.LogSigmoid)
MinkowskiPReLU = _activation("MinkowskiPReLU", nn.PReLU)
MinkowskiReLU = _activation("MinkowskiReLU", nn.ReLU)
MinkowskiReLU6 = _activation("MinkowskiReLU6", nn.ReLU6)
MinkowskiRReLU = _activation("MinkowskiRReLU", nn.RReLU)
MinkowskiSELU = _activation("MinkowskiSELU", nn.SELU)
MinkowskiCELU = _activation("MinkowskiCELU", nn.CELU)
MinkowskiGELU = _activation("MinkowskiGELU", nn.GELU)
MinkowskiSigmoid = _activation("MinkowskiSigmoid", nn.Sigmoid)
MinkowskiSiLU = _activation("MinkowskiSiLU", nn.SiLU)
MinkowskiSoftplus = _activation("MinkowskiSoftplus", nn.Softplus)
MinkowskiSoftshrink = _activation("MinkowskiSoftshrink", nn.Softshrink)
MinkowskiSoftsign = _activation("MinkowskiSoftsign", nn.Softsign)
MinkowskiTanh = _activation("MinkowskiTanh", nn.Tanh)
MinkowskiTanhshrink = _activation("MinkowskiTanhshrink", nn.Tanhshrink)
MinkowskiThreshold = _activation("MinkowskiThreshold", nn.Threshold)
MinkowskiSoftmin = _activation("MinkowskiSoftmin", nn.Softmin)
MinkowskiSoftmax = _activation("MinkowskiSoftmax", nn.Softmax)
MinkowskiLogSoftmax = _activation("MinkowskiLogSoftmax", nn.LogSoftmax)
MinkowskiDropout = _activation("MinkowskiDropout", nn.Dropout)
MinkowskiAlphaDropout = _activation("MinkowskiAlphaDropout", nn.AlphaDropout)

ACTIVATIONS = ["MinkowskiELU", "MinkowskiHardshrink", "MinkowskiHardsigmoid", "MinkowskiHardtanh",
               "MinkowskiHardswish", "MinkowskiLeakyReLU", "MinkowskiLogSigmoid", "MinkowskiPReLU", "MinkowskiReLU",
               "MinkowskiReLU6", "MinkowskiRReLU", "MinkowskiSELU", "MinkowskiCELU", "MinkowskiGELU",
               "MinkowskiSigmoid", "MinkowskiSiLU", "MinkowskiSoftplus", "MinkowskiSoftshrink", "MinkowskiSoftsign",
               "MinkowskiTanh", "MinkowskiTanhshrink", "MinkowskiThreshold", "MinkowskiSoftmin", "MinkowskiSoftmax",
               "MinkowskiLogSoftmax", "MinkowskiDropout", "MinkowskiAlphaDropout"]


class MinkowskiSinusoidal(nn.Module):
    """ME's sinusoidal feature layer: ``sin(F @ kernel + bias) * coef`` with random-uniform initial parameters."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.in_channel, self.out_channel = in_channel, out_channel
        self.kernel = nn.Parameter(torch.rand(in_channel, out_channel))
        self.bias = nn.Parameter(torch.rand(1, out_channel))
        self.coef = nn.Parameter(torch.rand(1, out_channel))

    def forward(self, input: Tensor) -> Tensor:
        features = _check_sparse(self, input).F
        return input.replace_features(torch.sin(features.mm(self.kernel) + self.bias) * self.coef)


class MinkowskiLinear(_Pointwise):
    module_attr = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)


class MinkowskiNetwork(nn.Module):
    """Base class of ME networks: an nn.Module that knows its spatial dimension."""

    def __init__(self, D: int) -> None:
        super().__init__()
        self.D = D


def _same_coordinates(tensors: tuple) -> tuple:
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise ValueError("needs at least one SparseTensor or TensorField")
    first = tensors[0]
    for other in tensors[1:]:
        if type(other) is not type(first) or other.coordinate_manager is not first.coordinate_manager or \
                other.coordinate_map_key != first.coordinate_map_key:
            raise CoordinatesMismatchError("tensors must share coordinates (same manager and coordinate_map_key); "
                                           f"got {first.coordinate_map_key} and {other.coordinate_map_key}")
    return tensors


def cat(*sparse_tensors: Tensor) -> Tensor:
    """Concatenate channels of tensors on the same coordinates (a U-Net skip connection); fields work too."""
    tensors = _same_coordinates(sparse_tensors)
    return tensors[0].replace_features(torch.cat([t.F for t in tensors], 1))


def mean(*sparse_tensors: Tensor) -> Tensor:
    """Element-wise mean of the features of tensors on the same coordinates."""
    tensors = _same_coordinates(sparse_tensors)
    return tensors[0].replace_features(torch.stack([t.F for t in tensors]).mean(0))


def var(*sparse_tensors: Tensor) -> Tensor:
    """Element-wise (biased) variance of the features of tensors on the same coordinates."""
    tensors = _same_coordinates(sparse_tensors)
    return tensors[0].replace_features(torch.stack([t.F for t in tensors]).var(0, unbiased=False))


def _sum(*sparse_tensors: Tensor) -> Tensor:
    tensors = _same_coordinates(sparse_tensors)
    return tensors[0].replace_features(torch.stack([t.F for t in tensors]).sum(0))


class _Stack(nn.Sequential):
    """Applies every child to the same input (branches, not a chain) and combines the outputs."""

    combine = staticmethod(cat)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.combine([module(x) for module in self])


class MinkowskiStackCat(_Stack):
    combine = staticmethod(cat)


class MinkowskiStackSum(_Stack):
    combine = staticmethod(_sum)


class MinkowskiStackMean(_Stack):
    combine = staticmethod(mean)


class MinkowskiStackVar(_Stack):
    combine = staticmethod(var)


# ME's MinkowskiOps module also holds the dense/sparse conversions; ported code imports them from there.
from minkseg.sparse.conversion import (MinkowskiToDenseTensor, MinkowskiToFeature,  # noqa: E402,F401
                                       MinkowskiToSparseTensor, dense_coordinates, to_sparse, to_sparse_all)
