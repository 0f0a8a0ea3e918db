"""Run a trained model on one scene's points with test-time voting -> per-point labels and class probabilities.

The one home of inference. The evaluator (scores a split), ``minkseg predict`` (a user's own scans) and the ScanNet
submission all go through here, so a scene gets the same labels whichever of them asks:

* :func:`voting_rotations` fixes the order of the voting views (unrotated first, then the other angles as given):
  softmax sums in floating point depend on that order, and "same labels" means bit-identical sums;
* :class:`ViewVoter` runs the network on voxelised views and averages their per-point softmax (a point takes the
  prediction of its voxel through the voxeliser's inverse map);
* :class:`Predictor` builds those views from raw points exactly as the evaluate stage does (the data side's
  :func:`minkseg.data.datasets.evaluation_view`, with the voxel size, clip box, voting angles and temporal window
  stored in the model file), and splits a scene too large for one pass into overlapping tiles.

Layering: the network and the voxeliser come from minkseg.nn and minkseg.data, imported lazily when a model file
is loaded or a scene is voxelised, so the engine itself still imports without them.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from minkseg.errors import EngineError
from minkseg.engine.runtime import balance_threads
from minkseg.engine.trainer import InputBuilder, logits_of, resolve_device, sparse_input, unwrap

if TYPE_CHECKING:
    from minkseg.data.quantize import VoxelParams

log = logging.getLogger(__name__)

__all__ = ["PointPrediction", "ViewVoter", "Predictor", "voting_rotations", "check_units", "check_finite_rows"]

GREY = 127.5  # the colour of a colourless cloud: 0 after normalisation, the centre of the range training saw
DEFAULT_MAX_POINTS = 4_000_000
DEFAULT_TILE_MARGIN = 2.0  # metres of context around a tile of an oversized scene
EVALUATE_OOM_FIX = ("evaluate on the CPU (base.device: cpu), or set voxelize.clip_bound / raise voxelize.voxel_size "
                    "(re-trains)")
PREDICT_OOM_FIX = "predict on the CPU (--device cpu), or with a lower --max-points (smaller tiles)"
PREDICTION_KEYS = ("voxel_size", "clip_bound", "rotation_angles", "rotation_axis", "temporal_numseq",
                   "temporal_dilation", "ignore_label")
"""What prediction needs beyond the network (under ``voxelization`` or beside it in the model file); a file written
before these keys existed is refused (the evaluate stage takes the same values from params.yaml instead)."""


@dataclass
class PointPrediction:
    """Per-point result: ``labels`` int64 [N] class ids (``ignore_label`` for a point no view covers, i.e. outside
    the model's clip box) and ``probabilities`` float32 [N, C] (the averaged softmax; zero rows where uncovered)."""

    labels: np.ndarray
    probabilities: np.ndarray


def voting_rotations(angles: Sequence[float]) -> list[float]:
    """The voting angles in summation order: one unrotated view first (if any angle is a multiple of 360), then
    the others in the order given. The evaluate stage builds its views in this order too."""
    angles = [float(angle) for angle in angles]
    unrotated = [0.0] if any(angle % 360 == 0 for angle in angles) else []
    return unrotated + [angle for angle in angles if angle % 360 != 0]


class ViewVoter:
    """Network + device: softmax of each voxelised view mapped to the points and averaged over the views."""

    def __init__(self, model: nn.Module, num_classes: int, device: torch.device, *, amp: str = "none",
                 input_builder: InputBuilder | None = None, out_of_memory_fix: str = EVALUATE_OOM_FIX) -> None:
        self.device = device
        self.out_of_memory_fix = out_of_memory_fix
        self.model = unwrap(model).to(device).eval()
        self.num_classes = num_classes
        self.amp = amp if device.type == "cuda" else "none"
        self.input_builder = input_builder or sparse_input

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)

    @torch.no_grad()
    def vote(self, views: Sequence[Mapping[str, Any]], num_points: int,
             name: str = "scene") -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities [N, C] float32, covered [N] bool)``; uncovered points have all-zero rows.

        A view is ``coordinates`` (int [M, D], no batch column), ``features`` ([M, C]) and ``inverse`` ([N]: the
        voxel of every point, -1 where the view does not cover it).
        """
        if not views:
            raise EngineError(f"scene {name}: no views to predict from")
        total = torch.zeros((num_points, self.num_classes), dtype=torch.float32, device=self.device)
        covered = torch.zeros(num_points, dtype=torch.float32, device=self.device)
        for view in views:
            voxel_coords = np.asarray(view["coordinates"])
            inverse = np.asarray(view["inverse"]).reshape(-1).astype(np.int64, copy=False)
            count = voxel_coords.shape[0]
            if inverse.shape[0] != num_points or (inverse.size and (inverse.min() < -1 or inverse.max() >= count)):
                raise EngineError(f"scene {name}: the voxeliser's inverse map does not map its {num_points} points "
                                  f"onto its {count} voxels")
            if count == 0:
                continue
            batched = np.concatenate([np.zeros((count, 1), dtype=np.int32), voxel_coords.astype(np.int32)], axis=1)
            batch = {"coordinates": torch.from_numpy(batched),
                     "features": torch.as_tensor(np.asarray(view["features"]), dtype=torch.float32)}
            try:
                with self._autocast():
                    logits = logits_of(self.model(self.input_builder(batch, self.device)))
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise EngineError(f"scene {name}: out of memory on {count} voxels; {self.out_of_memory_fix}") from None
            if logits.shape != (count, self.num_classes):
                raise EngineError(f"scene {name}: the model returned logits {tuple(logits.shape)} for {count} voxels "
                                  f"and {self.num_classes} classes")
            balance_threads()
            probabilities = torch.softmax(logits.float(), dim=1)
            points = torch.from_numpy(np.nonzero(inverse >= 0)[0]).to(self.device)
            voxels = torch.from_numpy(inverse[inverse >= 0]).to(self.device)
            total[points] += probabilities[voxels]
            covered[points] += 1.0
        mask = covered > 0
        total[mask] /= covered[mask, None]
        return total.cpu().numpy(), mask.cpu().numpy()


def check_units(xyz: np.ndarray, max_extent: float, name: str = "scene") -> None:
    """Refuse coordinates whose extent suggests millimetres or centimetres (the model works in metres)."""
    if len(xyz) == 0:
        return
    extent = float((xyz.max(axis=0) - xyz.min(axis=0)).max())
    if extent <= max_extent:
        return
    # The unit that makes the scene closest (in ratio) to a typical scene of the model: a twentieth of the limit.
    typical = max_extent / 20
    unit, scale = min((("centimetres", 0.01), ("millimetres", 0.001)),
                      key=lambda candidate: abs(math.log(extent * candidate[1] / typical)))
    other = "--scale 0.01 for centimetres" if scale == 0.001 else "--scale 0.001 for millimetres"
    raise EngineError(f"{name}: the points span {extent:.4g} units, more than the {max_extent:g} m a scene of this "
                      f"model spans; the coordinates look like {unit}: rescale them to metres (minkseg predict "
                      f"--scale {scale:g}; {other})")


def check_finite_rows(name: str, what: str, values: np.ndarray) -> None:
    """Refuse rows with NaN/inf ``what`` (coordinates, colours) of scene ``name`` in one line with the first row."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        rows = np.nonzero(bad)[0]
        raise EngineError(f"{name}: {len(rows)} of {len(values)} points have NaN/inf {what} (first: row {rows[0]}); "
                          "remove those rows (or fix the export) and re-run")


