"""params.yaml schema: the shipped files validate; every bad value is one line naming file, key and fix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from minkseg.config import ConfigError, Params, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[1]


def shipped(name: str = "params.yaml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # messages then name the file as the user typed it: "params.yaml"


def write(tmp_path: Path, data) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return Path("params.yaml")


@pytest.mark.parametrize("name", ["params.yaml", "params.scannet.yaml", "params.synthia4d.yaml"])
def test_shipped_params_files_validate(name):
    params = load_params(REPO / name)
    assert isinstance(params, Params)


def test_default_is_the_cpu_laptop_run_and_scannet_file_has_the_papers_values():
    laptop = load_params(REPO / "params.yaml")
    assert laptop.base.dataset == "synthetic-scannet" and laptop.train.amp == "none"
    paper = load_params(REPO / "params.scannet.yaml")
    t = paper.train
    assert (paper.base.dataset, t.model, paper.voxelize.voxel_size) == ("scannet", "Res16UNet34C", 0.02)
    assert (t.optimizer, t.lr, t.momentum, t.dampening, t.weight_decay) == ("sgd", 0.1, 0.9, 0.1, 1e-4)
    assert (t.scheduler, t.poly_power, t.batch_size, t.iterations, t.train_limit_numpoints) == (
        "poly", 0.9, 9, 120000, 1200000)


def test_flat_params_and_fingerprint():
    params = load_params(REPO / "params.yaml")
    flat = params.flat()
    assert flat["train.lr"] == params.train.lr and flat["download.synthetic.num_train"] > 0
    data = shipped()
    data["train"]["num_workers"] = 7  # speed only: same fingerprint
    assert params_from_dict(data).fingerprint() == params.fingerprint()
    data["train"]["lr"] = 0.05
    assert params_from_dict(data).fingerprint() != params.fingerprint()
    data["mlflow"]["experiment_name"] = "other"  # not a training input
    assert params_from_dict(data).fingerprint() == params_from_dict({**data, "mlflow": shipped()["mlflow"]}).fingerprint()


@pytest.mark.parametrize("group, key, value, message", [
    ("train", "lr", -1, "params.yaml: train.lr: must be > 0 (got -1)"),
    ("train", "batch_size", 0, "params.yaml: train.batch_size: must be > 0 (got 0)"),
    ("train", "batch_size", 2.5, "params.yaml: train.batch_size: must be a whole number (got 2.5)"),
    ("train", "iterations", True, "params.yaml: train.iterations: must be a number, not true/false (got True)"),
    ("train", "optimizer", "adam", "params.yaml: train.optimizer: must be one of 'sgd' or 'adamw' (got 'adam')"),
    ("train", "lr", "fast", "params.yaml: train.lr: must be a number (got 'fast')"),
    ("voxelize", "voxel_size", 0, "params.yaml: voxelize.voxel_size: must be > 0 (got 0)"),
    ("voxelize", "clip_bound", [[1, 0], [0, 1], [0, 1]],
     "params.yaml: voxelize.clip_bound: every [min, max] pair needs min < max"),
    ("base", "dataset", "kitti", "params.yaml: base.dataset: must be one of"),
    ("base", "rdzv_endpoint", "localhost", "params.yaml: base.rdzv_endpoint: must be host:port"),
    ("train", "class_weights", [1.0, -2.0], "params.yaml: train.class_weights: item [1] must be > 0 (got -2.0)"),
    ("train", "class_weights", "balance", "params.yaml: train.class_weights: must be null, balanced, or a list"),
    ("train", "lovasz_weight", -0.5, "params.yaml: train.lovasz_weight: must be >= 0 (got -0.5)"),
    ("train", "lovasz_weight", "yes", "params.yaml: train.lovasz_weight: must be a number (got 'yes')"),
    ("evaluate", "rotation_angles", [], "params.yaml: evaluate.rotation_angles: needs at least 1 item(s)"),
    ("mlflow", "enabled", "maybe", "params.yaml: mlflow.enabled: must be true or false (got 'maybe')"),
    ("train", "model", "Res16UNet14A; rm -rf", "params.yaml: train.model: must match"),
])
def test_bad_values_name_the_key_path(tmp_path, group, key, value, message):
    data = shipped()
    data[group][key] = value
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, data))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_missing_and_multiple_errors(tmp_path):
    data = shipped()
    data["train"]["batch_sise"] = 8
    with pytest.raises(ConfigError, match=r"^params.yaml: train.batch_sise: unknown key; did you mean batch_size\? \(got 8\)$"):
        load_params(write(tmp_path, data))
    data = shipped()
    del data["train"]["lr"]
    data["voxelize"]["voxel_size"] = -0.1
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, data))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("params.yaml: voxelize.voxel_size: must be > 0")
    assert lines[1].startswith("params.yaml: train.lr: missing; add it")
    data = shipped()
    data["extra_group"] = {}
    with pytest.raises(ConfigError, match=r"params.yaml: extra_group: unknown key \(allowed here: base, download"):
        load_params(write(tmp_path, data))


def test_cross_key_rules(tmp_path):
    data = shipped()
    data["base"]["dataset"] = "scannet"
    data["download"]["scannet_root"] = None
    with pytest.raises(ConfigError, match="download.scannet_root: required when base.dataset is scannet"):
        load_params(write(tmp_path, data))
    data = shipped()
    data["base"]["device"] = "cpu"
    data["train"]["amp"] = "bf16"
    with pytest.raises(ConfigError, match="train.amp: mixed precision runs on CUDA only"):
        load_params(write(tmp_path, data))
    data = shipped()
    data["base"]["node_rank"] = 1
    with pytest.raises(ConfigError, match=r"base.node_rank: must be < base.num_nodes \(1\) \(got 1\)"):
        load_params(write(tmp_path, data))
    data = shipped()
    data["train"].update(augment=False, crop_voxels=6000)
    with pytest.raises(ConfigError, match=r"train.crop_voxels: the crop is a random training augmentation and "
                                          r"train.augment is false; .* \(got 6000\)"):
        load_params(write(tmp_path, data))
    for bad, message in ((-1, r"must be >= 0 \(got -1\)"), ("half", "must be a whole number"),
                         (2.5, r"must be a whole number \(got 2.5\)")):
        data = shipped()
        data["train"]["crop_voxels"] = bad
        with pytest.raises(ConfigError, match=f"params.yaml: train.crop_voxels: {message}"):
            load_params(write(tmp_path, data))


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="^missing.yaml: file not found; run from the repository root"):
        load_params("missing.yaml")
    with pytest.raises(ConfigError, match=r"^params.yaml: line 3, column 4: invalid YAML"):
        load_params(write(tmp_path, "base:\n  seed: [1\n  x: 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="params.yaml: train: must be a mapping"):
        load_params(write(tmp_path, {**shipped(), "train": 3}))


def test_params_are_frozen():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(Exception):
        params.train.lr = 1.0


def _changed(data: dict, dotted: str) -> dict:
    """A copy of the params with ``dotted``'s value changed to another valid value of the same type."""
    changed = copy.deepcopy(data)
    group, key = dotted.split(".", 1)
    changed[group][key] = changed[group][key] + 3
    return changed


