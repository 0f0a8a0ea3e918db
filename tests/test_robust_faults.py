"""Issue 6, case 9 (kill -9 during training, preprocessing and metrics writing) and case 10 (disk full, unwritable
output folder), with real stage processes.

Kills are exact, not timed: tests/robust_killhook/sitecustomize.py makes the stage SIGKILL itself at the n-th
replacement of a chosen output -- after the new bytes are in their temporary file, before they replace the output,
the worst instant. "Disk full" is a real failing write: the stage runs under RLIMIT_FSIZE (every write past the
limit fails with EFBIG, as a full disk fails with ENOSPC), or in-process with ENOSPC injected at fsync.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tests.robust_workspace import (REPO, child_env, copy_workspace, edit_params, error_line, leftovers, refused,
                                    run_stage_process, shared_workspace, snapshot)

KILL_HOOK = REPO / "tests" / "robust_killhook"
INPUTS = ("data/raw", "data/preprocessed", "data/voxelized", "params.yaml")


def _killed_at(root: Path, stage: str, spec: str) -> None:
    env = child_env()
    env["PYTHONPATH"] = f"{KILL_HOOK}{os.pathsep}{env['PYTHONPATH']}"
    env["MINKSEG_TEST_KILL_AT"] = spec
    result = run_stage_process(root, stage, env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr


def _inputs(root: Path) -> dict[str, str]:
    return {k: v for under in INPUTS for k, v in snapshot(root, under).items()}


@pytest.fixture
def root(tmp_path_factory, tmp_path) -> Path:
    return copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_training_killed_mid_checkpoint_resumes_to_the_uninterrupted_weights(root, tmp_path):
    reference = copy_workspace(root, tmp_path / "reference")  # trained without interruption (6 iterations)
    for name in ("data/checkpoints", "models", "metrics"):
        shutil.rmtree(root / name)
    inputs = _inputs(root)

    _killed_at(root, "train", "last.pt:2")  # iteration 2 checkpointed; killed while replacing it at iteration 4
    assert not (root / "models" / "model.pt").exists()
    assert torch.load(root / "data" / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2
    assert [p.name for p in (root / "data" / "checkpoints").glob(".last.pt.*.tmp")], "the kill missed the write"

    result = run_stage_process(root, "train")
    assert result.returncode == 0, result.stderr
    assert "resuming from data/checkpoints/last.pt at iteration 2" in result.stderr
    assert leftovers(root) == []  # the dead writer's temporary checkpoint was cleared
    ours, theirs = _state(root / "models" / "model.pt"), _state(reference / "models" / "model.pt")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for name in ("train.csv", "val.csv"):
        assert (root / "metrics" / name).read_text() == (reference / "metrics" / name).read_text()
    summary = json.loads((root / "metrics" / "train.json").read_text())
    assert summary["iterations"] == 6 and summary["resumed_from"] == 2
    assert summary["best_val_miou"] == json.loads((reference / "metrics" / "train.json").read_text())["best_val_miou"]
    assert _inputs(root) == inputs


def _scenes(root: Path) -> dict[str, tuple]:
    from minkseg.data.scenefile import load_scene

    out = {}
    for path in sorted((root / "data" / "preprocessed").rglob("*.npz")):
        scene = load_scene(path)
        out[str(path.relative_to(root))] = (scene.coords.tobytes(), scene.colors.tobytes(), scene.labels.tobytes())
    return out


def test_preprocessing_killed_mid_way_keeps_the_previous_output_and_reruns(root):
    before = snapshot(root, "data/preprocessed")
    scenes = _scenes(root)
    raw = snapshot(root, "data/raw")

    _killed_at(root, "preprocess", "scene*.npz:3")  # two scenes written into the staging folder, then SIGKILL
    assert snapshot(root, "data/preprocessed") == before  # the previous complete output, untouched
    assert [p.name for p in (root / "data").glob(".preprocessed.*")], "the kill missed the staging folder"

    result = run_stage_process(root, "preprocess")
    assert result.returncode == 0, result.stderr
    assert leftovers(root) == []  # the dead run's staging folder was cleared
    assert _scenes(root) == scenes
    manifest = "data/preprocessed/manifest.json"
    assert snapshot(root, "data/preprocessed")[manifest] == before[manifest]
    assert snapshot(root, "data/raw") == raw


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_preprocess_workers_start_prints_only_the_one_line(root, tmp_path):
    """Issue 17, item 3: Ctrl-C reaches every process of the terminal's group; the workers used to print two
    KeyboardInterrupt tracebacks (one each, while still starting) before the stage's one line."""
    edit_params(root, preprocess__num_workers=2)
    before, raw = snapshot(root, "data/preprocessed"), snapshot(root, "data/raw")
    env = child_env()
    env["PYTHONPATH"] = f"{KILL_HOOK}{os.pathsep}{env['PYTHONPATH']}"
    env["MINKSEG_TEST_CTRL_C_AT_WORKER_START"] = str(tmp_path / "ctrl-c-sent")
    # its own process group: the hook's Ctrl-C must reach the stage and its workers, never pytest. SIGINT starts at
    # its default: a test run launched in the background (`cmd &` in a script, nohup) inherits SIGINT *ignored*,
    # and Python then installs no KeyboardInterrupt handler -- the stage could not be interrupted at all.
    result = run_stage_process(root, "preprocess", env=env, start_new_session=True, preexec_fn=_sigint_default)
    assert (tmp_path / "ctrl-c-sent").exists(), "no worker was started"
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines() == ["minkseg preprocess: interrupted; re-run `dvc repro` to continue"]
    assert snapshot(root, "data/preprocessed") == before and snapshot(root, "data/raw") == raw
    assert leftovers(root) == []


