"""Quantisation and batching helpers: MinkowskiEngine's public ones with ME 0.5.4's signatures, defaults and return
types, and the pipeline's own voxeliser core (:func:`quantize_points`).

Data loaders run these on every sample of every epoch, so everything is vectorised (one sort, no Python loop over
points). ME's ``sparse_quantize`` keeps ME's conventions (they decide what ported code gets back): the first point of
each voxel in input order, ``ignore_label=-100``, torch outputs unless labels are given as numpy. The pipeline's
voxeliser uses :func:`quantize_points` instead, whose order (lexicographic) and numpy-in/numpy-out contract its
stored samples were made with.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["sparse_quantize", "quantize_points", "batched_coordinates", "sparse_collate", "batch_sparse_collate",
           "SparseCollation", "unique_coordinate_map", "unique_rows", "unique_rows_in_order", "batch_rows_of", "kaiming_normal_", "gradcheck", "summary"]


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


def unique_rows_in_order(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unique_index, inverse) with the unique rows in order of first appearance, as ME's coordinate maps keep them.

    ``rows[unique_index]`` are the distinct rows, each taken at its first occurrence, in input order;
    ``rows[unique_index][inverse] == rows``. Input without duplicates comes back unchanged (arange maps).
    """
    n = rows.shape[0]
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=rows.device)
        return empty, empty
    _, first, inverse_sorted = unique_rows(rows)
    if first.numel() == n:  # no duplicates: the common case for already-voxelised data
        arange = torch.arange(n, device=rows.device)
        return arange, arange
    unique_index, order = torch.sort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=rows.device)
    return unique_index, rank[inverse_sorted]


def batch_rows_of(batch: torch.Tensor) -> list[torch.Tensor]:
    """Row indices per batch index 0..max of a batch column, in row order within each batch."""
    batch = batch.long()
    if batch.numel() == 0:
        return []
    if int(batch.min()) < 0:
        raise ValueError("batch indices must be >= 0")
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch, minlength=int(batch.max()) + 1).tolist()
    return list(torch.split(order, counts))


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


def _discretise(coords: torch.Tensor, quantization_size: Any, who: str) -> torch.Tensor:
    """int32 floor(coords / quantization_size), refusing NaN/inf and indices beyond int32 (ME would wrap silently)."""
    if coords.dim() != 2:
        raise ValueError(f"{who}: coordinates must be [N, D], got shape {tuple(coords.shape)}")
    if coords.is_floating_point() and not torch.isfinite(coords).all():
        raise ValueError(f"{who}: coordinates contain NaN or inf; drop those points first")
    if quantization_size is None:
        quantization_size = 1
    q = torch.as_tensor(quantization_size, dtype=torch.float64, device=coords.device)
    if q.dim() > 0 and q.numel() != coords.shape[1]:
        raise ValueError(f"{who}: quantization_size has {q.numel()} entries for {coords.shape[1]} coordinate columns")
    if (q <= 0).any():
        raise ValueError(f"{who}: quantization_size must be > 0, got {quantization_size}")
    if coords.is_floating_point() or (q != 1).any():
        scaled = torch.floor(coords.double() / q)
    else:
        scaled = coords.double()
    _check_int32_range(scaled, quantization_size)
    return scaled.to(torch.int32)


