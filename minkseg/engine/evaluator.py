"""Point-level evaluation: voxel predictions mapped back to every original point, optional rotation voting.

Scores reported on voxels flatter a model (a voxel stands for many points, and large classes own most voxels),
so MinkSeg evaluates like the ScanNet benchmark: every original point takes the prediction of its voxel through
the voxeliser's inverse map. With several ``rotation_angles`` the scene is rotated about its centre, re-voxelised
(a different quantisation each time) and the per-point softmax is averaged -- test-time voting. The voxeliser is
the data side's, passed in as a callable, so evaluation quantises exactly like training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from minkseg.atomic import atomic_open, atomic_write_json
from minkseg.config import Params
from minkseg.engine import distributed
from minkseg.errors import EngineError
from minkseg.engine.runtime import configure_cpu_runtime
from minkseg.engine.export import (colorize, palette, render_confusion_png, render_scene_png, write_confusion_csv,
                                   write_per_class_csv, write_point_cloud)
from minkseg.engine.predictor import ViewVoter
from minkseg.engine.trainer import InputBuilder, resolve_device
from minkseg.metrics import SegmentationMetrics

__all__ = ["Voxelizer", "EvalResult", "Evaluator", "rotate_points", "headline_metrics", "write_evaluation"]

Voxelizer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""(point coordinates float [N, D], point features [N, C]) -> (voxel coordinates int [M, D] without batch
column, voxel features float [M, C'], inverse map int [N] giving each point's voxel row)."""

_AXES = {"x": 0, "y": 1, "z": 2}


def rotate_points(coordinates: np.ndarray, angle_degrees: float, axis: str = "z") -> np.ndarray:
    """Rotate the first three columns about the centre of the points' bounding box; extra columns (time) stay."""
    coordinates = np.asarray(coordinates)
    if angle_degrees % 360 == 0:
        return coordinates
    from minkseg.data.datasets import rotation_matrix  # the one rotation convention (the evaluate stage's views)

    xyz = coordinates[:, :3].astype(np.float64)
    centre = (xyz.min(axis=0) + xyz.max(axis=0)) / 2.0
    rotated = (xyz - centre) @ rotation_matrix(axis, angle_degrees).T + centre
    out = coordinates.astype(np.float64, copy=True)
    out[:, :3] = rotated
    return out.astype(coordinates.dtype if np.issubdtype(coordinates.dtype, np.floating) else np.float64)


@dataclass
class EvalResult:
    """Metrics (see :func:`minkseg.metrics.summarize`), the confusion matrix and the files written."""

    metrics: dict[str, Any]
    confusion: np.ndarray
    num_scenes: int
    exported: list[Path] = field(default_factory=list)


