"""What a tracked run belongs to: its pipeline invocation, code version, params change and data version.

A user comparing runs in ``mlflow ui`` asks "which `dvc repro` / `dvc exp run` made this, what did it change, on
which data": this module answers from what DVC and git already know, without importing MLflow.

* The **pipeline invocation**: DVC runs each stage as a child process of one ``dvc`` process (``dvc repro``,
  ``dvc exp run``, or one ``dvc exp exec-run`` per queued experiment). DVC gives a stage no id of that
  invocation, so the nearest ``dvc`` ancestor process, named by host, pid and kernel start time (unique on a
  host), is the id: the train and evaluate stages of one ``dvc repro`` share it, two repros never do.
* The **params change**: the params that differ from ``params.yaml`` at git ``HEAD`` -- what ``dvc params diff``
  shows, and what names a run when DVC gives no experiment name.
* The **data version**: DVC's own hash of ``data/preprocessed`` in ``dvc.lock`` (DVC re-hashes the data and
  re-runs ``preprocess`` before any stage that depends on it, so under ``dvc repro`` the lock entry is the data).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from minkseg.config import flatten

__all__ = ["DataVersion", "git_commit", "dvc_invocation", "baseline_params", "params_changes", "describe_changes",
           "pipeline_run_name", "data_version", "process_start_ms"]

_MAX_NAME = 120  # characters of a run name; the rest of a long params change is in the run's params_diff tag


@dataclass(frozen=True)
class DataVersion:
    """A dataset as MLflow's run inputs show it: name, DVC's content hash, and where it lives."""

    name: str
    digest: str
    source: str


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(cwd: str | os.PathLike[str] = ".") -> str | None:
    """``git rev-parse HEAD`` of the workspace the stage runs in (a DVC temp copy's HEAD is the baseline)."""
    out = _git(Path(cwd), "rev-parse", "HEAD")
    return out.strip() or None if out else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces): state, ppid, ..."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def _cmdline(pid: int) -> list[str]:
    try:
        return [part for part in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                if part]
    except OSError:
        return []


def _is_dvc(argv: list[str]) -> bool:
    head = [os.path.basename(part) for part in argv[:3]]
    return "dvc" in head[:2] or head[1:3] == ["-m", "dvc"]


def dvc_invocation() -> str | None:
    """``host:pid:start`` of the ``dvc`` process that runs this stage; None outside DVC or without /proc."""
    if not os.environ.get("DVC_STAGE"):  # DVC sets it for every stage command; a stage run by hand has none
        return None
    pid = os.getppid()
    for _ in range(32):
        stat = _proc_stat(pid)
        if stat is None or pid <= 1:
            return None
        if _is_dvc(_cmdline(pid)):
            return f"{socket.gethostname()}:{pid}:{stat[19]}"  # field 22 of stat: start time in clock ticks
        pid = int(stat[1])
    return None


def baseline_params(cwd: str | os.PathLike[str] = ".", name: str = "params.yaml") -> dict[str, Any] | None:
    """``params.yaml`` at git ``HEAD``, flattened; None without git history or a committed file."""
    text = _git(Path(cwd), "show", f"HEAD:{name}")
    if text is None:
        return None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return flatten(loaded) if isinstance(loaded, dict) else None


def params_changes(current: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """``{key: (baseline value, current value)}`` for every key that differs (a new key's baseline is None)."""
    if baseline is None:
        return {}
    return {key: (baseline.get(key), value) for key, value in current.items() if baseline.get(key) != value}


def describe_changes(changes: Mapping[str, tuple[Any, Any]], arrows: bool = False) -> str:
    """``train.lr=0.05, train.iterations=40`` (or ``train.lr: 0.0025 -> 0.05; ...`` with ``arrows``)."""
    if arrows:
        return "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())
    return ", ".join(f"{key}={new}" for key, (_, new) in changes.items())


def pipeline_run_name(model: str, changes: Mapping[str, tuple[Any, Any]], experiment: str | None = None) -> str:
    """The DVC experiment's name under ``dvc exp run``; otherwise the model and the params changed from HEAD."""
    if experiment:
        return experiment
    changed = {key: value for key, value in changes.items() if not key.startswith("mlflow.")}
    if not changed:
        return f"{model} (params as committed)"
    name = f"{model} {describe_changes(changed)}"
    return name if len(name) <= _MAX_NAME else name[:_MAX_NAME - 1] + "…"


def data_version(cwd: str | os.PathLike[str], dataset: str, path: str = "data/preprocessed") -> DataVersion | None:
    """The dataset's version as DVC recorded it in ``dvc.lock`` (the md5 of the ``path`` output); None when the
    lock has no such output yet (a stage run by hand before any ``dvc repro``)."""
    lock = Path(cwd) / "dvc.lock"
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    for stage in stages.values() if isinstance(stages, dict) else ():
        for out in (stage or {}).get("outs", []) or []:
            if isinstance(out, dict) and out.get("path") == path and out.get("md5"):
                digest = str(out["md5"]).removesuffix(".dir")
                return DataVersion(name=dataset, digest=digest, source=path)
    return None


def process_start_ms() -> int:
    """When this process started (epoch ms): a stage's run starts there, not after its imports."""
    stat = _proc_stat(os.getpid())
    try:
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return int((boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")) * 1000) if stat else int(time.time() * 1000)
    except (OSError, StopIteration, ValueError):
        return int(time.time() * 1000)
