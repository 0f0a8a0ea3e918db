"""MLflow tracking into a sqlite store at the repo root; switched off, MLflow is never imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minkseg.config import MlflowParams
from minkseg.engine.tracking import Tracker, default_tracking_uri, find_repo_root, flatten_metrics, make_tracker
from minkseg.metrics import summarize

REPO = Path(__file__).resolve().parents[1]


def test_store_lives_at_the_main_repo_root_even_inside_dvc_temp_experiments(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    temp_copy = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    temp_copy.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(temp_copy))
    assert find_repo_root() == repo.resolve()
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert find_repo_root() == repo.resolve()
    assert default_tracking_uri(repo) == f"sqlite:///{repo.resolve().as_posix()}/mlflow.db"
    assert default_tracking_uri(repo).startswith("sqlite:////")


def test_logs_params_metrics_tags_and_artifacts_to_sqlite(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("DVC_EXP_NAME", "brave-lynx")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = MlflowParams(enabled=True, experiment_name="unit", tracking_uri=None)
    tracker = make_tracker(params, stage="train", log_params={"train.lr": 0.1, "train.model": "Res16UNet14A"})
    assert (tmp_path / "mlflow.db").is_file()
    for step, loss in enumerate([1.5, 1.0, 0.5], start=1):
        tracker.log_metrics({"train/loss": loss, "train/lr": 0.1 / step, "skipped": float("nan")}, step=step)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    tracker.log_artifact(weights, "model")
    tracker.finish()

    resumed = make_tracker(params, stage="train", run_id=tracker.run_id)
    resumed.log_metrics({"train/loss": 0.25}, step=4)
    resumed.finish()

    client = MlflowClient(tracking_uri=default_tracking_uri(tmp_path))
    run = client.get_run(tracker.run_id)
    assert run.data.params == {"train.lr": "0.1", "train.model": "Res16UNet14A"}
    assert run.data.tags["dvc_exp_name"] == "brave-lynx" and run.data.tags["stage"] == "train"
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(tracker.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.5), (2, 1.0), (3, 0.5), (4, 0.25)]
    assert "skipped" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(tracker.run_id, "model")] == ["model/model.pt"]
    assert str(tmp_path.resolve()) in client.get_experiment_by_name("unit").artifact_location


def test_disabled_tracking_never_imports_mlflow(tmp_path):
    code = (
        "import sys\n"
        "from minkseg.config import MlflowParams\n"
        "from minkseg.engine.tracking import make_tracker\n"
        "import minkseg.engine\n"
        "t = make_tracker(MlflowParams(enabled=False, experiment_name='x', tracking_uri=None), stage='train')\n"
        "t.log_params({'a': 1}); t.log_metrics({'m': 1.0}, step=1); t.finish()\n"
        "assert not [m for m in sys.modules if m.startswith('mlflow')], 'mlflow was imported'\n"
        "print('ok', type(t).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok Tracker"
    assert not (tmp_path / "mlflow.db").exists()


def test_non_main_ranks_get_a_no_op_tracker():
    params = MlflowParams(enabled=True, experiment_name="x", tracking_uri="sqlite:////nonexistent/dir/db")
    assert type(make_tracker(params, stage="train", is_main=False)) is Tracker


def test_flatten_metrics_for_tracking():
    summary = summarize(np.array([[3, 1], [0, 0]]), ["wall", "shower curtain"])
    flat = flatten_metrics(summary)
    assert flat["eval/miou"] == pytest.approx(0.375) and flat["eval/per_class_iou/wall"] == pytest.approx(0.75)
    assert "eval/map" not in flat and "eval/per_class_acc/shower curtain" not in flat  # None / NaN left out
    assert not [key for key in flat if "confusion" in key]
