"""Issue 6, case 12 (two runs at once in one repository) and case 9 at the DVC level (kill -9 of the whole
`dvc repro`, then the next `dvc repro` continues).

DVC's own lock is what keeps two `dvc repro` apart: the second is refused with DVC's message and changes nothing.
MLflow's sqlite store is shared by runs that DVC does let run together (`dvc exp run --queue` workers, a manual
stage next to a repro); several processes opening a *new* store at once used to crash in MLflow's table
migrations, which minkseg.engine.tracking now serialises.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.robust_workspace import DVC, REPO, child_env, dvc_env, leftovers, make_dvc_repo, run_dvc

KILL_HOOK = REPO / "tests" / "robust_killhook"

_LOGGER = """
import sys
from minkseg.config import MlflowParams
from minkseg.engine.tracking import make_tracker
params = MlflowParams(enabled=True, experiment_name="minkseg", tracking_uri=None)
tracker = make_tracker(params, stage="train", log_params={f"p{i}": i for i in range(120)}, repo_root=sys.argv[1])
for step in range(40):
    tracker.log_metrics({"train/loss": 1.0 / (step + 1), "train/lr": 0.1}, step=step)
tracker.finish()
"""


def test_runs_opening_a_new_mlflow_store_together_all_succeed(tmp_path):
    pytest.importorskip("mlflow")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    runs = [subprocess.Popen([sys.executable, "-c", _LOGGER, str(tmp_path)], env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for code, stderr in outcomes:
        assert code == 0 and "Traceback" not in stderr, stderr
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # each process: its stage's run below a pipeline run of its own (two processes outside DVC: two pipelines)
        assert db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall() == [("FINISHED", 4)]
        per_run = db.execute("SELECT COUNT(*) FROM metrics GROUP BY run_uuid").fetchall()
        assert per_run == [(80,)] * 2
        assert db.execute("SELECT COUNT(*) FROM experiments WHERE name = 'minkseg'").fetchone() == (1,)


def _holds_dvc_lock(root: Path) -> bool:
    try:
        lock = json.loads((root / ".dvc" / "tmp" / "rwlock").read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return bool(lock.get("write"))


@pytest.mark.skipif(DVC is None, reason="dvc is not installed")
def test_second_repro_is_refused_and_a_killed_repro_continues(tmp_path):
    pytest.importorskip("mlflow")
    root = make_dvc_repo(tmp_path / "repo", mlflow__enabled=True)
    env = dvc_env()
    env["PYTHONPATH"] = f"{KILL_HOOK}{os.pathsep}{env['PYTHONPATH']}"
    env.update(MINKSEG_TEST_KILL_AT="last.pt:2", MINKSEG_TEST_KILL_GROUP="1")  # all of `dvc repro` dies in train
    first = subprocess.Popen([DVC, "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not _holds_dvc_lock(root) and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.stdout.read()

        second = run_dvc(root, "repro")  # while the first runs download/preprocess/voxelize
        assert second.returncode != 0
        assert "is busy, it is being blocked by" in second.stderr, second.stderr
        assert "Running stage" not in second.stdout

        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == -signal.SIGKILL, output
    assert "Running stage 'train'" in output and not (root / "models" / "model.pt").exists()

    resumed = run_dvc(root, "repro")  # the machine is back: continue
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    ran = {line.split("'")[1] for line in resumed.stdout.splitlines() if line.startswith("Running stage '")}
    assert ran == {"train", "evaluate", "submit"}  # download, preprocess and voxelize had completed
    assert "resuming from data/checkpoints/last.pt at iteration 2" in resumed.stdout + resumed.stderr
    summary = json.loads((root / "metrics" / "train.json").read_text())
    assert summary["iterations"] == 6 and summary["resumed_from"] == 2
    assert "miou" in json.loads((root / "metrics" / "eval.json").read_text())
    assert leftovers(root) == []
    status = run_dvc(root, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout
    with sqlite3.connect(root / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stages = sorted(row[0] for row in db.execute("SELECT value FROM tags WHERE key = 'stage'"))
        assert stages == ["evaluate", "train"]  # the resumed training kept logging into its own run
