"""Synthia4D frames: labels, units, camera-to-world, temporal windows and 4D samples (written by the tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minkseg.data.collate import collate
from minkseg.errors import DataError
from minkseg.pipeline.preprocess import preprocess
from minkseg.datasets import build_dataset
from minkseg.datasets.generators.streets import extrinsics_for
from minkseg.datasets.synthia4d import (CLASS_NAMES as SYNTHIA_CLASS_NAMES, camera_to_world, parse_frame_path,
                                        raw_to_class, read_synthia_frame, temporal_windows, world_to_camera)
from tests.data_fixtures import eval_set, train_set, write_synthia_frame


def test_raw_labels_map_to_12_classes():
    table = raw_to_class()
    assert [int(table[i]) for i in range(16)] == [255, 255, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255, 255, 11]
    assert len(SYNTHIA_CLASS_NAMES) == 12 and SYNTHIA_CLASS_NAMES[0] == "building"
    assert SYNTHIA_CLASS_NAMES[-1] == "traffic light"


def test_frame_paths():
    assert parse_frame_path("SYNTHIA-SEQS-05-FOG/point_clouds/000752.ply") == ("SYNTHIA-SEQS-05-FOG", 752)
    with pytest.raises(DataError, match="NNNNNN"):
        parse_frame_path("SYNTHIA-SEQS-05-FOG/rgb/000752.png")


def test_camera_transform_round_trip():
    rng = np.random.default_rng(0)
    extrinsics = extrinsics_for(np.array([120.0, 150.0, 3000.0]), 0.3)
    world = rng.normal(0, 1000, (50, 3))
    np.testing.assert_allclose(camera_to_world(world_to_camera(world, extrinsics), extrinsics), world, atol=1e-6)
    # camera frame: the camera sits at its position, looking along its rotated +z
    origin = camera_to_world(np.zeros((1, 3)), extrinsics)[0]
    np.testing.assert_allclose(origin, [120.0, 150.0, 3000.0], atol=1e-9)
    ahead = camera_to_world(np.array([[0.0, 0.0, 100.0]]), extrinsics)[0] - origin
    np.testing.assert_allclose(ahead, [100 * math.sin(0.3), 0.0, 100 * math.cos(0.3)], atol=1e-9)


def test_frame_reader_units_labels_and_world_frame(tmp_path, caplog):
    rng = np.random.default_rng(1)
    world_cm = rng.uniform(-500, 500, (30, 3))
    labels = np.array(list(range(16)) + [20] * 14)
    extrinsics = extrinsics_for(np.array([10.0, 150.0, 200.0]), -0.2)
    rgb = rng.integers(0, 256, (30, 3)).astype(np.uint8)
    rel = write_synthia_frame(tmp_path, "SYNTHIA-SEQS-01-DAWN", 7, world_to_camera(world_cm, extrinsics), rgb,
                              labels, extrinsics)
    scene = read_synthia_frame(tmp_path, rel)
    assert "outside 0..15" in caplog.text
    np.testing.assert_allclose(scene.coords, world_cm / 100.0, atol=1e-4)  # metres, world frame
    np.testing.assert_allclose(scene.extra["center"], [0.1, 1.5, 2.0], atol=1e-6)
    assert scene.extra["world_frame"] and scene.extra["frame"] == 7 and scene.name == "SYNTHIA-SEQS-01-DAWN/000007"
    assert scene.labels[:16].tolist() == [255, 255, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255, 255, 11]
    assert (scene.labels[16:] == 255).all() and (scene.extra["raw_label"][16:] == 255).all()
    np.testing.assert_array_equal(scene.colors, rgb)
    # Without camera files the frame stays in camera coordinates (documented choice).
    rel = write_synthia_frame(tmp_path, "SYNTHIA-SEQS-02-FOG", 0, world_cm, rgb, labels % 16)
    scene = read_synthia_frame(tmp_path, rel)
    assert not scene.extra["world_frame"]
    np.testing.assert_allclose(scene.coords, world_cm / 100.0, atol=1e-4)


def test_temporal_windows_follow_frame_order_per_sequence():
    records = [{"sequence": s, "frame": f} for s, frames in (("B", [5, 1, 3, 9, 7]), ("A", [0, 2, 4]))
               for f in frames]
    windows = temporal_windows(records, numseq=3, dilation=1)
    frames = [[(records[i]["sequence"], records[i]["frame"]) for i in w] for w in windows]
    assert frames == [[("A", 0), ("A", 2), ("A", 4)], [("B", 1), ("B", 3), ("B", 5)], [("B", 3), ("B", 5), ("B", 7)],
                      [("B", 5), ("B", 7), ("B", 9)]]
    windows = temporal_windows(records, numseq=3, dilation=2)  # A is too short and skipped
    assert [[records[i]["frame"] for i in w] for w in windows] == [[1, 5, 9]]


def _write_sequences(root, rng, frames_per_seq=6, n=300):
    """Two sequences in world = camera frames (no extrinsics), plus synthetic split lists."""
    entries = {"train": [], "val": [], "test": []}
    for split, seq in (("train", "SYNTHIA-SEQS-01-DAWN"), ("val", "SYNTHIA-SEQS-02-FOG"),
                       ("test", "SYNTHIA-SEQS-03-NIGHT")):
        for f in range(frames_per_seq):
            xyz = rng.uniform(-800, 800, (n, 3))
            rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
            lab = rng.integers(0, 16, n)
            entries[split].append(write_synthia_frame(root, seq, 10 * f, xyz, rgb, lab))
    for split, name in (("train", "train_cvpr19.txt"), ("val", "val_cvpr19.txt"), ("test", "test_cvpr19.txt")):
        (root / name).write_text("".join(f"{e} {e[:-4]}_label.ply\n" for e in entries[split]))
    return entries


def test_4d_samples_have_four_columns_and_the_right_frames(tmp_path):
    rng = np.random.default_rng(2)
    _write_sequences(tmp_path / "raw", rng)
    manifest = preprocess(build_dataset("synthetic-synthia4d"), tmp_path / "raw", tmp_path / "pre",
                          splits=("train", "val", "test"), progress=False)
    assert [r["frame"] for r in manifest["splits"]["val"]] == [0, 10, 20, 30, 40, 50]
    train = train_set(tmp_path / "pre", "synthetic-synthia4d", voxel_size=0.15, temporal_numseq=3, temporal_dilation=2)
    assert len(train) == 2 and train.dimension == 4
    sample = train[(1, 5)]
    assert sample["coordinates"].shape[1] == 4 and sample["frames"] == [10, 30, 50]
    assert set(np.unique(sample["coordinates"][:, 3]).tolist()) <= {0, 1, 2}
    assert sample["features"].dtype == np.float32 and sample["labels"].dtype == np.int64
    ev = eval_set(tmp_path / "pre", "synthetic-synthia4d", voxel_size=0.15, temporal_numseq=2, temporal_dilation=1)
    assert len(ev) == 5
    e = ev[3]
    assert e["frames"] == [30, 40] and e["name"] == "SYNTHIA-SEQS-02-FOG/000030+40"
    assert e["point_frames"].tolist() == [0] * 300 + [1] * 300
    kept = e["inverse"] >= 0
    assert kept.any()
    # every kept point's voxel lies in its own frame's time slice
    np.testing.assert_array_equal(e["coordinates"][e["inverse"][kept], 3], e["point_frames"][kept])
    batch = collate([train[(0, 1)], train[(1, 2)]])
    assert batch["coordinates"].shape[1] == 5 and set(batch["coordinates"][:, 0].tolist()) == {0, 1}
    # a single frame per sample is the paper's 3D baseline: three columns
    single = train_set(tmp_path / "pre", "synthetic-synthia4d", voxel_size=0.15, temporal_numseq=1)
    assert single[(0, 0)]["coordinates"].shape[1] == 3
    with pytest.raises(DataError, match="temporal_numseq"):
        train_set(tmp_path / "pre", "synthetic-synthia4d", voxel_size=0.15, temporal_numseq=3, temporal_dilation=3)


def test_4d_augmentation_shares_one_rotation_across_frames(tmp_path):
    """A static scene repeated in every frame must voxelise identically in every time slice."""
    rng = np.random.default_rng(3)
    root = tmp_path / "raw"
    xyz = rng.uniform(-800, 800, (400, 3))
    rgb = rng.integers(0, 256, (400, 3)).astype(np.uint8)
    lab = rng.integers(2, 13, 400)
    entries = [write_synthia_frame(root, "SYNTHIA-SEQS-01-DAWN", f, xyz, rgb, lab) for f in range(3)]
    for name in ("train_cvpr19.txt", "val_cvpr19.txt", "test_cvpr19.txt"):
        (root / name).write_text("\n".join(entries) + "\n")
    preprocess(build_dataset("synthetic-synthia4d"), root, tmp_path / "pre", splits=("train",), progress=False)
    train = train_set(tmp_path / "pre", "synthetic-synthia4d", voxel_size=0.15, temporal_numseq=3, temporal_dilation=1,
                      clip_bound=None)
    for seed in range(3):
        coords = train[(0, seed)]["coordinates"]
        slices = [coords[coords[:, 3] == t, :3] for t in np.unique(coords[:, 3])]
        keys = [set(map(tuple, s.tolist())) for s in slices]
        assert len(keys) == 3
        # dropout removes random voxels per sample, so compare the overlap rather than exact equality
        assert len(keys[0] & keys[1]) >= 0.6 * len(keys[0]) and len(keys[1] & keys[2]) >= 0.6 * len(keys[1])
