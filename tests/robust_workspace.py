"""A tiny, complete MinkSeg workspace for the robustness tests (tests/test_robust_*.py), built once per session.

Why one shared workspace: every robustness case needs the same thing -- a repository-shaped folder with
params.yaml, raw data, preprocessed and voxelised scenes and a trained model -- and then breaks one piece of it.
Building it once (about ten seconds) and copying it per test keeps the whole robustness suite fast. Stages are run
either in-process through the very function the stage scripts call (``run_stage``: exit code + stderr line), or
as real ``python stages/<stage>.py`` processes where the process itself is the point (SIGKILL, rlimits, users).
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Names the atomic writers use for work in progress; none may survive a failed or killed stage.
PARTIAL_PATTERNS = ("*.tmp", "*.partial", "*.old", ".extract-*")


def tiny_params(**overrides: Any) -> dict[str, Any]:
    """params.yaml sized for a test: 3 train / 2 val scenes of 2,000 points, 6 iterations, one thread.

    ``overrides`` are ``group__key=value`` (``train__iterations=8``)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["base"]["num_threads"] = 1
    params["download"]["synthetic"].update(num_train=3, num_val=2, num_test=1, points_per_scene=2000)
    params["preprocess"]["num_workers"] = 1
    params["voxelize"]["voxel_size"] = 0.1
    params["train"].update(model="Res16UNet14A", iterations=6, batch_size=2, val_every=3, checkpoint_every=2,
                           log_every=1, num_workers=0)
    params["evaluate"]["export_count"] = 1
    params["mlflow"]["enabled"] = False
    for key, value in overrides.items():
        group, name = key.split("__", 1)
        params[group][name] = value
    return params


def write_params(root: Path, params: dict[str, Any], name: str = "params.yaml") -> Path:
    path = root / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def edit_params(root: Path, **overrides: Any) -> Path:
    """Change keys of ``root/params.yaml`` in place (``group__key=value``)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in overrides.items():
        group, name = key.split("__", 1)
        params[group][name] = value
    return write_params(root, params)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"  # two cores shared with other tests: oversubscribed threads slow torch 30x
    env.pop("MINKSEG_PROGRESS", None)
    return env


def stage_command(stage: str, *args: str) -> list[str]:
    return [PYTHON, str(REPO / "stages" / f"{stage}.py"), "--no-progress", *args]


def run_stage_process(root: Path, stage: str, *args: str, timeout: float = 300,
                      **kwargs: Any) -> subprocess.CompletedProcess:
    """``python stages/<stage>.py`` in ``root`` as a real process; returns the completed process (text)."""
    return subprocess.run(stage_command(stage, *args), cwd=root, env=kwargs.pop("env", child_env()),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def stage_function(stage: str) -> Callable[..., Any]:
    """``run_<stage>`` of ``minkseg.pipeline.<stage>``: the function ``stages/<stage>.py`` calls."""
    import importlib

    return getattr(importlib.import_module(f"minkseg.pipeline.{stage}"), f"run_{stage}")


def run_stage_here(root: Path, stage: str, capsys: Any, monkeypatch: Any, *args: str) -> tuple[int, str]:
    """The stage's ``run_stage`` in this process (cwd = ``root``); returns (exit code, stderr)."""
    from minkseg.pipeline.cli import run_stage

    import torch

    monkeypatch.chdir(root)
    capsys.readouterr()
    threads = torch.get_num_threads()
    try:
        code = run_stage(stage, stage_function(stage), ["--no-progress", *args])
    finally:
        torch.set_num_threads(threads)  # base.num_threads must not leak into the rest of the test session
    return code, capsys.readouterr().err


