"""Voxeliser (inverse maps, label modes, clip, transforms), eval files, datasets, determinism and collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minkseg.data.collate import Collate, collate
from minkseg.data.datasets import VoxelizedDataset
from minkseg.errors import DataError
from minkseg.pipeline.preprocess import preprocess
from minkseg.data.quantize import VoxelParams, Voxelizer, majority_labels
from minkseg.pipeline.voxelize import voxelize_split
from minkseg.datasets import build_dataset
from tests.data_fixtures import LOADER_PARAMS, eval_set, random_scene, train_set, write_scannet_scene



@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), voxel=st.sampled_from([0.05, 0.1, 0.37]), seed=st.integers(0, 10_000))
def test_every_voxel_once_and_inverse_reproduces_every_point(n, voxel, seed):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-2, 2, (n, 3))
    labels = rng.integers(0, 4, n)
    feats = np.arange(n, dtype=np.float32)[:, None]  # feature = point id: shows which point represents a voxel
    vox = Voxelizer(voxel).voxelize(xyz, feats, labels)
    assert len({tuple(c) for c in vox.coords.tolist()}) == len(vox.coords)  # each voxel once
    expected = np.floor(xyz / voxel).astype(np.int64)
    expected -= expected.min(0)
    np.testing.assert_array_equal(vox.coords[vox.inverse], expected)  # point i lands in its own voxel
    np.testing.assert_array_equal(vox.inverse[vox.index], np.arange(len(vox.coords)))
    np.testing.assert_array_equal(vox.feats[:, 0], vox.index)
    homog = np.column_stack([xyz, np.ones(n)])
    np.testing.assert_array_equal(np.floor(homog @ vox.transform.T)[:, :3], vox.coords[vox.inverse])
    for v in range(len(vox.coords)):  # conflicting voxels are ignored, uniform ones keep their label
        members = np.unique(labels[vox.inverse == v])
        assert vox.labels[v] == (members[0] if len(members) == 1 else 255)


def test_majority_labels_match_a_brute_force_count():
    rng = np.random.default_rng(0)
    inverse = rng.integers(0, 50, 2000)
    labels = rng.choice([0, 1, 2, 3, 255], 2000, p=[0.3, 0.25, 0.2, 0.05, 0.2])
    got = majority_labels(labels, inverse, 51, 255)
    for v in range(51):
        valid = labels[(inverse == v) & (labels != 255)]
        if len(valid) == 0:
            assert got[v] == 255
        else:
            counts = np.bincount(valid, minlength=4)
            assert got[v] == int(np.argmax(counts))  # argmax breaks ties to the smallest label


def test_label_modes_and_clip_box():
    xyz = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.01, 0.02], [5.0, 5.0, 5.0]])
    labels = np.array([1, 1, 2, 3])
    ignore = Voxelizer(0.1).voxelize(xyz, np.zeros((4, 3)), labels)
    majority = Voxelizer(0.1, label_mode="majority").voxelize(xyz, np.zeros((4, 3)), labels)
    assert sorted(ignore.labels.tolist()) == [3, 255] and sorted(majority.labels.tolist()) == [1, 3]
    clipped = Voxelizer(0.1, clip_bound=((-1, 1),) * 3).voxelize(xyz, np.zeros((4, 3)), labels,
                                                                 center=np.zeros(3))
    assert clipped.inverse.tolist()[3] == -1 and (clipped.inverse[:3] >= 0).all()
    with pytest.raises(DataError, match="label mode"):
        Voxelizer(0.1, label_mode="vote")
    with pytest.raises(DataError, match="no points left"):
        Voxelizer(0.1, clip_bound=((-1, 1),) * 3).voxelize(xyz[3:], np.zeros((1, 3)), labels[3:],
                                                           center=np.zeros(3))


def _dataset(tmp_path, n_train=3, n_val=2, n=1500):
    rng = np.random.default_rng(5)
    raw = tmp_path / "raw"
    names = {"train": [f"scene{i:04d}_00" for i in range(n_train)],
             "val": [f"scene{i:04d}_00" for i in range(n_train, n_train + n_val)]}
    for split, scenes in names.items():
        for scene in scenes:
            xyz, rgb = random_scene(rng, n)
            write_scannet_scene(raw, scene, xyz, rgb, rng.choice([1, 2, 3, 5, 40], n))
        (raw / f"scannetv2_{split}.txt").write_text("\n".join(scenes) + "\n")
    preprocess(build_dataset("synthetic-scannet"), raw, tmp_path / "pre", splits=("train", "val"), progress=False)
    return tmp_path / "pre"


# voxelize_split's settings as params.yaml gives them (voxel size 0.05: the former default of synthetic-scannet).
_VOXELIZE = {key: value for key, value in LOADER_PARAMS.items() if key != "ignore_label"} | {"voxel_size": 0.05}


def test_eval_files_equal_on_the_fly_eval_samples(tmp_path):
    pre = _dataset(tmp_path)
    manifest = voxelize_split(pre, tmp_path / "vox", ("val",), build_dataset("synthetic-scannet"),
                              VoxelParams(**{**_VOXELIZE, "voxel_size": 0.1}), workers=2, progress=False)
    assert manifest["dimension"] == 3 and len(manifest["splits"]["val"]) == 2
    on_the_fly = eval_set(pre, "synthetic-scannet", voxel_size=0.1)
    stored = VoxelizedDataset(tmp_path / "vox", "val", ignore_label=255)
    for i in range(2):
        a, b = on_the_fly[i], stored[i]
        for key in ("coordinates", "features", "labels", "inverse", "point_labels", "transform"):
            np.testing.assert_array_equal(a[key], b[key])
        assert a["name"] == b["name"] and a["sources"] == b["sources"]
        assert set(np.unique(a["point_labels"]).tolist()) == {0, 1, 2, 4, 255}  # nyu40 1,2,3,5 and 40 (ignored)
    with pytest.raises(DataError, match="was not voxelised"):
        VoxelizedDataset(tmp_path / "vox", "test", ignore_label=255)


def test_voxelize_failure_keeps_the_previous_output(tmp_path):
    pre = _dataset(tmp_path)
    voxelize_split(pre, tmp_path / "vox", "val", build_dataset("synthetic-scannet"), VoxelParams(**_VOXELIZE),
                   progress=False)
    before = sorted(p.name for p in (tmp_path / "vox" / "val").iterdir())
    (pre / "val" / "scene0004_00.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="scene0004_00"):
        voxelize_split(pre, tmp_path / "vox", "val", build_dataset("synthetic-scannet"), VoxelParams(**_VOXELIZE),
                       progress=False)
    assert sorted(p.name for p in (tmp_path / "vox" / "val").iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_eval_rotation_for_test_time_voting(tmp_path):
    pre = _dataset(tmp_path)
    plain = eval_set(pre, "synthetic-scannet", voxel_size=0.1)[0]
    full_turn = eval_set(pre, "synthetic-scannet", voxel_size=0.1, rotation_degrees=360.0)[0]
    quarter = eval_set(pre, "synthetic-scannet", voxel_size=0.1, rotation_degrees=90.0, rotation_axis="z")[0]
    assert len(full_turn["coordinates"]) == len(plain["coordinates"])
    # a quarter turn about z maps the voxel grid onto itself: (x, y) -> (-y, x), same occupancy
    assert len(quarter["coordinates"]) == len(plain["coordinates"])
    np.testing.assert_array_equal(np.sort(quarter["coordinates"][:, 2]), np.sort(plain["coordinates"][:, 2]))
    assert not np.array_equal(quarter["coordinates"], plain["coordinates"])


def test_training_samples_are_deterministic_per_seed(tmp_path):
    pre = _dataset(tmp_path)
    ds = train_set(pre, "synthetic-scannet", voxel_size=0.08)
    a, b, c = ds[(1, 42)], ds[(1, 42)], ds[(1, 43)]
    for key in ("coordinates", "features", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not (a["coordinates"].shape == c["coordinates"].shape and np.array_equal(a["features"], c["features"]))
    np.random.seed(7)  # int keys draw their seed from numpy's global RNG (what SeededDataset seeds)
    d = ds[1]
    np.random.seed(7)
    np.testing.assert_array_equal(ds[1]["features"], d["features"])
    assert a["features"].min() >= -0.5 and a["features"].max() <= 0.5
    assert set(np.unique(a["labels"]).tolist()) <= {0, 1, 2, 4, 255}
    plain = train_set(pre, "synthetic-scannet", voxel_size=0.08, augment=False)
    np.testing.assert_array_equal(plain[(0, 1)]["coordinates"], plain[(0, 2)]["coordinates"])


def test_dataloader_collate_and_point_limit(tmp_path):
    pre = _dataset(tmp_path)
    ds = train_set(pre, "synthetic-scannet", voxel_size=0.1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[[(0, 1), (1, 2), (2, 3)]], collate_fn=Collate(0),
                                         num_workers=1)
    batch = next(iter(loader))
    coords = batch["coordinates"]
    assert coords.dtype == torch.int32 and coords.shape[1] == 4
    assert batch["features"].dtype == torch.float32 and batch["labels"].dtype == torch.int64
    assert coords[:, 0].tolist() == sorted(coords[:, 0].tolist()) and set(coords[:, 0].tolist()) == {0, 1, 2}
    offsets = batch["offsets"].tolist()
    assert offsets[0] == 0 and offsets[-1] == len(coords) and len(offsets) == 4
    samples = [ds[(i, i)] for i in range(3)]
    first = len(samples[0]["coordinates"])
    limited = Collate(first + 1)(samples)
    assert limited["names"] == [samples[0]["name"]]
    assert len(Collate(1)(samples)["names"]) == 1  # an oversized first sample is still kept
    ev = eval_set(pre, "synthetic-scannet", voxel_size=0.1)
    eb = collate([ev[0], ev[1]])
    assert [m.dtype for m in eb["inverse_maps"]] == [torch.int64, torch.int64]
    assert int(eb["inverse_maps"][1].max()) < eb["offsets"][2] - eb["offsets"][1]


def test_voxel_params_are_one_frozen_checked_value():
    import dataclasses

    voxel = VoxelParams(0.05, clip_bound=[[-1, 1], [-2, 2], [0, 3]], label_mode="majority", ignore_label=100,
                        temporal_numseq=3, temporal_dilation=2)
    assert voxel.clip_bound == ((-1.0, 1.0), (-2.0, 2.0), (0.0, 3.0))  # lists from YAML become hashable tuples
    assert VoxelParams(**voxel.as_dict()) == voxel and hash(VoxelParams(**voxel.as_dict())) == hash(voxel)
    with pytest.raises(dataclasses.FrozenInstanceError):
        voxel.voxel_size = 0.1
    for fields, message in [({"voxel_size": 0}, "voxel_size must be > 0"),
                            ({"voxel_size": 0.1, "label_mode": "vote"}, "unknown voxel label mode 'vote'"),
                            ({"voxel_size": 0.1, "temporal_numseq": 0}, "temporal_numseq and temporal_dilation"),
                            ({"voxel_size": 0.1, "clip_bound": [[0, 1]]}, "clip_bound must be None, 'dataset'")]:
        with pytest.raises(DataError, match=message):
            VoxelParams(**fields)


def test_pipeline_hands_every_voxelize_param_to_one_voxel_params_object():
    from minkseg.config import params_from_dict
    from minkseg.pipeline.spec import voxel_params
    from tests.robust_workspace import tiny_params

    params = params_from_dict(tiny_params(voxelize__label_mode="majority", voxelize__temporal_numseq=2,
                                          voxelize__clip_bound=[[-5, 5]] * 3, base__ignore_label=254))
    assert voxel_params(params) == VoxelParams(0.1, clip_bound=((-5.0, 5.0),) * 3, label_mode="majority",
                                               ignore_label=254, temporal_numseq=2, temporal_dilation=30)
