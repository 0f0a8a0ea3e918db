"""Load the original model zoo's weights (e.g. ``Mink16UNet34C_ScanNet.pth``) into our networks.

Key names and shapes already match (our modules use the original names, kernels are [volume, in, out] or
[in, out], biases (1, C)), so the only real translation is the order of kernel rows: see ``minkseg.nn.offsets``.

Offset order (``block_kernel_order``):

* ``"hybrid"``: the file's 3-D block convs (3x3x3 inside ``block*``) list their 27 offsets in ME's HYBRID
  expansion order. SpatioTemporalSegmentation built every block conv through a ``KernelGenerator`` with
  ``RegionType.HYBRID`` (its ``SPATIAL_HYPERCUBE_TEMPORAL_HYPERCROSS`` conv type, used in 3-D too), and ME
  expands HYBRID into that order in every release from 0.3 to 0.5, so weights trained with that code - the
  ``Mink16UNet*`` / ``Res16UNet*`` model zoo - are stored that way.
* ``"cube"``: every conv is in HYPER_CUBE order (first axis fastest), as MinkowskiEngine's
  ``examples/minkunet.py`` (``MinkUNet*``) builds them.
* ``"auto"`` (default): ``"hybrid"`` for the SpatioTemporalSegmentation names, ``"cube"`` for ``MinkUNet*``,
  i.e. the order of the code each name comes from.

Layers that were never HYBRID-vs-cube ambiguous are unaffected by the option: stem / down / up convs are cubes
in both code bases, 4-D block convs are HYBRID (space cube x time cross, ME expansion order) and the
tesseract variants' are cubes.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

import minkseg.sparse as ME

from minkseg.errors import CheckpointError, ModelError
from minkseg.nn.offsets import me_cube_offsets, me_hybrid_offsets, row_permutation
from minkseg.nn.registry import build_model, canonical_name, get_spec
from minkseg.nn.res16unet import Res16UNet
from minkseg.weights import load_torch, state_dict_of, strip_wrapper_prefix

__all__ = ["load_original_checkpoint", "read_state_dict", "to_original_order", "BLOCK_KERNEL_ORDERS"]

BLOCK_KERNEL_ORDERS = ("auto", "hybrid", "cube")
_BLOCK_CONV = re.compile(r"^block\d+\.\d+\.conv\d+$")
_SHOWN = 4  # keys listed per problem kind before "and N more"
REIMPORT_FIX = "pass the path of the original .pth file, or re-save just its state_dict with torch.save"


def read_state_dict(source: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """(state_dict, label for messages, architecture name stored in the file if any).

    Accepts a path to ``{'state_dict': ...}`` (what the original training saved, with 'arch', 'epoch', ...) or to
    a bare state dict, or either object already in memory. Reading and unwrapping are :mod:`minkseg.weights`'
    (``weights_only=True``), shared with MinkSeg's own checkpoints and model file.
    """
    label = "<state_dict>"
    if isinstance(source, (str, os.PathLike)):
        label = str(source)
        source = load_torch(source, fix=REIMPORT_FIX)
    state, arch = state_dict_of(source, f"checkpoint {label}")
    return strip_wrapper_prefix(state), label, arch


def _resolve_order(model: nn.Module, order: str) -> str:
    if order not in BLOCK_KERNEL_ORDERS:
        raise CheckpointError(f"block_kernel_order must be one of {BLOCK_KERNEL_ORDERS}, got {order!r}")
    if order != "auto":
        return order
    if isinstance(model, Res16UNet):
        return "cube" if model.spec.lineage == "me" else "hybrid"
    raise CheckpointError(f"block_kernel_order='auto' needs a registry network, got {type(model).__name__}; "
                          "pass 'hybrid' or 'cube'")


def file_offsets(name: str, layer: ME.MinkowskiConvolution, order: str) -> torch.Tensor:
    """Offsets of ``layer``'s kernel rows as the original code stored them (``order`` already resolved)."""
    generator = layer.kernel_generator
    size = generator.kernel_size
    if generator.region_type == ME.RegionType.HYBRID:
        return me_hybrid_offsets(size, generator.axis_types)
    if order == "hybrid" and _BLOCK_CONV.match(name) and len(size) == 3 and generator.kernel_volume > 1:
        return me_hybrid_offsets(size, (ME.RegionType.HYPER_CUBE,) * 3)
    return me_cube_offsets(size)


def _permutations(model: nn.Module, order: str) -> dict[str, torch.Tensor]:
    """``{kernel key: p}`` such that ``our_kernel = file_kernel[p]``, for every conv whose rows need reordering."""
    found: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if not isinstance(module, (ME.MinkowskiConvolution, ME.MinkowskiConvolutionTranspose)):
            continue
        if module.kernel.dim() != 3:
            continue
        source = file_offsets(name, module, order)
        permutation = row_permutation(source, module.kernel_offsets)
        if permutation is None:
            raise CheckpointError(f"{name}: the engine's kernel offsets {module.kernel_offsets.tolist()} are not "
                                  f"the original region {source.tolist()}; this layer cannot be imported")
        if not torch.equal(permutation, torch.arange(len(permutation))):
            found[f"{name}.kernel"] = permutation
    return found