def error_line(stderr: str, stage: str) -> str:
    """The one ``minkseg <stage>: error: ...`` line (and assert there is exactly one and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"minkseg {stage}: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def accepted(root: Path, stage: str, capsys, monkeypatch) -> str:
    """Run a stage that must succeed: exit 0 and nothing partial left behind; returns its stderr (warnings)."""
    code, stderr = run_stage_here(root, stage, capsys, monkeypatch)
    assert code == 0, stderr
    assert leftovers(root) == []
    return stderr


def refused(root: Path, stage: str, capsys, monkeypatch) -> str:
    """Run a stage that must refuse: exit 2, one error line, outputs and inputs unchanged, nothing partial."""
    before = snapshot(root)
    code, stderr = run_stage_here(root, stage, capsys, monkeypatch)
    assert code == 2
    line = error_line(stderr, stage)
    assert snapshot(root) == before and leftovers(root) == []
    return line


def snapshot(root: Path, under: str = ".") -> dict[str, str]:
    """sha256 of every file below ``root/under`` (relative paths), to prove that nothing changed."""
    base = root / under
    out: dict[str, str] = {}
    if not base.exists():
        return out
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(root: Path) -> list[str]:
    """Work-in-progress files/folders of the atomic writers anywhere below ``root``."""
    found = set()
    for pattern in PARTIAL_PATTERNS:
        found.update(str(p.relative_to(root)) for p in root.rglob(pattern))
    return sorted(found)


def build_workspace(root: Path, train: bool = True) -> Path:
    """download -> preprocess -> voxelize (-> train -> evaluate) of the tiny synthetic dataset into ``root``."""
    from minkseg.config import params_from_dict
    from minkseg.pipeline.paths import PipelinePaths

    root.mkdir(parents=True, exist_ok=True)
    params_dict = tiny_params()
    write_params(root, params_dict)
    params = params_from_dict(copy.deepcopy(params_dict))
    paths = PipelinePaths(root)
    for stage in ("download", "preprocess", "voxelize"):
        stage_function(stage)(params, paths, progress=False)
    if train:
        import torch

        threads = torch.get_num_threads()
        try:
            stage_function("train")(params, paths, progress=False)
            stage_function("evaluate")(params, paths, progress=False)
        finally:
            torch.set_num_threads(threads)
    return root


def copy_workspace(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


_BUILT: dict[str, Path] = {}


def shared_workspace(tmp_path_factory: Any, train: bool = True) -> Path:
    """The session's pristine workspace (built on first use, whichever test module asks first); copy, never edit."""
    key = "trained" if train else "data"
    if key not in _BUILT:
        _BUILT[key] = build_workspace(tmp_path_factory.mktemp(f"robust-{key}"), train=train)
    return _BUILT[key]


DVC = shutil.which("dvc", path=str(Path(PYTHON).parent)) or shutil.which("dvc")


def dvc_env() -> dict[str, str]:
    env = child_env()
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DVC_ROOT", None)
    return env


def make_dvc_repo(root: Path, **overrides: Any) -> Path:
    """A fresh git repository holding this one's tracked files (what a clone has) and the tiny params."""
    return git_copy_of_repo(root, lambda copy: write_params(copy, tiny_params(**overrides)))


def git_copy_of_repo(root: Path, write_params_into: Callable[[Path], Any]) -> Path:
    """What a clone has (tracked and unignored files, without tests/ and benchmarks/), params written by the caller,
    committed in a fresh git repository so DVC sees a normal project."""
    root.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file() and not name.startswith(("tests/", "benchmarks/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    write_params_into(root)
    for cmd in (["init", "-q"], ["add", "-A"], ["-c", "user.email=ci@minkseg", "-c", "user.name=ci", "commit",
                                                "-qm", "fixture"]):
        subprocess.run(["git", *cmd], cwd=root, check=True, capture_output=True)
    return root


def run_dvc(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([DVC, *args], cwd=root, env=dvc_env(), capture_output=True, text=True, timeout=timeout)


_EVALUATED: dict[Path, Path] = {}


def evaluator_predictions(root: Path, tmp_path_factory: Any) -> Path:
    """Per-point predictions of the evaluate stage's code path (``<scene>.npy``) for the workspace's evaluation
    split: what `minkseg predict` must reproduce for the same scene. Computed once per session and workspace."""
    if root not in _EVALUATED:
        from minkseg.config import params_from_dict
        from minkseg.engine.evaluator import Evaluator
        from minkseg.pipeline.model import load_trained_model
        from minkseg.pipeline.paths import PipelinePaths
        from minkseg.pipeline.voting import VotingScenes

        import yaml

        params = params_from_dict(yaml.safe_load((root / "params.yaml").read_text()))
        paths = PipelinePaths(root)
        model, payload = load_trained_model(paths.model)
        evaluator = Evaluator.from_params(params, model, num_classes=int(payload["model"]["out_channels"]),
                                          class_names=payload["class_names"], device="cpu")
        out_dir = tmp_path_factory.mktemp("evaluator-predictions")
        evaluator.evaluate(VotingScenes(params, paths), predictions_dir=out_dir, progress=False)
        _EVALUATED[root] = out_dir
    return _EVALUATED[root]
