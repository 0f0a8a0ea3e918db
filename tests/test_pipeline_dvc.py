"""The real product path: `dvc repro` in a temporary copy of the repository, on a tiny synthetic dataset.

Checks the metrics files as `dvc metrics show` reads them, that a second repro does nothing, that a train param
re-runs only check_params, train, evaluate and submit, the MLflow store as its client reads it (one parent run per pipeline run, child
runs per stage, the logged model loading and predicting in a fresh process), a committed baseline with
experiments beside it (`dvc exp run`, also `--temp`), and that a training killed with SIGKILL resumes from its
checkpoint under the next `dvc repro`; a bad param stops `dvc repro` before any output is deleted.
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

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

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
                           log_every=1, num_workers=0, val_subset_every=2, val_subset_scenes=1)
    params["train"].update(train)
    params["evaluate"]["export_count"] = 1
    params["mlflow"]["enabled"] = True
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _run(cwd: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run([DVC, *args], cwd=cwd, env={**_env(), **env}, capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh git repository holding the tracked files of this one (what a clone would have)."""
    return git_copy_of_repo(tmp_path_factory.mktemp("minkseg-repo"), lambda root: _tiny_params(root / "params.yaml"))


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def _store(repo: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{repo.resolve()}/mlflow.db")
    return client, client.get_experiment_by_name("minkseg").experiment_id


def _pipeline_runs(repo: Path) -> list:
    """Parent runs, oldest first."""
    client, experiment = _store(repo)
    runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


def _children(repo: Path, parent) -> dict:
    client, experiment = _store(repo)
    runs = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {run.info.run_name: run for run in runs}


def _numbers(tree) -> list:
    if isinstance(tree, dict):
        return [n for value in tree.values() for n in _numbers(value)]
    return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def test_repro_end_to_end_then_nothing_then_only_train_and_evaluate(repo: Path):
    first = _run(repo, "repro")
    assert _stages_run(first.stdout) == {"check_params", "download", "preprocess", "voxelize", "train", "evaluate",
                                         "submit"}
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    assert list(metrics) == ["miou", "oa", "macc", "map", "val_miou", "best_iter", "train_s", "n_params", "scenes",
                             "points"]
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["scenes"] == 2
    train = json.loads((repo / "metrics" / "train.json").read_text())
    assert train["iterations"] == 6
    assert (metrics["val_miou"], metrics["best_iter"]) == (train["best_val_miou"], train["best_iteration"])
    assert (repo / "metrics" / "train.csv").read_text().startswith("step,loss,lr")
    assert [line.split(",")[0] for line in (repo / "metrics" / "val_subset.csv").read_text().split()] == \
        ["step", "2", "4", "6"]
    assert (repo / "metrics" / "per_class.csv").read_text().startswith("class,iou,acc,ap\n")
    assert (repo / "metrics" / "confusion.csv").read_text().startswith("actual,predicted")
    assert list((repo / "predictions").glob("*.ply")) and list((repo / "predictions").glob("*.png"))

    # `dvc metrics show`: the headline file alone, a handful of numbers, one row that fits 120 columns
    shown = json.loads(_run(repo, "metrics", "show", "--json").stdout)
    files = shown[""]["data"]
    assert list(files) == ["metrics/eval.json"] and len(_numbers(files["metrics/eval.json"]["data"])) <= 15
    table = _run(repo, "metrics", "show", COLUMNS="200").stdout
    assert "miou" in table and max(len(line) for line in table.splitlines()) <= 120, table
    plots = json.loads(_run(repo, "plots", "show", "--json", "--split").stdout)["data"]
    assert {"Validation mIoU", "Per-class IoU", "Per-class accuracy", "Per-class AP"} <= set(plots), list(plots)

    # MLflow: one pipeline run with a child run per tracked stage, read through MLflow's client
    client, experiment_id = _store(repo)
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    [parent] = _pipeline_runs(repo)
    children = _children(repo, parent)
    assert set(children) == {"train", "evaluate"}
    assert parent.info.run_name == "Res16UNet14A (params as committed)"
    assert parent.info.status == "FINISHED" and parent.data.params["train.lr"] == "0.0025"
    assert parent.data.metrics["miou"] == pytest.approx(metrics["miou"])
    assert parent.data.metrics["val_miou"] == pytest.approx(metrics["val_miou"])
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    data_md5 = next(out["md5"] for out in lock["stages"]["preprocess"]["outs"]
                    if out["path"] == "data/preprocessed").removesuffix(".dir")
    for run in (parent, *children.values()):
        tags = run.data.tags
        assert tags["git_commit"] and tags["device"] == "cpu" and tags["dataset"] == "synthetic-scannet"
        assert tags["data_version"] == data_md5 and tags["params_diff"].startswith("none")
        [dataset] = [entry.dataset for entry in run.inputs.dataset_inputs]
        assert (dataset.name, dataset.digest) == ("synthetic-scannet", data_md5)
    train_run, eval_run = children["train"], children["evaluate"]
    assert train_run.data.params["train.iterations"] == "6"
    assert train_run.data.metrics["val_subset/miou"] >= 0 and eval_run.data.metrics["eval/miou"] == \
        pytest.approx(metrics["miou"])
    # true start/end times: each run spans its stage's own measured seconds, the parent spans both stages
    assert train_run.info.end_time - train_run.info.start_time > 1000 * train["train_seconds"]
    assert eval_run.info.end_time - eval_run.info.start_time > 1000 * eval_run.data.metrics["eval/seconds"]
    assert parent.info.start_time <= train_run.info.start_time and parent.info.end_time >= eval_run.info.end_time
    assert train_run.info.end_time <= eval_run.info.start_time

    again = _run(repo, "repro")
    assert _stages_run(again.stdout) == set()
    assert len(_pipeline_runs(repo)) == 1  # nothing ran, nothing logged

    _tiny_params(repo / "params.yaml", lr=0.05)
    changed = _run(repo, "repro")
    assert _stages_run(changed.stdout) == {"check_params", "train", "evaluate", "submit"}  # the check re-runs nothing else
    assert json.loads((repo / "submission" / "summary.json").read_text())["validated"] is True
    first_parent, second = _pipeline_runs(repo)
    assert second.info.run_name == "Res16UNet14A train.lr=0.05"
    assert second.data.tags["params_diff"] == "train.lr: 0.0025 -> 0.05"
    assert set(_children(repo, second)) == {"train", "evaluate"}


def _stale_after_touching(repo: Path, module: str) -> tuple[dict, set[str]]:
    """`dvc status` (and the stages `dvc repro --dry` would run) with one line appended to ``module``; the file is
    restored afterwards, so the pipeline is up to date again for the next test."""
    if json.loads(_run(repo, "status", "--json").stdout) != {}:  # run alone (the copied dvc.lock is the repo's)
        _run(repo, "repro")
    assert json.loads(_run(repo, "status", "--json").stdout) == {}
    path = repo / module
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\n# touched by a test\n")
        status = json.loads(_run(repo, "status", "--json").stdout)
        would_run = _stages_run(_run(repo, "repro", "--dry").stdout)
    finally:
        path.write_bytes(original)
    assert json.loads(_run(repo, "status", "--json").stdout) == {}
    return status, would_run


def test_touching_a_training_only_module_leaves_the_data_stages_up_to_date(repo: Path):
    """Issue 14: each stage's deps are the modules it imports (tests/test_pipeline_layout.py keeps them so), so
    editing the augmentations re-runs training and what reads its model, not check_params/download/preprocess/
    voxelize."""
    status, would_run = _stale_after_touching(repo, "minkseg/data/augment.py")
    assert set(status) == {"train"}, status
    [(dep, change)] = status["train"][0]["changed deps"].items()  # train imports all of minkseg/data: the folder
    assert dep in ("minkseg/data", "minkseg/data/augment.py") and change == "modified", status
    # `repro --dry` runs nothing, so the stages reading train's model (evaluate, submit) are not stale yet; they run
    # after train rewrites models/model.pt, as the train-param change of the end-to-end test shows
    assert would_run == {"train"}, would_run
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert {name for name, stage in stages.items() if "models/model.pt" in stage["deps"]} == {"evaluate", "submit"}


def test_touching_the_ply_reader_makes_preprocess_stale(repo: Path):
    status, _ = _stale_after_touching(repo, "minkseg/data/ply.py")
    assert "preprocess" in status, status
    assert status["preprocess"] == [{"changed deps": {"minkseg/data/ply.py": "modified"}}]


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


def test_logged_model_registers_and_predicts_in_a_fresh_process(repo: Path, tmp_path: Path):
    """What the README tells a user: register the train run's model, load it with MLflow alone, predict labels."""
    parent = _pipeline_runs(repo)[-1]
    model_uri = parent.data.tags["model_uri"]
    assert _children(repo, parent)["train"].data.tags["model_uri"] == model_uri
    code = (
        "import sys, numpy as np, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "version = mlflow.register_model(sys.argv[2], 'minkseg')\n"
        "model = mlflow.pyfunc.load_model(f'models:/minkseg/{version.version}', model_config={'voting_angles': [0]})\n"
        "import minkseg\n"
        "scene = np.load(sys.argv[3])\n"
        "points = np.hstack([scene['coords'], scene['colors']]).astype(np.float32)\n"
        "labels = model.predict(points)\n"
        "print(minkseg.__file__, labels.dtype, labels.shape[0], points.shape[0], int(labels.min()), int(labels.max()))\n"
    )
    scene = sorted((repo / "data" / "preprocessed" / "val").glob("*.npz"))[0]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{repo.resolve()}/mlflow.db", model_uri, str(scene)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, dtype, labels, points, low, high = done.stdout.split()[-6:]
    assert "mlartifacts" in module  # minkseg came with the model (code_paths), not from this checkout
    assert dtype == "int64" and labels == points and 0 <= int(low) <= int(high) < 20


def test_committed_baseline_then_experiments_beside_it(repo: Path, tmp_path: Path):
    """What DVC's example project does: commit dvc.lock and the small metrics, then experiment against them."""
    for cmd in (["add", "-A"], ["-c", "user.email=ci@minkseg", "-c", "user.name=ci", "commit", "-qm", "baseline"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, capture_output=True)
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    assert {"dvc.lock", "metrics/eval.json", "metrics/per_class.csv", "metrics/val_subset.csv"} <= set(tracked)
    assert not [name for name in tracked if name.startswith(("data/", "models/model.pt", "mlflow.db", "mlartifacts"))]

    # a fresh clone has the committed lock and metrics but no data: every stage must run
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    status = json.loads(_run(clone, "status", "--json").stdout)
    assert set(status) == set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]), status

    # an experiment in a temporary copy (.dvc/tmp/exps; --queue workers run the same way): beside main in
    # `dvc exp show`, compared with main by `dvc metrics/params/plots diff`, logged to this repository's store
    before = len(_pipeline_runs(repo))
    _run(repo, "exp", "run", "--temp", "-S", "train.lr=0.01", "--name", "lr-0.01")
    listed = json.loads(_run(repo, "exp", "show", "--json").stdout)
    baseline = next(row for row in listed if row.get("rev") != "workspace")
    assert baseline["data"]["metrics"]["metrics/eval.json"]["data"]["miou"] >= 0  # main has numbers, not `!`
    assert [exp["name"] for exp in baseline["experiments"]] == ["lr-0.01"]
    diff = json.loads(_run(repo, "metrics", "diff", "HEAD", "lr-0.01", "--json").stdout)["metrics/eval.json"]
    assert "miou" in diff and "old" in diff["miou"]
    changed = json.loads(_run(repo, "params", "diff", "HEAD", "lr-0.01", "--json").stdout)["params.yaml"]
    assert list(changed) == ["train.lr"] and (changed["train.lr"]["old"], changed["train.lr"]["new"]) == (0.05, 0.01)
    plots = json.loads(_run(repo, "plots", "diff", "HEAD", "lr-0.01", "--json", "--split").stdout)["data"]
    assert "Per-class IoU" in plots
    table = _run(repo, "exp", "show", "--only-changed", "--drop", "Created|.*/", "--no-pager", COLUMNS="250").stdout
    assert "lr-0.01" in table and "train.lr" in table and max(len(line) for line in table.splitlines()) <= 120

    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
    [run] = _pipeline_runs(repo)[before:]
    assert run.info.run_name == run.data.tags["dvc_exp_name"] == "lr-0.01"
    assert set(_children(repo, run)) == {"train", "evaluate"}


def test_killed_training_resumes_from_checkpoint(repo: Path):
    _tiny_params(repo / "params.yaml", iterations=40, checkpoint_every=2, val_every=0, val_subset_every=0)
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
