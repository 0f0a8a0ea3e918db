"""The coordinate manager: one per forward pass, shared by every SparseTensor derived from the same input.

It owns the coordinate set of every tensor stride and caches kernel maps, so a U-Net builds each map once: all
blocks at one stride share a map, and a transposed conv reuses the map of the strided conv it mirrors. Lookups
are sort + binary search on packed int64 keys, done on the coordinates' own device (no host round-trip on CUDA).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from minkseg.sparse.kernel import KernelGenerator
from minkseg.sparse.utils import unique_rows

__all__ = ["CoordinateMapKey", "CoordinateManager", "KernelMap"]

# Kernel maps look coordinates up in a dense int32 table over the bounding box of one batch chunk when the box
# holds at most this many cells (128 MiB): a gather per query instead of a ~20-step binary search, about 4x
# faster on a ScanNet room. Larger boxes (huge outdoor scenes) fall back to binary search on sorted keys.
_DENSE_TABLE_ENTRIES = 1 << 25


@dataclass(frozen=True)
class CoordinateMapKey:
    """Names one coordinate set: its tensor stride per axis plus a tag that tells apart unrelated sets."""

    tensor_stride: tuple[int, ...]
    tag: str = ""

    def get_tensor_stride(self) -> list[int]:
        return list(self.tensor_stride)

    def get_coordinate_size(self) -> int:
        return len(self.tensor_stride) + 1


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
        if c64.shape[0] == 0:
            raise ValueError("a SparseTensor needs at least one coordinate")
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
    """Coordinate sets per stride and a kernel-map cache keyed by (in, out, kernel size, stride, dilation, region)."""

    def __init__(self, D: int, device: torch.device | str = "cpu") -> None:
        self.D = D
        self.device = torch.device(device)
        self._sets: dict[CoordinateMapKey, _CoordinateSet] = {}
        self._kernel_maps: dict[tuple, KernelMap] = {}
        self._next_tag = 0
        self.kernel_map_builds = 0  # how many maps were actually computed (tests check the cache with it)

    # ----------------------------------------------------------------- coordinate sets
    def insert(self, coordinates: torch.Tensor, tensor_stride: Sequence[int], tag: str | None = None
               ) -> CoordinateMapKey:
        """Register a new coordinate set; an untagged insert at a stride already held gets a fresh tag."""
        if coordinates.dim() != 2 or coordinates.shape[1] != self.D + 1:
            raise ValueError(f"coordinates must be [N, 1+D] = [N, {self.D + 1}] (batch first), "
                             f"got shape {tuple(coordinates.shape)}")
        stride = tuple(int(s) for s in tensor_stride)
        if tag is None:
            tag = ""
            while CoordinateMapKey(stride, tag) in self._sets:
                self._next_tag += 1
                tag = f"set{self._next_tag}"
        key = CoordinateMapKey(stride, tag)
        self._sets[key] = _CoordinateSet(coordinates.to(self.device, torch.int32).contiguous())
        return key

    def __contains__(self, key: CoordinateMapKey) -> bool:
        return key in self._sets

    def get_coordinates(self, key: CoordinateMapKey) -> torch.Tensor:
        return self._sets[key].coordinates

    def size(self, key: CoordinateMapKey) -> int:
        return int(self._sets[key].coordinates.shape[0])

    def keys(self) -> list[CoordinateMapKey]:
        return list(self._sets)

    def stride_key(self, in_key: CoordinateMapKey, stride: Sequence[int]) -> CoordinateMapKey:
        """The set at ``tensor_stride * stride``: floor(c / (t*s)) * (t*s), created on first use."""
        new_stride = tuple(t * s for t, s in zip(in_key.tensor_stride, stride))
        out_key = CoordinateMapKey(new_stride, in_key.tag)
        if out_key not in self._sets:
            coords = self._sets[in_key].coordinates.long()
            step = torch.tensor((1,) + new_stride, dtype=torch.long, device=coords.device)
            down = torch.div(coords, step, rounding_mode="floor") * step
            uniq, _, _ = unique_rows(down)
            self._sets[out_key] = _CoordinateSet(uniq.to(torch.int32).contiguous())
        return out_key

    def transposed_key(self, in_key: CoordinateMapKey, kernel: KernelGenerator) -> CoordinateMapKey:
        """The finer set a transposed conv writes to: the stored one if the U-Net went down through it, else
        generated by expanding every input coordinate by the kernel (ME's generative transpose)."""
        stride = kernel.kernel_stride
        if any(t % s for t, s in zip(in_key.tensor_stride, stride)):
            raise ValueError(f"transposed stride {list(stride)} does not divide tensor stride "
                             f"{list(in_key.tensor_stride)}")
        new_stride = tuple(t // s for t, s in zip(in_key.tensor_stride, stride))
        out_key = CoordinateMapKey(new_stride, in_key.tag)
        if out_key not in self._sets:
            coords = self._sets[in_key].coordinates.long()
            scale = torch.tensor(new_stride, dtype=torch.long, device=coords.device) * torch.tensor(
                kernel.kernel_dilation, dtype=torch.long, device=coords.device)
            offs = kernel.offsets.to(coords.device) * scale
            expanded = coords[:, None, :].repeat(1, offs.shape[0], 1)
            expanded[:, :, 1:] += offs[None]
            uniq, _, _ = unique_rows(expanded.reshape(-1, coords.shape[1]))
            self._sets[out_key] = _CoordinateSet(uniq.to(torch.int32).contiguous())
        return out_key

    # ----------------------------------------------------------------- kernel maps
    def kernel_map(self, in_key: CoordinateMapKey, out_key: CoordinateMapKey, kernel: KernelGenerator,
                   is_transpose: bool = False) -> KernelMap:
        """Cached map between two sets; a transposed map is the swapped map of the mirrored strided conv."""
        if is_transpose:
            return self.kernel_map(out_key, in_key, kernel, is_transpose=False).transposed()
        cache_key = (in_key, out_key, kernel.kernel_size, kernel.kernel_dilation, kernel.region_key)
        kmap = self._kernel_maps.get(cache_key)
        if kmap is None:
            kmap = self._build_kernel_map(in_key, out_key, kernel)
            self._kernel_maps[cache_key] = kmap
            self.kernel_map_builds += 1
        return kmap

    def _build_kernel_map(self, in_key: CoordinateMapKey, out_key: CoordinateMapKey,
                          kernel: KernelGenerator) -> KernelMap:
        in_set, out_set = self._sets[in_key], self._sets[out_key]
        device = in_set.coordinates.device
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
