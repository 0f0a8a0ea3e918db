"""Issue 6, case 6 (bad params.yaml) and case 11 (CUDA requested without a GPU), at the stage boundary.

Every bad value must stop the *first* stage with exit status 2 and one line naming the file and the key path,
before anything is written; params that only fail later (an unknown network, class weights of the wrong length)
are caught up front too, so `dvc repro` does not preprocess for hours and then fail in train.
"""
from __future__ import annotations

import pytest
import torch

from tests.robust_workspace import (copy_workspace, error_line, leftovers, run_stage_here, shared_workspace,
                                    snapshot, tiny_params, write_params)


@pytest.mark.parametrize("edit, message", [
    ({"base__dataset": "kitti"}, "bad.yaml: base.dataset: must be one of the registered datasets: ply-folder, "
                                 "scannet, synthetic-scannet, synthetic-synthia4d, synthia4d (got 'kitti')"),
    ({"train__model": "Res16UNet14Z"}, "bad.yaml: train.model: unknown network 'Res16UNet14Z'; did you mean "),
    ({"train__model": "PointNet"}, "bad.yaml: train.model: unknown network 'PointNet'; e.g. Res16UNet14A"),
    ({"voxelize__voxel_size": 0}, "bad.yaml: voxelize.voxel_size: must be > 0 (got 0)"),
    ({"voxelize__voxel_size": -0.02}, "bad.yaml: voxelize.voxel_size: must be > 0 (got -0.02)"),
    ({"voxelize__voxel_size": 1e-9}, "bad.yaml: voxelize.voxel_size: must be between 0.001 and 10 for "
                                     "synthetic-scannet, whose coordinates are in metres "
                                     "(got 1e-09)"),
    ({"voxelize__voxel_size": 6}, None),  # 6 m voxels: coarse, but not a unit mix-up
    ({"voxelize__voxel_size": 60}, "bad.yaml: voxelize.voxel_size: must be between 0.001 and 10 for "
                                   "synthetic-scannet, whose coordinates are in metres "
                                   "(got 60"),
    ({"train__batch_size": 0}, "bad.yaml: train.batch_size: must be > 0 (got 0)"),
    ({"train__lr": "0.1x"}, "bad.yaml: train.lr: must be a number (got '0.1x')"),
    ({"train__iterations": "many"}, "bad.yaml: train.iterations: must be a whole number (got 'many')"),
    ({"train__augment": "yes please"}, "bad.yaml: train.augment: must be true or false (got 'yes please')"),
    ({"voxelize__clip_bound": "datset"}, "bad.yaml: voxelize.clip_bound: must be dataset, null, or three "
                                         "[min, max] pairs"),
    ({"train__class_weights": [1.0, 2.0]}, "bad.yaml: train.class_weights: has 2 values but synthetic-scannet "
                                           "has 20 classes"),
])
def test_bad_params_stop_the_first_stage_before_it_writes(tmp_path, capsys, monkeypatch, edit, message):
    write_params(tmp_path, tiny_params(**edit), "bad.yaml")
    if message is None:  # accepted: the params check alone (DVC's first stage) passes
        code, stderr = run_stage_here(tmp_path, "check_params", capsys, monkeypatch, "--params", "bad.yaml")
        assert code == 0, stderr
        return
    code, stderr = run_stage_here(tmp_path, "download", capsys, monkeypatch, "--params", "bad.yaml")
    assert code == 2
    assert error_line(stderr, "download").startswith(f"minkseg download: error: {message}"), stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing written, not even data/


def test_every_stage_refuses_bad_params_and_keeps_its_outputs(tmp_path_factory, tmp_path, capsys, monkeypatch):
    root = copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")
    write_params(root, tiny_params(train__batch_size=0, voxelize__voxel_size=-1), "bad.yaml")
    before = snapshot(root)
    for stage in ("download", "preprocess", "voxelize", "train", "evaluate"):
        code, stderr = run_stage_here(root, stage, capsys, monkeypatch, "--params", "bad.yaml")
        assert code == 2
        assert "Traceback" not in stderr
        lines = [line for line in stderr.splitlines() if line.startswith(f"minkseg {stage}: error: ")]
        assert sorted(lines) == sorted([f"minkseg {stage}: error: bad.yaml: voxelize.voxel_size: must be > 0 (got -1)",
                                        f"minkseg {stage}: error: bad.yaml: train.batch_size: must be > 0 (got 0)"])
    assert snapshot(root) == before and leftovers(root) == []


@pytest.mark.parametrize("stage", ["check_params", "download", "preprocess", "voxelize", "train", "evaluate",
                                   "submit"])
def test_duplicate_key_is_refused_by_every_stage_with_its_path(tmp_path_factory, tmp_path, capsys, monkeypatch,
                                                              stage):
    """Issue 17, item 5: PyYAML keeps the last of two equal keys, so a stage run by hand trained with the second
    `lr` silently (`dvc repro` refuses the file). Every stage now refuses it, naming both lines."""
    root = copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")
    text = (root / "params.yaml").read_text()
    assert "\ntrain:\n  model:" in text
    (root / "params.yaml").write_text(text.replace("\ntrain:\n", "\ntrain:\n  lr: 0.5\n", 1))
    lines = (root / "params.yaml").read_text().splitlines()
    first = lines.index("  lr: 0.5") + 1
    second = next(i for i, line in enumerate(lines, 1) if i > first and line.startswith("  lr: "))
    before = snapshot(root)
    code, stderr = run_stage_here(root, stage, capsys, monkeypatch)
    assert code == 2
    assert error_line(stderr, stage) == (f"minkseg {stage}: error: params.yaml: line {second}: train.lr: duplicate "
                                         f"key (also on line {first}); keep one of them")
    assert snapshot(root) == before and leftovers(root) == []


def test_missing_params_file_and_broken_yaml(tmp_path, capsys, monkeypatch):
    code, stderr = run_stage_here(tmp_path, "train", capsys, monkeypatch, "--params", "nope.yaml")
    assert code == 2
    assert error_line(stderr, "train") == ("minkseg train: error: nope.yaml: file not found; run from the "
                                           "repository root or pass the params file's path")
    (tmp_path / "params.yaml").write_text("base:\n  seed: [1\n")
    code, stderr = run_stage_here(tmp_path, "train", capsys, monkeypatch)
    assert code == 2 and "params.yaml: line 3, column 1: invalid YAML" in error_line(stderr, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU is visible")
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_cuda_requested_without_a_gpu_is_one_clear_line(tmp_path_factory, tmp_path, capsys, monkeypatch, stage):
    root = copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")
    write_params(root, tiny_params(base__device="cuda"))
    before = snapshot(root)
    code, stderr = run_stage_here(root, stage, capsys, monkeypatch)
    assert code == 2
    assert error_line(stderr, stage) == (f"minkseg {stage}: error: base.device is cuda but no CUDA device is "
                                         "visible to PyTorch; set base.device: cpu (or auto), or install a CUDA "
                                         "build of torch")
    assert snapshot(root) == before and leftovers(root) == []


def test_error_raised_inside_a_dataloader_worker_still_prints_one_line(capsys):
    """With train.num_workers > 0 torch re-raises a worker's error wrapped in its traceback; the user sees the error."""
    from minkseg.errors import DataError
    from minkseg.pipeline import cli

    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\nminkseg.errors.DataError: scene0001_00.npz: "
                        "truncated file; delete data/preprocessed and re-run")
    cli.report_error("train", cli._user_message(wrapped))
    err = capsys.readouterr().err
    assert err == "minkseg train: error: scene0001_00.npz: truncated file; delete data/preprocessed and re-run\n"
