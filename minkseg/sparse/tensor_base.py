"""What SparseTensor and TensorField share (ME's ``MinkowskiTensor`` module): the quantisation and operation-mode
enums, the global coordinate manager, and the base class with the accessors, batch decomposition and dtype/device
moves that ME defines once for both.
"""
from __future__ import annotations

import enum
from typing import Any

import torch

from minkseg.sparse.coordinates import CoordinateManager
from minkseg.sparse.utils import batch_rows_of

__all__ = ["CoordinatesMismatchError", "SparseTensorOperationMode", "SparseTensorQuantizationMode", "set_sparse_tensor_operation_mode",
           "sparse_tensor_operation_mode", "global_coordinate_manager", "set_global_coordinate_manager",
           "clear_global_coordinate_manager", "Tensor"]


class CoordinatesMismatchError(ValueError, AssertionError):
    """Two tensors that an operation needs on one coordinate manager (or one coordinate set) are not.

    Also an AssertionError because ME raises that here (it asserts), and ported code catches it by that name.
    """


class SparseTensorOperationMode(enum.Enum):
    """SEPARATE_COORDINATE_MANAGER (default): every tensor built from coordinates gets its own manager.
    SHARE_COORDINATE_MANAGER: all share the global one until :func:`clear_global_coordinate_manager`."""

    SEPARATE_COORDINATE_MANAGER = 0
    SHARE_COORDINATE_MANAGER = 1


class SparseTensorQuantizationMode(enum.Enum):
    """What happens to the features of rows that share a coordinate (ME's values and names).

    RANDOM_SUBSAMPLE keeps one row per coordinate. ME's choice depends on its hash table; here it is always the first
    row in input order (deterministic). SPLAT_LINEAR_INTERPOLATION is TensorField.splat() only.
    """

    RANDOM_SUBSAMPLE = 0
    UNWEIGHTED_AVERAGE = 1
    UNWEIGHTED_SUM = 2
    NO_QUANTIZATION = 3
    MAX_POOL = 4
    SPLAT_LINEAR_INTERPOLATION = 5


_operation_mode = SparseTensorOperationMode.SEPARATE_COORDINATE_MANAGER
_global_manager: CoordinateManager | None = None


def set_sparse_tensor_operation_mode(operation_mode: SparseTensorOperationMode) -> None:
    if not isinstance(operation_mode, SparseTensorOperationMode):
        raise TypeError(f"operation_mode must be a SparseTensorOperationMode, got {operation_mode!r}")
    global _operation_mode
    _operation_mode = operation_mode


def sparse_tensor_operation_mode() -> SparseTensorOperationMode:
    return _operation_mode


def global_coordinate_manager() -> CoordinateManager | None:
    return _global_manager


def set_global_coordinate_manager(coordinate_manager: CoordinateManager | None) -> None:
    global _global_manager
    _global_manager = coordinate_manager


def clear_global_coordinate_manager() -> None:
    """Drop the shared manager (and every set and kernel map it holds); call after each forward/backward in
    SHARE_COORDINATE_MANAGER mode, as ME asks."""
    set_global_coordinate_manager(None)


def manager_for(D: int, device: torch.device, coordinate_manager: CoordinateManager | None) -> CoordinateManager:
    """The given manager, else the global one (shared mode), else a new one, as ME's constructors choose."""
    if coordinate_manager is not None:
        if coordinate_manager.D != D:
            raise ValueError(f"{D}-D coordinates for a {coordinate_manager.D}-D coordinate manager")
        return coordinate_manager
    if _operation_mode == SparseTensorOperationMode.SHARE_COORDINATE_MANAGER:
        if _global_manager is None:
            set_global_coordinate_manager(CoordinateManager(D, device=device))
        return _global_manager  # type: ignore[return-value]
    return CoordinateManager(D, device=device)


