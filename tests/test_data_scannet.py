"""ScanNet layout: class mapping, splits, checks of a local copy, preprocess round trip and its failure modes."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from minkseg.errors import DataError
from minkseg.data.scenefile import load_manifest
from minkseg.pipeline.preprocess import preprocess
from minkseg.data.scenefile import load_scene
from minkseg.datasets import build_dataset
from minkseg.datasets.scannet import SCANNET_VALID_NYU40, check_scannet_root, nyu40_class_names, nyu40_to_class
from tests.data_fixtures import random_scene, write_scannet_scene


def test_nyu40_to_20_classes():
    table = nyu40_to_class()
    assert table[list(SCANNET_VALID_NYU40)].tolist() == list(range(20))
    others = sorted(set(range(41)) - set(SCANNET_VALID_NYU40))
    assert set(table[others].tolist()) == {255}
    assert table[50] == 255 and table[149] == 255  # the ids the original patched
    names = nyu40_class_names()
    assert names[1] == "wall" and names[39] == "otherfurniture" and len(names) == 40


def test_shipped_official_splits():
    spec = build_dataset("scannet")
    counts = {s: len(spec.split_entries(s)) for s in ("train", "val", "test")}
    assert counts == {"train": 1201, "val": 312, "test": 100}
    train, val = set(spec.split_entries("train")), set(spec.split_entries("val"))
    assert not train & val


def test_unknown_dataset_and_split_errors_list_valid_names():
    """The registry is the one list of names: an unknown one is refused with every registered name."""
    with pytest.raises(DataError, match="did you mean scannet.*ply-folder, scannet, synthetic-scannet, "
                                        "synthetic-synthia4d, synthia4d"):
        build_dataset("scanet")
    with pytest.raises(DataError, match="train, val, test"):
        build_dataset("scannet").split_entries("training")


def test_check_of_a_local_scannet_copy_says_what_is_missing(tmp_path):
    spec = build_dataset("scannet")
    with pytest.raises(DataError, match="does not exist.*download-scannet"):
        check_scannet_root(spec, tmp_path / "nowhere", ["train"])
    rng = np.random.default_rng(0)
    first = spec.split_entries("val")[0]
    xyz, rgb = random_scene(rng, 10)
    write_scannet_scene(tmp_path, first, xyz, rgb, np.ones(10))
    with pytest.raises(DataError) as info:
        check_scannet_root(spec, tmp_path, ["val"])
    message = str(info.value)
    assert "lacks 622 required files" in message and "_vh_clean_2" in message and "download-scannet" in message


def _write_synthetic_layout(root, scenes_by_split, rng, n=200):
    """ScanNet-format scenes plus split lists in the raw folder (the synthetic-scannet layout)."""
    truth = {}
    for split, scenes in scenes_by_split.items():
        for scene in scenes:
            xyz, rgb = random_scene(rng, n)
            nyu40 = None if split == "test" else rng.choice([0, 1, 2, 3, 13, 14, 39, 40, 50], n)
            write_scannet_scene(root, scene, xyz, rgb, nyu40, test=split == "test")
            truth[scene] = (xyz, rgb, nyu40)
        name = {"train": "scannetv2_train.txt", "val": "scannetv2_val.txt", "test": "scannetv2_test.txt"}[split]
        (root / name).write_text("\n".join(scenes) + "\n")
    return truth


def test_preprocess_round_trip_with_class_mapping(tmp_path, caplog):
    rng = np.random.default_rng(1)
    scenes = {"train": ["scene0000_00", "scene0001_00"], "val": ["scene0002_00"], "test": ["scene0003_00"]}
    truth = _write_synthetic_layout(tmp_path / "raw", scenes, rng)
    with caplog.at_level(logging.WARNING):
        manifest = preprocess(build_dataset("synthetic-scannet"), tmp_path / "raw", tmp_path / "pre",
                              splits=("train", "val", "test"), workers=2, progress=False)
    assert "beyond nyu40" in caplog.text  # id 50 is ignored with a warning
    assert [r["name"] for r in manifest["splits"]["train"]] == scenes["train"]
    lut = {0: 255, 1: 0, 2: 1, 3: 2, 13: 255, 14: 12, 39: 19, 40: 255, 50: 255}
    for split, names in scenes.items():
        for record, name in zip(manifest["splits"][split], names):
            scene = load_scene(tmp_path / "pre" / record["file"])
            xyz, rgb, nyu40 = truth[name]
            np.testing.assert_array_equal(scene.coords, xyz)
            np.testing.assert_array_equal(scene.colors, rgb)
            if nyu40 is None:
                assert (scene.labels == 255).all() and (scene.extra["nyu40"] == 0).all()
            else:
                np.testing.assert_array_equal(scene.extra["nyu40"], nyu40)
                np.testing.assert_array_equal(scene.labels, [lut[int(v)] for v in nyu40])
            assert record["num_points"] == len(xyz)
    assert load_manifest(tmp_path / "pre")["label_counts"]["test"] == [0] * 20


def test_failing_scene_is_named_and_previous_output_kept(tmp_path):
    rng = np.random.default_rng(2)
    scenes = {"train": ["scene0000_00", "scene0001_00"], "val": ["scene0002_00"]}
    _write_synthetic_layout(tmp_path / "raw", scenes, rng)
    preprocess(build_dataset("synthetic-scannet"), tmp_path / "raw", tmp_path / "pre", progress=False,
               splits=("train", "val"))
    before = {p.relative_to(tmp_path / "pre"): p.read_bytes() for p in (tmp_path / "pre").rglob("*") if p.is_file()}
    broken = tmp_path / "raw/scans/scene0001_00/scene0001_00_vh_clean_2.labels.ply"
    broken.write_bytes(broken.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"preprocess failed for 1 of 3 scenes \(train/scene0001_00\).*truncated"):
        preprocess(build_dataset("synthetic-scannet"), tmp_path / "raw", tmp_path / "pre", workers=2, progress=False,
                   splits=("train", "val"))
    after = {p.relative_to(tmp_path / "pre"): p.read_bytes() for p in (tmp_path / "pre").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pre", "raw"]  # no staging directory left


def test_label_file_must_match_the_mesh(tmp_path):
    rng = np.random.default_rng(3)
    scenes = {"train": ["scene0000_00"], "val": ["scene0001_00"]}
    _write_synthetic_layout(tmp_path / "raw", scenes, rng)
    xyz, rgb = random_scene(rng, 200)
    write_scannet_scene(tmp_path / "raw", "scene0001_00", xyz, rgb, None)  # mesh replaced, labels are stale
    with pytest.raises(DataError, match="vertex positions differ"):
        preprocess(build_dataset("synthetic-scannet"), tmp_path / "raw", tmp_path / "pre", progress=False,
                   splits=("train", "val"))
    (tmp_path / "raw/scans/scene0000_00/scene0000_00_vh_clean_2.ply").unlink()
    with pytest.raises(DataError, match=r"scannetv2_train.txt names 1 scene\(s\) whose files are missing"):
        preprocess(build_dataset("synthetic-scannet"), tmp_path / "raw", tmp_path / "pre", progress=False,
                   splits=("train", "val"))


def test_corrupt_scene_file_is_reported(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="re-run preprocess"):
        load_scene(path)
