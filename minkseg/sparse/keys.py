"""Names of coordinate sets and ME's backend enums (in ME these come from its compiled module ``_C``).

A :class:`CoordinateMapKey` names one coordinate set inside a :class:`~minkseg.sparse.CoordinateManager`: its tensor
stride per axis plus a string id that tells apart unrelated sets at the same stride. ME code builds keys in two
ways, both supported: ``CoordinateMapKey(coordinate_size)`` (an unset key that an operation such as ``union_map``
fills in) and ``CoordinateMapKey(tensor_stride, string_id)``.
"""
from __future__ import annotations

import enum
from typing import Sequence

__all__ = ["CoordinateMapKey", "CoordinateMapType", "MinkowskiAlgorithm", "GPUMemoryAllocatorType"]


class CoordinateMapType(enum.Enum):
    """Where a manager keeps its coordinates; here it follows the device of the coordinates it is given."""

    CPU = 0
    CUDA = 1


class MinkowskiAlgorithm(enum.Enum):
    """ME's speed/memory trade-off switch. Accepted everywhere ME accepts it; this engine has one algorithm
    (grouped gather-GEMM-scatter, memory-flat backward), so the value changes nothing."""

    DEFAULT = 0
    MEMORY_EFFICIENT = 1
    SPEED_OPTIMIZED = 2


class GPUMemoryAllocatorType(enum.Enum):
    """ME's CUDA allocator choice; this engine always allocates through PyTorch's caching allocator."""

    PYTORCH = 0
    CUDA = 1


class CoordinateMapKey:
    """Tensor stride + string id; hashable once set. ``tag`` is the string id under its historical minkseg name."""

    __slots__ = ("_stride", "_tag", "_size")

    def __init__(self, tensor_stride: int | Sequence[int] | None = None, tag: str = "", *,
                 coordinate_size: int | None = None) -> None:
        if isinstance(tensor_stride, int) and coordinate_size is None and tag == "":
            coordinate_size, tensor_stride = tensor_stride, None  # ME: CoordinateMapKey(coordinate_size), unset
        self._size = coordinate_size
        self._stride: tuple[int, ...] | None = None
        self._tag = str(tag)
        if tensor_stride is not None:
            self._set(tensor_stride, tag)

    def _set(self, tensor_stride: Sequence[int], tag: str) -> None:
        self._stride = tuple(int(s) for s in tensor_stride)
        self._tag = str(tag)
        self._size = len(self._stride) + 1

    # ----------------------------------------------------------------- ME's methods
    def is_key_set(self) -> bool:
        return self._stride is not None

    def get_key(self) -> tuple[list[int], str]:
        return self.get_tensor_stride(), self._tag

    def get_tensor_stride(self) -> list[int]:
        if self._stride is None:
            raise ValueError("this CoordinateMapKey is not set yet (it names no coordinate set)")
        return list(self._stride)

    def get_coordinate_size(self) -> int:
        if self._size is None:
            raise ValueError("this CoordinateMapKey has no coordinate size")
        return self._size

    # ----------------------------------------------------------------- minkseg's attribute names
    @property
    def tensor_stride(self) -> tuple[int, ...]:
        if self._stride is None:
            raise ValueError("this CoordinateMapKey is not set yet (it names no coordinate set)")
        return self._stride

    @property
    def tag(self) -> str:
        return self._tag

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CoordinateMapKey) and self._stride == other._stride and self._tag == other._tag
                and self._stride is not None)

    def __hash__(self) -> int:
        return hash((self._stride, self._tag))

    def __repr__(self) -> str:
        if self._stride is None:
            return f"coordinate map key:unset (coordinate size {self._size})"
        return f"coordinate map key:{list(self._stride)}" + (f":{self._tag}" if self._tag else "")
