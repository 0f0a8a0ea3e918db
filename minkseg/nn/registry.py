"""``build_model``: a network by name (the names and what they mean: ``minkseg.nn.specs``)."""
from __future__ import annotations

from torch import nn

from minkseg.nn.res16unet import Res16UNet
from minkseg.nn.specs import aliases_of, canonical_name, distinct_specs, get_spec, list_models

__all__ = ["build_model", "list_models", "get_spec", "canonical_name", "aliases_of", "distinct_specs",
           "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers and do not count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(name: str, in_channels: int, out_channels: int, D: int | None = None,
                conv1_kernel_size: int | None = None, bn_momentum: float | None = None,
                block_bn_momentum: float | None = None) -> Res16UNet:
    """Build a network by name.

    D defaults to the network's own dimension (3, or 4 for STRes*); Res16UNet* also build in 4-D, where their
    block convs become the space-cube x time-cross hybrid, i.e. the same network as the STRes* of that name.
    conv1_kernel_size defaults to 3 (5 for MinkUNet*), bn_momentum to 0.02 (0.1 for MinkUNet*), the blocks' own
    BN momentum to 0.1 as in both original code bases.
    """
    spec = get_spec(name)
    return Res16UNet(spec, in_channels, out_channels, D=D, conv1_kernel_size=conv1_kernel_size,
                     bn_momentum=bn_momentum, block_bn_momentum=block_bn_momentum)
