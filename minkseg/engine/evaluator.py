"""Point-level evaluation: voxel predictions mapped back to every original point, optional rotation voting.

Scores reported on voxels flatter a model (a voxel stands for many points, and large classes own most voxels),
so MinkSeg evaluates like the ScanNet benchmark: every original point takes the prediction of its voxel through
the voxeliser's inverse map. With several ``rotation_angles`` each scene comes as one voxelised view per angle
(re-voxelised after the rotation: a different quantisation each time) and the per-point softmax is averaged --
test-time voting. The views are built by the data side's ``evaluation_view`` (the evaluate stage's datasets, or
:meth:`minkseg.engine.predictor.Predictor.views`) and voted on by the Predictor's :class:`ViewVoter`: one voting
path for the evaluate stage, ``minkseg predict`` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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

__all__ = ["EvalResult", "Evaluator", "headline_metrics", "write_evaluation"]


@dataclass
class EvalResult:
    """Metrics (see :func:`minkseg.metrics.summarize`), the confusion matrix and the files written."""

    metrics: dict[str, Any]
    confusion: np.ndarray
    num_scenes: int
    exported: list[Path] = field(default_factory=list)


class Evaluator:
    """Run a trained model over whole scenes and score every original point.

    A scene is a mapping: ``name``, ``labels`` (``[N]``, or taken from the first view's ``point_labels``) and
    ``views``: one voxelised sample per voting angle, each with ``coordinates`` (int ``[M, D]``, no batch column),
    ``features`` (``[M, C]``) and ``inverse`` (``[N]``: the voxel of every point, -1 for a point the view does
    not cover, e.g. outside a clip box). This is what minkseg.data's evaluation datasets produce and what
    :meth:`minkseg.engine.predictor.Predictor.views` builds from raw points.

    Points no view covers are left out of the metrics (counted in ``num_points_unscored``) and get the ignore
    label as prediction. For export, point positions come from ``points`` (``[N, >=3]``, the original points)
    or -- approximately, at voxel centres -- from the first view's ``transform``; with
    ``colors`` (``[N, 3]`` uint8) ``<name>.ply`` keeps the scan's colours and ``<name>_labels.ply`` shows the
    predicted classes, else ``<name>.ply`` is coloured by class.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
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
        from minkseg.data.quantize import AXES  # the one axis naming (the voxeliser's)

        if rotation_axis not in AXES:
            raise EngineError(f"evaluate.rotation_axis: must be x, y or z (got {rotation_axis!r})")
        self.dist = distributed.current()
        self.device = resolve_device(device, self.dist.local_rank)
        self.voter = ViewVoter(model, num_classes, self.device, amp=amp, input_builder=input_builder)
        self.model = self.voter.model
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise EngineError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.rotation_angles = [float(angle) for angle in rotation_angles]
        self.rotation_axis = rotation_axis
        self.up_axis = AXES[rotation_axis]
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
            views = list(scene["views"])
            name = str(scene.get("name", views[0].get("name", index) if views else index))
            labels = scene.get("labels", views[0].get("point_labels") if views else None)
            if labels is None:
                raise EngineError(f"scene {name}: no point labels to score against")
            labels = np.asarray(labels).reshape(-1).astype(np.int64)
            probabilities, covered = self.voter.vote(views, labels.shape[0], name)
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
                                                 up_axis=self.up_axis))
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
