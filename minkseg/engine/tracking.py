"""Experiment tracking: one MLflow store (sqlite) at the repository root, or nothing at all.

``dvc exp run --temp`` and queued experiments run in copies of the repository under ``.dvc/tmp/exps/``; a store
relative to the working directory would scatter runs over temporary folders that DVC deletes. So the store is
always ``<repo root>/mlflow.db`` (artifacts in ``<repo root>/mlartifacts``), where the root is found from
``DVC_ROOT`` (set by DVC for stage commands) or git, climbing out of ``.dvc/tmp/exps`` copies. With tracking
disabled, :class:`Tracker` is a no-op and MLflow is never imported -- nothing tries to reach a server.

One pipeline run is one MLflow run: the first tracked stage of a ``dvc repro`` / ``dvc exp run`` creates a parent
run (named after the DVC experiment, else after the model and the params changed from ``HEAD``), and every stage
of that invocation logs into its own child run below it (:mod:`minkseg.engine.provenance` says how stages find
their invocation). Why parent + children rather than one run: the train and evaluate stages are separate
processes that DVC may run in different invocations (a changed ``evaluate.*`` param re-runs only evaluate), and
each keeps its own true start/end time, params and curves; the parent carries the run's name, tags, dataset and
headline metrics for the runs table, and spans from the first stage's start to the last stage's end.

Two runs at once (two `dvc exp run --temp`, or a train and an evaluate) share that one sqlite file. MLflow creates
and migrates its tables on first use and two processes doing so together crash half-way (a duplicate
``ALTER TABLE``, an alembic version mismatch); so opening the store and creating the run happen under an
exclusive lock on ``mlflow.db.lock`` next to the database. Logging afterwards is ordinary sqlite locking.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

try:
    import fcntl
except ImportError:  # not POSIX: no inter-process lock (concurrent first use of a new store is then unsafe)
    fcntl = None  # type: ignore[assignment]

from minkseg.config import MlflowParams

__all__ = ["find_repo_root", "default_tracking_uri", "run_tags", "check_store", "store_lock", "Tracker", "MlflowTracker",
           "ParentRun", "make_tracker", "flatten_metrics", "INVOCATION_TAG", "EXPERIMENT_KIND_TAG",
           "MODEL_TRAINING_KIND"]

log = logging.getLogger(__name__)

INVOCATION_TAG = "minkseg.invocation"  # the dvc process a parent run belongs to (provenance.dvc_invocation)
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: it nests a run below its parent in the UI
# MLflow 3 opens an experiment in its GenAI view unless this tag says otherwise; this value selects the
# model-training view (runs table, charts, models), which is what a segmentation network's runs need.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def _outside_dvc_temp(path: Path) -> Path:
    """``/repo/.dvc/tmp/exps/<x>/...`` -> ``/repo``; any other path unchanged."""
    parts = path.parts
    for index in range(len(parts) - 2):
        if parts[index] == ".dvc" and parts[index + 1] == "tmp" and parts[index + 2] == "exps":
            return Path(*parts[:index])
    return path


def find_repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The main repository's root: $DVC_ROOT, else ``git rev-parse --show-toplevel``, else the cwd."""
    if start is None and os.environ.get("DVC_ROOT"):
        return _outside_dvc_temp(Path(os.environ["DVC_ROOT"]).resolve())
    base = Path(start) if start is not None else Path.cwd()
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=base, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        root = Path(top) if top else base
    except (OSError, subprocess.SubprocessError):
        root = base
    return _outside_dvc_temp(root.resolve())


def default_tracking_uri(root: str | os.PathLike[str] | None = None) -> str:
    """``sqlite:///<absolute repo root>/mlflow.db``."""
    base = Path(root) if root is not None else find_repo_root()
    return "sqlite:///" + (base.resolve() / "mlflow.db").as_posix()


def run_tags(root: str | os.PathLike[str] | None = None, stage: str | None = None) -> dict[str, str]:
    """Tags that tie a run to its code and experiment: git commit, DVC experiment name/baseline, stage."""
    from minkseg.engine.provenance import git_commit

    tags: dict[str, str] = {}
    commit = git_commit(Path(root) if root is not None else Path.cwd())
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    if stage:
        tags["stage"] = stage
    return tags


