"""The coordinate manager: one per forward pass, shared by every SparseTensor derived from the same input.

It owns the coordinate set of every tensor stride and caches kernel maps, so a U-Net builds each map once: all
blocks at one stride share a map, and a transposed conv reuses the map of the strided conv it mirrors. Lookups
are sort + binary search (or a dense table) on packed int64 keys, done on the coordinates' own device (no host
round-trip on CUDA). Besides the engine's own calls (``insert``, ``stride_key``, ``kernel_map_for``) it has
MinkowskiEngine 0.5's public methods with ME's signatures (``insert_and_map``, ``stride``, ``kernel_map``,
``origin``, ``origin_map``, ``stride_map``, ``union_map``, ``get_coordinates``, ...), because ME user code calls them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import torch

from minkseg.sparse.kernel import KernelGenerator, RegionType, to_tuple
from minkseg.sparse.keys import CoordinateMapKey, CoordinateMapType, GPUMemoryAllocatorType, MinkowskiAlgorithm
from minkseg.sparse.utils import batch_rows_of, unique_rows, unique_rows_in_order

__all__ = ["CoordinateMapKey", "CoordinateManager", "KernelMap", "CoordinateMapType", "MinkowskiAlgorithm",
           "GPUMemoryAllocatorType", "lookup_rows"]

# Kernel maps look coordinates up in a dense int32 table over the bounding box of one batch chunk when the box
# holds at most this many cells (128 MiB): a gather per query instead of a ~20-step binary search, about 4x
# faster on a ScanNet room. Larger boxes (huge outdoor scenes) fall back to binary search on sorted keys.
_DENSE_TABLE_ENTRIES = 1 << 25


@dataclass
class KernelMap:
    """For each kernel offset k, rows ``in_maps[k]`` of the input feed rows ``out_maps[k]`` of the output.

    ``identity[k]`` marks an offset whose map is the identity on equal sets, so the conv can skip the gather.
    """

    in_maps: list[torch.Tensor]
    out_maps: list[torch.Tensor]
    identity: list[bool]
    n_in: int
    n_out: int

    def transposed(self) -> "KernelMap":
        return KernelMap(self.out_maps, self.in_maps, self.identity, self.n_out, self.n_in)

    def pair_counts(self) -> list[int]:
        return [int(m.numel()) for m in self.in_maps]


class _CoordinateSet:
    """Coordinates of one stride plus the sorted packed keys used to look them up."""

    def __init__(self, coordinates: torch.Tensor) -> None:
        self.coordinates = coordinates
        c64 = coordinates.long()
        if c64.shape[0] == 0:  # an empty set (ME allows zero-row tensors): any frame holds it
            self.lo = torch.zeros(c64.shape[1], dtype=torch.long, device=c64.device)
            self.hi = self.lo.clone()
        else:
            self.lo = c64.min(0).values
            self.hi = c64.max(0).values
        self._frames: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def frame(self, lo: torch.Tensor, radix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sorted keys and permutation of this set in a packing frame (cached per frame)."""
        fkey = (tuple(lo.tolist()), tuple(radix.tolist()))
        if fkey not in self._frames:
            mult = _radix_multipliers(radix)
            keys = ((self.coordinates.long() - lo) * mult).sum(1)
            sorted_keys, perm = torch.sort(keys)
            self._frames[fkey] = (mult, sorted_keys, perm, keys)
        mult, sorted_keys, perm, _ = self._frames[fkey]
        return mult, sorted_keys, perm

    def keys_in(self, lo: torch.Tensor, radix: torch.Tensor) -> torch.Tensor:
        self.frame(lo, radix)
        return self._frames[(tuple(lo.tolist()), tuple(radix.tolist()))][3]


def _radix_multipliers(radix: torch.Tensor) -> torch.Tensor:
    """Mixed-radix place values, batch column most significant, last axis least (so rows sort x, y, z...)."""
    mult = torch.ones_like(radix)
    for col in range(radix.numel() - 2, -1, -1):
        mult[col] = mult[col + 1] * radix[col + 1]
    return mult