class Evaluator:
    """Run a trained model over whole scenes and score every original point.

    A scene is a mapping in one of two forms:

    * raw points -- ``name``, ``coordinates`` (float ``[N, D]``: xyz or xyzt), ``features`` (float ``[N, C]``)
      and ``labels`` (int ``[N]``); it is rotated by each of ``rotation_angles`` and voxelised by the
      ``voxelize`` callable given to the constructor;
    * pre-voxelised views -- ``name``, ``labels`` (``[N]``, or taken from the first view's ``point_labels``)
      and ``views``: one sample per voting angle, each with ``coordinates`` (int ``[M, D]``, no batch column),
      ``features`` (``[M, C]``) and ``inverse`` (``[N]``: the voxel of every point, -1 for a point the view
      does not cover, e.g. outside a clip box). This is what minkseg.data's evaluation datasets produce.

    Points no view covers are left out of the metrics (counted in ``num_points_unscored``) and get the ignore
    label as prediction. For export, point positions come from ``points`` (``[N, >=3]``, the original points),
    the raw ``coordinates``, or -- approximately, at voxel centres -- from the first view's ``transform``; with
    ``colors`` (``[N, 3]`` uint8) ``<name>.ply`` keeps the scan's colours and ``<name>_labels.ply`` shows the
    predicted classes, else ``<name>.ply`` is coloured by class.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        voxelize: Voxelizer | None = None,
        class_names: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        rotation_angles: Sequence[float] = (0.0,),
        rotation_axis: str = "z",
        ignore_label: int = 255,
        input_builder: InputBuilder | None = None,
        amp: str = "none",
        with_ap: bool = True,
        ap_bins: int = 16384,
    ) -> None:
        if not rotation_angles:
            raise EngineError("evaluate.rotation_angles: needs at least one angle (use [0] for no voting)")
        if rotation_axis not in _AXES:
            raise EngineError(f"evaluate.rotation_axis: must be x, y or z (got {rotation_axis!r})")
        self.dist = distributed.current()
        self.device = resolve_device(device, self.dist.local_rank)
        self.voter = ViewVoter(model, num_classes, self.device, amp=amp, input_builder=input_builder)
        self.model = self.voter.model
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise EngineError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.voxelize = voxelize
        self.rotation_angles = [float(angle) for angle in rotation_angles]
        self.rotation_axis = rotation_axis
        self.ignore_label = ignore_label
        self.amp = self.voter.amp
        self.with_ap = with_ap
        self.ap_bins = ap_bins

    @classmethod
    def from_params(cls, params: Params, model: nn.Module, **kwargs: Any) -> "Evaluator":
        """An evaluator configured from params.yaml (device, voting angles and axis, ignore label, AMP, threads)."""
        configure_cpu_runtime(params.base.num_threads)
        kwargs.setdefault("device", params.base.device)
        kwargs.setdefault("rotation_angles", params.evaluate.rotation_angles)
        kwargs.setdefault("rotation_axis", params.evaluate.rotation_axis)
        kwargs.setdefault("ignore_label", params.base.ignore_label)
        kwargs.setdefault("amp", params.train.amp)
        return cls(model, **kwargs)

    def views_of(self, coordinates: np.ndarray, features: np.ndarray, name: str = "scene") -> list[dict[str, Any]]:
        """One voxelised view per rotation angle of a raw-point scene, through the ``voxelize`` callable."""
        if self.voxelize is None:
            raise EngineError(f"scene {name}: raw points need a voxelize callable (or pass pre-voxelised 'views')")
        coordinates = np.asarray(coordinates)
        features = np.asarray(features)
        if coordinates.ndim != 2 or coordinates.shape[0] != features.shape[0]:
            raise EngineError(f"scene {name}: coordinates {coordinates.shape} and features {features.shape} "
                              "must be [N, D] and [N, C] for the same N")
        views = []
        for angle in self.rotation_angles:
            voxel_coords, voxel_feats, inverse = self.voxelize(
                rotate_points(coordinates, angle, self.rotation_axis), features)
            views.append({"coordinates": voxel_coords, "features": voxel_feats, "inverse": inverse})
        return views

    def predict_views(self, views: Sequence[Mapping[str, Any]], num_points: int,
                      name: str = "scene") -> tuple[np.ndarray, np.ndarray]:
        """Softmax of every view mapped to the points and averaged over the views that cover each point.

        Returns ``(probabilities [N, C] float32, covered [N] bool)``; uncovered points have all-zero rows. The
        voting itself is :class:`minkseg.engine.predictor.ViewVoter`'s, the one ``minkseg predict`` uses.
        """
        return self.voter.vote(views, num_points, name)

    def predict(self, coordinates: np.ndarray, features: np.ndarray, name: str = "scene") -> np.ndarray:
        """Per-point class probabilities ``[N, num_classes]`` of a raw-point scene, averaged over the angles."""
        coordinates = np.asarray(coordinates)
        if coordinates.ndim == 2 and coordinates.shape[0] == 0:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        probabilities, _ = self.predict_views(self.views_of(coordinates, features, name), coordinates.shape[0], name)
        return probabilities

    def _my_scenes(self, scenes: Iterable[Mapping[str, Any]]) -> Iterable[tuple[int, Mapping[str, Any]]]:
        # A sequence is indexed so that each rank loads only its own scenes; a plain iterable is walked by all.
        world, rank = self.dist.world_size, self.dist.rank
        if hasattr(scenes, "__len__") and hasattr(scenes, "__getitem__"):
            return ((index, scenes[index]) for index in range(rank, len(scenes), world))
        return ((index, scene) for index, scene in enumerate(scenes) if index % world == rank)

    @staticmethod
    def _export_points(scene: Mapping[str, Any], views: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
        if scene.get("points") is not None:
            return np.asarray(scene["points"])[:, :3]
        raw = scene.get("coordinates")
        if raw is not None and np.issubdtype(np.asarray(raw).dtype, np.floating):
            return np.asarray(raw)[:, :3]
        first = views[0]
        if first.get("transform") is not None:  # voxel centres mapped back through the voxeliser's transform
            inverse = np.asarray(first["inverse"]).reshape(-1)
            centres = np.asarray(first["coordinates"])[np.maximum(inverse, 0), :3].astype(np.float64) + 0.5
            homogeneous = np.column_stack([centres, np.ones(len(centres))])
            points = (np.linalg.inv(np.asarray(first["transform"], dtype=np.float64)) @ homogeneous.T).T[:, :3]
            points[inverse < 0] = np.nan
            return points
        return None

    def evaluate(self, scenes: Iterable[Mapping[str, Any]], *, export_dir: str | Path | None = None,
                 export_count: int = 0, predictions_dir: str | Path | None = None,
                 progress: bool = True) -> EvalResult:
        """Score all scenes (each rank takes every world_size-th one; the sums are all-reduced across ranks).

        The first ``export_count`` scenes are written to ``export_dir`` as ``<name>.ply`` (label/prediction
        properties; see the class docstring for colours and positions) and ``<name>.png`` (ground truth beside
        prediction). With
        ``predictions_dir``, each scene's per-point predicted class ids go to ``<name>.npy``.
        """
        metrics = SegmentationMetrics(self.num_classes, self.ignore_label, with_ap=self.with_ap,
                                      ap_bins=self.ap_bins)
        colours = palette(self.num_classes)
        exported: list[Path] = []
        num_scenes = 0
        unscored = 0
        show = progress and self.dist.is_main
        for index, scene in tqdm(self._my_scenes(scenes), desc="evaluate", unit="scene", disable=not show):
            if "views" in scene:
                views = list(scene["views"])
                name = str(scene.get("name", views[0].get("name", index) if views else index))
                labels = scene.get("labels", views[0].get("point_labels") if views else None)
            else:
                name = str(scene.get("name", index))
                views = self.views_of(scene["coordinates"], scene["features"], name)
                labels = scene.get("labels")
            if labels is None:
                raise EngineError(f"scene {name}: no point labels to score against")
            labels = np.asarray(labels).reshape(-1).astype(np.int64)
            probabilities, covered = self.predict_views(views, labels.shape[0], name)
            predictions = probabilities.argmax(axis=1)
            predictions[~covered] = self.ignore_label
            scored_labels = np.where(covered, labels, self.ignore_label)
            unscored += int(((~covered) & (labels != self.ignore_label)).sum())
            metrics.update(scored_labels, np.where(covered, predictions, 0),
                           scores=probabilities if self.with_ap else None)
            num_scenes += 1
            if predictions_dir is not None:
                with atomic_open(Path(predictions_dir) / f"{name}.npy", "wb") as handle:
                    np.save(handle, predictions.astype(np.int32))
            if export_dir is not None and index < export_count:
                xyz = self._export_points(scene, views)
                if xyz is None:
                    continue
                directory = Path(export_dir)
                keep = np.isfinite(xyz).all(axis=1)
                classes = colorize(predictions[keep], colours)
                original = scene.get("colors")  # the scan's own colours; the class colours then go to _labels.ply
                exported.append(write_point_cloud(directory / f"{name}.ply", xyz[keep],
                                                  classes if original is None else np.asarray(original)[keep],
                                                  labels=labels[keep], predictions=predictions[keep]))
                if original is not None:
                    exported.append(write_point_cloud(directory / f"{name}_labels.ply", xyz[keep], classes,
                                                      labels=labels[keep], predictions=predictions[keep]))
                exported.append(render_scene_png(directory / f"{name}.png", xyz[keep], labels[keep],
                                                 predictions[keep], self.class_names, title=name,
                                                 up_axis=_AXES[self.rotation_axis]))
        metrics.confusion = distributed.all_reduce_array(metrics.confusion)
        if metrics.ap is not None:
            metrics.ap.counts = distributed.all_reduce_array(metrics.ap.counts)
        totals = distributed.all_reduce_array(np.array([num_scenes, unscored], dtype=np.int64))
        if int(totals[0]) == 0:
            raise EngineError("no scenes to evaluate; check the evaluation split and the voxelize stage's outputs")
        summary = metrics.summary(self.class_names)
        summary["num_scenes"] = int(totals[0])
        summary["num_points_unscored"] = int(totals[1])
        summary["rotation_angles"] = list(self.rotation_angles)
        return EvalResult(metrics=summary, confusion=metrics.confusion, num_scenes=int(totals[0]),
                          exported=exported)


HEADLINE_FROM_TRAINING = {"val_miou": "best_val_miou", "best_iter": "best_iteration", "train_s": "train_seconds",
                          "n_params": "parameters"}
"""Headline key -> the train stage's key in ``metrics/train.json`` (short: DVC makes each key a column)."""


