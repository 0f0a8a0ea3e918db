"""The Predictor: a model file + one scene's points -> per-point labels and probabilities, equal to the evaluator's."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from minkseg.data.ply import read_ply
from minkseg.data.ply import read_ply_file
from minkseg.errors import EngineError
from minkseg.engine.export import palette
from minkseg.engine.predictor import PointPrediction, Predictor, voting_rotations
from minkseg.nn import build_model
from tests.robust_workspace import evaluator_predictions, shared_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return shared_workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(workspace):
    return Predictor.from_model_file(workspace / "models" / "model.pt", device="cpu")


def val_scene(workspace, index: int = 0):
    name = (workspace / "data" / "raw" / "scannetv2_val.txt").read_text().split()[index]
    mesh = read_ply(workspace / "data" / "raw" / "scans" / name / f"{name}_vh_clean_2.ply")
    xyz = np.stack([mesh["x"], mesh["y"], mesh["z"]], axis=1)
    rgb = np.stack([mesh["red"], mesh["green"], mesh["blue"]], axis=1)
    return name, xyz, rgb


def test_voting_order_puts_the_unrotated_view_first_once():
    assert voting_rotations([90, 0, 180, 360]) == [0.0, 90.0, 180.0]
    assert voting_rotations([30, 60]) == [30.0, 60.0]


def test_labels_equal_the_evaluators_for_the_same_scene(workspace, predictor, tmp_path_factory):
    expected = evaluator_predictions(workspace, tmp_path_factory)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert len(predictor.voting_angles) == len(params["evaluate"]["rotation_angles"]) > 1  # really voting
    for index in range(2):
        name, xyz, rgb = val_scene(workspace, index)
        result = predictor.predict(xyz, rgb, name=name)
        assert isinstance(result, PointPrediction)
        assert result.labels.dtype == np.int64 and result.labels.shape == (len(xyz),)
        assert result.probabilities.dtype == np.float32 and result.probabilities.shape == (len(xyz), 20)
        np.testing.assert_array_equal(result.labels, np.load(expected / f"{name}.npy"))
        np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(result.labels, result.probabilities.argmax(axis=1))


def test_model_file_carries_what_prediction_needs(predictor, workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert predictor.voxel_size == params["voxelize"]["voxel_size"]
    assert predictor.class_names[:3] == ["wall", "floor", "cabinet"] and len(predictor.class_names) == 20
    assert predictor.voting_angles == [float(a) for a in params["evaluate"]["rotation_angles"]]
    assert Predictor.from_model_file(workspace / "models" / "model.pt", device="cpu",
                                     voting_angles=[0]).voting_angles == [0.0]


def test_oversized_scene_is_tiled_and_every_point_labelled(workspace):
    name, xyz, rgb = val_scene(workspace)
    path = workspace / "models" / "model.pt"
    whole = Predictor.from_model_file(path, device="cpu", voting_angles=[0, 90]).predict(xyz, rgb)
    # tiles whose context covers the whole room see exactly the whole scene: bit-identical labels
    wide = Predictor.from_model_file(path, device="cpu", voting_angles=[0, 90], max_points=len(xyz) // 3,
                                     tile_margin=100.0).predict(xyz, rgb)
    np.testing.assert_array_equal(wide.labels, whole.labels)
    np.testing.assert_array_equal(wide.probabilities, whole.probabilities)
    narrow = Predictor.from_model_file(path, device="cpu", voting_angles=[0], max_points=len(xyz) // 4,
                                       tile_margin=0.5)
    assert len(narrow._tiles(np.asarray(xyz, dtype=np.float64))) == 4
    tiled = narrow.predict(xyz, rgb)
    assert tiled.labels.shape == (len(xyz),) and (tiled.labels < 20).all()
    np.testing.assert_allclose(tiled.probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_colourless_cloud_is_filled_with_grey_and_warned(workspace, caplog):
    _, xyz, _ = val_scene(workspace)
    predictor = Predictor.from_model_file(workspace / "models" / "model.pt", device="cpu", voting_angles=[0])
    with caplog.at_level("WARNING"):
        result = predictor.predict(xyz, None, name="bare")
    assert "bare: no colours; filled with grey" in caplog.text
    grey = predictor.predict(xyz, np.full((len(xyz), 3), 127.5), name="grey")
    np.testing.assert_array_equal(result.labels, grey.labels)


@pytest.mark.parametrize("xyz, rgb, message", [
    (np.zeros((0, 3)), None, "s: the cloud has no points; nothing to segment"),
    (np.array([[0, 0, 0], [np.nan, 1, 1], [1, 1, 1]], dtype=np.float32), None,
     "s: 1 of 3 points have NaN/inf coordinates (first: row 1); remove those rows"),
    (np.zeros((4, 2)), None, "s: coordinates must be an [N, 3] array of numbers (got shape (4, 2))"),
    (np.zeros((4, 3)), np.zeros((3, 3)), "s: colours must be an [N, 3] array of 0..255 values for the 4 points"),
    (np.array([[0, 0, 0], [5000, 4000, 2500]], dtype=np.float32), None,
     "s: the points span 5000 units, more than the 200 m a scene of this model spans; the coordinates look like "
     "millimetres: rescale them to metres (minkseg predict --scale 0.001; --scale 0.01 for centimetres)"),
    (np.array([[0, 0, 0], [500, 400, 250]], dtype=np.float32), None, "look like centimetres: rescale them to "
                                                                       "metres (minkseg predict --scale 0.01"),
])
def test_bad_points_are_one_clear_error(predictor, xyz, rgb, message):
    with pytest.raises(EngineError) as info:
        predictor.predict(xyz, rgb, name="s")
    assert message in str(info.value) and "\n" not in str(info.value)


def format1_payload(payload: dict) -> dict:
    """A model file as MinkSeg wrote it before the file described its network as build_model's arguments (format
    1: the network and voxel parameters as flat keys, no label_mode, no format key)."""
    network, voxel = payload["model"], payload["voxelization"]
    old = {key: value for key, value in payload.items() if key not in ("format", "model", "voxelization")}
    old.update(model=network["name"], in_channels=network["in_channels"], num_classes=network["out_channels"],
               dimension=network["D"], conv1_kernel_size=network["conv1_kernel_size"],
               bn_momentum=network["bn_momentum"], **{k: v for k, v in voxel.items() if k != "label_mode"})
    return old


def test_model_file_of_format_1_still_loads_and_predicts_the_same(workspace, predictor, tmp_path):
    payload = torch.load(workspace / "models" / "model.pt", weights_only=True)
    assert payload["format"] == 2 and build_model(**payload["model"]) is not None  # the file describes itself
    torch.save(format1_payload(payload), tmp_path / "format1.pt")
    old = Predictor.from_model_file(tmp_path / "format1.pt", device="cpu")
    assert old.voxel == predictor.voxel and old.class_names == predictor.class_names
    name, xyz, rgb = val_scene(workspace)
    np.testing.assert_array_equal(old.predict(xyz, rgb, name=name).labels,
                                  predictor.predict(xyz, rgb, name=name).labels)


def test_model_file_without_prediction_keys_is_refused(workspace, tmp_path):
    payload = format1_payload(torch.load(workspace / "models" / "model.pt", weights_only=True))
    del payload["voxel_size"], payload["clip_bound"]
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(EngineError, match=r"old.pt: the model file lacks voxel_size, clip_bound \(written by an "
                                          r"older MinkSeg\); re-run the train stage"):
        Predictor.from_model_file(tmp_path / "old.pt", device="cpu")


def test_evaluate_exports_original_points_and_colours(workspace, tmp_path_factory):
    """predictions/<scene>.ply: every point at its original position with its own colours, not voxel centres."""
    expected = evaluator_predictions(workspace, tmp_path_factory)
    name, xyz, rgb = val_scene(workspace)
    exported = read_ply_file(workspace / "predictions" / f"{name}.ply").vertex
    assert len(exported) == len(xyz)
    for axis, column in zip("xyz", xyz.T):
        assert exported[axis].tobytes() == np.ascontiguousarray(column).tobytes()
    np.testing.assert_array_equal(np.stack([exported[c] for c in ("red", "green", "blue")], 1), rgb)
    np.testing.assert_array_equal(exported["prediction"], np.load(expected / f"{name}.npy"))
    classes = read_ply_file(workspace / "predictions" / f"{name}_labels.ply").vertex
    assert classes["x"].tobytes() == exported["x"].tobytes()
    np.testing.assert_array_equal(classes["red"], palette(20)[exported["prediction"], 0])