def test_evaluation_killed_while_writing_metrics_keeps_the_old_file_and_reruns(root):
    old = (root / "metrics" / "eval.json").read_text()
    (root / "metrics" / "eval.json").write_text('{"miou": "from the previous run"}\n')
    inputs = _inputs(root)

    _killed_at(root, "evaluate", "eval.json:1")
    assert json.loads((root / "metrics" / "eval.json").read_text()) == {"miou": "from the previous run"}
    assert [p.name for p in (root / "metrics").glob(".eval.json.*.tmp")], "the kill missed the write"

    result = run_stage_process(root, "evaluate")
    assert result.returncode == 0, result.stderr
    assert leftovers(root) == []
    assert json.loads((root / "metrics" / "eval.json").read_text()) == json.loads(old)
    assert _inputs(root) == inputs


def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_saving_a_checkpoint(root):
    """A write that fails half-way (EFBIG under RLIMIT_FSIZE; a full disk fails the same way with ENOSPC)."""
    for name in ("data/checkpoints", "models"):
        shutil.rmtree(root / name)
    inputs = _inputs(root)
    result = run_stage_process(root, "train", preexec_fn=_file_size_limit(1 << 20))
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr, "train")
    assert line.startswith("minkseg train: error: cannot write data/checkpoints/last.pt: File too large; the "
                           "previous file (if any) is unchanged; check free disk space and permissions")
    assert leftovers(root) == [] and list((root / "data" / "checkpoints").iterdir()) == []
    assert not (root / "models" / "model.pt").exists()
    assert _inputs(root) == inputs


def test_disk_full_while_writing_evaluation_outputs(root, capsys, monkeypatch):
    import minkseg.atomic

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(minkseg.atomic.os, "fsync", no_space)
    line = refused(root, "evaluate", capsys, monkeypatch)
    assert line.startswith("minkseg evaluate: error: cannot write predictions/scene0003_00.ply: No space left on "
                           "device; the previous file (if any) is unchanged; check free disk space and permissions")


def test_disk_full_while_preprocessing(root, capsys, monkeypatch):
    """A full disk is the disk's fault, not the scene's: the stage stops with the write error itself (not as a
    "failed scene" to re-download), and the previous preprocessed folder stays whole."""
    import minkseg.atomic

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(minkseg.atomic.os, "fsync", no_space)
    line = refused(root, "preprocess", capsys, monkeypatch)
    assert line.startswith("minkseg preprocess: error: cannot write data/.preprocessed.")
    assert "scene0000_00.npz: No space left on device; the previous file (if any) is unchanged" in line


def _without_root_override() -> None:
    """Root ignores folder permissions; drop the two capabilities that let it (a plain user has neither)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set: gone after exec
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("stage, locked, message", [
    ("train", "models", "cannot write into models: Permission denied; fix the folder's permissions or free disk "
                        "space, then re-run (nothing was changed)"),
    ("evaluate", "metrics", "cannot write into metrics: Permission denied;"),
    ("preprocess", "data", "cannot write into data: Permission denied;"),
])
def test_unwritable_output_folder_fails_at_once_and_changes_nothing(root, stage, locked, message):
    os.chmod(root / locked, 0o555)
    before = snapshot(root)
    try:
        result = run_stage_process(root, stage, preexec_fn=_without_root_override)
    finally:
        os.chmod(root / locked, 0o755)
    assert result.returncode == 2, result.stderr
    assert error_line(result.stderr, stage).startswith(f"minkseg {stage}: error: {message}")
    assert snapshot(root) == before and leftovers(root) == []
