"""Experiment tracking: one MLflow store (sqlite) at the repository root, or nothing at all.

``dvc exp run --temp`` and queued experiments run in copies of the repository under ``.dvc/tmp/exps/``; a store
relative to the working directory would scatter runs over temporary folders that DVC deletes. So the store is
always ``<repo root>/mlflow.db`` (artifacts in ``<repo root>/mlartifacts``), where the root is found from
``DVC_ROOT`` (set by DVC for stage commands) or git, climbing out of ``.dvc/tmp/exps`` copies. With tracking
disabled, :class:`Tracker` is a no-op and MLflow is never imported -- nothing tries to reach a server.

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
from pathlib import Path
from typing import Any, Iterator, Mapping

try:
    import fcntl
except ImportError:  # not POSIX: no inter-process lock (concurrent first use of a new store is then unsafe)
    fcntl = None  # type: ignore[assignment]

from minkseg.config import MlflowParams

__all__ = ["find_repo_root", "default_tracking_uri", "run_tags", "check_store", "store_lock", "Tracker",
           "MlflowTracker", "make_tracker", "flatten_metrics"]

log = logging.getLogger(__name__)


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
    tags: dict[str, str] = {}
    base = Path(root) if root is not None else Path.cwd()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=base, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        if commit:
            tags["git_commit"] = commit
            tags["mlflow.source.git.commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
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

    from minkseg.engine.errors import EngineError

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

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self.finish("FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED"))


class MlflowTracker(Tracker):
    """Logs to one MLflow run through MlflowClient (no global "active run" state)."""

    def __init__(self, tracking_uri: str, experiment_name: str, *, run_name: str | None = None,
                 run_id: str | None = None, artifact_root: Path | None = None,
                 tags: Mapping[str, str] | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        check_store(tracking_uri)
        with store_lock(tracking_uri):  # the first access creates/migrates the tables: one process at a time
            self.client = MlflowClient(tracking_uri=tracking_uri)
            if run_id is not None:  # continue a resumed training run
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
            else:
                experiment_id = self._experiment(experiment_name, artifact_root)
                run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
                self.run_id = run.info.run_id
        self._finished = False

    def _experiment(self, name: str, artifact_root: Path | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (artifact_root / name).resolve().as_uri() if artifact_root is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another run: use theirs
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(key), str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(str(key), float(value), now, int(step or 0)) for key, value in metrics.items()
                 if value is not None and math.isfinite(float(value))]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        if not self._finished:
            self.client.set_terminated(self.run_id, status=status)
            self._finished = True


def make_tracker(params: MlflowParams | None, *, stage: str, run_name: str | None = None,
                 log_params: Mapping[str, Any] | None = None, run_id: str | None = None,
                 repo_root: str | os.PathLike[str] | None = None, is_main: bool = True) -> Tracker:
    """A tracker for one stage run: MLflow when ``params.enabled`` (on the main rank), else a no-op.

    ``run_id`` continues an existing run (a resumed training). ``log_params`` (e.g. ``Params.flat()``) and the
    :func:`run_tags` are logged on creation.
    """
    if params is None or not params.enabled or not is_main:
        return Tracker()
    root = Path(repo_root) if repo_root is not None else find_repo_root()
    uri = params.tracking_uri or default_tracking_uri(root)
    tags = run_tags(root, stage)
    tracker = MlflowTracker(uri, params.experiment_name, run_name=run_name or stage, run_id=run_id,
                            artifact_root=root / "mlartifacts", tags=tags)
    if run_id is None and log_params:
        tracker.log_params(log_params)
    elif run_id is not None:
        tracker.set_tags(tags)
    log.info("MLflow run %s in %s", tracker.run_id, uri)
    return tracker


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
