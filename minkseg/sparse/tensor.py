"""SparseTensor: features on integer coordinates, with the coordinate manager that every derived tensor shares."""
from __future__ import annotations

from typing import Sequence

import torch

from minkseg.sparse.coordinates import CoordinateManager, CoordinateMapKey
from minkseg.sparse.kernel import to_tuple

__all__ = ["SparseTensor"]


class SparseTensor:
    """ME-compatible sparse tensor: ``F`` [N, C] features for ``C`` [N, 1+D] int32 coordinates (batch first).

    Create one from coordinates (a new coordinate manager is made), or from ``coordinate_map_key`` +
    ``coordinate_manager`` when a layer produces features for a set the manager already holds.
    """

    def __init__(
        self,
        features: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        tensor_stride: int | Sequence[int] = 1,
        coordinate_map_key: CoordinateMapKey | None = None,
        coordinate_manager: CoordinateManager | None = None,
        device: torch.device | str | None = None,
        coords: torch.Tensor | None = None,
    ) -> None:
        if coordinates is None:
            coordinates = coords  # ME 0.4 spelling
        if device is not None:
            features = features.to(device)
        if features.dim() != 2:
            raise ValueError(f"SparseTensor features must be [N, C], got shape {tuple(features.shape)}")
        if coordinates is not None:
            if not isinstance(coordinates, torch.Tensor):
                coordinates = torch.as_tensor(coordinates)
            if coordinates.is_floating_point():
                raise TypeError("SparseTensor coordinates must be integers (quantise them with sparse_quantize)")
            if coordinates.dim() != 2 or coordinates.shape[1] < 2:
                raise ValueError(f"coordinates must be [N, 1+D] (batch index first), got {tuple(coordinates.shape)}")
            if coordinates.shape[0] != features.shape[0]:
                raise ValueError(f"{coordinates.shape[0]} coordinates for {features.shape[0]} feature rows")
            D = coordinates.shape[1] - 1
            if coordinate_manager is None:
                coordinate_manager = CoordinateManager(D, features.device)
            elif coordinate_manager.D != D:
                raise ValueError(f"{D}-D coordinates for a {coordinate_manager.D}-D coordinate manager")
            stride = to_tuple(tensor_stride, D, "tensor_stride")
            coordinate_map_key = coordinate_manager.insert(coordinates.to(features.device), stride)
        else:
            if coordinate_map_key is None or coordinate_manager is None:
                raise ValueError("SparseTensor needs coordinates, or coordinate_map_key with coordinate_manager")
            if coordinate_map_key not in coordinate_manager:
                raise KeyError(f"{coordinate_map_key} is not held by the coordinate manager")
            if coordinate_manager.size(coordinate_map_key) != features.shape[0]:
                raise ValueError(f"{features.shape[0]} feature rows for a set of "
                                 f"{coordinate_manager.size(coordinate_map_key)} coordinates")
        self._F = features
        self.coordinate_map_key = coordinate_map_key
        self.coordinate_manager = coordinate_manager

    # ----------------------------------------------------------------- ME accessors
    @property
    def F(self) -> torch.Tensor:
        return self._F

    @property
    def features(self) -> torch.Tensor:
        return self._F

    @property
    def C(self) -> torch.Tensor:
        return self.coordinate_manager.get_coordinates(self.coordinate_map_key)

    @property
    def coordinates(self) -> torch.Tensor:
        return self.C

    @property
    def tensor_stride(self) -> list[int]:
        return list(self.coordinate_map_key.tensor_stride)

    @property
    def D(self) -> int:
        return self.coordinate_manager.D

    @property
    def device(self) -> torch.device:
        return self._F.device

    @property
    def dtype(self) -> torch.dtype:
        return self._F.dtype

    @property
    def shape(self) -> torch.Size:
        return self._F.shape

    def __len__(self) -> int:
        return self._F.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(N={self._F.shape[0]}, C={self._F.shape[1]}, D={self.D}, "
                f"tensor_stride={self.tensor_stride}, device={self.device}, dtype={self.dtype})")

    def replace_features(self, features: torch.Tensor) -> "SparseTensor":
        """A tensor on the same coordinates with new features (how every layer builds its output)."""
        return SparseTensor(features, coordinate_map_key=self.coordinate_map_key,
                            coordinate_manager=self.coordinate_manager)

    # ----------------------------------------------------------------- arithmetic on shared coordinates
    def _check_same_coordinates(self, other: "SparseTensor") -> None:
        if other.coordinate_manager is not self.coordinate_manager or other.coordinate_map_key != self.coordinate_map_key:
            raise ValueError("sparse tensors must share coordinates (same manager and coordinate_map_key); "
                             f"got strides {self.tensor_stride} and {other.tensor_stride}")

    def _binary(self, other: object, op) -> "SparseTensor":
        if isinstance(other, SparseTensor):
            self._check_same_coordinates(other)
            return self.replace_features(op(self._F, other._F))
        return self.replace_features(op(self._F, other))

    def __add__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.sub)

    def __mul__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.mul)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.div)

    def __neg__(self) -> "SparseTensor":
        return self.replace_features(-self._F)

    # ----------------------------------------------------------------- batches and dense views
    @property
    def decomposition_permutations(self) -> list[torch.Tensor]:
        batch = self.C[:, 0].long()
        return [torch.nonzero(batch == b, as_tuple=True)[0] for b in torch.unique(batch).tolist()]

    @property
    def decomposed_coordinates(self) -> list[torch.Tensor]:
        return [self.C[p, 1:] for p in self.decomposition_permutations]

    @property
    def decomposed_features(self) -> list[torch.Tensor]:
        return [self._F[p] for p in self.decomposition_permutations]

    def dense(self, shape: torch.Size | None = None, min_coordinate: torch.Tensor | None = None,
              contract_stride: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Dense [B, C, *spatial] copy, for tests and small grids; returns (dense, min_coordinate, tensor_stride)."""
        coords = self.C.long()
        spatial = coords[:, 1:]
        if min_coordinate is None:
            min_coordinate = spatial.min(0).values
        min_coordinate = min_coordinate.to(coords.device).long()
        rel = spatial - min_coordinate
        stride = torch.tensor(self.tensor_stride, device=coords.device)
        if contract_stride:
            if (rel % stride).any():
                raise ValueError("coordinates are not multiples of the tensor stride from min_coordinate")
            rel = rel // stride
        if (rel < 0).any():
            raise ValueError("min_coordinate must not exceed any coordinate")
        batch = coords[:, 0]
        if shape is None:
            size = [int(batch.max()) + 1, self._F.shape[1]] + (rel.max(0).values + 1).tolist()
            shape = torch.Size(size)
        dense = torch.zeros(shape, dtype=self._F.dtype, device=self.device)
        # advanced indices separated by a slice put the indexed dimension first, so the target view is [N, C]
        dense[(batch, slice(None)) + tuple(rel[:, d] for d in range(rel.shape[1]))] = self._F
        return dense, min_coordinate, self.tensor_stride