def _sqlite_file(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    name = tracking_uri[len("sqlite:///"):]
    return None if name in ("", ":memory:") else Path(name if name.startswith("/") else name)


def check_store(tracking_uri: str) -> None:
    """Refuse a sqlite store that is not a SQLite database (random bytes, a truncated copy) with one line naming
    the file and the fix; MLflow would fail on it with a long SQLAlchemy traceback. A missing or empty file is
    fine (MLflow creates the tables), and a store busy with another writer is left to MLflow's own waiting."""
    import sqlite3

    from minkseg.errors import EngineError

    database = _sqlite_file(tracking_uri)
    if database is None or not database.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:  # locked by a writer, or unreadable: MLflow reports those itself
        return
    except sqlite3.DatabaseError as exc:
        raise EngineError(f"{database}: not a readable SQLite database ({exc}); move it away (e.g. mv {database} "
                          f"{database}.broken) to start a new MLflow store, or set mlflow.enabled: false") from None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Exclusive across processes for a sqlite store (``<db>.lock``); a no-op for any other store."""
    database = _sqlite_file(tracking_uri)
    if database is None or fcntl is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Tracker:
    """The tracking interface; this base class records nothing (tracking disabled, or a non-zero DDP rank)."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Headline numbers of the whole pipeline run (the parent run's columns in the runs table)."""

    def log_dataset(self, version: Any, context: str) -> None:
        """The dataset (a :class:`~minkseg.engine.provenance.DataVersion`) as an input of this run and its parent."""

    def log_model(self, weights: str | os.PathLike[str], description: Mapping[str, Any]) -> str | None:
        """A MinkSeg model file as a registrable MLflow model of this run (:mod:`minkseg.engine.mlflow_model`);
        returns its URI (None when not tracking)."""
        return None

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self.finish("FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED"))


@dataclass(frozen=True)
class ParentRun:
    """The pipeline run a stage's run belongs to: found by ``invocation`` among the experiment's runs, else created
    with this name, these tags and params (the first stage of an invocation creates it)."""

    name: str
    invocation: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


