"""Quantisation and batching helpers with MinkowskiEngine's names and return conventions.

Data loaders run these on every sample of every epoch, so everything is vectorised (one sort, no Python loop over
points) and works on numpy arrays (returned as numpy) as well as torch tensors (returned as torch).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["sparse_quantize", "batched_coordinates", "sparse_collate", "unique_rows"]


def _to_torch(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique integer rows as (unique_rows, first_index, inverse).

    Rows are packed into one int64 key per row (mixed radix over the observed per-column span) because sorting one
    column is several times faster than ``torch.unique(dim=0)``; the output order is the lexicographic row order,
    so it is deterministic.
    """
    if rows.dim() != 2:
        raise ValueError(f"unique_rows: expected a 2-D integer tensor, got shape {tuple(rows.shape)}")
    n = rows.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=rows.device)
        return rows, empty, empty
    rows64 = rows.long()
    lo = rows64.min(0).values
    span = rows64.max(0).values - lo + 1
    total = 1.0
    for s in span.tolist():
        total *= float(s)
    if total >= 2.0**62:
        uniq, inverse = torch.unique(rows64, dim=0, return_inverse=True)
    else:
        mult = torch.ones_like(span)
        for col in range(span.numel() - 2, -1, -1):
            mult[col] = mult[col + 1] * span[col + 1]
        keys = ((rows64 - lo) * mult).sum(1)
        uniq_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        uniq = torch.empty(uniq_keys.numel(), rows.shape[1], dtype=torch.long, device=rows.device)
        rem = uniq_keys.clone()
        for col in range(span.numel()):
            uniq[:, col] = torch.div(rem, mult[col], rounding_mode="floor") + lo[col]
            rem = rem % mult[col]
    first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=rows.device), reduce="amin")
    return uniq.to(rows.dtype), first, inverse


def _voxel_labels(labels: torch.Tensor, inverse: torch.Tensor, n_voxels: int, ignore_label: int) -> torch.Tensor:
    """A voxel whose points disagree gets ``ignore_label`` (ME's behaviour: a mixed voxel is not a training signal)."""
    labels = labels.long()
    lo = torch.full((n_voxels,), torch.iinfo(torch.long).max, dtype=torch.long, device=labels.device)
    hi = torch.full((n_voxels,), torch.iinfo(torch.long).min, dtype=torch.long, device=labels.device)
    lo.scatter_reduce_(0, inverse, labels, reduce="amin")
    hi.scatter_reduce_(0, inverse, labels, reduce="amax")
    return torch.where(lo == hi, lo, torch.full_like(lo, ignore_label))


_INT32_LIMIT = float(2**31 - 1)


def _check_int32_range(scaled: torch.Tensor, quantization_size: Any) -> None:
    """Voxel indices are int32 (ME's layout); a silent wrap-around would merge far-apart points into one voxel."""
    if scaled.numel() == 0:
        return
    worst = scaled.abs().max().item()
    if worst > _INT32_LIMIT:
        raise ValueError(
            f"sparse_quantize: a coordinate maps to voxel index {worst:.3g}, beyond int32 "
            f"(quantization_size {quantization_size}); check the units of the input (mm vs m) or drop outlier points"
        )


def sparse_quantize(
    coordinates: Any,
    features: Any = None,
    labels: Any = None,
    ignore_label: int = 255,
    quantization_size: float | Sequence[float] = 1,
    return_index: bool = False,
    return_inverse: bool = False,
) -> Any:
    """Voxelise points: one output row per occupied voxel, ME's order of returns.

    Returns ``coords`` alone, or a tuple ``(coords, [features], [labels], [index], [inverse])`` with the optional
    entries present when requested. ``coords`` are int32 ``floor(coordinates / quantization_size)``; ``features``
    are those of the first point in each voxel (``index``); ``labels`` are the shared label of the voxel's points or
    ``ignore_label`` on conflict; ``inverse`` maps every input point to its voxel so predictions go back to points.
    Extra leading columns (e.g. a batch index) must be passed already discrete with quantization_size 1.
    """
    as_numpy = not isinstance(coordinates, torch.Tensor)
    coords = _to_torch(coordinates)
    if coords.dim() != 2:
        raise ValueError(f"sparse_quantize: coordinates must be [N, D], got shape {tuple(coords.shape)}")
    if coords.is_floating_point():
        if not torch.isfinite(coords).all():
            raise ValueError("sparse_quantize: coordinates contain NaN or inf; drop those points first")
    q = torch.as_tensor(quantization_size, dtype=torch.float64, device=coords.device)
    if (q <= 0).any():
        raise ValueError(f"sparse_quantize: quantization_size must be > 0, got {quantization_size}")
    if coords.is_floating_point() or (q != 1).any():
        scaled = torch.floor(coords.double() / q)
    else:
        scaled = coords.double()
    _check_int32_range(scaled, quantization_size)
    discrete = scaled.to(torch.int32)
    uniq, index, inverse = unique_rows(discrete)

    outputs: list[torch.Tensor] = [uniq]
    if features is not None:
        feats = _to_torch(features)
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"sparse_quantize: {feats.shape[0]} features for {coords.shape[0]} coordinates")
        outputs.append(feats[index])
    if labels is not None:
        labs = _to_torch(labels)
        if labs.shape[0] != coords.shape[0]:
            raise ValueError(f"sparse_quantize: {labs.shape[0]} labels for {coords.shape[0]} coordinates")
        outputs.append(_voxel_labels(labs, inverse, uniq.shape[0], ignore_label).to(labs.dtype))
    if return_index:
        outputs.append(index)
    if return_inverse:
        outputs.append(inverse)
    if as_numpy:
        outputs = [o.cpu().numpy() for o in outputs]
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def batched_coordinates(
    coords: Sequence[Any], dtype: torch.dtype = torch.int32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Stack per-sample [N_i, D] coordinates into one [sum N_i, 1+D] tensor with the batch index first (ME layout)."""
    if len(coords) == 0:
        raise ValueError("batched_coordinates: got an empty list of coordinates")
    parts = []
    for b, c in enumerate(coords):
        c = _to_torch(c)
        if c.is_floating_point():
            c = torch.floor(c)
        col = torch.full((c.shape[0], 1), b, dtype=torch.long, device=c.device)
        parts.append(torch.cat([col, c.long()], 1))
    out = torch.cat(parts, 0).to(dtype)
    return out if device is None else out.to(device)


def sparse_collate(
    coords: Sequence[Any],
    feats: Sequence[Any],
    labels: Sequence[Any] | None = None,
    dtype: torch.dtype = torch.int32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, ...]:
    """Collate per-sample coordinates/features(/labels) into batched tensors for one SparseTensor."""
    bcoords = batched_coordinates(coords, dtype=dtype, device=device)
    bfeats = torch.cat([_to_torch(f) for f in feats], 0)
    if device is not None:
        bfeats = bfeats.to(device)
    if labels is None:
        return bcoords, bfeats
    blabels = torch.cat([_to_torch(lab) for lab in labels], 0)
    if device is not None:
        blabels = blabels.to(device)
    return bcoords, bfeats, blabels