def quantize_points(
    coordinates: np.ndarray | torch.Tensor,
    features: Any = None,
    labels: Any = None,
    *,
    ignore_label: int,
    quantization_size: float | Sequence[float] = 1,
) -> tuple[Any, Any, Any, Any, Any]:
    """The voxeliser's core: ``(coords, features, labels, index, inverse)``, voxels in lexicographic order.

    ``coords`` are int32 ``floor(coordinates / quantization_size)``; ``features`` those of the first point of each
    voxel (``index``); ``labels`` the voxel's shared label or ``ignore_label`` when its points disagree (None when
    not given); ``inverse`` maps every point to its voxel. numpy in, numpy out (torch in, torch out).
    """
    as_numpy = not isinstance(coordinates, torch.Tensor)
    discrete = _discretise(_to_torch(coordinates), quantization_size, "quantize_points")
    uniq, index, inverse = unique_rows(discrete)
    outputs: list[Any] = [uniq, None, None, index, inverse]
    if features is not None:
        feats = _to_torch(features)
        if feats.shape[0] != discrete.shape[0]:
            raise ValueError(f"quantize_points: {feats.shape[0]} features for {discrete.shape[0]} coordinates")
        outputs[1] = feats[index]
    if labels is not None:
        labs = _to_torch(labels)
        if labs.shape[0] != discrete.shape[0]:
            raise ValueError(f"quantize_points: {labs.shape[0]} labels for {discrete.shape[0]} coordinates")
        outputs[2] = _voxel_labels(labs, inverse, uniq.shape[0], ignore_label).to(labs.dtype)
    if as_numpy:
        outputs = [o.cpu().numpy() if o is not None else None for o in outputs]
    return tuple(outputs)  # type: ignore[return-value]