class MlflowTracker(Tracker):
    """Logs to one MLflow run through MlflowClient (no global "active run" state), nested below a parent run."""

    def __init__(self, tracking_uri: str, experiment_name: str, *, run_name: str | None = None,
                 run_id: str | None = None, artifact_root: Path | None = None,
                 tags: Mapping[str, str] | None = None, parent: ParentRun | None = None,
                 start_time_ms: int | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        check_store(tracking_uri)
        self.parent_run_id: str | None = None
        with store_lock(tracking_uri):  # the first access creates/migrates the tables: one process at a time
            self.client = MlflowClient(tracking_uri=tracking_uri)
            if run_id is not None:  # continue a resumed training run (and the pipeline run it belongs to)
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
                self.parent_run_id = self._reopen_parent(run_id, parent)
            else:
                experiment_id = self._experiment(experiment_name, artifact_root)
                child_tags = dict(tags or {})
                if parent is not None:
                    self.parent_run_id = self._parent(experiment_id, parent, start_time_ms)
                    child_tags[PARENT_TAG] = self.parent_run_id
                run = self.client.create_run(experiment_id, start_time=start_time_ms, run_name=run_name,
                                             tags=child_tags)
                self.run_id = run.info.run_id
        self._finished = False

    def _parent(self, experiment_id: str, parent: ParentRun, start_time_ms: int | None) -> str:
        """The invocation's parent run, reopened; or a new one when this stage is the invocation's first."""
        if parent.invocation is not None:
            found = self.client.search_runs([experiment_id], f"tags.`{INVOCATION_TAG}` = '{parent.invocation}'",
                                            max_results=1)
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                return run_id
        tags = {**parent.tags, **({INVOCATION_TAG: parent.invocation} if parent.invocation else {})}
        run = self.client.create_run(experiment_id, start_time=start_time_ms, run_name=parent.name, tags=tags)
        self._log_params(run.info.run_id, parent.params)
        return run.info.run_id

    def _reopen_parent(self, run_id: str, parent: ParentRun | None) -> str | None:
        """A resumed run's parent becomes this invocation's pipeline run, so later stages join it."""
        parent_id = self.client.get_run(run_id).data.tags.get(PARENT_TAG)
        if parent_id is not None:
            self.client.update_run(parent_id, status="RUNNING")
            if parent is not None and parent.invocation is not None:
                self.client.set_tag(parent_id, INVOCATION_TAG, parent.invocation)
        return parent_id

    def _experiment(self, name: str, artifact_root: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # a store from before: open it as model training too
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
            return experiment.experiment_id
        location = (artifact_root / name).resolve().as_uri() if artifact_root is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException:  # created concurrently by another run: use theirs
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(key), str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(key), float(value), now, int(step or 0)) for key, value in metrics.items()
                 if value is not None and math.isfinite(float(value))]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start:start + 1000])

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._log_params(self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._log_metrics(self.run_id, metrics, step)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self._log_metrics(self.parent_run_id or self.run_id, metrics)

    def log_dataset(self, version: Any, context: str) -> None:
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        dataset = Dataset(name=version.name, digest=version.digest, source_type="local",
                          source=json.dumps({"uri": version.source}))
        for run_id in dict.fromkeys(filter(None, (self.parent_run_id, self.run_id))):
            self.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_model(self, weights: str | os.PathLike[str], description: Mapping[str, Any]) -> str | None:
        from minkseg.engine.mlflow_model import log_segmentation_model

        uri = log_segmentation_model(self.tracking_uri, self.run_id, weights, dict(description))
        for run_id in filter(None, (self.run_id, self.parent_run_id)):  # where to find it from the runs table
            self.client.set_tag(run_id, "model_uri", uri)
        return uri

    def finish(self, status: str = "FINISHED") -> None:
        """End this run now, and its parent with it (a later stage of the same invocation reopens the parent and
        moves its end): the parent's span is the pipeline's, and it never stays RUNNING after a last stage."""
        if not self._finished:
            now = int(time.time() * 1000)
            self.client.set_terminated(self.run_id, status=status, end_time=now)
            if self.parent_run_id is not None:
                self.client.set_terminated(self.parent_run_id, status=status, end_time=now)
            self._finished = True


def make_tracker(params: MlflowParams | None, *, stage: str, run_name: str | None = None,
                 log_params: Mapping[str, Any] | None = None, run_id: str | None = None,
                 repo_root: str | os.PathLike[str] | None = None, is_main: bool = True,
                 workdir: str | os.PathLike[str] | None = None, model: str | None = None,
                 dataset: str | None = None, device: str | None = None,
                 start_time_ms: int | None = None) -> Tracker:
    """A tracker for one stage run: MLflow when ``params.enabled`` (on the main rank), else a no-op.

    The run is a child of its pipeline run (see the module doc). ``run_id`` continues an existing run (a resumed
    training). ``log_params`` (``Params.flat()``) are logged on creation and compared with ``params.yaml`` at
    ``HEAD`` of ``workdir`` (the stage's workspace, default the cwd) to name the pipeline run and fill its
    ``params_diff`` tag; ``model`` names it when DVC gives no experiment name. ``dataset`` (a dataset name) is
    logged as a run input with DVC's hash of the preprocessed data as its digest. ``device`` becomes a tag.
    ``start_time_ms`` defaults to this process's start.
    """
    if params is None or not params.enabled or not is_main:
        return Tracker()
    from minkseg.engine import provenance

    root = Path(repo_root) if repo_root is not None else find_repo_root()
    workdir = Path(workdir) if workdir is not None else Path.cwd()
    uri = params.tracking_uri or default_tracking_uri(root)
    flat = dict(log_params or {})
    changes = provenance.params_changes(flat, provenance.baseline_params(workdir)) if flat else {}
    version = provenance.data_version(workdir, dataset) if dataset else None
    tags = run_tags(workdir, stage)
    if device:
        tags["device"] = device
    if dataset:
        tags["dataset"] = dataset
    if version is not None:
        tags["data_version"] = version.digest
    if flat:
        tags["params_diff"] = provenance.describe_changes(changes, arrows=True) or "none (params.yaml as at HEAD)"
    parent_tags = {key: value for key, value in tags.items() if key != "stage"}
    parent_tags["mlflow.note.content"] = _description(parent_tags)
    parent = ParentRun(name=provenance.pipeline_run_name(model or "model", changes, os.environ.get("DVC_EXP_NAME")),
                       invocation=provenance.dvc_invocation(), tags=parent_tags, params=flat)
    tracker = MlflowTracker(uri, params.experiment_name, run_name=run_name or stage, run_id=run_id,
                            artifact_root=root / "mlartifacts", tags=tags, parent=parent,
                            start_time_ms=start_time_ms if start_time_ms is not None else provenance.process_start_ms())
    if run_id is None and flat:
        tracker.log_params(flat)
    elif run_id is not None:
        tracker.set_tags(tags)
    if version is not None:
        tracker.log_dataset(version, "training" if stage == "train" else "evaluation")
    log.info("MLflow run %s (pipeline run %s) in %s", tracker.run_id, tracker.parent_run_id, uri)
    return tracker


def _description(tags: Mapping[str, str]) -> str:
    """The parent run's description (MLflow shows it on the run page): what made it, at a glance."""
    lines = [f"- **{label}**: {tags[key]}" for key, label in (
        ("dvc_exp_name", "DVC experiment"), ("params_diff", "params changed from HEAD"),
        ("dataset", "dataset"), ("data_version", "data version (DVC md5 of data/preprocessed)"),
        ("git_commit", "git commit"), ("device", "device")) if tags.get(key)]
    return "\n".join(lines)


def flatten_metrics(summary: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
    """The numeric leaves of a metrics summary as MLflow metric keys, e.g. ``eval/miou``, ``eval/per_class_iou/wall``.

    Undefined values (None/NaN) and the confusion matrix (logged as a PNG instead) are left out.
    """
    flat: dict[str, float] = {}

    def walk(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for name, item in value.items():
                walk(f"{key}/{name}", item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            flat[key] = float(value)

    for name, value in summary.items():
        if name != "confusion_matrix":
            walk(f"{prefix}/{name}" if prefix else name, value)
    return flat