@pytest.mark.parametrize("dotted", ["preprocess.num_workers", "train.num_workers", "train.checkpoint_every"])
def test_speed_only_keys_change_no_fingerprint_and_no_record(dotted, tmp_path):
    """The one list of speed-only keys: the params fingerprint, the trainer's resume fingerprint and every stage's
    lineage record ignore exactly these keys."""
    from minkseg.config import SPEED_ONLY_KEYS
    from minkseg.engine.trainer import Trainer
    from minkseg.pipeline.lineage import CHAIN, stage_params
    from tests.engine_toys import NUM_CLASSES, ToyNet, ToyScenes, collate, dense_input

    assert dotted in SPEED_ONLY_KEYS
    before, after = params_from_dict(shipped()), params_from_dict(_changed(shipped(), dotted))
    assert after.fingerprint() == before.fingerprint()
    for stage in CHAIN[1:]:
        assert stage_params(stage, after) == stage_params(stage, before)

    def resume_fingerprint(params):
        return Trainer(ToyNet(), params.train, train_dataset=ToyScenes(4, seed=1), collate_fn=collate,
                       num_classes=NUM_CLASSES, seed=7, input_builder=dense_input, progress=False,
                       checkpoint_dir=tmp_path / "ckpt").fingerprint

    assert resume_fingerprint(after) == resume_fingerprint(before)


@pytest.mark.parametrize("dotted", ["train.log_every", "train.val_subset_every", "train.val_batch_size",
                                    "base.num_threads"])
def test_bookkeeping_keys_that_shape_results_are_not_speed_only(dotted, tmp_path):
    from minkseg.config import SPEED_ONLY_KEYS

    assert dotted not in SPEED_ONLY_KEYS
    assert params_from_dict(_changed(shipped(), dotted)).fingerprint() != params_from_dict(shipped()).fingerprint()