def headline_metrics(metrics: Mapping[str, Any], training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The numbers worth a column in ``dvc metrics show`` / ``dvc exp show``: ``miou``, ``oa``, ``macc``, ``map``
    (per point, with voting), ``val_miou`` (the best full validation's mIoU, voxels, no voting) and ``best_iter``
    (its iteration: the weights kept), ``train_s`` (seconds of training), ``n_params`` (the network's parameter
    count), then the ``scenes`` and ``points`` scored.

    Why so few, with short names: DVC makes one column of every number in a metrics file, and 60 per-class columns
    hid the four that matter; these fit a 120-column terminal. Per-class values go to their own file (bar charts)
    and to MLflow.
    """
    headline = {key: metrics.get(key) for key in ("miou", "oa", "macc", "map")}
    for key, source in HEADLINE_FROM_TRAINING.items():
        if training is not None and source in training:
            headline[key] = training[source]
    headline["scenes"] = metrics.get("num_scenes")
    headline["points"] = metrics.get("num_points")
    return headline


def write_evaluation(result: EvalResult, *, metrics_path: str | Path, per_class_path: str | Path | None = None,
                     confusion_csv_path: str | Path | None = None, confusion_png_path: str | Path | None = None,
                     class_names: Sequence[str] | None = None, training: Mapping[str, Any] | None = None,
                     max_confusion_rows: int = 20_000) -> list[Path]:
    """Write, atomically, the headline metrics JSON (:func:`headline_metrics`, for ``dvc metrics show``), the
    per-class CSV and the confusion plot CSV and PNG (for ``dvc plots show``)."""
    names = list(class_names) if class_names is not None else result.metrics["confusion_matrix"]["labels"]
    written = [atomic_write_json(metrics_path, headline_metrics(result.metrics, training))]
    if per_class_path is not None:
        written.append(write_per_class_csv(per_class_path, result.metrics))
    if confusion_csv_path is not None:
        written.append(write_confusion_csv(confusion_csv_path, result.confusion, names, max_confusion_rows))
    if confusion_png_path is not None:
        written.append(render_confusion_png(confusion_png_path, result.confusion, names))
    return written