class Tensor:
    """Features ``F`` [N, C] on coordinates ``C`` [N, 1+D] (batch index first), held by a coordinate manager."""

    _F: torch.Tensor
    _manager: CoordinateManager

    # ----------------------------------------------------------------- accessors
    @property
    def F(self) -> torch.Tensor:
        return self._F

    @property
    def features(self) -> torch.Tensor:
        return self._F

    @property
    def C(self) -> torch.Tensor:
        return self.coordinates

    @property
    def coordinates(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def coordinate_manager(self) -> CoordinateManager:
        return self._manager

    @property
    def coordinate_key(self):  # noqa: ANN201 (a CoordinateMapKey; ME's older name)
        return self.coordinate_map_key

    @property
    def tensor_stride(self) -> list[int]:
        return list(self.coordinate_map_key.tensor_stride)

    @property
    def D(self) -> int:
        return self._manager.D

    @property
    def dimension(self) -> int:
        return self._manager.D

    @property
    def device(self) -> torch.device:
        return self._F.device

    @property
    def dtype(self) -> torch.dtype:
        return self._F.dtype

    @property
    def shape(self) -> torch.Size:
        return self._F.shape

    @property
    def requires_grad(self) -> bool:
        return self._F.requires_grad

    def size(self) -> torch.Size:
        return self._F.size()

    def __len__(self) -> int:
        return self._F.shape[0]

    def get_device(self) -> int:
        return self._F.get_device()

    # ----------------------------------------------------------------- in-place changes, as ME makes them
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self._F.requires_grad_(requires_grad)
        return self

    def detach(self) -> "Tensor":
        """ME detaches in place (the tensor itself stops tracking gradients) and returns itself."""
        self._F = self._F.detach()
        return self

    def float(self) -> "Tensor":
        self._F = self._F.float()
        return self

    def double(self) -> "Tensor":
        self._F = self._F.double()
        return self

    def half(self) -> "Tensor":
        self._F = self._F.half()
        return self

    def to(self, *args: Any, **kwargs: Any) -> "Tensor":
        """Features moved/cast like ``torch.Tensor.to``; a device change also moves the coordinates (a new manager
        on that device), a dtype change keeps them."""
        features = self._F.to(*args, **kwargs)
        if features.device == self._F.device:
            return self.replace_features(features)
        return self._moved(features)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self, device: int | str | torch.device | None = None) -> "Tensor":
        return self.to(torch.device("cuda" if device is None else
                                    (f"cuda:{device}" if isinstance(device, int) else device)))

    def _moved(self, features: torch.Tensor) -> "Tensor":
        raise NotImplementedError

    def replace_features(self, features: torch.Tensor) -> "Tensor":
        raise NotImplementedError

    # ----------------------------------------------------------------- batches
    def _batch_rows(self) -> list[torch.Tensor]:
        """Row indices per batch index 0..max (empty for an absent index): ME's decomposition order."""
        raise NotImplementedError

    @property
    def decomposition_permutations(self) -> list[torch.Tensor]:
        return self._batch_rows()

    @property
    def decomposed_coordinates(self) -> list[torch.Tensor]:
        C = self.C
        return [C[rows, 1:] for rows in self._batch_rows()]

    @property
    def decomposed_features(self) -> list[torch.Tensor]:
        return [self._F[rows] for rows in self._batch_rows()]

    @property
    def decomposed_coordinates_and_features(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        rows_list = self._batch_rows()
        C = self.C
        return [C[rows, 1:] for rows in rows_list], [self._F[rows] for rows in rows_list]

    def _rows_at(self, batch_index: int) -> torch.Tensor:
        rows = self._batch_rows()
        if batch_index < 0 or batch_index >= len(rows):
            return torch.zeros(0, dtype=torch.long, device=self.device)
        return rows[batch_index]

    def coordinates_at(self, batch_index: int) -> torch.Tensor:
        return self.C[self._rows_at(batch_index), 1:]

    def features_at(self, batch_index: int) -> torch.Tensor:
        return self._F[self._rows_at(batch_index)]

    def coordinates_and_features_at(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows_at(batch_index)
        return self.C[rows, 1:], self._F[rows]