def _fit_shape(key: str, tensor: torch.Tensor, expected: torch.Size) -> torch.Tensor:
    """Bias (C,) <-> (1, C) and volume-1 kernels [1, in, out] <-> [in, out]: same numbers, other exporters."""
    if tensor.shape == expected or tensor.numel() != expected.numel():
        return tensor
    if key.endswith(".bias") or key.endswith(".kernel"):
        squeezed = [s for s in tensor.shape if s != 1]
        if squeezed == [s for s in expected if s != 1]:
            return tensor.reshape(expected)
    return tensor


def _summary(kind: str, items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {kind} ({', '.join(items[:_SHOWN])}{more})"


def _describe(model: nn.Module) -> str:
    if isinstance(model, Res16UNet):
        return (f"{model.spec.name} (D={model.D}, in_channels={model.in_channels}, "
                f"out_channels={model.out_channels} classes, conv1_kernel_size={model.conv1_kernel_size})")
    return type(model).__name__


def _infer_build_args(state: Mapping[str, torch.Tensor], label: str) -> dict[str, int]:
    """in/out channels and stem kernel size from the file, so a zoo file loads without restating them."""
    for key in ("conv0p1s1.kernel", "final.kernel"):
        if key not in state:
            raise CheckpointError(f"checkpoint {label} has no {key}; it is not a Res16UNet-family state dict "
                                  f"(pass model= to load it into a network you built)")
    stem, final = state["conv0p1s1.kernel"], state["final.kernel"]
    volume = stem.shape[0] if stem.dim() == 3 else 1
    kernel = round(volume ** (1.0 / 3.0))
    if kernel ** 3 != volume:
        raise CheckpointError(f"checkpoint {label}: conv0p1s1.kernel has {volume} offsets, not a k^3 cube")
    return {"in_channels": int(stem.shape[-2]), "out_channels": int(final.shape[-1]), "conv1_kernel_size": kernel}


def to_original_order(model: nn.Module, block_kernel_order: str = "auto") -> dict[str, torch.Tensor]:
    """Our model's state dict with kernel rows in the original code's order (the inverse of the import).

    Lets a test or a user write a file the original code would read, and round-trips with the importer.
    """
    order = _resolve_order(model, block_kernel_order)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key, permutation in _permutations(model, order).items():
        state[key] = state[key][torch.argsort(permutation)]
    return state


def load_original_checkpoint(source: str | os.PathLike | Mapping, model: nn.Module | None = None, *,
                             model_name: str | None = None, block_kernel_order: str = "auto",
                             strict: bool = True, **build_kwargs) -> nn.Module:
    """Load an original (ME-era) checkpoint into ``model``, or into a network built from ``model_name``.

    With ``model=None`` the network is built from ``model_name`` (else the file's 'arch' entry), with in/out
    channels and the stem kernel size read from the file; ``build_kwargs`` (D, bn_momentum, ...) pass on to
    ``build_model``. Mismatches raise one ``CheckpointError`` naming the missing, unexpected and mis-shaped
    keys, the model and its class count. Returns the model, in its current train/eval mode.
    """
    state, label, arch = read_state_dict(source)
    if model is None:
        name = model_name or arch
        if name is None:
            raise CheckpointError(f"checkpoint {label} does not name its network; pass model_name= or model=")
        try:
            canonical_name(name)
        except ModelError as error:
            raise CheckpointError(f"checkpoint {label}: {error}") from None
        args = {**_infer_build_args(state, label), **build_kwargs}
        if get_spec(name).dimension == 4:
            args.setdefault("D", 4)
        model = build_model(name, **args)
    order = _resolve_order(model, block_kernel_order)
    permutations = _permutations(model, order)

    expected = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for key, target in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):  # files from torch < 0.4.1 lack it; it only counts steps
                mapped[key] = target.clone()
            else:
                missing.append(key)
            continue
        tensor = _fit_shape(key, state[key], target.shape)
        if tensor.shape != target.shape:
            mismatched.append(f"{key}: file {tuple(state[key].shape)} vs model {tuple(target.shape)}")
            continue
        if key in permutations:
            tensor = tensor[permutations[key]]
        mapped[key] = tensor.to(dtype=target.dtype)
    unexpected = [key for key in state if key not in expected]

    if strict and (missing or unexpected or mismatched):
        problems = [_summary(kind, items) for kind, items in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                    if items]
        hint = ""
        if "final.kernel" in state and "final.kernel" in expected and \
                state["final.kernel"].shape[-1] != expected["final.kernel"].shape[-1]:
            hint = f"; the file has {state['final.kernel'].shape[-1]} classes, build with that out_channels"
        raise CheckpointError(f"checkpoint {label} does not fit {_describe(model)}: "
                              f"{'; '.join(problems)}{hint}")
    model.load_state_dict(mapped, strict=False)
    return model
