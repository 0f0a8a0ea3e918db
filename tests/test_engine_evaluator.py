"""Point-level evaluation: inverse maps, rotation voting, metrics/plot/PLY/PNG outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from minkseg.data.quantize import VoxelParams
from minkseg.engine.evaluator import Evaluator, write_evaluation
from minkseg.errors import EngineError
from minkseg.engine.predictor import Predictor, voting_rotations
from minkseg.engine.export import confusion_rows, palette, write_point_cloud
from minkseg.metrics import confusion_matrix, summarize
from tests.engine_toys import dense_input

NUM_CLASSES = 3
WEIGHTS = np.array([[2.0, -1.0, 0.5], [-1.0, 2.0, 0.0], [0.0, 0.5, 2.0]], dtype=np.float32)


class FixedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, NUM_CLASSES, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(WEIGHTS.T))

    def forward(self, x):
        return self.linear(x)


def unit_voxels(coordinates: np.ndarray, features: np.ndarray):
    """Hand-made views for the evaluator's view format: unit voxels, voxel feature = mean of its points'."""
    quantised = np.floor(coordinates).astype(np.int32)
    voxels, inverse = np.unique(quantised, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(voxels), features.shape[1]))
    np.add.at(sums, inverse, features)
    return voxels, (sums / np.bincount(inverse)[:, None]).astype(np.float32), inverse


def softmax_at_points(view) -> np.ndarray:
    """What the network gives every point of one view: the softmax of its voxel (computed here, not by the voter)."""
    logits = np.asarray(view["features"], dtype=np.float64) @ WEIGHTS
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    return probabilities[np.asarray(view["inverse"])]


def make_predictor(angles=(0.0,), **voxel_fields) -> Predictor:
    """The real voting path (what `minkseg predict` and the evaluate stage's views use) on a fixed linear model."""
    voxel = VoxelParams(voxel_size=2.0, clip_bound=None, **voxel_fields)
    return Predictor(FixedLinear(), class_names=["a", "b", "c"], voxel=voxel, voting_angles=angles,
                     device="cpu", input_builder=dense_input)


def make_scene(seed: int, points: int = 300):
    """xyz in metres, rgb 0..255, labels (every 13th point unannotated)."""
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, 6, size=(points, 3))
    rgb = rng.uniform(0, 255, size=(points, 3))
    labels = (rgb - 127.5).argmax(1)
    labels[::13] = 255
    return {"name": f"scene{seed}", "xyz": xyz, "rgb": rgb, "labels": labels}


def as_views(scene, predictor: Predictor):
    """The evaluator's scene form, views built by the Predictor from the raw points."""
    return {"name": scene["name"], "labels": scene["labels"], "points": scene["xyz"],
            "views": predictor.views([(scene["xyz"], scene["rgb"], None)])}


def make_evaluator(**kwargs):
    return Evaluator(FixedLinear(), num_classes=NUM_CLASSES, class_names=["a", "b", "c"], input_builder=dense_input,
                     **kwargs)


def test_every_point_gets_its_voxels_prediction():
    scene = make_scene(0)
    predictor = make_predictor()
    (view,) = predictor.views([(scene["xyz"], scene["rgb"], None)])
    probabilities = predictor.predict(scene["xyz"], scene["rgb"]).probabilities
    np.testing.assert_allclose(probabilities, softmax_at_points(view), rtol=1e-5, atol=1e-6)
    assert probabilities.shape == (300, NUM_CLASSES)