class CoordinateManager:
    """Coordinate sets per stride and a kernel-map cache keyed by (in, out, kernel size, stride, dilation, region).

    ``CoordinateManager(D)`` as in ME; ``coordinate_map_type=CoordinateMapType.CUDA`` (or ``device=``) keeps the
    coordinates on the GPU. ``num_threads``, ``allocator_type`` and ``minkowski_algorithm`` are accepted for ME's
    signature and change nothing here.
    """

    def __init__(self, D: int = 0, num_threads: int = -1, coordinate_map_type: CoordinateMapType | None = None,
                 allocator_type: GPUMemoryAllocatorType | None = None,
                 minkowski_algorithm: MinkowskiAlgorithm | None = None, *,
                 device: torch.device | str | None = None) -> None:
        if isinstance(num_threads, (str, torch.device)):  # minkseg's older CoordinateManager(D, device) call
            device, num_threads = num_threads, -1
        if D < 1:
            raise ValueError(f"CoordinateManager needs a spatial dimension D >= 1, got {D}")
        if device is None:
            device = "cuda" if coordinate_map_type == CoordinateMapType.CUDA else "cpu"
        self.D = D
        self.device = torch.device(device)
        self.minkowski_algorithm = minkowski_algorithm or MinkowskiAlgorithm.DEFAULT
        self._sets: dict[CoordinateMapKey, _CoordinateSet] = {}
        self._fields: dict[CoordinateMapKey, torch.Tensor] = {}
        self._kernel_maps: dict[tuple, KernelMap] = {}
        self._next_tag = 0
        self.kernel_map_builds = 0  # how many maps were actually computed (tests check the cache with it)

    def __repr__(self) -> str:
        sets = ", ".join(f"{k}: {self.size(k)}" for k in self._sets)
        return f"CoordinateManager(D={self.D}, device={self.device}, sets=[{sets}])"

    # ----------------------------------------------------------------- coordinate sets (engine calls)
    def _fresh_key(self, stride: tuple[int, ...], tag: str | None) -> CoordinateMapKey:
        if tag is None:
            tag = ""
        if CoordinateMapKey(stride, tag) not in self._sets and CoordinateMapKey(stride, tag) not in self._fields:
            return CoordinateMapKey(stride, tag)
        while True:  # ME gives a colliding insert a new random string id; a counter is deterministic
            self._next_tag += 1
            key = CoordinateMapKey(stride, f"{tag}set{self._next_tag}")
            if key not in self._sets and key not in self._fields:
                return key

    def insert(self, coordinates: torch.Tensor, tensor_stride: Sequence[int], tag: str | None = None
               ) -> CoordinateMapKey:
        """Register a coordinate set whose rows are already unique; an untagged insert at a stride already held
        gets a fresh tag. (ME's ``insert_and_map`` below also removes duplicate rows.)"""
        if coordinates.dim() != 2 or coordinates.shape[1] != self.D + 1:
            raise ValueError(f"coordinates must be [N, 1+D] = [N, {self.D + 1}] (batch first), "
                             f"got shape {tuple(coordinates.shape)}")
        stride = tuple(int(s) for s in tensor_stride)
        key = self._fresh_key(stride, tag) if tag is None else CoordinateMapKey(stride, tag)
        self._sets[key] = _CoordinateSet(coordinates.to(self.device, torch.int32).contiguous())
        return key

    def __contains__(self, key: CoordinateMapKey) -> bool:
        return key in self._sets

    def _key(self, key_or_stride: CoordinateMapKey | int | Sequence[int]) -> CoordinateMapKey:
        """A key, or ME's shorthand: a tensor stride (int or list) naming the first set held at that stride."""
        if isinstance(key_or_stride, CoordinateMapKey):
            if key_or_stride not in self._sets:
                raise KeyError(f"{key_or_stride} is not held by this coordinate manager")
            return key_or_stride
        stride = to_tuple(key_or_stride, self.D, "tensor_stride")
        for key in self._sets:
            if key.tensor_stride == stride:
                return key
        raise KeyError(f"no coordinate set with tensor stride {list(stride)} in this coordinate manager")

    def get_coordinates(self, key: CoordinateMapKey | int | Sequence[int]) -> torch.Tensor:
        return self._sets[self._key(key)].coordinates

    def size(self, key: CoordinateMapKey | int | Sequence[int]) -> int:
        return int(self._sets[self._key(key)].coordinates.shape[0])

    def keys(self) -> list[CoordinateMapKey]:
        return list(self._sets)

    def stride_key(self, in_key: CoordinateMapKey, stride: Sequence[int], tag: str | None = None) -> CoordinateMapKey:
        """The set at ``tensor_stride * stride``: floor(c / (t*s)) * (t*s), created on first use."""
        new_stride = tuple(t * s for t, s in zip(in_key.tensor_stride, stride))
        out_key = CoordinateMapKey(new_stride, in_key.tag if tag is None else tag)
        if out_key not in self._sets:
            coords = self._sets[in_key].coordinates.long()
            step = torch.tensor((1,) + new_stride, dtype=torch.long, device=coords.device)
            down = torch.div(coords, step, rounding_mode="floor") * step
            uniq, _, _ = unique_rows(down)
            self._sets[out_key] = _CoordinateSet(uniq.to(torch.int32).contiguous())
        return out_key

    def _expanded(self, in_key: CoordinateMapKey, kernel: KernelGenerator, unit: Sequence[int]) -> torch.Tensor:
        """int64 rows: every coordinate of ``in_key``'s set moved by every kernel offset x ``unit`` x dilation."""
        coords = self._sets[in_key].coordinates.long()
        scale = torch.tensor(unit, dtype=torch.long, device=coords.device) * torch.tensor(
            kernel.kernel_dilation, dtype=torch.long, device=coords.device)
        expanded = coords[:, None, :].repeat(1, kernel.kernel_volume, 1)
        expanded[:, :, 1:] += (kernel.offsets.to(coords.device) * scale)[None]
        return expanded.reshape(-1, coords.shape[1])

    @staticmethod
    def _finer_stride(in_key: CoordinateMapKey, kernel: KernelGenerator) -> tuple[int, ...]:
        stride = kernel.kernel_stride
        if any(t % s for t, s in zip(in_key.tensor_stride, stride)):
            raise ValueError(f"transposed stride {list(stride)} does not divide tensor stride "
                             f"{list(in_key.tensor_stride)}")
        return tuple(t // s for t, s in zip(in_key.tensor_stride, stride))

    def transposed_key(self, in_key: CoordinateMapKey, kernel: KernelGenerator) -> CoordinateMapKey:
        """The finer set a transposed conv writes to: the stored one if the U-Net went down through it, else
        generated by expanding every input coordinate by the kernel (ME's generative transpose)."""
        new_stride = self._finer_stride(in_key, kernel)
        out_key = CoordinateMapKey(new_stride, in_key.tag)
        if out_key not in self._sets:
            uniq, _, _ = unique_rows(self._expanded(in_key, kernel, new_stride))
            self._sets[out_key] = _CoordinateSet(uniq.to(torch.int32).contiguous())
        return out_key

    def generated_key(self, in_key: CoordinateMapKey, kernel: KernelGenerator) -> CoordinateMapKey:
        """ME's generative transposed conv output: a new set at the finer stride ``tensor_stride / stride`` holding
        every input coordinate moved by every kernel offset (x the finer stride x dilation)."""
        new_stride = self._finer_stride(in_key, kernel)
        uniq, _, _ = unique_rows(self._expanded(in_key, kernel, new_stride))
        return self.insert(uniq, new_stride, tag=self._fresh_key(new_stride, "generated").tag)

    def expanded_key(self, in_key: CoordinateMapKey, kernel: KernelGenerator) -> CoordinateMapKey:
        """ME's ``expand_coordinates=True`` output set: every input coordinate moved by every kernel offset
        (x tensor stride x dilation), kept where it lies on the output stride's grid. Always a new set."""
        out_stride = tuple(t * s for t, s in zip(in_key.tensor_stride, kernel.kernel_stride))
        expanded = self._expanded(in_key, kernel, in_key.tensor_stride)
        grid = torch.tensor(out_stride, dtype=torch.long, device=expanded.device)
        expanded = expanded[(torch.remainder(expanded[:, 1:], grid) == 0).all(1)]
        uniq, _, _ = unique_rows(expanded)
        return self.insert(uniq, out_stride, tag=self._fresh_key(out_stride, "expanded").tag)

    # ----------------------------------------------------------------- kernel maps (engine calls)
    def kernel_map_for(self, in_key: CoordinateMapKey, out_key: CoordinateMapKey, kernel: KernelGenerator,
                       is_transpose: bool = False) -> KernelMap:
        """Cached map between two sets; a transposed map is the swapped map of the mirrored strided conv."""
        if is_transpose:
            return self.kernel_map_for(out_key, in_key, kernel, is_transpose=False).transposed()
        cache_key = (in_key, out_key, kernel.kernel_size, kernel.kernel_dilation, kernel.region_key)
        kmap = self._kernel_maps.get(cache_key)
        if kmap is None:
            kmap = self._build_kernel_map(in_key, out_key, kernel)
            self._kernel_maps[cache_key] = kmap
            self.kernel_map_builds += 1
        return kmap

    # ----------------------------------------------------------------- MinkowskiEngine's public methods
    def insert_and_map(self, coordinates: torch.Tensor, tensor_stride: int | Sequence[int] = 1,
                       string_id: str = "") -> tuple[CoordinateMapKey, tuple[torch.Tensor, torch.Tensor]]:
        """ME: store the unique rows (first occurrences, in input order) and return
        ``(key, (unique_map, inverse_map))`` with ``coordinates[unique_map][inverse_map] == coordinates``."""
        if not isinstance(coordinates, torch.Tensor):
            coordinates = torch.as_tensor(coordinates)
        if coordinates.dim() != 2 or coordinates.shape[1] != self.D + 1:
            raise ValueError(f"coordinates must be [N, 1+D] = [N, {self.D + 1}] (batch first), "
                             f"got shape {tuple(coordinates.shape)}")
        coordinates = coordinates.to(self.device)
        unique_map, inverse_map = unique_rows_in_order(coordinates)
        stride = to_tuple(tensor_stride, self.D, "tensor_stride")
        key = self._fresh_key(stride, string_id)
        self._sets[key] = _CoordinateSet(coordinates[unique_map].to(torch.int32).contiguous())
        return key, (unique_map, inverse_map)

    def stride(self, coordinate_map_key: CoordinateMapKey, stride: int | Sequence[int],
               string_id: str = "") -> CoordinateMapKey:
        """ME: the set at ``tensor_stride * stride`` (floor to the coarser grid), created on first use."""
        return self.stride_key(self._key(coordinate_map_key), to_tuple(stride, self.D, "stride"),
                               tag=string_id or None)

    def _batch_indices(self, key: CoordinateMapKey) -> torch.Tensor:
        return torch.unique(self._sets[key].coordinates[:, 0].long(), sorted=True)

    def origin(self) -> CoordinateMapKey:
        """ME: the set of one coordinate per batch index present (batch, 0, ..., 0), ascending by batch index,
        over the first set inserted. Global pooling writes to it."""
        if not self._sets:
            raise ValueError("origin(): the coordinate manager holds no coordinates yet")
        return self.origin_of(next(iter(self._sets)))

    def origin_of(self, key: CoordinateMapKey) -> CoordinateMapKey:
        """The origin set of the batch indices present in ``key``'s set or field (what a global pooling outputs)."""
        if key in self._fields:
            batches = torch.unique(torch.round(self._fields[key][:, 0]).long(), sorted=True)
        else:
            batches = self._batch_indices(key)
        origin_key = CoordinateMapKey((0,) * self.D, f"origin:{key.tag}:{','.join(map(str, batches.tolist()))}")
        if origin_key not in self._sets:
            coords = torch.zeros(batches.numel(), self.D + 1, dtype=torch.int32, device=self.device)
            coords[:, 0] = batches.to(torch.int32)
            self._sets[origin_key] = _CoordinateSet(coords)
        return origin_key

    def origin_map(self, key: CoordinateMapKey) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """ME: ``(batch_indices, rows)``: the batch indices present (ascending) and, for every batch index from 0
        to the largest, the rows of ``key``'s set in that batch (empty for an absent index)."""
        key = self._key(key)
        batch = self._sets[key].coordinates[:, 0]
        return torch.unique(batch.long(), sorted=True), batch_rows_of(batch)

    def number_of_unique_batch_indices(self) -> int:
        """ME: how many batch indices the first inserted set holds."""
        return 0 if not self._sets else int(self._batch_indices(next(iter(self._sets))).numel())

    def kernel_map(self, in_key: CoordinateMapKey | int | Sequence[int], out_key: CoordinateMapKey | int | Sequence[int],
                   stride: int | Sequence[int] = 1, kernel_size: int | Sequence[int] = 3,
                   dilation: int | Sequence[int] = 1, region_type: RegionType = RegionType.HYPER_CUBE,
                   region_offset: torch.Tensor | None = None, is_transpose: bool = False,
                   is_pool: bool = False) -> dict[int, torch.Tensor]:
        """ME: ``{kernel_index: tensor[2, n]}`` with row 0 the input rows feeding row 1's output rows, for the
        offsets that have pairs. Keys may be given as tensor strides (ME's shorthand)."""
        in_key, out_key = self._key(in_key), self._key(out_key)
        if region_offset is not None and region_offset.numel() == 0:
            region_offset = None
        if to_tuple(kernel_size, self.D, "kernel_size") == (1,) * self.D:
            region_type = RegionType.HYPER_CUBE  # as ME: a cross of size 1 is the single centre offset
        generator = KernelGenerator(kernel_size, stride, dilation, is_transpose=is_transpose,
                                    region_type=RegionType(int(getattr(region_type, "value", region_type))),
                                    region_offsets=region_offset, dimension=self.D)
        kmap = self.kernel_map_for(in_key, out_key, generator, is_transpose=is_transpose)
        return {k: torch.stack([kmap.in_maps[k], kmap.out_maps[k]]).int()
                for k in range(len(kmap.in_maps)) if kmap.in_maps[k].numel()}

    def get_kernel_map(self, *args, **kwargs) -> dict[int, torch.Tensor]:
        """ME's deprecated alias of :meth:`kernel_map`."""
        return self.kernel_map(*args, **kwargs)

    def stride_map(self, in_key: CoordinateMapKey, stride_key: CoordinateMapKey) -> tuple[torch.Tensor, torch.Tensor]:
        """ME: ``(in_rows, out_rows)``: every row of ``in_key``'s set and the row of the coarser set it falls in."""
        in_key, stride_key = self._key(in_key), self._key(stride_key)
        coords = self._sets[in_key].coordinates.long()
        step = torch.tensor((1,) + stride_key.tensor_stride, dtype=torch.long, device=coords.device)
        rows = lookup_rows(self._sets[stride_key].coordinates, torch.div(coords, step, rounding_mode="floor") * step)
        found = torch.nonzero(rows >= 0).squeeze(1)
        return found, rows[found]

    def union_map(self, in_keys: Sequence[CoordinateMapKey], out_key: CoordinateMapKey | None = None
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """ME: the union of several sets of one tensor stride, as a new set, and per input key the pair
        ``(in_rows, out_rows)`` placing its rows in the union. An unset ``out_key`` (``CoordinateMapKey(D + 1)``) is
        filled in, as ME does. The union lists the first set's rows, then each next set's new rows, in order."""
        key_list = [self._key(k) for k in in_keys]
        if not key_list:
            raise ValueError("union_map needs at least one coordinate map key")
        strides = {k.tensor_stride for k in key_list}
        if len(strides) != 1:
            raise ValueError(f"union_map: all sets need the same tensor stride, got {sorted(strides)}")
        stride = strides.pop()
        stacked = torch.cat([self._sets[k].coordinates for k in key_list])
        unique_map, inverse = unique_rows_in_order(stacked)
        new_key = self.insert(stacked[unique_map], stride, tag=self._fresh_key(stride, "union").tag)
        if out_key is not None and not out_key.is_key_set():
            out_key._set(new_key.tensor_stride, new_key.tag)
        maps, start = [], 0
        for k in key_list:
            n = self.size(k)
            maps.append((torch.arange(n, device=self.device), inverse[start:start + n]))
            start += n
        return maps

    def interpolation_map_weight(self, key: CoordinateMapKey, samples: torch.Tensor
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ME: N-linear interpolation of ``key``'s set at continuous ``samples`` [M, 1+D]: ``(set_rows,
        sample_rows, weights)`` over the 2^D grid corners (at the set's tensor stride) that exist; a weight is the
        product of (1 - |x - corner| / stride) over the axes, missing corners contribute nothing."""
        key = self._key(key)
        stride = torch.tensor(key.tensor_stride, dtype=samples.dtype, device=samples.device)
        batch = torch.round(samples[:, :1])
        spatial = samples[:, 1:]
        low = torch.floor(spatial / stride) * stride
        set_rows, sample_rows, weights = [], [], []
        for corner in itertools.product((0, 1), repeat=self.D):
            c = torch.tensor(corner, dtype=samples.dtype, device=samples.device)
            point = low + c * stride
            w = torch.prod(1 - torch.abs(spatial - point) / stride, dim=1)
            rows = lookup_rows(self._sets[key].coordinates, torch.cat([batch, point], 1).long())
            hit = torch.nonzero(rows >= 0).squeeze(1)
            set_rows.append(rows[hit])
            sample_rows.append(hit)
            weights.append(w[hit])
        return torch.cat(set_rows), torch.cat(sample_rows), torch.cat(weights)

    # ----------------------------------------------------------------- continuous coordinates (TensorField)
    def insert_field(self, coordinates: torch.Tensor, tensor_stride: int | Sequence[int] = 1,
                     string_id: str = "") -> CoordinateMapKey:
        """ME: store continuous coordinates [N, 1+D] (every row kept, duplicates included) under a new key."""
        if coordinates.dim() != 2 or coordinates.shape[1] != self.D + 1:
            raise ValueError(f"field coordinates must be [N, 1+D] = [N, {self.D + 1}], got {tuple(coordinates.shape)}")
        key = self._fresh_key(to_tuple(tensor_stride, self.D, "tensor_stride"), string_id or "field")
        self._fields[key] = coordinates.to(self.device)
        return key

    def get_coordinate_field(self, key: CoordinateMapKey) -> torch.Tensor:
        if key not in self._fields:
            raise KeyError(f"{key} is not a coordinate field of this manager")
        return self._fields[key]

    def field_to_sparse_insert_and_map(self, field_key: CoordinateMapKey, tensor_stride: int | Sequence[int] = 1,
                                       string_id: str = "") -> tuple[CoordinateMapKey, tuple[torch.Tensor, torch.Tensor]]:
        """ME: quantise a field (floor to the ``tensor_stride`` grid) into a new sparse set:
        ``(key, (unique_index, inverse_mapping))`` over the field's rows."""
        stride = to_tuple(tensor_stride, self.D, "tensor_stride")
        field = self.get_coordinate_field(field_key)
        return self.insert_and_map(_floor_to_grid(field, stride), stride, string_id)

    def field_to_sparse_map(self, field_key: CoordinateMapKey, sparse_key: CoordinateMapKey
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """ME: ``(inverse_mapping, unique_index)`` between a field and an existing sparse set: the sparse row of
        every field point (-1 where its voxel is absent) and, per sparse row, the first field point in it (-1:
        none)."""
        sparse_key = self._key(sparse_key)
        field = self.get_coordinate_field(field_key)
        rows = lookup_rows(self._sets[sparse_key].coordinates, _floor_to_grid(field, sparse_key.tensor_stride))
        first = torch.full((self.size(sparse_key),), field.shape[0], dtype=torch.long, device=field.device)
        hit = torch.nonzero(rows >= 0).squeeze(1)
        first.scatter_reduce_(0, rows[hit], hit, reduce="amin")
        first[first == field.shape[0]] = -1
        return rows, first

    def _build_kernel_map(self, in_key: CoordinateMapKey, out_key: CoordinateMapKey,
                          kernel: KernelGenerator) -> KernelMap:
        in_set, out_set = self._sets[in_key], self._sets[out_key]
        device = in_set.coordinates.device
        if in_set.coordinates.shape[0] == 0 or out_set.coordinates.shape[0] == 0:  # zero-row tensors: no pairs
            empty = torch.empty(0, dtype=torch.long, device=device)
            volume = kernel.kernel_volume
            return KernelMap([empty] * volume, [empty] * volume, [False] * volume, in_set.coordinates.shape[0],
                             out_set.coordinates.shape[0])
        scale = torch.tensor(in_key.tensor_stride, dtype=torch.long) * torch.tensor(kernel.kernel_dilation)
        offsets = kernel.offsets * scale  # [K, D] coordinate offsets, on the CPU (small)
        zero = torch.zeros(offsets.shape[0], 1, dtype=torch.long)
        offsets_full = torch.cat([zero, offsets], 1)

        # One packing frame that holds the input set and every shifted output coordinate without wrap-around,
        # so a shifted query key is just base key + constant and can never alias a stored key.
        reach_lo = torch.clamp(in_set.lo.cpu() - (out_set.lo.cpu() + offsets_full.min(0).values), min=0)
        reach_hi = torch.clamp(out_set.hi.cpu() + offsets_full.max(0).values - in_set.hi.cpu(), min=0)
        margin = torch.maximum(reach_lo, reach_hi)
        lo = (in_set.lo.cpu() - margin)
        radix = in_set.hi.cpu() - in_set.lo.cpu() + 1 + 2 * margin
        if float(torch.prod(radix.double())) >= 2.0 ** 62:
            raise ValueError("coordinates span too large a range to pack into 64-bit keys; "
                             "check the quantisation (coordinates must be voxel indices, not raw floats)")
        lo_d, radix_d = lo.to(device), radix.to(device)
        mult, sorted_keys, perm = in_set.frame(lo_d, radix_d)
        same_set = in_key == out_key
        if same_set:
            out_keys, out_order = sorted_keys, perm
        else:  # sorted queries keep both lookups below cache-friendly
            out_keys, out_order = torch.sort(out_set.keys_in(lo_d, radix_d))
        deltas = (offsets_full * mult.cpu()).sum(1).tolist()
        mirror_of = {tuple(o): i for i, o in enumerate(offsets.tolist())} if same_set else {}
        todo = []  # offsets that need a lookup; the rest are the identity or the swap of a mirrored offset
        mirrors: dict[int, int] = {}
        identity = [False] * len(deltas)
        for k, delta in enumerate(deltas):
            if same_set and delta == 0:
                identity[k] = True
            elif k not in mirrors:
                todo.append(k)
                mirror = mirror_of.get(tuple((-offsets[k]).tolist()))
                if mirror is not None and mirror != k:
                    mirrors[mirror] = k
        box = int(mult[0])
        if box <= _DENSE_TABLE_ENTRIES:
            found = _lookup_dense_table(sorted_keys, perm, out_keys, out_order, [deltas[k] for k in todo], box)
        else:
            found = _lookup_binary_search(sorted_keys, perm, out_keys, out_order, [deltas[k] for k in todo])

        n_in = in_set.coordinates.shape[0]
        in_maps: list[torch.Tensor] = [torch.empty(0, dtype=torch.long, device=device)] * len(deltas)
        out_maps: list[torch.Tensor] = list(in_maps)
        for k, (in_rows, out_rows) in zip(todo, found):
            in_maps[k], out_maps[k] = in_rows, out_rows
        for mirror, k in mirrors.items():
            in_maps[mirror], out_maps[mirror] = out_maps[k], in_maps[k]  # same set: the -k map is k's, swapped
        for k in range(len(deltas)):
            if identity[k]:
                rows = torch.arange(n_in, device=device)
                in_maps[k], out_maps[k] = rows, rows
        return KernelMap(in_maps, out_maps, identity, n_in, out_set.coordinates.shape[0])  # type: ignore[arg-type]


def _lookup_dense_table(sorted_keys: torch.Tensor, perm: torch.Tensor, out_keys: torch.Tensor,
                        out_order: torch.Tensor, deltas: list[int], box: int
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (input row, output row) per delta via a dense table, a chunk of whole batch samples at a time.

    Keys put the batch index in the most significant place, so each sample owns ``box`` consecutive keys and a
    query never leaves its sample's box (the frame has margins): a chunk of samples maps to one table.
    """
    device = sorted_keys.device
    per_chunk = max(1, _DENSE_TABLE_ENTRIES // box)
    first_batch = int(sorted_keys[0]) // box
    last_batch = max(int(sorted_keys[-1]), int(out_keys[-1])) // box
    pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in deltas]
    for b0 in range(min(first_batch, int(out_keys[0]) // box), last_batch + 1, per_chunk):
        key0, key1 = b0 * box, (b0 + per_chunk) * box
        bounds = torch.tensor([key0, key1], device=device)
        i0, i1 = torch.searchsorted(sorted_keys, bounds).tolist()
        o0, o1 = torch.searchsorted(out_keys, bounds).tolist()
        if i0 == i1 or o0 == o1:
            continue
        # the table spans whole sample boxes, and the frame's margins keep every query inside its own sample's
        # box, so no bounds check is needed per query
        size = (max(int(sorted_keys[i1 - 1]), int(out_keys[o1 - 1])) // box + 1) * box - key0
        table = torch.full((size,), -1, dtype=torch.int32, device=device)
        table[sorted_keys[i0:i1] - key0] = perm[i0:i1].to(torch.int32)
        queries = out_keys[o0:o1] - key0
        rows = out_order[o0:o1]
        for k, delta in enumerate(deltas):
            hit_rows = table[queries + delta]
            hit = torch.nonzero(hit_rows >= 0).squeeze(1)
            pieces[k].append((hit_rows[hit].long(), rows[hit]))
    return [_concat_pairs(ps, device) for ps in pieces]


def _concat_pairs(pieces: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    if len(pieces) == 1:
        return pieces[0]  # the common case (one chunk): no copy
    if not pieces:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])


def _lookup_binary_search(sorted_keys: torch.Tensor, perm: torch.Tensor, out_keys: torch.Tensor,
                          out_order: torch.Tensor, deltas: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (input row, output row) per delta by binary search on the sorted input keys (any box size)."""
    n_in = sorted_keys.numel()
    found = []
    for delta in deltas:
        query = out_keys + delta
        pos = torch.searchsorted(sorted_keys, query).clamp_(max=n_in - 1)
        hit = sorted_keys[pos] == query
        found.append((perm[pos[hit]], out_order[hit]))
    return found


def _floor_to_grid(coordinates: torch.Tensor, tensor_stride: Sequence[int]) -> torch.Tensor:
    """int64 rows: batch rounded, spatial floored to multiples of the tensor stride."""
    stride = torch.tensor(tensor_stride, dtype=torch.float64, device=coordinates.device)
    spatial = torch.floor(coordinates[:, 1:].double() / stride) * stride
    return torch.cat([torch.round(coordinates[:, :1].double()), spatial], 1).long()


def lookup_rows(stored: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Row of each query [M, 1+D] in the unique rows ``stored`` [N, 1+D], -1 where absent (sort + binary search
    on keys packed over the common bounding box)."""
    if queries.shape[0] == 0 or stored.shape[0] == 0:
        return torch.full((queries.shape[0],), -1, dtype=torch.long, device=queries.device)
    stored64, queries64 = stored.long().to(queries.device), queries.long()
    lo = torch.minimum(stored64.min(0).values, queries64.min(0).values)
    hi = torch.maximum(stored64.max(0).values, queries64.max(0).values)
    radix = hi - lo + 1
    if float(torch.prod(radix.double())) >= 2.0 ** 62:
        raise ValueError("coordinates span too large a range to pack into 64-bit keys")
    mult = _radix_multipliers(radix)
    keys = ((stored64 - lo) * mult).sum(1)
    sorted_keys, perm = torch.sort(keys)
    query_keys = ((queries64 - lo) * mult).sum(1)
    pos = torch.searchsorted(sorted_keys, query_keys).clamp_(max=sorted_keys.numel() - 1)
    return torch.where(sorted_keys[pos] == query_keys, perm[pos], torch.full_like(pos, -1))
