"""The ``ply-folder`` dataset end to end: a user's folder of labelled PLY files (written here) goes through the
stage functions download -> preprocess -> voxelize -> train -> evaluate; bad folders and labels are one line + exit 2.

It is also the proof of the dataset registry: ``minkseg/datasets/ply_folder.py`` plus its params group is all that
makes this dataset exist (no other file names it).
"""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from minkseg.config import params_from_dict
from minkseg.data.ply import write_ply
from minkseg.datasets import dataset_names
from tests.data_fixtures import PLY_CLASSES, write_labelled_plys
from tests.robust_workspace import accepted, refused, tiny_params, write_params


def ply_params(folder: Path, **options) -> dict:
    """Tiny params (6 iterations, one thread) for a ply-folder run on ``folder``; ``options`` edit its group."""
    params = tiny_params(base__dataset="ply-folder")
    params["download"]["ply_folder"] = {"root": str(folder), "class_names": list(PLY_CLASSES),
                                        "label_property": "class_id", "unlabelled": 99, "unit": "cm",
                                        "up_axis": "z", "splits": None, "val_every": 3, **options}
    params["evaluate"]["rotation_angles"] = [0, 180]
    return params


def run_pipeline(root: Path, params_dict: dict) -> dict:
    """Every stage function in order, as `dvc repro` runs them; returns metrics/eval.json."""
    import torch

    from tests.robust_workspace import stage_function
    from minkseg.pipeline.paths import PipelinePaths

    write_params(root, params_dict)
    params = params_from_dict(copy.deepcopy(params_dict))
    paths = PipelinePaths(root)
    threads = torch.get_num_threads()
    try:
        for stage in ("download", "preprocess", "voxelize", "train", "evaluate"):
            stage_function(stage)(params, paths, progress=False)
    finally:
        torch.set_num_threads(threads)  # base.num_threads must not leak into the rest of the test session
    return json.loads((root / "metrics" / "eval.json").read_text())


def test_ply_folder_trains_and_evaluates_end_to_end(tmp_path):
    assert "ply-folder" in dataset_names()
    folder = tmp_path / "my_scans"
    names = write_labelled_plys(folder)
    root = tmp_path / "ws"
    root.mkdir()
    metrics = run_pipeline(root, ply_params(folder))

    manifest = json.loads((root / "data/preprocessed/manifest.json").read_text())
    assert manifest["dataset"] == "ply-folder" and manifest["class_names"] == PLY_CLASSES
    assert manifest["dataset_options"]["label_property"] == "class_id"
    # val_every 3: the 3rd and 6th file in name order are val, the other four train
    ordered = sorted(names)
    assert [r["name"] + ".ply" for r in manifest["splits"]["val"]] == [ordered[2], ordered[5]]
    assert len(manifest["splits"]["train"]) == 4
    scene = np.load(root / "data/preprocessed" / manifest["splits"]["val"][0]["file"])
    assert scene["coords"].max() < 5.0  # centimetres became metres
    assert set(np.unique(scene["labels"]).tolist()) == {0, 1, 2, 255}  # 99 (unlabelled) -> the stored ignore

    labelled = sum(int((np.load(root / "data/preprocessed" / r["file"])["labels"] != 255).sum())
                   for r in manifest["splits"]["val"])
    assert metrics["scenes"] == 2 and metrics["points"] == labelled and 0.9 * 2400 < labelled < 2400
    for key in ("miou", "oa", "macc", "map"):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
    assert metrics["oa"] > 0.0  # trained weights predict something right on the most frequent classes
    with open(root / "metrics/per_class.csv", newline="") as handle:
        assert [row["class"] for row in csv.DictReader(handle)] == PLY_CLASSES
    model_file = root / "models/model.pt"
    assert model_file.is_file() and (root / "predictions").is_dir()


@pytest.fixture
def workspace(tmp_path):
    """A workspace whose params point at a freshly written ply folder (nothing run yet)."""
    folder = tmp_path / "my_scans"
    write_labelled_plys(folder, count=3, points=400)
    root = tmp_path / "ws"
    root.mkdir()
    return root, folder


def _write(root: Path, params: dict) -> None:
    write_params(root, params)


def test_a_folder_that_is_not_there_stops_the_download_stage(workspace, capsys, monkeypatch):
    root, folder = workspace
    _write(root, ply_params(folder.parent / "no_such_folder"))
    line = refused(root, "download", capsys, monkeypatch)
    assert "download.ply_folder.root:" in line and "no_such_folder is not a folder" in line


def test_a_folder_without_ply_files_stops_the_download_stage(workspace, capsys, monkeypatch):
    root, folder = workspace
    empty = folder.parent / "empty"
    empty.mkdir()
    _write(root, ply_params(empty))
    assert "holds no .ply file" in refused(root, "download", capsys, monkeypatch)


def test_a_missing_label_property_stops_preprocess(workspace, capsys, monkeypatch):
    root, folder = workspace
    _write(root, ply_params(folder, label_property="semantic"))
    accepted(root, "download", capsys, monkeypatch)
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert "lacks properties ['semantic']" in line and "class_id" in line


def test_a_label_out_of_range_stops_preprocess(workspace, capsys, monkeypatch):
    root, folder = workspace
    bad = folder / "scan_00.ply"
    xyz = np.zeros((5, 3), np.float32)
    write_ply(bad, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "class_id": np.array([0, 1, 2, 7, 7], np.int32)})
    _write(root, ply_params(folder))
    accepted(root, "download", capsys, monkeypatch)
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert "scan_00.ply: 2 points have class_id values [7] outside 0..2" in line
    assert "download.ply_folder.unlabelled" in line


def test_a_listed_split_file_that_is_not_there_stops_the_download_stage(workspace, capsys, monkeypatch):
    root, folder = workspace
    _write(root, ply_params(folder, splits={"train": ["scan_00.ply"], "val": ["scan_9.ply"]}))
    line = refused(root, "download", capsys, monkeypatch)
    assert "download.ply_folder.splits.val: 1 listed file(s) are not .ply files under" in line and "scan_9.ply" in line


def test_bad_ply_folder_params_stop_before_any_stage(workspace, capsys, monkeypatch):
    root, folder = workspace
    params = ply_params(folder, unit="km")
    _write(root, params)
    line = refused(root, "download", capsys, monkeypatch)
    assert line.endswith("download.ply_folder.unit: must be one of 'm', 'cm' or 'mm' (got 'km')")
    params = ply_params(folder)
    params["download"]["ply_folder"] = None
    _write(root, params)
    assert "download.ply_folder: required when base.dataset is ply-folder" in refused(root, "download", capsys,
                                                                                     monkeypatch)