def sparse_quantize(
    coordinates: Any,
    features: Any = None,
    labels: Any = None,
    ignore_label: int = -100,
    return_index: bool = False,
    return_inverse: bool = False,
    return_maps_only: bool = False,
    quantization_size: Any = None,
    device: str | torch.device = "cpu",
) -> Any:
    """MinkowskiEngine's ``utils.sparse_quantize``: one row per occupied voxel, the first point of each voxel in
    input order.

    Returns ``coords`` alone or the tuple ``(coords, [features], [labels], [index], [inverse])`` with the optional
    entries present when given/requested; with ``return_maps_only`` just ``index`` (and ``inverse``). As in ME 0.5.4:
    without labels the coordinates and maps come back as torch tensors (on ``device``) even for numpy input, and
    ``features[index]`` keeps the features' own type; with labels, numpy coordinates give numpy results. A voxel whose
    points disagree gets ``ignore_label`` (ME's default -100). Labels may be [N] or [N, 1]; voxel labels are [M].
    Differences from ME, all refusals of input ME would turn into garbage: NaN/inf coordinates and voxel indices
    beyond int32 raise ValueError; ``return_inverse`` without ``return_index`` is allowed.
    """
    if not isinstance(coordinates, (np.ndarray, torch.Tensor)):
        raise TypeError(f"sparse_quantize: coordinates must be a numpy array or torch tensor, got "
                        f"{type(coordinates).__name__}")
    numpy_in = isinstance(coordinates, np.ndarray)
    discrete = _discretise(_to_torch(coordinates), quantization_size, "sparse_quantize")
    n = discrete.shape[0]
    if features is not None and len(features) != n:
        raise ValueError(f"sparse_quantize: {len(features)} features for {n} coordinates")
    if labels is None:
        discrete = discrete.to(device)
        index, inverse = unique_rows_in_order(discrete)
        if return_maps_only:
            return (index, inverse) if return_inverse else index
        outputs: list[Any] = [discrete[index]]
        if features is not None:
            outputs.append(features[index.cpu().numpy()] if isinstance(features, np.ndarray) else
                           features[index.to(features.device)])
    else:
        labs = _to_torch(labels)
        if labs.shape[0] != n:
            raise ValueError(f"sparse_quantize: {labs.shape[0]} labels for {n} coordinates")
        if labs.dim() == 2 and labs.shape[1] == 1:
            flat = labs[:, 0]
        elif labs.dim() == 1:
            flat = labs
        else:
            raise ValueError(f"sparse_quantize: labels must be [N] or [N, 1], got shape {tuple(labs.shape)}")
        index, inverse = unique_rows_in_order(discrete)
        voxel_labels = _voxel_labels(flat, inverse, index.numel(), ignore_label).to(labs.dtype)  # [M], as ME
        if numpy_in:
            outputs = [discrete[index].numpy()]
            if features is not None:
                outputs.append(np.asarray(features)[index.numpy()])
            outputs.append(voxel_labels.numpy())
            index, inverse = index.numpy(), inverse.numpy()
        else:
            outputs = [discrete[index]]
            if features is not None:
                outputs.append(features[index.to(features.device)] if isinstance(features, torch.Tensor)
                               else np.asarray(features)[index.numpy()])
            outputs.append(voxel_labels)
    if return_index:
        outputs.append(index)
    if return_inverse:
        outputs.append(inverse)
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def unique_coordinate_map(coordinates: torch.Tensor, tensor_stride: int | Sequence[int] = 1
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """ME's ``utils.unique_coordinate_map``: (unique_map, inverse_map) of integer coordinate rows, first
    occurrences in input order. ``tensor_stride`` is accepted for ME's signature (it names the map, nothing more)."""
    if not isinstance(coordinates, torch.Tensor) or coordinates.dim() != 2:
        raise ValueError("unique_coordinate_map: coordinates must be a 2-D torch tensor")
    return unique_rows_in_order(coordinates)


def _coordinate_rows(c: Any, dtype: torch.dtype) -> torch.Tensor:
    c = _to_torch(c)
    if c.dim() != 2:
        raise ValueError(f"batched_coordinates: every coordinate array must be [N, D], got shape {tuple(c.shape)}")
    if dtype in (torch.float32, torch.float64):
        return c.to(dtype)  # ME copies float coordinates through (xyz batched as features, TensorField input)
    if c.is_floating_point():
        c = torch.floor(c)
    return c.to(dtype)


def batched_coordinates(
    coords: Sequence[Any], dtype: torch.dtype = torch.int32, device: torch.device | str | None = None
) -> torch.Tensor:
    """ME's ``utils.batched_coordinates``: per-sample [N_i, D] coordinates stacked into [sum N_i, 1+D] with the
    batch index first. ``dtype=torch.int32`` floors float input; ``torch.float32`` keeps the values as they are."""
    if len(coords) == 0:
        raise ValueError("batched_coordinates: got an empty list of coordinates")
    parts = [_coordinate_rows(c, dtype) for c in coords]
    dims = {p.shape[1] for p in parts}
    if len(dims) != 1:
        raise ValueError(f"batched_coordinates: all coordinate arrays need the same number of columns, got {sorted(dims)}")
    out = torch.empty(sum(p.shape[0] for p in parts), dims.pop() + 1, dtype=dtype,
                      device=device if device is not None else parts[0].device)
    start = 0
    for b, p in enumerate(parts):
        out[start:start + p.shape[0], 0] = b
        out[start:start + p.shape[0], 1:] = p.to(out.device)
        start += p.shape[0]
    return out


def sparse_collate(
    coords: Sequence[Any],
    feats: Sequence[Any],
    labels: Sequence[Any] | None = None,
    dtype: torch.dtype = torch.int32,
    device: torch.device | str | None = None,
) -> tuple[Any, ...]:
    """ME's ``utils.sparse_collate``: batched coordinates, concatenated features (and labels, concatenated when
    they are tensors/arrays, else returned as the list ME returns)."""
    if len(coords) != len(feats):
        raise ValueError(f"sparse_collate: {len(coords)} coordinate arrays for {len(feats)} feature arrays")
    bcoords = batched_coordinates(coords, dtype=dtype, device=device)
    bfeats = torch.cat([_to_torch(f) for f in feats], 0)
    if bfeats.shape[0] != bcoords.shape[0]:
        raise ValueError(f"sparse_collate: {bcoords.shape[0]} coordinates for {bfeats.shape[0]} feature rows")
    if device is not None:
        bfeats = bfeats.to(device)
    if labels is None:
        return bcoords, bfeats
    labels = [torch.from_numpy(lab) if isinstance(lab, np.ndarray) else lab for lab in labels]
    if labels and isinstance(labels[0], torch.Tensor):
        blabels = torch.cat(labels, 0)
        return bcoords, bfeats, (blabels.to(device) if device is not None else blabels)
    return bcoords, bfeats, labels


def batch_sparse_collate(data: Sequence[Sequence[Any]], dtype: torch.dtype = torch.int32,
                         device: torch.device | str | None = None) -> tuple[Any, ...]:
    """ME's ``utils.batch_sparse_collate``: a DataLoader ``collate_fn`` for samples of (coords, feats[, labels])."""
    return sparse_collate(*list(zip(*data)), dtype=dtype, device=device)


class SparseCollation:
    """ME's ``utils.SparseCollation``: collate (coords, feats, labels) samples, dropping the samples past
    ``limit_numpoints`` points in a batch (with a warning, as ME)."""

    def __init__(self, limit_numpoints: int = -1, dtype: torch.dtype = torch.int32,
                 device: torch.device | str | None = None) -> None:
        self.limit_numpoints, self.dtype, self.device = limit_numpoints, dtype, device

    def __call__(self, list_data: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
        coords, feats, labels = list(zip(*list_data))
        kept, total = 0, 0
        for c in coords:
            if self.limit_numpoints > 0 and total + len(c) > self.limit_numpoints:
                logging.getLogger(__name__).warning(
                    "SparseCollation: %d points do not fit the %d-point limit; kept %d of %d samples",
                    sum(len(x) for x in coords), self.limit_numpoints, kept, len(coords))
                break
            total += len(c)
            kept += 1
        return sparse_collate(list(coords[:kept]), list(feats[:kept]), list(labels[:kept]), dtype=self.dtype,
                              device=self.device)


def kaiming_normal_(tensor: torch.Tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu") -> torch.Tensor:
    """ME's ``utils.kaiming_normal_`` for its kernel layout: a [K, in, out] kernel has fan_in = in * K and
    fan_out = out * K; a 2-D tensor is read as a linear weight [out, in] (fan_in = size(1)), as ME reads it."""
    if tensor.dim() < 2:
        raise ValueError("kaiming_normal_: fan in and fan out need a tensor with at least 2 dimensions")
    if mode.lower() not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_normal_: mode must be fan_in or fan_out, got {mode!r}")
    if tensor.dim() == 2:
        fan_in, fan_out = tensor.size(1), tensor.size(0)
    else:
        fan_in, fan_out = tensor.size(1) * tensor.size(0), tensor.size(2) * tensor.size(0)
    fan = fan_in if mode.lower() == "fan_in" else fan_out
    std = torch.nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    with torch.no_grad():
        return tensor.normal_(0, std)


def gradcheck(func: Any, inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True, **kwargs: Any) -> bool:
    """ME's ``utils.gradcheck``: torch's finite-difference check of ``func(*inputs)``; ``func`` may be one of the
    ``Minkowski*Function()`` objects (callable here) and ``inputs`` may hold keys, generators and managers."""
    return torch.autograd.gradcheck(func, tuple(inputs), eps=eps, atol=atol, rtol=rtol,
                                    raise_exception=raise_exception, **kwargs)


def summary(model: torch.nn.Module, summary_input: Any) -> str:
    """ME's ``utils.summary``: print (and return) each leaf layer's output size and parameter count for one
    forward pass of ``summary_input``."""
    rows: list[tuple[str, str, int]] = []

    def hook(module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        features = getattr(output, "F", output)
        size = list(features.shape) if isinstance(features, torch.Tensor) else "?"
        rows.append((f"{type(module).__name__}-{len(rows) + 1}", str(size),
                     sum(p.numel() for p in module.parameters(recurse=False))))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(summary_input)
    finally:
        for handle in handles:
            handle.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = [f"{'Layer (type)':>25}  {'Output Shape':>25} {'Param #':>15}", "=" * 67]
    lines += [f"{name:>25}  {size:>25} {count:>15,}" for name, size, count in rows]
    lines += ["=" * 67, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}"]
    text = "\n".join(lines)
    print(text)
    return text
