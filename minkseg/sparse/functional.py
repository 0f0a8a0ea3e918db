"""``MinkowskiEngine.MinkowskiFunctional``: torch.nn.functional on the features of a SparseTensor / TensorField.

Activations, normalisation, linear and dropout return a tensor of the input's kind on the same coordinates;
losses take the features (and a plain target) and return what torch returns.
"""
from __future__ import annotations

from typing import Any, Callable

import torch.nn.functional as F

from minkseg.sparse.tensor_base import Tensor

_ON_FEATURES = ["threshold", "relu", "hardtanh", "hardswish", "relu6", "elu", "selu", "celu", "leaky_relu", "prelu",
                "rrelu", "glu", "gelu", "logsigmoid", "hardshrink", "tanhshrink", "softsign", "softplus", "softmin",
                "softmax", "softshrink", "gumbel_softmax", "log_softmax", "tanh", "sigmoid", "hardsigmoid", "silu",
                "batch_norm", "normalize", "linear", "dropout", "alpha_dropout"]
_LOSSES = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "poisson_nll_loss", "cross_entropy",
           "hinge_embedding_loss", "kl_div", "l1_loss", "mse_loss", "multilabel_margin_loss",
           "multilabel_soft_margin_loss", "multi_margin_loss", "nll_loss", "smooth_l1_loss", "soft_margin_loss"]

__all__ = _ON_FEATURES + _LOSSES


def _on_features(name: str) -> Callable[..., Tensor]:
    torch_fn = getattr(F, name)

    def apply(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not isinstance(input, Tensor):
            raise TypeError(f"MinkowskiFunctional.{name} expects a SparseTensor or TensorField, got "
                            f"{type(input).__name__}")
        return input.replace_features(torch_fn(input.F, *args, **kwargs))

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"``torch.nn.functional.{name}`` on the features; same coordinates."
    return apply


def _loss(name: str) -> Callable[..., Any]:
    torch_fn = getattr(F, name)

    def apply(input: Tensor, target: Any, *args: Any, **kwargs: Any) -> Any:
        return torch_fn(input.F if isinstance(input, Tensor) else input, target, *args, **kwargs)

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"``torch.nn.functional.{name}`` of the features and a target."
    return apply


for _name in _ON_FEATURES:
    globals()[_name] = _on_features(_name)
for _name in _LOSSES:
    globals()[_name] = _loss(_name)
del _name
