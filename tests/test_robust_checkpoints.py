"""Issue 6, case 8 (weights and checkpoints that do not fit, are not state dicts, or would run code) and case 11's
out-of-memory half, at the stage boundary: exit status 2, one line naming the file (or scene) and the fix, and
nothing written -- the previous model, metrics and checkpoints stay byte for byte."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.robust_workspace import copy_workspace, leftovers, refused, run_stage_here, shared_workspace


class _RunsCodeWhenUnpickled:
    """A pickle payload that creates a folder when loaded with plain pickle (what weights_only=True refuses)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.makedirs, (self.sentinel,))


@pytest.fixture
def root(tmp_path_factory, tmp_path) -> Path:
    return copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")


def test_model_file_that_would_run_code_is_refused(root, capsys, monkeypatch):
    sentinel = root / "pwned"
    payload = torch.load(root / "models" / "model.pt", weights_only=True)
    payload["extra"] = _RunsCodeWhenUnpickled(sentinel)
    torch.save(payload, root / "models" / "model.pt")
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line.startswith("minkseg evaluate: error: models/model.pt: refused to load: it holds Python objects "
                           "other than tensors and plain containers, which could run code when unpickled")
    assert not sentinel.exists()


def test_training_checkpoint_that_would_run_code_is_refused(root, capsys, monkeypatch):
    sentinel = root / "pwned"
    state = torch.load(root / "data" / "checkpoints" / "last.pt", weights_only=True)
    state["rng"] = _RunsCodeWhenUnpickled(sentinel)
    torch.save(state, root / "data" / "checkpoints" / "last.pt")
    line = refused(root, "train", capsys, monkeypatch)
    assert line.startswith("minkseg train: error: data/checkpoints/last.pt: refused to load")
    assert not sentinel.exists()


def test_model_file_for_another_network_names_both(root, capsys, monkeypatch):
    from minkseg.nn import build_model

    payload = torch.load(root / "models" / "model.pt", weights_only=True)
    payload["state_dict"] = build_model("Res16UNet18A", 3, 20, D=3).state_dict()  # but "model" still says 14A
    torch.save(payload, root / "models" / "model.pt")
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line.startswith("minkseg evaluate: error: models/model.pt: weights do not fit Res16UNet14A with 20 "
                           "classes (")
    assert line.endswith("; re-run the train stage")


def test_model_file_for_another_class_count_or_dataset_is_refused(root, capsys, monkeypatch):
    from minkseg.nn import build_model

    payload = torch.load(root / "models" / "model.pt", weights_only=True)
    payload["model"]["out_channels"] = 12
    payload.update(dataset="synthetic-synthia4d", class_names=[f"c{i}" for i in range(12)],
                   state_dict=build_model(**payload["model"]).state_dict())
    torch.save(payload, root / "models" / "model.pt")
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line == ("minkseg evaluate: error: models/model.pt: was trained on synthetic-synthia4d with 12 classes but "
                    "base.dataset is synthetic-scannet with 20 classes; re-run the train stage (dvc repro)")


@pytest.mark.parametrize("content, message", [
    (torch.zeros(3), "models/model.pt: not a MinkSeg model file (no 'model'/'state_dict'); re-run the train stage"),
    ({"model": "Res16UNet14A"}, "models/model.pt: not a MinkSeg model file (no 'model'/'state_dict')"),
])
def test_model_file_that_is_not_a_state_dict(root, capsys, monkeypatch, content, message):
    torch.save(content, root / "models" / "model.pt")
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line.startswith(f"minkseg evaluate: error: {message}")


def test_truncated_model_file(root, capsys, monkeypatch):
    path = root / "models" / "model.pt"
    path.write_bytes(path.read_bytes()[:4096])
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line.startswith("minkseg evaluate: error: models/model.pt: not a readable PyTorch file (")


@pytest.mark.parametrize("content, message", [
    ([torch.zeros(2)], "data/checkpoints/last.pt: not a MinkSeg training checkpoint; move it away to start over"),
    (b"truncated", "data/checkpoints/last.pt: not a readable PyTorch file ("),
])
def test_training_checkpoint_that_is_not_a_checkpoint(root, capsys, monkeypatch, content, message):
    path = root / "data" / "checkpoints" / "last.pt"
    if isinstance(content, bytes):
        path.write_bytes(path.read_bytes()[:2048])
    else:
        torch.save(content, path)
    line = refused(root, "train", capsys, monkeypatch)
    assert line.startswith(f"minkseg train: error: {message}")


def test_training_checkpoint_of_another_run_is_not_resumed(root, capsys, monkeypatch, caplog):
    """A last.pt written under other params (another model, class count, data) is never loaded into this model:
    the run says so and starts from scratch (the other run's final weights live on in DVC's cache)."""
    state = torch.load(root / "data" / "checkpoints" / "last.pt", weights_only=True)
    state["fingerprint"] = "0123456789abcdef"
    state["model"] = {"not": torch.zeros(1)}  # would fail to load if it were used
    torch.save(state, root / "data" / "checkpoints" / "last.pt")
    code, stderr = run_stage_here(root, "train", capsys, monkeypatch)
    assert code == 0, stderr
    assert "was written by a run with other params or data (fingerprint 0123456789abcdef" in caplog.text
    assert "starting from scratch and replacing it" in caplog.text
    assert torch.load(root / "data" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 6
    assert leftovers(root) == []


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_in_training_names_the_scenes_and_the_params(root, capsys, monkeypatch):
    from minkseg.nn.res16unet import Res16UNet

    (root / "data" / "checkpoints" / "last.pt").unlink()  # train from scratch: the first batch runs out of memory
    (root / "data" / "checkpoints" / "best.pt").unlink()
    monkeypatch.setattr(Res16UNet, "forward", _out_of_memory)
    line = refused(root, "train", capsys, monkeypatch)
    assert line.startswith("minkseg train: error: out of memory in iteration 1 on a batch of ")
    assert " voxels from scenes scene000" in line
    assert line.endswith("; lower train.batch_size or train.train_limit_numpoints (or raise "
                         "voxelize.voxel_size), then re-run")


def test_out_of_memory_in_evaluation_names_the_scene_and_the_params(root, capsys, monkeypatch):
    from minkseg.nn.res16unet import Res16UNet

    monkeypatch.setattr(Res16UNet, "forward", _out_of_memory)
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line.startswith("minkseg evaluate: error: scene scene0003_00: out of memory on ")
    assert line.endswith(" voxels; evaluate on the CPU (base.device: cpu), or set voxelize.clip_bound / raise "
                         "voxelize.voxel_size (re-trains)")
