"""TensorField: features on continuous coordinates (every point kept), ME's bridge between points and voxels.

A field quantises into a SparseTensor with :meth:`TensorField.sparse` (any quantisation mode, any tensor stride) or
:meth:`TensorField.splat` (each point spread N-linearly over the 2^D voxel corners around it), and a network's
output comes back to every point with ``output.slice(field)`` / ``output.interpolate(field)``, as ME's ModelNet40
classification example and its ``tensor_field`` tests use it. Pointwise layers (linear, norm, activations) apply
to a field directly and return a field.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch

from minkseg.sparse.coordinates import CoordinateManager, CoordinateMapKey
from minkseg.sparse.keys import GPUMemoryAllocatorType, MinkowskiAlgorithm
from minkseg.sparse.kernel import to_tuple
from minkseg.sparse.tensor import SparseTensor, merge_duplicate_features
from minkseg.sparse.tensor_base import CoordinatesMismatchError, SparseTensorQuantizationMode, Tensor, manager_for
from minkseg.sparse.utils import batch_rows_of

__all__ = ["TensorField"]


class TensorField(Tensor):
    """``F`` [N, C] on continuous coordinates ``C`` [N, 1+D] (float; batch index first). Default quantisation when
    made sparse: UNWEIGHTED_AVERAGE (ME's default for fields)."""

    def __init__(
        self,
        features: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        tensor_stride: int | Sequence[int] = 1,
        coordinate_field_map_key: CoordinateMapKey | None = None,
        coordinate_manager: CoordinateManager | None = None,
        quantization_mode: SparseTensorQuantizationMode = SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE,
        allocator_type: GPUMemoryAllocatorType | None = None,
        minkowski_algorithm: MinkowskiAlgorithm | None = None,
        requires_grad: bool | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise ValueError("TensorField features must be a [N, C] torch.Tensor")
        if not isinstance(quantization_mode, SparseTensorQuantizationMode):
            raise TypeError(f"quantization_mode must be a SparseTensorQuantizationMode, got {quantization_mode!r}")
        if device is not None:
            features = features.to(device)
        self.quantization_mode = quantization_mode
        if coordinates is not None:
            if coordinate_field_map_key is not None:
                raise ValueError("give coordinates or coordinate_field_map_key, not both")
            coordinates = torch.as_tensor(coordinates)
            if coordinates.dim() != 2 or coordinates.shape[1] < 2 or coordinates.shape[0] != features.shape[0]:
                raise ValueError(f"TensorField coordinates must be [N, 1+D] for the {features.shape[0]} feature rows, "
                                 f"got {tuple(coordinates.shape)}")
            coordinates = coordinates.to(features.device)
            if not coordinates.is_floating_point():
                coordinates = coordinates.float()
            if not torch.isfinite(coordinates).all():
                raise ValueError("TensorField coordinates contain NaN or inf")
            D = coordinates.shape[1] - 1
            self._manager = manager_for(D, features.device, coordinate_manager)
            self.coordinate_field_map_key = self._manager.insert_field(
                coordinates, to_tuple(tensor_stride, D, "tensor_stride"))
        else:
            if coordinate_field_map_key is None or coordinate_manager is None:
                raise ValueError("TensorField needs coordinates, or coordinate_field_map_key with coordinate_manager")
            self._manager = coordinate_manager
            self.coordinate_field_map_key = coordinate_field_map_key
            if coordinate_manager.get_coordinate_field(coordinate_field_map_key).shape[0] != features.shape[0]:
                raise ValueError(f"{features.shape[0]} feature rows for a field of "
                                 f"{coordinate_manager.get_coordinate_field(coordinate_field_map_key).shape[0]} points")
        if requires_grad is not None:
            features.requires_grad_(requires_grad)
        self._F = features
        self._inverse_mapping: dict[CoordinateMapKey, torch.Tensor] = {}
        # splat results per sparse key: (sparse rows, field rows, weights), what interpolate() transposes
        self._splat: dict[CoordinateMapKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def coordinates(self) -> torch.Tensor:
        return self._manager.get_coordinate_field(self.coordinate_field_map_key)

    @property
    def coordinate_map_key(self) -> CoordinateMapKey:
        return self.coordinate_field_map_key

    def __repr__(self) -> str:
        return (f"TensorField(N={self._F.shape[0]}, C={self._F.shape[1]}, D={self.D}, device={self.device}, "
                f"dtype={self.dtype}, quantization_mode={self.quantization_mode.name})")

    def replace_features(self, features: torch.Tensor) -> "TensorField":
        field = TensorField(features, coordinate_field_map_key=self.coordinate_field_map_key,
                            coordinate_manager=self._manager, quantization_mode=self.quantization_mode)
        field._inverse_mapping, field._splat = self._inverse_mapping, self._splat  # same points, same maps
        return field

    def _moved(self, features: torch.Tensor) -> "TensorField":
        return TensorField(features, coordinates=self.C.to(features.device), tensor_stride=self.tensor_stride,
                           quantization_mode=self.quantization_mode)

    def _batch_rows(self) -> list[torch.Tensor]:
        return batch_rows_of(torch.round(self.C[:, 0]))

    # ----------------------------------------------------------------- fields -> sparse tensors
    def sparse(self, tensor_stride: int | Sequence[int] = 1, coordinate_map_key: CoordinateMapKey | None = None,
               quantization_mode: SparseTensorQuantizationMode | None = None) -> SparseTensor:
        """Quantise to a SparseTensor: a new set at ``tensor_stride`` (coordinates floored to that grid), or the
        existing set ``coordinate_map_key`` (points whose voxel it lacks are left out), merging the features of
        the points of each voxel by ``quantization_mode`` (default: the field's)."""
        mode = self.quantization_mode if quantization_mode is None else quantization_mode
        if mode == SparseTensorQuantizationMode.SPLAT_LINEAR_INTERPOLATION:
            raise ValueError("use TensorField.splat() for SPLAT_LINEAR_INTERPOLATION")
        if coordinate_map_key is None:
            key, (unique_index, inverse) = self._manager.field_to_sparse_insert_and_map(
                self.coordinate_field_map_key, to_tuple(tensor_stride, self.D, "tensor_stride"))
            self._inverse_mapping[key] = inverse
            features = merge_duplicate_features(self._F, unique_index.to(self.device), inverse.to(self.device), mode)
            return SparseTensor(features, coordinate_map_key=key, coordinate_manager=self._manager)
        inverse = self.inverse_mapping(coordinate_map_key)
        n_rows = self._manager.size(coordinate_map_key)
        inside = torch.nonzero(inverse >= 0).squeeze(1)
        rows = inverse[inside]
        if mode == SparseTensorQuantizationMode.RANDOM_SUBSAMPLE:
            first = torch.full((n_rows,), len(self), dtype=torch.long, device=self.device)
            first.scatter_reduce_(0, rows, inside, reduce="amin")
            features = torch.zeros(n_rows, self._F.shape[1], dtype=self.dtype, device=self.device)
            has = first < len(self)
            features = features.index_copy(0, torch.nonzero(has).squeeze(1), self._F[first[has]])
        elif mode == SparseTensorQuantizationMode.MAX_POOL:
            empty = torch.zeros(n_rows, self._F.shape[1], dtype=self.dtype, device=self.device)
            features = empty.scatter_reduce(0, rows[:, None].expand(-1, self._F.shape[1]), self._F[inside],
                                            reduce="amax", include_self=False)
        else:
            features = torch.zeros(n_rows, self._F.shape[1], dtype=self.dtype, device=self.device)
            features = features.index_add(0, rows, self._F[inside])
            if mode == SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE:
                features = features / torch.bincount(rows, minlength=n_rows).clamp_(min=1).to(self.dtype)[:, None]
        return SparseTensor(features, coordinate_map_key=coordinate_map_key, coordinate_manager=self._manager)

    def splat(self) -> SparseTensor:
        """Spread every point's features over the 2^D voxel corners around it with N-linear weights
        (1 - |x - corner| per axis) and sum per voxel: a SparseTensor on every corner that received a point."""
        coords = self.C
        low = torch.floor(coords[:, 1:])
        batch = torch.round(coords[:, :1])
        corners = [torch.cat([batch, low + torch.tensor(c, dtype=coords.dtype, device=coords.device)], 1)
                   for c in itertools.product((0, 1), repeat=self.D)]
        all_corners = torch.stack(corners, 1).reshape(-1, self.D + 1)
        key, (_, inverse) = self._manager.insert_and_map(all_corners.long(), 1)
        points = torch.arange(len(self), device=self.device).repeat_interleave(len(corners))
        weights = torch.prod(1 - torch.abs(coords[:, None, 1:] - torch.stack(corners, 1)[:, :, 1:]), dim=2).reshape(-1)
        keep = weights > 0
        rows, points, weights = inverse[keep], points[keep], weights[keep].to(self.dtype)
        self._splat[key] = (rows, points, weights)
        features = torch.zeros(self._manager.size(key), self._F.shape[1], dtype=self.dtype, device=self.device)
        features = features.index_add(0, rows, self._F[points] * weights[:, None])
        return SparseTensor(features, coordinate_map_key=key, coordinate_manager=self._manager)

    def inverse_mapping(self, sparse_tensor_map_key: CoordinateMapKey) -> torch.Tensor:
        """The row of ``sparse_tensor_map_key``'s set holding each point (its coordinates floored to that set's
        tensor stride); -1 where the set lacks the point's voxel. Cached per key."""
        if sparse_tensor_map_key not in self._inverse_mapping:
            rows, _ = self._manager.field_to_sparse_map(self.coordinate_field_map_key, sparse_tensor_map_key)
            self._inverse_mapping[sparse_tensor_map_key] = rows
        return self._inverse_mapping[sparse_tensor_map_key]

    # ----------------------------------------------------------------- arithmetic on the same points
    def _binary(self, other: object, op) -> "TensorField":
        if isinstance(other, TensorField):
            if other._manager is not self._manager or other.coordinate_field_map_key != self.coordinate_field_map_key:
                raise CoordinatesMismatchError("tensor fields must share the same coordinate field (manager and key)")
            other = other._F
        return self.replace_features(op(self._F, other))

    def __add__(self, other: object) -> "TensorField":
        return self._binary(other, torch.add)

    def __sub__(self, other: object) -> "TensorField":
        return self._binary(other, torch.sub)

    def __mul__(self, other: object) -> "TensorField":
        return self._binary(other, torch.mul)

    def __truediv__(self, other: object) -> "TensorField":
        return self._binary(other, torch.div)
