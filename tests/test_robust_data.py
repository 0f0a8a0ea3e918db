"""Issue 6, cases 1-5: raw scans MinkSeg did not write, through the real stages.

Each case breaks one raw scene of the tiny synthetic-scannet workspace (ScanNet's layout, split lists in data/raw)
and runs the stage in-process through ``run_stage``. A refused input gives exit status 2, one line naming the
file and the fix, and leaves the previous output byte for byte (nothing half-written); an input that is accepted
with a warning gives exit status 0, the warning naming the scene, and complete outputs.

Decided here (documented in minkseg/data/scannet.py and the README's "When things go wrong"):
* NaN/inf coordinates or colours: those points are dropped with a warning and a count; the scene stays.
* A scene with no points (before or after that) is left out of its split with a warning -- the official split
  lists cannot be edited, so refusing it would leave no way forward.
* Label ids beyond nyu40 and scenes without a labelled point are kept (ignored points) with a warning.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from minkseg.data.ply import read_ply, write_ply
from tests.robust_workspace import (accepted, copy_workspace, edit_params, error_line, refused, run_stage_here,
                                    shared_workspace, snapshot)

TRAIN_SCENE = "scene0001_00"  # one of the three training scenes of the tiny workspace
VAL_SCENE = "scene0004_00"  # one of the two validation scenes


@pytest.fixture
def root(tmp_path_factory, tmp_path) -> Path:
    return copy_workspace(shared_workspace(tmp_path_factory, train=False), tmp_path / "ws")


def mesh_path(root: Path, scene: str) -> Path:
    return root / "data" / "raw" / "scans" / scene / f"{scene}_vh_clean_2.ply"


def labels_path(root: Path, scene: str) -> Path:
    return root / "data" / "raw" / "scans" / scene / f"{scene}_vh_clean_2.labels.ply"


def rewrite(root: Path, scene: str, edit, **encoding) -> None:
    """Apply ``edit(mesh fields, label fields)`` (returning both) to a raw scene and write it back."""
    mesh, labels = read_ply(mesh_path(root, scene)), read_ply(labels_path(root, scene))
    mesh, labels = edit(dict(mesh), dict(labels))
    write_ply(mesh_path(root, scene), mesh, **encoding)
    write_ply(labels_path(root, scene), labels, **encoding)


def preprocessed(root: Path, scene: str, split: str = "train"):
    from minkseg.data.scenefile import load_scene

    return load_scene(root / "data" / "preprocessed" / split / f"{scene}.npz")


def manifest_names(root: Path, split: str) -> list[str]:
    manifest = json.loads((root / "data" / "preprocessed" / "manifest.json").read_text())
    return [record["name"] for record in manifest["splits"][split]]


# -- case 1: PLY files ----------------------------------------------------------------------------------------

def test_truncated_binary_ply(root, capsys, monkeypatch):
    path = mesh_path(root, TRAIN_SCENE)
    path.write_bytes(path.read_bytes()[:-1000])
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert line.startswith("minkseg preprocess: error: preprocess failed for 1 of 5 scenes (train/scene0001_00); "
                           f"first error: data/raw/scans/{TRAIN_SCENE}/{TRAIN_SCENE}_vh_clean_2.ply: truncated PLY: "
                           "element 'vertex' needs ")
    assert "re-export or re-download the file" in line


def test_truncated_ascii_ply(root, capsys, monkeypatch):
    rewrite(root, TRAIN_SCENE, lambda m, l: (m, l), binary=False)
    path = mesh_path(root, TRAIN_SCENE)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert f"{TRAIN_SCENE}_vh_clean_2.ply: truncated PLY: element 'vertex' has " in line


@pytest.mark.parametrize("header, problem", [
    (b"plyx\nformat binary_little_endian 1.0\n", "not a PLY file (the first line must be 'ply')"),
    (b"ply\nformat binary_middle_endian 1.0\n", "unsupported PLY format line 'format binary_middle_endian 1.0'"),
    (b"ply\nformat ascii 1.0\nelement vertex many\n", "malformed element line 'element vertex many'"),
    (b"ply\nformat ascii 1.0\nproperty float x\n", "property before any element"),
])
def test_ply_with_a_wrong_header(root, capsys, monkeypatch, header, problem):
    path = mesh_path(root, VAL_SCENE)
    body = path.read_bytes()
    path.write_bytes(header + body[body.index(b"element vertex"):])
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert f"(val/{VAL_SCENE}); first error: data/raw/scans/{VAL_SCENE}/{VAL_SCENE}_vh_clean_2.ply: {problem}" in line


@pytest.mark.parametrize("drop, shown", [(("z",), "['z']"), (("red", "green", "blue"), "['red', 'green', 'blue']")])
def test_ply_missing_coordinate_or_colour_fields(root, capsys, monkeypatch, drop, shown):
    rewrite(root, TRAIN_SCENE, lambda m, l: ({k: v for k, v in m.items() if k not in drop}, l))
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert f"{TRAIN_SCENE}_vh_clean_2.ply: PLY element 'vertex' lacks properties {shown} (has " in line
    assert line.endswith("export the file with these vertex properties")


@pytest.mark.parametrize("encoding", [{"binary": False}, {"binary": True, "big_endian": True}])
def test_ascii_and_big_endian_ply_are_read_like_binary(root, capsys, monkeypatch, encoding):
    original = preprocessed(root, TRAIN_SCENE)
    rewrite(root, TRAIN_SCENE, lambda m, l: (m, l), **encoding)
    assert mesh_path(root, TRAIN_SCENE).read_bytes().startswith(
        b"ply\nformat " + (b"ascii" if not encoding["binary"] else b"binary_big_endian"))
    accepted(root, "preprocess", capsys, monkeypatch)
    again = preprocessed(root, TRAIN_SCENE)
    np.testing.assert_array_equal(again.coords, original.coords)
    np.testing.assert_array_equal(again.colors, original.colors)
    np.testing.assert_array_equal(again.labels, original.labels)


# -- case 2: label files --------------------------------------------------------------------------------------

def test_label_file_with_another_vertex_count(root, capsys, monkeypatch):
    count = len(read_ply(mesh_path(root, TRAIN_SCENE))["x"])
    rewrite(root, TRAIN_SCENE, lambda m, l: (m, {k: v[:-7] for k, v in l.items()}))
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert (f"first error: data/raw/scans/{TRAIN_SCENE}/{TRAIN_SCENE}_vh_clean_2.labels.ply: {count - 7} vertices but "
            f"the mesh has {count}; re-download both files of {TRAIN_SCENE}") in line


def test_label_ids_beyond_nyu40_are_ignored_with_a_warning(root, capsys, monkeypatch, caplog):
    def edit(mesh, labels):
        labels["label"] = labels["label"].copy()
        labels["label"][:10] = 50
        labels["label"][10:13] = 1000
        return mesh, labels

    rewrite(root, TRAIN_SCENE, edit)
    with caplog.at_level(logging.WARNING):
        accepted(root, "preprocess", capsys, monkeypatch)
    assert f"{TRAIN_SCENE}: label ids [50, 1000] are beyond nyu40; their 13 points are ignored" in caplog.text
    scene = preprocessed(root, TRAIN_SCENE)
    assert (scene.labels[:13] == 255).all() and scene.num_points == len(read_ply(mesh_path(root, TRAIN_SCENE))["x"])


def test_scene_without_a_labelled_point_is_kept_with_a_warning(root, capsys, monkeypatch, caplog):
    def edit(mesh, labels):
        labels["label"] = np.zeros_like(labels["label"])  # nyu40 id 0: unannotated
        return mesh, labels

    rewrite(root, VAL_SCENE, edit)
    with caplog.at_level(logging.WARNING):
        accepted(root, "preprocess", capsys, monkeypatch)
    assert f"{VAL_SCENE}: no point has a label of the 20 benchmark classes; it adds nothing to training or " \
           "scoring" in caplog.text
    assert (preprocessed(root, VAL_SCENE, "val").labels == 255).all()


# -- case 3: NaN / inf ------------------------------------------------------------------------------------------

def test_nan_and_inf_coordinates_are_dropped_with_a_count(root, capsys, monkeypatch, caplog):
    original = preprocessed(root, TRAIN_SCENE)

    def edit(mesh, labels):
        for fields in (mesh, labels):
            fields["x"] = fields["x"].copy()
            fields["x"][[3, 5]] = np.nan
            fields["z"] = fields["z"].copy()
            fields["z"][7] = np.inf
        return mesh, labels

    rewrite(root, TRAIN_SCENE, edit)
    with caplog.at_level(logging.WARNING):
        accepted(root, "preprocess", capsys, monkeypatch)
    count = original.num_points
    assert (f"data/raw/scans/{TRAIN_SCENE}/{TRAIN_SCENE}_vh_clean_2.ply: dropped 3 of {count} points with NaN/inf "
            "coordinates or colours") in caplog.text
    scene = preprocessed(root, TRAIN_SCENE)
    keep = np.setdiff1d(np.arange(count), [3, 5, 7])
    np.testing.assert_array_equal(scene.coords, original.coords[keep])
    np.testing.assert_array_equal(scene.labels, original.labels[keep])


def test_nan_colours_are_dropped_with_a_count(root, capsys, monkeypatch, caplog):
    def edit(mesh, labels):
        mesh["green"] = mesh["green"].astype(np.float32)
        mesh["green"][[0, 1]] = [np.nan, -np.inf]
        return mesh, labels

    count = preprocessed(root, VAL_SCENE, "val").num_points
    rewrite(root, VAL_SCENE, edit)
    with caplog.at_level(logging.WARNING):
        accepted(root, "preprocess", capsys, monkeypatch)
    assert f"{VAL_SCENE}_vh_clean_2.ply: dropped 2 of {count} points with NaN/inf coordinates or colours" in caplog.text
    assert preprocessed(root, VAL_SCENE, "val").num_points == count - 2


@pytest.mark.parametrize("far", [1e9, 1e30])
def test_far_away_outlier_advice_names_a_clip_box_that_works(root, capsys, monkeypatch, far):
    """Found here: one finite but absurd coordinate (a corrupt vertex) used to wrap around in the int32 voxel grid
    silently; then (issue 17, item 1) the advice to set voxelize.clip_bound could not work, because the box was
    centred on the bounding-box centre (5e8 m away). Now the box is centred on the median point, and the message
    gives one that leaves the outlier out; following it voxelises every other point."""
    def edit(mesh, labels):
        for fields in (mesh, labels):
            fields["x"] = fields["x"].copy()
            fields["x"][0] = far
        return mesh, labels

    rewrite(root, VAL_SCENE, edit)
    accepted(root, "preprocess", capsys, monkeypatch)
    count = preprocessed(root, VAL_SCENE, "val").num_points
    line = refused(root, "voxelize", capsys, monkeypatch)
    prefix = (f"minkseg voxelize: error: voxelize failed for 1 sample(s) of split 'val'; first: {VAL_SCENE}: 1 of "
              f"{count} points lie far outside the rest of the scene (up to {far:.3g} m from its median point), so "
              "the points span ")
    assert line.startswith(prefix), line
    advice = re.fullmatch(r".* voxels, more than int32 voxel coordinates hold; set voxelize.clip_bound: "
                          r"(\[\[.*\]\]) \(metres around each scene's median point\) to leave them out, or remove "
                          r"them from the scan", line[len(prefix):])
    assert advice, line

    edit_params(root, voxelize__clip_bound=yaml.safe_load(advice.group(1)))  # do exactly what it says
    accepted(root, "voxelize", capsys, monkeypatch)
    manifest = json.loads((root / "data" / "voxelized" / "manifest.json").read_text())
    record = next(r for r in manifest["splits"]["val"] if r["name"] == VAL_SCENE)
    with np.load(root / "data" / "voxelized" / record["file"]) as sample:
        assert sample["inverse"][0] == -1 and (sample["inverse"][1:] >= 0).all()  # only the outlier is left out


def test_voxel_size_too_small_for_the_scene_is_named_not_outliers(root, capsys, monkeypatch):
    """Issue 17, item 2: a voxel grid too large for int32 because of the voxel size (here a scene 6,000 km wide
    at the smallest size the params check lets through) names voxelize.voxel_size, not outlier points."""
    def edit(mesh, labels):
        for fields in (mesh, labels):
            for axis in "xyz":
                fields[axis] = fields[axis] * 1e6
        return mesh, labels

    rewrite(root, VAL_SCENE, edit)
    edit_params(root, voxelize__voxel_size=0.001)
    accepted(root, "preprocess", capsys, monkeypatch)
    line = refused(root, "voxelize", capsys, monkeypatch)
    assert re.fullmatch(f"minkseg voxelize: error: voxelize failed for 1 sample\\(s\\) of split 'val'; first: "
                        f"{VAL_SCENE}: voxelize.voxel_size 0.001 is too small for this scene: its [0-9.e+]+ m extent "
                        "needs [0-9.e+]+ voxels per axis, more than int32 voxel coordinates hold; raise "
                        "voxelize.voxel_size \\(metres, e.g. 0.02 to 0.2\\)", line), line


# -- case 4: empty, one-point and oversized scenes ----------------------------------------------------------

def test_empty_scene_is_left_out_with_a_warning(root, capsys, monkeypatch, caplog):
    rewrite(root, TRAIN_SCENE, lambda m, l: ({k: v[:0] for k, v in m.items()}, {k: v[:0] for k, v in l.items()}))
    rewrite(root, VAL_SCENE, lambda m, l: ({k: v[:0] for k, v in m.items()}, {k: v[:0] for k, v in l.items()}))
    with caplog.at_level(logging.WARNING):
        accepted(root, "preprocess", capsys, monkeypatch)
    for split, scene in (("train", TRAIN_SCENE), ("val", VAL_SCENE)):
        assert f"{scene}: no points; left out of split {split}" in caplog.text
        assert scene not in manifest_names(root, split)
        assert not (root / "data" / "preprocessed" / split / f"{scene}.npz").exists()
    accepted(root, "voxelize", capsys, monkeypatch)  # the remaining scenes go on
    assert len(json.loads((root / "data" / "voxelized" / "manifest.json").read_text())["splits"]["val"]) == 1


def test_split_with_only_empty_scenes_stops_training_with_a_clear_line(root, capsys, monkeypatch):
    for scene in ("scene0000_00", "scene0001_00", "scene0002_00"):
        rewrite(root, scene, lambda m, l: ({k: v[:0] for k, v in m.items()}, {k: v[:0] for k, v in l.items()}))
    accepted(root, "preprocess", capsys, monkeypatch)
    line = refused(root, "train", capsys, monkeypatch)
    assert line == ("minkseg train: error: data/preprocessed: split 'train' has no scenes; check the split lists "
                    "and re-run preprocess")


def test_one_point_scenes_train_and_evaluate(root, capsys, monkeypatch, caplog):
    edit_params(root, train__batch_size=1, train__iterations=4, train__val_every=0, train__checkpoint_every=0)
    for scene in (TRAIN_SCENE, VAL_SCENE):
        rewrite(root, scene, lambda m, l: ({k: v[:1] for k, v in m.items()}, {k: v[:1] for k, v in l.items()}))
    with caplog.at_level(logging.WARNING):
        for stage in ("preprocess", "voxelize", "train", "evaluate"):
            accepted(root, stage, capsys, monkeypatch)
    assert preprocessed(root, TRAIN_SCENE).num_points == 1
    assert f"a batch of 1 voxels from scenes {TRAIN_SCENE} has too few voxels for batch norm at the network's " \
           "coarsest level; skipped it" in caplog.text
    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    assert metrics["scenes"] == 2 and (root / "models" / "model.pt").is_file()


def test_scene_larger_than_train_limit_numpoints_trains_alone(root, capsys, monkeypatch, caplog):
    edit_params(root, train__train_limit_numpoints=300, train__iterations=2, train__val_every=0,
                train__checkpoint_every=0)
    with caplog.at_level(logging.WARNING):
        accepted(root, "train", capsys, monkeypatch)
    assert "voxels, more than train.train_limit_numpoints (300); it is trained alone in its batch" in caplog.text
    assert json.loads((root / "metrics" / "train.json").read_text())["iterations"] == 2


# -- case 5: missing scenes ---------------------------------------------------------------------------------------

def test_split_list_naming_scenes_that_do_not_exist(root, capsys, monkeypatch):
    split_file = root / "data" / "raw" / "scannetv2_val.txt"
    split_file.write_text(split_file.read_text() + "scene9999_00\n")
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert line.startswith("minkseg preprocess: error: data/raw/scannetv2_val.txt names 1 scene(s) whose files are "
                           "missing under data/raw (e.g. scans/scene9999_00/scene9999_00_vh_clean_2.ply)")
    assert line.endswith("re-run the download stage (dvc repro -f download)")


def test_scannet_root_missing_scenes_of_the_official_split(tmp_path, capsys, monkeypatch):
    from minkseg.datasets import build_dataset
    from tests.robust_workspace import tiny_params, write_params

    scannet = tmp_path / "ScanNet"  # a partial copy: two scenes of the official train split
    source = tmp_path / "ws"
    source.mkdir()
    first, second = build_dataset("scannet").split_entries("train")[:2]
    for scene in (first, second):
        folder = scannet / "scans" / scene
        folder.mkdir(parents=True)
        fields = {"x": np.zeros(3, np.float32), "y": np.zeros(3, np.float32), "z": np.arange(3, dtype=np.float32),
                  "red": np.zeros(3, np.uint8), "green": np.zeros(3, np.uint8), "blue": np.zeros(3, np.uint8)}
        write_ply(folder / f"{scene}_vh_clean_2.ply", fields)
        write_ply(folder / f"{scene}_vh_clean_2.labels.ply", {**fields, "label": np.ones(3, np.uint16)})
    params = tiny_params(base__dataset="scannet")
    params["download"]["scannet_root"] = str(scannet)
    write_params(source, params)
    before = snapshot(scannet)
    code, stderr = run_stage_here(source, "download", capsys, monkeypatch)
    assert code == 2
    line = error_line(stderr, "download")
    # train + val of the official lists (params' preprocess.splits; test is not needed): 2 x (1201 + 312) - 4 files
    assert line.startswith(f"minkseg download: error: ScanNet root {scannet} lacks 3022 required files (e.g. scans/")
    assert "request access at http://kaldir.vc.in.tum.de/scannet_benchmark/documentation" in line
    assert snapshot(scannet) == before and [p.name for p in source.rglob("*") if p.is_file()] == ["params.yaml"]
    assert not (source / "data" / "raw").exists()
    shutil.rmtree(scannet)
