"""Issue 17, items 4 and 6: state left on disk that no longer fits -- stages run by hand, a broken MLflow store.

Item 6: every output another stage reads records what made it (minkseg/engine/lineage.py). A stage whose inputs
were made by other params, or from inputs re-made since, refuses with exit status 2 and one line naming the stage
to re-run, and changes nothing; a training checkpoint of other inputs is not resumed.
Item 4: a corrupt mlflow.db stops train and evaluate before they work, with the file and the fix.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.robust_workspace import accepted, copy_workspace, edit_params, refused, shared_workspace


@pytest.fixture
def root(tmp_path_factory, tmp_path) -> Path:
    return copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")


def _fix(stage: str) -> str:
    return f"re-run the {stage} stage first (dvc repro, or python stages/{stage}.py)"


def test_voxelised_at_one_size_trained_at_another_is_refused_then_trained_afresh(root, capsys, monkeypatch, caplog):
    """The issue's sequence: voxelize at 0.1, train by hand at 0.12 (it validated on mismatched samples and kept
    mIoU 0.0), re-voxelise, train again (it "resumed" the finished run)."""
    edit_params(root, voxelize__voxel_size=0.12, evaluate__rotation_angles=[0])  # one view: a faster evaluate
    for stage in ("train", "evaluate"):
        assert refused(root, stage, capsys, monkeypatch) == (
            f"minkseg {stage}: error: data/voxelized was made with voxelize.voxel_size: 0.1, but the params "
            f"now say 0.12; {_fix('voxelize')}")

    accepted(root, "voxelize", capsys, monkeypatch)
    assert refused(root, "evaluate", capsys, monkeypatch) == (  # the model is of the old voxels
        f"minkseg evaluate: error: models/model.pt was made with voxelize.voxel_size: 0.1, but the params now "
        f"say 0.12; {_fix('train')}")
    with caplog.at_level(logging.WARNING):
        accepted(root, "train", capsys, monkeypatch)
    assert "was written by a run with other params or data" in caplog.text  # the old checkpoint: not resumed
    summary = json.loads((root / "metrics" / "train.json").read_text())
    assert summary["resumed_from"] is None and summary["iterations"] == 6
    accepted(root, "evaluate", capsys, monkeypatch)


def test_input_remade_since_a_later_output_was_made_is_refused(root, capsys, monkeypatch):
    edit_params(root, base__seed=7)
    accepted(root, "download", capsys, monkeypatch)  # data/raw of seed 7; data/preprocessed is still of seed 123
    for stage in ("voxelize", "train"):
        assert refused(root, stage, capsys, monkeypatch) == (
            f"minkseg {stage}: error: data/preprocessed was made from another data/raw than the one there now; "
            f"{_fix('preprocess')}")


def test_checkpoint_of_other_upstream_data_under_the_same_params_is_not_resumed(root, capsys, monkeypatch, caplog):
    """A raw scan replaced (a re-downloaded scene) and preprocess re-run: same params, other training data. The
    finished checkpoint of the old data used to be "resumed" (zero iterations); now training starts over."""
    from minkseg.data.ply import read_ply, write_ply

    scene = root / "data" / "raw" / "scans" / "scene0001_00"  # a training scene
    for path in (scene / "scene0001_00_vh_clean_2.ply", scene / "scene0001_00_vh_clean_2.labels.ply"):
        write_ply(path, {key: values[:-50] for key, values in read_ply(path).items()})
    accepted(root, "preprocess", capsys, monkeypatch)
    accepted(root, "voxelize", capsys, monkeypatch)
    with caplog.at_level(logging.WARNING):
        accepted(root, "train", capsys, monkeypatch)
    assert "data/checkpoints/last.pt was written by a run with other params or data" in caplog.text
    assert json.loads((root / "metrics" / "train.json").read_text())["resumed_from"] is None


@pytest.mark.parametrize("stage, edit, output, key, then, now, rerun", [
    ("preprocess", {"download__synthetic": {"num_train": 4, "num_val": 2, "num_test": 1, "points_per_scene": 2000}},
     "data/raw", "download.synthetic.num_train", "3", "4", "download"),
    ("voxelize", {"preprocess__splits": ["val", "train"]}, "data/preprocessed", "preprocess.splits",
     '["train", "val"]', '["val", "train"]', "preprocess"),
    ("evaluate", {"train__lr": 0.01}, "models/model.pt", "train.lr", "0.0025", "0.01", "train"),
])
def test_params_changed_since_an_input_was_made_name_the_stage(root, capsys, monkeypatch, stage, edit, output, key,
                                                               then, now, rerun):
    edit_params(root, **edit)
    assert refused(root, stage, capsys, monkeypatch) == (
        f"minkseg {stage}: error: {output} was made with {key}: {then}, but the params now say {now}; "
        f"{_fix(rerun)}")


def test_settings_of_where_a_stage_runs_are_not_a_mismatch(root, capsys, monkeypatch):
    """A model trained with all cores (or on a GPU) is evaluated with one thread (or on the CPU) as it is."""
    edit_params(root, base__num_threads=2, base__device="cpu", train__num_workers=1, preprocess__num_workers=2,
                evaluate__rotation_angles=[0])
    accepted(root, "evaluate", capsys, monkeypatch)


def test_output_without_a_record_is_refused(root, capsys, monkeypatch):
    (root / "data" / "raw" / "made_by.json").unlink()
    assert refused(root, "preprocess", capsys, monkeypatch) == (
        f"minkseg preprocess: error: data/raw has no record of the params that made it (written by an older "
        f"MinkSeg, or by hand); {_fix('download')}")


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_corrupt_mlflow_store_is_one_line_before_any_work(root, capsys, monkeypatch, stage):
    database = root / "mlflow.db"
    database.write_bytes(bytes(range(256)) * 64)  # random-looking bytes, 16 KiB
    edit_params(root, mlflow__enabled=True, mlflow__tracking_uri=f"sqlite:///{database}")
    assert refused(root, stage, capsys, monkeypatch) == (
        f"minkseg {stage}: error: {database}: not a readable SQLite database (file is not a database); move it away "
        f"(e.g. mv {database} {database}.broken) to start a new MLflow store, or set mlflow.enabled: false")