def test_rotation_voting_averages_softmax_over_angles_and_keeps_time():
    scene = make_scene(1)
    angles = [0, 30, 60, 90]  # not only quarter turns: those map a cube of voxels onto itself
    voted = make_predictor(angles).predict(scene["xyz"], scene["rgb"]).probabilities
    singles = [make_predictor([a]).predict(scene["xyz"], scene["rgb"]).probabilities for a in angles]
    np.testing.assert_allclose(voted, np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(voted, singles[0], atol=1e-3)  # re-voxelising rotated scenes really changed something
    # a 4D window: every rotated view keeps each point in its own frame's time slice
    window = make_predictor(angles, temporal_numseq=2, temporal_dilation=1)
    frames = [(scene["xyz"][:150], scene["rgb"][:150], None), (scene["xyz"][150:], scene["rgb"][150:], None)]
    for view in window.views(frames):
        np.testing.assert_array_equal(view["coordinates"][view["inverse"], 3], [0] * 150 + [1] * 150)


def test_rotation_geometry():
    from minkseg.data.quantize import axis_rotation

    points = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0]], dtype=np.float64)
    np.testing.assert_allclose(points @ axis_rotation("z", np.deg2rad(90)).T, [[0, 0, 0], [0, 2, 0], [-2, 0, 0]],
                               atol=1e-12)
    np.testing.assert_allclose(axis_rotation("z", np.deg2rad(90)) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(axis_rotation("x", np.deg2rad(90)) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(axis_rotation("y", np.deg2rad(90)) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(axis_rotation(2, 0.3), axis_rotation("z", 0.3))
    # a full turn is the unrotated view: voted once, and voxelised exactly as no rotation
    assert voting_rotations([360]) == [0.0]
    scene = make_scene(3)
    full_turn, plain = make_predictor([360]).views([(scene["xyz"], scene["rgb"], None)]), \
        make_predictor([0]).views([(scene["xyz"], scene["rgb"], None)])
    np.testing.assert_array_equal(full_turn[0]["coordinates"], plain[0]["coordinates"])


def test_evaluate_writes_metrics_plots_ply_png_and_predictions(tmp_path):
    scenes = [make_scene(seed) for seed in range(3)]
    predictor = make_predictor()
    evaluator = make_evaluator()
    result = evaluator.evaluate([as_views(scene, predictor) for scene in scenes], export_dir=tmp_path / "export",
                                export_count=2, predictions_dir=tmp_path / "pred", progress=False)

    expected_cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for scene in scenes:
        (view,) = predictor.views([(scene["xyz"], scene["rgb"], None)])
        predicted = softmax_at_points(view).argmax(1)
        expected_cm += confusion_matrix(scene["labels"], predicted, NUM_CLASSES)
        np.testing.assert_array_equal(np.load(tmp_path / "pred" / f"{scene['name']}.npy"), predicted)
    np.testing.assert_array_equal(result.confusion, expected_cm)
    assert result.num_scenes == 3

    training = {"best_val_miou": 0.5, "best_iteration": 40, "train_seconds": 12.5, "parameters": 99,
                "resumed_from": None, "cpu_thread_changes": 0}
    written = write_evaluation(result, metrics_path=tmp_path / "metrics" / "metrics.json",
                               per_class_path=tmp_path / "plots" / "per_class.csv",
                               confusion_csv_path=tmp_path / "plots" / "confusion.csv",
                               confusion_png_path=tmp_path / "plots" / "confusion.png", training=training)
    assert len(written) == 4

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    metrics = json.loads((tmp_path / "metrics" / "metrics.json").read_text(), parse_constant=no_nan)
    # the headline file: a handful of numbers, in reading order; per-class values live in their own file
    assert list(metrics) == ["miou", "oa", "macc", "map", "val_miou", "best_iter", "train_s", "n_params", "scenes",
                             "points"]
    reference = summarize(expected_cm, ["a", "b", "c"])
    assert metrics["miou"] == pytest.approx(reference["miou"]) and metrics["oa"] == pytest.approx(reference["oa"])
    assert 0.0 <= metrics["map"] <= 1.0 and metrics["scenes"] == 3 and metrics["points"] == expected_cm.sum()
    assert (metrics["val_miou"], metrics["best_iter"], metrics["train_s"], metrics["n_params"]) == (0.5, 40, 12.5, 99)
    with open(tmp_path / "plots" / "per_class.csv") as handle:
        per_class = {row["class"]: row for row in csv.DictReader(handle)}
    assert set(per_class) == {name for name, iou in reference["per_class_iou"].items() if not math.isnan(iou)}
    for name, row in per_class.items():
        assert float(row["iou"]) == pytest.approx(reference["per_class_iou"][name], abs=1e-6)
        assert float(row["acc"]) == pytest.approx(reference["per_class_acc"][name], abs=1e-6)
        assert float(row["ap"]) == pytest.approx(result.metrics["per_class_ap"][name], abs=1e-6)

    with open(tmp_path / "plots" / "confusion.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == expected_cm.sum()
    names = ["a", "b", "c"]
    counted = np.zeros_like(expected_cm)
    for row in rows:
        counted[names.index(row["actual"]), names.index(row["predicted"])] += 1
    np.testing.assert_array_equal(counted, expected_cm)

    for scene in scenes[:2]:
        ply = (tmp_path / "export" / f"{scene['name']}.ply").read_bytes()
        header, body = ply.split(b"end_header\n", 1)
        assert b"element vertex 300" in header and b"property int prediction" in header
        dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                 ("label", "<i4"), ("prediction", "<i4")]
        vertices = np.frombuffer(body, dtype=dtype)
        np.testing.assert_allclose(vertices["x"], scene["xyz"][:, 0].astype(np.float32))
        np.testing.assert_array_equal(vertices["label"], scene["labels"])
        colours = palette(NUM_CLASSES)[vertices["prediction"]]
        np.testing.assert_array_equal(vertices["red"], colours[:, 0])
        png = (tmp_path / "export" / f"{scene['name']}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert not (tmp_path / "export" / "scene2.ply").exists()
    assert (tmp_path / "plots" / "confusion.png").read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_voxeliser_and_empty_inputs_are_clear_errors():
    scene = make_scene(2)
    views = make_predictor().views([(scene["xyz"], scene["rgb"], None)])
    broken = [{**view, "inverse": view["inverse"][:-1]} for view in views]  # one point short
    evaluator = make_evaluator()
    with pytest.raises(EngineError, match="scene s: the voxeliser's inverse map does not map its 300 points"):
        evaluator.evaluate([{"name": "s", "labels": scene["labels"], "views": broken}], progress=False)
    with pytest.raises(EngineError, match="no scenes to evaluate"):
        make_evaluator().evaluate([], progress=False)
    with pytest.raises(EngineError, match="rotation_angles"):
        make_evaluator(rotation_angles=[])


def test_confusion_plot_rows_keep_proportions_when_downsampled(tmp_path):
    cm = np.array([[700_000, 2_000, 1], [30_000, 200_000, 0], [5, 0, 63_000]])
    counts = confusion_rows(cm, max_rows=10_000)
    assert counts.sum() == 10_000
    np.testing.assert_allclose(counts, cm * 10_000 / cm.sum(), atol=1.0)
    np.testing.assert_array_equal(confusion_rows(np.array([[2, 1], [0, 3]]), 10), [[2, 1], [0, 3]])
    write_point_cloud(tmp_path / "p.ply", np.zeros((2, 3)), np.zeros((2, 3), dtype=np.uint8))
    assert (tmp_path / "p.ply").read_bytes().count(b"property") == 6


def test_prevoxelised_views_with_uncovered_points(tmp_path):
    """The form minkseg.data's evaluation samples take: per-angle views, inverse -1 outside a clip box."""
    scene = make_scene(5)
    scene["features"] = scene["rgb"] / 255 - 0.5
    labels = scene["labels"].copy()
    views = []
    for shift in (0.0, 0.5):  # two different quantisations of the same points
        voxels, voxel_features, inverse = unit_voxels(scene["xyz"] + shift, scene["features"])
        inverse = inverse.copy()
        inverse[:10] = -1  # the first 10 points fall outside both views
        if shift:
            inverse[10:20] = -1  # the next 10 are covered by the first view only
        transform = np.eye(4)
        transform[:3, 3] = shift
        views.append({"coordinates": voxels, "features": voxel_features, "inverse": inverse,
                      "transform": transform, "name": "viewed", "point_labels": labels})
    result = make_evaluator().evaluate([{"views": views}], export_dir=tmp_path, export_count=1,
                                       predictions_dir=tmp_path / "pred", progress=False)

    per_view = [softmax_at_points(view) for view in views]
    expected = (per_view[0] + per_view[1]) / 2
    expected[10:20] = per_view[0][10:20]
    predictions = expected.argmax(1)
    predictions[:10] = 255
    np.testing.assert_array_equal(np.load(tmp_path / "pred" / "viewed.npy"), predictions)
    scored = labels.copy()
    scored[:10] = 255
    np.testing.assert_array_equal(result.confusion, confusion_matrix(scored, np.where(scored == 255, 0, predictions),
                                                                     NUM_CLASSES))
    assert result.metrics["num_points_unscored"] == int((labels[:10] != 255).sum()) > 0
    body = (tmp_path / "viewed.ply").read_bytes().split(b"end_header\n", 1)
    assert b"element vertex 290" in body[0]  # uncovered points have no position to export
    vertices = np.frombuffer(body[1], dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"),
                                             ("b", "u1"), ("label", "<i4"), ("prediction", "<i4")])
    # positions are voxel centres: within half a voxel of the original points
    assert np.abs(vertices["x"] - scene["xyz"][10:, 0]).max() <= 0.5 + 1e-6