class Predictor:
    """A trained network plus how a scene becomes its input: ``predict(xyz, rgb)`` -> :class:`PointPrediction`.

    ``voting_angles`` rotate the scene about ``rotation_axis`` (test-time voting; the softmax is averaged per
    point). A scene of more than ``max_points`` points is cut into tiles of at most that many, each predicted with
    ``tile_margin`` metres of surrounding points as context (exactly the whole-scene result when the margin covers
    the scene); smaller scenes are predicted in one pass.
    """

    def __init__(self, model: nn.Module, *, class_names: Sequence[str], voxel: VoxelParams,
                 voting_angles: Sequence[float] = (0.0,), rotation_axis: str = "z",
                 device: str | torch.device = "auto", amp: str = "none",
                 max_extent: float = math.inf, max_points: int = DEFAULT_MAX_POINTS,
                 tile_margin: float = DEFAULT_TILE_MARGIN, input_builder: InputBuilder | None = None) -> None:
        from minkseg.data.quantize import AXES, DATASET_BOUND

        if not voting_angles:
            raise EngineError("voting angles: need at least one angle (use 0 for no voting)")
        if rotation_axis not in AXES:
            raise EngineError(f"rotation axis must be x, y or z (got {rotation_axis!r})")
        if voxel.clip_bound == DATASET_BOUND:
            raise EngineError("the voxel parameters' clip box must be resolved (None or three (min, max) pairs) "
                              "for prediction: a scan of the user's has no dataset to take it from")
        if max_points < 1:
            raise EngineError(f"max points per pass must be >= 1 (got {max_points})")
        self.class_names: list[str] = list(class_names)
        self.voxel = voxel
        self.voting_angles = [float(angle) for angle in voting_angles]
        self.rotation_axis = rotation_axis
        self.max_extent = float(max_extent)
        self.max_points = int(max_points)
        self.tile_margin = float(tile_margin)
        self.voter = ViewVoter(model, len(self.class_names), resolve_device(device), amp=amp,
                               input_builder=input_builder, out_of_memory_fix=PREDICT_OOM_FIX)
        self._voxelizer = None

    @classmethod
    def from_model_file(cls, path: str | Path, device: str = "auto",
                        voting_angles: Sequence[float] | None = None, **kwargs: Any) -> "Predictor":
        """A predictor for ``models/model.pt`` (class names, voxel size, clip box, voting and temporal window come
        from the file; ``voting_angles`` overrides the evaluation's angles, e.g. ``[0]`` for one fast pass)."""
        from minkseg.data.quantize import VoxelParams
        from minkseg.datasets import dataset_class
        from minkseg.weights import load_model_file

        model, payload = load_model_file(path)
        voxelization = dict(payload.get("voxelization") or {})
        missing = [key for key in PREDICTION_KEYS if key not in voxelization and key not in payload]
        if missing:
            raise EngineError(f"{path}: the model file lacks {', '.join(missing)} (written by an older MinkSeg); "
                              "re-run the train stage (dvc repro -f train) to write a complete one")
        try:
            max_extent = dataset_class(str(payload.get("dataset"))).max_extent
        except Exception:  # a dataset this version does not know: no unit check rather than a wrong one
            max_extent = math.inf
        kwargs.setdefault("max_extent", max_extent)
        return cls(model, class_names=payload["class_names"], voxel=VoxelParams(**voxelization),
                   voting_angles=payload["rotation_angles"] if voting_angles is None else voting_angles,
                   rotation_axis=str(payload["rotation_axis"]), device=device, **kwargs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def voxel_size(self) -> float:
        return self.voxel.voxel_size

    @property
    def ignore_label(self) -> int:
        return self.voxel.ignore_label

    @property
    def temporal_numseq(self) -> int:
        return self.voxel.temporal_numseq

    @property
    def temporal_dilation(self) -> int:
        return self.voxel.temporal_dilation

    @property
    def temporal(self) -> bool:
        """A 4D model: it sees windows of ``temporal_numseq`` frames, ``temporal_dilation`` frames apart."""
        return self.temporal_numseq > 1

    @property
    def device(self) -> torch.device:
        return self.voter.device

    def _voxelizer_of(self):
        if self._voxelizer is None:
            from minkseg.data.quantize import Voxelizer

            self._voxelizer = Voxelizer(self.voxel_size, clip_bound=self.voxel.clip_bound,
                                        ignore_label=self.ignore_label, label_mode=self.voxel.label_mode)
        return self._voxelizer

    def views(self, frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> list[dict[str, Any]]:
        """One voxelised view per voting angle of ``(xyz, rgb 0..255, clip-box centre or None)`` frames."""
        from minkseg.data.datasets import evaluation_view
        from minkseg.data.quantize import axis_rotation

        voxelizer = self._voxelizer_of()
        prepared = [(np.asarray(xyz), np.asarray(rgb, dtype=np.float32),
                     np.full(len(xyz), self.ignore_label, dtype=np.int64), centre) for xyz, rgb, centre in frames]
        return [evaluation_view(voxelizer, prepared, temporal=self.temporal,
                                rotation=axis_rotation(self.rotation_axis, np.deg2rad(angle)) if angle else None)
                for angle in voting_rotations(self.voting_angles)]

    def _checked(self, xyz: np.ndarray, rgb: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or not np.issubdtype(xyz.dtype, np.number):
            raise EngineError(f"{name}: coordinates must be an [N, 3] array of numbers (got shape {xyz.shape})")
        if len(xyz) == 0:
            raise EngineError(f"{name}: the cloud has no points; nothing to segment")
        check_finite_rows(name, "coordinates", xyz)
        check_units(xyz, self.max_extent, name)
        if rgb is None:
            log.warning("%s: no colours; filled with grey (the centre of the colour range the network was trained "
                        "on), so expect lower accuracy than on coloured scans", name)
            return xyz, np.full((len(xyz), 3), GREY, dtype=np.float32)
        rgb = np.asarray(rgb)
        if rgb.shape != (len(xyz), 3) or not np.issubdtype(rgb.dtype, np.number):
            raise EngineError(f"{name}: colours must be an [N, 3] array of 0..255 values for the {len(xyz)} points "
                              f"(got shape {rgb.shape})")
        check_finite_rows(name, "colours", rgb)
        return xyz, rgb.astype(np.float32)

    def _result(self, probabilities: np.ndarray, covered: np.ndarray) -> PointPrediction:
        labels = probabilities.argmax(axis=1).astype(np.int64)
        labels[~covered] = self.ignore_label
        return PointPrediction(labels=labels, probabilities=probabilities.astype(np.float32, copy=False))

    def predict(self, xyz: np.ndarray, rgb: np.ndarray | None, name: str = "scene") -> PointPrediction:
        """Labels and probabilities of every point of one scene (xyz [N, 3] metres, rgb [N, 3] 0..255 or None)."""
        xyz, rgb = self._checked(xyz, rgb, name)
        if len(xyz) <= self.max_points:
            probabilities, covered = self.voter.vote(self.views([(xyz, rgb, None)]), len(xyz), name)
            return self._result(probabilities, covered)
        return self._predict_tiled(xyz, rgb, name)

    def predict_window(self, frames: Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
                       name: str = "window") -> list[PointPrediction]:
        """A 4D model on one temporal window: ``(xyz, rgb or None, camera centre or None)`` per frame, in time
        order; one prediction per frame."""
        checked = []
        for t, (xyz, rgb, centre) in enumerate(frames):
            xyz, rgb = self._checked(xyz, rgb, f"{name} frame {t}")
            checked.append((xyz, rgb, centre))
        counts = [len(xyz) for xyz, _, _ in checked]
        probabilities, covered = self.voter.vote(self.views(checked), sum(counts), name)
        bounds = np.cumsum([0] + counts)
        return [self._result(probabilities[a:b], covered[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def _tiles(self, xyz: np.ndarray) -> list[np.ndarray]:
        """Point indices of horizontal tiles of at most ``max_points`` points (median cuts of the longer side)."""
        from minkseg.data.quantize import AXES

        plane = [axis for axis in range(3) if axis != AXES[self.rotation_axis]]
        pending, tiles = [np.arange(len(xyz))], []
        while pending:
            ids = pending.pop()
            if len(ids) <= self.max_points:
                tiles.append(ids)
                continue
            spans = xyz[ids][:, plane].max(axis=0) - xyz[ids][:, plane].min(axis=0)
            axis = plane[int(np.argmax(spans))]
            order = ids[np.argsort(xyz[ids, axis], kind="stable")]
            half = len(order) // 2
            pending += [order[half:], order[:half]]
        return sorted(tiles, key=lambda ids: int(ids.min()))

    def _predict_tiled(self, xyz: np.ndarray, rgb: np.ndarray, name: str) -> PointPrediction:
        tiles = self._tiles(xyz)
        log.info("%s: %d points, more than %d per pass; predicting %d tiles with %g m of context", name, len(xyz),
                 self.max_points, len(tiles), self.tile_margin)
        probabilities = np.zeros((len(xyz), self.num_classes), dtype=np.float32)
        covered = np.zeros(len(xyz), dtype=bool)
        for index, ids in enumerate(tiles):
            lo, hi = xyz[ids].min(axis=0) - self.tile_margin, xyz[ids].max(axis=0) + self.tile_margin
            context = np.nonzero(np.all((xyz >= lo) & (xyz <= hi), axis=1))[0]  # sorted, so the order is kept
            tile_probabilities, tile_covered = self.voter.vote(self.views([(xyz[context], rgb[context], None)]),
                                                               len(context), f"{name} tile {index}")
            own = np.searchsorted(context, ids)
            probabilities[ids] = tile_probabilities[own]
            covered[ids] = tile_covered[own]
        return self._result(probabilities, covered)
