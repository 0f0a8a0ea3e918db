"""SparseTensor: features on integer coordinates, with the coordinate manager every derived tensor shares.

Construction follows MinkowskiEngine 0.5.4: duplicate coordinate rows are merged (RANDOM_SUBSAMPLE by default, which
here keeps the first row of each coordinate), ``unique_index`` / ``inverse_mapping`` say which rows were kept and
where each input row went, float coordinates are floored with a warning, and zero-row tensors are allowed.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from minkseg.sparse.coordinates import CoordinateManager, CoordinateMapKey
from minkseg.sparse.keys import GPUMemoryAllocatorType, MinkowskiAlgorithm
from minkseg.sparse.kernel import to_tuple
from minkseg.sparse.tensor_base import CoordinatesMismatchError, SparseTensorQuantizationMode, Tensor, manager_for

if TYPE_CHECKING:
    from minkseg.sparse.field import TensorField

__all__ = ["SparseTensor", "merge_duplicate_features", "explicit_output_key"]


def merge_duplicate_features(features: torch.Tensor, unique_index: torch.Tensor, inverse: torch.Tensor,
                             mode: SparseTensorQuantizationMode) -> torch.Tensor:
    """One feature row per unique coordinate from rows that share coordinates (differentiable)."""
    n_out = unique_index.numel()
    if n_out == features.shape[0]:
        return features  # no duplicates: every mode keeps the rows as they are
    if mode == SparseTensorQuantizationMode.RANDOM_SUBSAMPLE:
        return features[unique_index]
    if mode in (SparseTensorQuantizationMode.UNWEIGHTED_SUM, SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE):
        out = torch.zeros(n_out, features.shape[1], dtype=features.dtype, device=features.device)
        out = out.index_add(0, inverse, features)
        if mode == SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE:
            out = out / torch.bincount(inverse, minlength=n_out).to(features.dtype)[:, None]
        return out
    if mode == SparseTensorQuantizationMode.MAX_POOL:
        index = inverse[:, None].expand(-1, features.shape[1])
        empty = torch.zeros(n_out, features.shape[1], dtype=features.dtype, device=features.device)
        return empty.scatter_reduce(0, index, features, reduce="amax", include_self=False)
    if mode == SparseTensorQuantizationMode.NO_QUANTIZATION:
        # ME keeps every feature row then, so features and coordinates disagree in length (a silent bug there)
        raise ValueError(f"quantization_mode=NO_QUANTIZATION with {features.shape[0] - n_out} duplicate coordinate "
                         "rows: remove the duplicates first or choose a quantization mode")
    raise ValueError(f"quantization mode {mode!r} cannot make a SparseTensor (SPLAT_LINEAR_INTERPOLATION: use "
                     "TensorField.splat())")


class SparseTensor(Tensor):
    """ME-compatible sparse tensor: ``F`` [N, C] features for ``C`` [N, 1+D] int32 coordinates (batch first).

    Create one from coordinates (a new coordinate manager is made unless one is given or the operation mode
    shares the global one), or from ``coordinate_map_key`` + ``coordinate_manager`` when a layer produces
    features for a set the manager already holds.
    """

    def __init__(
        self,
        features: torch.Tensor,
        coordinates: torch.Tensor | None = None,
        tensor_stride: int | Sequence[int] = 1,
        coordinate_map_key: CoordinateMapKey | None = None,
        coordinate_manager: CoordinateManager | None = None,
        quantization_mode: SparseTensorQuantizationMode = SparseTensorQuantizationMode.RANDOM_SUBSAMPLE,
        allocator_type: GPUMemoryAllocatorType | None = None,
        minkowski_algorithm: MinkowskiAlgorithm | None = None,
        requires_grad: bool | None = None,
        device: torch.device | str | None = None,
        coords: torch.Tensor | None = None,
    ) -> None:
        if coordinates is None:
            coordinates = coords  # ME 0.4 spelling
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"SparseTensor features must be a torch.Tensor, got {type(features).__name__}")
        if features.dim() != 2:
            raise ValueError(f"SparseTensor features must be [N, C], got shape {tuple(features.shape)}")
        if not isinstance(quantization_mode, SparseTensorQuantizationMode):
            raise TypeError(f"quantization_mode must be a SparseTensorQuantizationMode, got {quantization_mode!r}")
        if device is not None:
            features = features.to(device)
        self.quantization_mode = quantization_mode
        if coordinates is not None:
            if coordinate_map_key is not None:
                raise ValueError("give coordinates or coordinate_map_key, not both (ME asserts the same)")
            coordinates = self._integer_coordinates(coordinates, features)
            D = coordinates.shape[1] - 1
            self._manager = manager_for(D, features.device, coordinate_manager)
            key, (unique_index, inverse) = self._manager.insert_and_map(
                coordinates.to(self._manager.device), to_tuple(tensor_stride, D, "tensor_stride"))
            self.unique_index, self.inverse_mapping = unique_index, inverse
            features = merge_duplicate_features(features, unique_index.to(features.device),
                                                inverse.to(features.device), quantization_mode)
            self.coordinate_map_key = key
        else:
            if coordinate_map_key is None or coordinate_manager is None:
                raise ValueError("SparseTensor needs coordinates, or coordinate_map_key with coordinate_manager")
            if coordinate_map_key not in coordinate_manager:
                raise KeyError(f"{coordinate_map_key} is not held by the coordinate manager")
            if coordinate_manager.size(coordinate_map_key) != features.shape[0]:
                raise ValueError(f"{features.shape[0]} feature rows for a set of "
                                 f"{coordinate_manager.size(coordinate_map_key)} coordinates")
            self._manager = coordinate_manager
            self.coordinate_map_key = coordinate_map_key
            self.unique_index = self.inverse_mapping = None
        if requires_grad is not None:
            features.requires_grad_(requires_grad)
        self._F = features

    @staticmethod
    def _integer_coordinates(coordinates: Any, features: torch.Tensor) -> torch.Tensor:
        if not isinstance(coordinates, torch.Tensor):
            coordinates = torch.as_tensor(coordinates)
        if coordinates.dim() != 2 or coordinates.shape[1] < 2:
            raise ValueError(f"coordinates must be [N, 1+D] (batch index first), got {tuple(coordinates.shape)}")
        if coordinates.shape[0] != features.shape[0]:
            raise ValueError(f"{coordinates.shape[0]} coordinates for {features.shape[0]} feature rows")
        if coordinates.is_floating_point():
            if not torch.isfinite(coordinates).all():
                raise ValueError("SparseTensor coordinates contain NaN or inf")
            warnings.warn("coordinates implicitly converted to torch.IntTensor (floored), as MinkowskiEngine does; "
                          "use .int() (or sparse_quantize) to remove this warning", stacklevel=3)
            coordinates = torch.floor(coordinates)
        return coordinates.to(features.device, torch.int32)

    # ----------------------------------------------------------------- ME accessors
    @property
    def coordinates(self) -> torch.Tensor:
        return self._manager.get_coordinates(self.coordinate_map_key)

    def __repr__(self) -> str:
        return (f"SparseTensor(N={self._F.shape[0]}, C={self._F.shape[1]}, D={self.D}, "
                f"tensor_stride={self.tensor_stride}, device={self.device}, dtype={self.dtype})")

    def replace_features(self, features: torch.Tensor) -> "SparseTensor":
        """A tensor on the same coordinates with new features (how every layer builds its output)."""
        return SparseTensor(features, coordinate_map_key=self.coordinate_map_key,
                            coordinate_manager=self._manager)

    def _moved(self, features: torch.Tensor) -> "SparseTensor":
        return SparseTensor(features, coordinates=self.C.to(features.device), tensor_stride=self.tensor_stride)

    def _batch_rows(self) -> list[torch.Tensor]:
        return self._manager.origin_map(self.coordinate_map_key)[1]

    # ----------------------------------------------------------------- arithmetic (ME's union semantics)
    def _check_same_coordinates(self, other: "SparseTensor") -> None:
        if other.coordinate_manager is not self._manager or other.coordinate_map_key != self.coordinate_map_key:
            raise CoordinatesMismatchError("sparse tensors must share coordinates (same manager and coordinate_map_key); "
                             f"got strides {self.tensor_stride} and {other.tensor_stride}")

    def _binary(self, other: object, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "SparseTensor":
        if not isinstance(other, SparseTensor):
            return self.replace_features(op(self._F, other))  # type: ignore[arg-type]
        if other._manager is not self._manager:
            raise CoordinatesMismatchError("SparseTensors must share the same coordinate manager for this operation (build one from "
                             "the other's coordinate_manager, or use SparseTensorOperationMode.SHARE_COORDINATE_MANAGER)")
        if other.coordinate_map_key == self.coordinate_map_key:
            return self.replace_features(op(self._F, other._F))
        # ME: on the union of both sets; a coordinate one side lacks counts as a zero feature there
        key = CoordinateMapKey(self.D + 1)  # unset: union_map fills it in, as in ME
        (mine_in, mine_out), (theirs_in, theirs_out) = self._manager.union_map(
            [self.coordinate_map_key, other.coordinate_map_key], key)
        out = torch.zeros(self._manager.size(key), self._F.shape[1], dtype=self.dtype, device=self.device)
        out = out.index_copy(0, mine_out, self._F[mine_in])
        out = out.index_copy(0, theirs_out, op(out[theirs_out], other._F[theirs_in]))
        return SparseTensor(out, coordinate_map_key=key, coordinate_manager=self._manager)

    def _inplace(self, other: object, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "SparseTensor":
        if isinstance(other, SparseTensor):
            self._check_same_coordinates(other)  # ME: in-place ops need the same coordinates
            other = other._F
        self._F = op(self._F, other)  # type: ignore[arg-type]
        return self

    def __add__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.add)

    def __radd__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.add)

    def __sub__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.sub)

    def __rsub__(self, other: object) -> "SparseTensor":
        return self.replace_features(other - self._F)  # type: ignore[operator]

    def __mul__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.mul)

    def __rmul__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.mul)

    def __truediv__(self, other: object) -> "SparseTensor":
        return self._binary(other, torch.div)

    def __pow__(self, power: float) -> "SparseTensor":
        return self.replace_features(self._F ** power)

    def __neg__(self) -> "SparseTensor":
        return self.replace_features(-self._F)

    def __iadd__(self, other: object) -> "SparseTensor":
        return self._inplace(other, torch.add)

    def __isub__(self, other: object) -> "SparseTensor":
        return self._inplace(other, torch.sub)

    def __imul__(self, other: object) -> "SparseTensor":
        return self._inplace(other, torch.mul)

    def __itruediv__(self, other: object) -> "SparseTensor":
        return self._inplace(other, torch.div)

    # ----------------------------------------------------------------- dense views
    def dense(self, shape: torch.Size | None = None, min_coordinate: torch.Tensor | int | None = None,
              contract_stride: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ME's ``dense``: ``(dense [B, C, *spatial], min_coordinate, tensor_stride)``.

        As ME: without ``min_coordinate`` the dense index is the coordinate itself (negative coordinates raise:
        pass ``min_coordinate``); ``min_coordinate=0`` means the origin; a given ``min_coordinate`` must be a
        multiple of the tensor stride. With ``contract_stride`` indices are divided by the tensor stride.
        """
        D, C = self.D, self._F.shape[1]
        stride = torch.tensor(self.tensor_stride, dtype=torch.long, device=self.device)
        if shape is not None:
            if len(shape) != D + 2:
                raise ValueError(f"dense shape must have {D + 2} entries (batch, channels, {D} spatial), got {shape}")
            shape = torch.Size([shape[0], C, *shape[2:]])
        if len(self) == 0:
            if shape is None:
                raise ValueError("shape is required to densify an empty SparseTensor")
            return (torch.zeros(shape, dtype=self.dtype, device=self.device),
                    torch.zeros(D, dtype=torch.int32), torch.IntTensor(self.tensor_stride))
        coords = self.C.long()
        spatial = coords[:, 1:]
        if min_coordinate is None:
            min_coordinate = spatial.min(0).values
            if (min_coordinate < 0).any():
                raise ValueError(f"coordinates go below 0 (min {min_coordinate.tolist()}); pass min_coordinate to "
                                 "dense()")
            rel = spatial
        elif isinstance(min_coordinate, int) and min_coordinate == 0:
            min_coordinate, rel = torch.zeros(D, dtype=torch.long, device=self.device), spatial
        else:
            min_coordinate = torch.as_tensor(min_coordinate).to(self.device).long().reshape(-1)
            if min_coordinate.numel() != D:
                raise ValueError(f"min_coordinate needs {D} entries, got {min_coordinate.numel()}")
            rel = spatial - min_coordinate
        if (torch.remainder(min_coordinate, stride) != 0).any():
            raise ValueError("the minimum coordinates must be divisible by the tensor stride")
        if (rel < 0).any():
            raise ValueError("min_coordinate must not exceed any coordinate")
        if contract_stride:
            rel = torch.div(rel, stride, rounding_mode="floor")
        batch = coords[:, 0]
        if shape is None:
            shape = torch.Size([int(batch.max()) + 1, C] + (rel.max(0).values + 1).tolist())
        if (rel >= torch.tensor(shape[2:], device=self.device)).any() or int(batch.max()) >= shape[0]:
            raise ValueError(f"coordinates fall outside the dense shape {tuple(shape)}")
        dense = torch.zeros(shape, dtype=self._F.dtype, device=self.device)
        # advanced indices separated by a slice put the indexed dimension first, so the target view is [N, C]
        dense[(batch, slice(None)) + tuple(rel[:, d] for d in range(D))] = self._F
        return dense, min_coordinate.int().cpu(), torch.IntTensor(self.tensor_stride)

    # ----------------------------------------------------------------- continuous queries and fields
    def features_at_coordinates(self, query_coordinates: torch.Tensor) -> torch.Tensor:
        """ME: features N-linearly interpolated at continuous coordinates [M, 1+D] (batch first); corners that
        hold no coordinate contribute nothing, so a query far from every coordinate gets zeros."""
        if query_coordinates.dtype != self.dtype:
            raise TypeError(f"query_coordinates must have the features' dtype {self.dtype}, got "
                            f"{query_coordinates.dtype} (as ME asserts)")
        rows, samples, weights = self._manager.interpolation_map_weight(self.coordinate_map_key,
                                                                       query_coordinates.to(self.device))
        out = torch.zeros(query_coordinates.shape[0], self._F.shape[1], dtype=self.dtype, device=self.device)
        return out.index_add(0, samples, self._F[rows] * weights[:, None].to(self.dtype))

    def slice(self, X: "SparseTensor | TensorField") -> "TensorField":
        """ME: this tensor's features at every row that made ``X`` (a TensorField, or the SparseTensor this one
        was computed from, through its ``inverse_mapping``), as a TensorField of ``len(X's input)`` rows."""
        from minkseg.sparse.field import TensorField
        if isinstance(X, TensorField):
            return TensorField(self._F[X.inverse_mapping(self.coordinate_map_key)],
                               coordinate_field_map_key=X.coordinate_field_map_key,
                               coordinate_manager=X.coordinate_manager, quantization_mode=X.quantization_mode)
        if isinstance(X, SparseTensor):
            if X.coordinate_map_key != self.coordinate_map_key:
                raise ValueError("slice can only be applied on the same coordinates (coordinate_map_key)")
            inverse = X.inverse_mapping if X.inverse_mapping is not None else torch.arange(len(self), device=self.device)
            return TensorField(self._F[inverse], coordinates=self.C[inverse].to(self.dtype),
                               coordinate_manager=self._manager, quantization_mode=self.quantization_mode)
        raise TypeError(f"slice() takes a TensorField or SparseTensor, got {type(X).__name__}")

    def cat_slice(self, X: "SparseTensor | TensorField") -> "TensorField":
        """ME: like :meth:`slice`, with ``X``'s own features concatenated after this tensor's."""
        from minkseg.sparse.field import TensorField
        sliced = self.slice(X)
        if isinstance(X, TensorField):
            return TensorField(torch.cat([sliced.F, X.F], 1), coordinate_field_map_key=X.coordinate_field_map_key,
                               coordinate_manager=X.coordinate_manager, quantization_mode=X.quantization_mode)
        inverse = X.inverse_mapping if X.inverse_mapping is not None else torch.arange(len(self), device=self.device)
        return TensorField(torch.cat([sliced.F, X.F[inverse]], 1), coordinates=sliced.C,
                           coordinate_manager=self._manager, quantization_mode=self.quantization_mode)

    def interpolate(self, X: "TensorField") -> "TensorField":
        """ME: features at ``X``'s continuous coordinates: the transpose of ``X.splat()`` when this tensor came from
        that splat, N-linear interpolation (:meth:`features_at_coordinates`) otherwise."""
        from minkseg.sparse.field import TensorField
        if not isinstance(X, TensorField):
            raise TypeError(f"interpolate() takes a TensorField, got {type(X).__name__}")
        splat = X._splat.get(self.coordinate_map_key)
        if splat is not None:
            rows, points, weights = splat
            features = torch.zeros(len(X), self._F.shape[1], dtype=self.dtype, device=self.device)
            features = features.index_add(0, points, self._F[rows] * weights[:, None].to(self.dtype))
        else:
            features = self.features_at_coordinates(X.C.to(self.dtype))
        return TensorField(features, coordinate_field_map_key=X.coordinate_field_map_key,
                           coordinate_manager=X.coordinate_manager)


def explicit_output_key(input: SparseTensor, coordinates: object, tensor_stride: Sequence[int]) -> CoordinateMapKey:
    """The output set a layer was told to write to: a SparseTensor's set, a key, or new integer coordinates
    [M, 1+D] (duplicates merged) registered at ``tensor_stride``, all in the input's coordinate manager."""
    manager = input.coordinate_manager
    if isinstance(coordinates, SparseTensor):
        if coordinates.coordinate_manager is not manager:
            raise ValueError("output coordinates must come from the input's coordinate manager")
        return coordinates.coordinate_map_key
    if isinstance(coordinates, CoordinateMapKey):
        if coordinates not in manager:
            raise KeyError(f"{coordinates} is not held by the input's coordinate manager")
        return coordinates
    if isinstance(coordinates, torch.Tensor):
        if coordinates.is_floating_point():
            coordinates = torch.floor(coordinates)
        key, _ = manager.insert_and_map(coordinates.int(), list(tensor_stride))
        return key
    raise TypeError(f"coordinates must be a SparseTensor, CoordinateMapKey or int tensor, got {type(coordinates).__name__}")
