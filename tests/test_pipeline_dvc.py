"""The real product path: `dvc repro` in a temporary copy of the repository, on a tiny synthetic dataset.

Checks that every metric key appears, that a second repro does nothing, that a train param re-runs only train,
evaluate and submit, and that a training killed with SIGKILL resumes from its checkpoint under the next `dvc repro`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.robust_workspace import git_copy_of_repo

REPO = Path(__file__).resolve().parent.parent
DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")

pytestmark = pytest.mark.skipif(DVC is None, reason="dvc is not installed")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env.pop("DVC_ROOT", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _tiny_params(path: Path, **train) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["download"]["synthetic"].update(num_train=3, num_val=2, num_test=1, points_per_scene=3000)
    params["preprocess"]["num_workers"] = 1
    params["voxelize"]["voxel_size"] = 0.1
    params["train"].update(model="Res16UNet14A", iterations=6, batch_size=2, val_every=3, checkpoint_every=2,
                           log_every=1, num_workers=0)
    params["train"].update(train)
    params["evaluate"]["export_count"] = 1
    params["mlflow"]["enabled"] = True
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([DVC, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh git repository holding the tracked files of this one (what a clone would have)."""
    return git_copy_of_repo(tmp_path_factory.mktemp("minkseg-repo"), lambda root: _tiny_params(root / "params.yaml"))


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_repro_end_to_end_then_nothing_then_only_train_and_evaluate(repo: Path):
    first = _run(repo, "repro")
    assert _stages_run(first.stdout) == {"check_params", "download", "preprocess", "voxelize", "train", "evaluate",
                                         "submit"}
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    for key in ("miou", "oa", "macc", "map", "per_class_iou", "per_class_acc", "confusion_matrix"):
        assert key in metrics, key
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["per_class_iou"]) == 20
    train = json.loads((repo / "metrics" / "train.json").read_text())
    assert train["iterations"] == 6
    assert (repo / "metrics" / "train.csv").read_text().startswith("step,loss,lr")
    assert (repo / "metrics" / "confusion.csv").read_text().startswith("actual,predicted")
    assert list((repo / "predictions").glob("*.ply")) and list((repo / "predictions").glob("*.png"))
    assert (repo / "mlflow.db").exists()

    shown = _run(repo, "metrics", "show")
    assert "miou" in shown.stdout

    again = _run(repo, "repro")
    assert _stages_run(again.stdout) == set()

    _tiny_params(repo / "params.yaml", lr=0.05)
    changed = _run(repo, "repro")
    assert _stages_run(changed.stdout) == {"check_params", "train", "evaluate", "submit"}  # the check re-runs nothing else
    assert json.loads((repo / "submission" / "summary.json").read_text())["validated"] is True


def _outputs(repo: Path) -> dict[str, bytes]:
    names = ["models/model.pt", "metrics/eval.json", "metrics/train.json", "metrics/train.csv", "metrics/val.csv",
             "metrics/confusion.csv"]
    return {name: (repo / name).read_bytes() for name in names}


def test_bad_param_stops_repro_before_any_output_is_deleted(repo: Path):
    """Issue 17, item 8: DVC deletes a stage's outputs before it runs it, so the train stage refusing a bad
    train.lr came after models/model.pt and the curves were gone. The check_params stage runs first."""
    if not (repo / "models" / "model.pt").exists():  # run alone: make the outputs first
        _run(repo, "repro")
    before = _outputs(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    good, params["train"]["lr"] = params["train"]["lr"], -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = _run(repo, "repro", check=False)
    assert failed.returncode != 0
    assert _stages_run(failed.stdout) == {"check_params"}
    assert "minkseg check_params: error: params.yaml: train.lr: must be > 0 (got -1)" in failed.stderr
    assert _outputs(repo) == before  # nothing deleted, nothing changed
    params["train"]["lr"] = good  # back to the last good run's value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fixed = _run(repo, "repro")
    assert _stages_run(fixed.stdout) == {"check_params"}  # its file comes back byte for byte: nothing else re-runs
    assert _outputs(repo) == before


def test_killed_training_resumes_from_checkpoint(repo: Path):
    _tiny_params(repo / "params.yaml", iterations=40, checkpoint_every=2, val_every=0)
    proc = subprocess.Popen([DVC, "repro"], cwd=repo, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    checkpoint = repo / "data" / "checkpoints" / "last.pt"
    before = checkpoint.stat().st_mtime if checkpoint.exists() else 0.0
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and checkpoint.stat().st_mtime > before + 1e-6 and \
                (repo / "metrics" / "train.csv").exists():
            time.sleep(1.0)
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed: " + proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)

    resumed = _run(repo, "repro")
    assert "train" in _stages_run(resumed.stdout)
    train = json.loads((repo / "metrics" / "train.json").read_text())
    assert train["iterations"] == 40 and train["resumed_from"] and train["resumed_from"] > 0
