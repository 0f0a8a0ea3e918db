"""All-or-nothing file writes.

A run can be killed at any instant (kill -9, a full disk, a preempted node). Every output MinkSeg writes goes
through here so that a reader -- DVC, a resumed run, a user -- sees either the previous complete file or the new
complete file, never a half-written one: the bytes go to a temporary file in the *same* directory (so the final
rename never crosses a filesystem), are flushed and fsync'ed, and only then replace the target with os.replace,
which POSIX guarantees to be atomic. The directory is fsync'ed afterwards so the rename itself survives a crash.

Whole directories (the preprocess and voxelize stages write hundreds of files) get the same treatment:
:func:`atomic_directory` builds the new content in a hidden staging directory next to the target and swaps it in
at the end, so a failed scene leaves the previous complete directory as it was, not a mix of old and new files.

A SIGKILL (or power loss) between the write and the rename leaves the temporary file behind -- for a training
checkpoint that is hundreds of megabytes per kill. So temporaries are named after their writer
(``.<name>.<host>-<pid>.<random>.tmp``) and the first write into a directory removes those whose writer on this
host is gone (:func:`remove_stale_temporaries`). A live writer's files are never touched, so two processes writing
into the same folder cannot delete each other's work.
"""

from __future__ import annotations

from minkseg.errors import AtomicWriteError

import contextlib
import errno
import io
import json
import math
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np

__all__ = [
    "AtomicWriteError",
    "atomic_directory",
    "save_npz_atomic",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "json_safe",
    "temporary_prefix",
    "remove_stale_temporaries",
    "check_writable",
]


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; outputs should get the permissions an ordinary open() would give them.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    # Not every platform/filesystem allows opening a directory; durability of the rename is then best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_HOST = socket.gethostname().replace("-", "_").replace(".", "_") or "host"
_CLEANED: set[tuple[str, str]] = set()


def temporary_prefix(name: str) -> str:
    """Prefix of this process's temporary siblings of ``name`` (the writer's host and pid are part of it)."""
    return f".{name}.{_HOST}-{os.getpid()}."


def _writer_is_gone(host: str, pid: str) -> bool:
    if host != _HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False  # another machine's (shared filesystem) or our own: never ours to delete
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


def remove_stale_temporaries(directory: str | os.PathLike[str], suffix: str = ".tmp") -> list[Path]:
    """Delete ``.<name>.<host>-<pid>.<random><suffix>`` entries of ``directory`` whose writer process is dead.

    Done once per directory and suffix per process (the first write there), so writing thousands of files into one
    folder stays linear. Returns what was removed.
    """
    directory = Path(directory)
    key = (os.path.abspath(directory), suffix)
    if key in _CLEANED:
        return []
    _CLEANED.add(key)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(suffix)):
            continue
        owner = entry.name[: -len(suffix)].rpartition(".")[0].rpartition(".")[2]  # "<host>-<pid>"
        host, _, pid = owner.rpartition("-")
        if not _writer_is_gone(host, pid):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only if the block exits cleanly.

    On any exception the temporary file is removed and ``path`` keeps its previous content.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open only writes whole files; mode must be 'w'/'wt'/'wb', got {mode!r}")
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory, ".tmp")
        fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target.name), suffix=".tmp", dir=directory)
    except OSError as exc:
        raise AtomicWriteError(
            exc.errno, f"cannot write {target}: {exc.strerror or exc}; check that {directory} exists, is writable "
            "and has free space"
        ) from exc
    tmp_path = Path(tmp_name)
    try:
        binary = "b" in mode
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else (encoding or "utf-8"),
                       newline=None if binary else "") as handle:
            try:
                file_mode = target.stat().st_mode & 0o777
            except OSError:
                file_mode = _default_file_mode()
            os.chmod(handle.fileno(), file_mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        cause = _write_failure(exc)
        if cause is not None:
            raise AtomicWriteError(
                cause.errno, f"cannot write {target}: {cause.strerror or cause}; the previous file (if any) is "
                "unchanged; check free disk space and permissions"
            ) from exc
        raise
    _fsync_directory(directory)


_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS}


def _write_failure(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write, also when a library re-raised it as something else.

    torch.save, for one, turns "No space left on device" into a RuntimeError from its zip writer; without looking
    at the exception chain a full disk would surface as an internal error with a traceback.
    """
    if isinstance(exc, AtomicWriteError):
        return None
    if isinstance(exc, OSError):
        return exc
    seen: set[int] = set()
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in _DISK_ERRNOS:
            return link
        link = link.__cause__ or link.__context__
    return None


def check_writable(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and prove a file can be created in it, before a stage spends hours working.

    Raises :class:`AtomicWriteError` naming the folder; nothing is left behind either way.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=temporary_prefix("write-check"), suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise AtomicWriteError(
            exc.errno, f"cannot write into {directory}: {exc.strerror or exc}; fix the folder's permissions or "
            "free disk space, then re-run (nothing was changed)"
        ) from exc
    return directory


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def json_safe(value: Any) -> Any:
    """Convert numpy/torch scalars and arrays to plain JSON values; NaN and infinities become None.

    JSON has no NaN, and a metric that is undefined (a class absent from the ground truth) must still be written
    as valid JSON that ``dvc metrics show`` can read.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    tolist = getattr(value, "tolist", None)  # numpy arrays/scalars and torch tensors
    if callable(tolist):
        return json_safe(tolist())
    item = getattr(value, "item", None)
    if callable(item):
        return json_safe(item())
    raise TypeError(f"cannot write a value of type {type(value).__name__} as JSON")


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int = 2) -> Path:
    """Serialise ``data`` (after :func:`json_safe`) and write it atomically; the JSON is strict (no NaN)."""
    text = json.dumps(json_safe(data), indent=indent, allow_nan=False, sort_keys=False) + "\n"
    return atomic_write_text(path, text)


def save_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = False) -> Path:
    """``np.savez`` into memory, then an atomic write (a file object also stops numpy appending '.npz')."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``path`` as a whole when the block succeeds.

    The old directory (if any) is removed only after the new one is in place; on failure the staging directory
    is deleted and ``path`` is left exactly as it was. Like the temporary files, the staging directory carries its
    writer's host and pid, so the next run into the same folder removes one a killed run left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".partial", ".old"):  # left behind by a killed run (its writer is gone)
        remove_stale_temporaries(path.parent, suffix)
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), suffix=".partial", dir=path.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o755)
    old = None
    if path.exists() or path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), suffix=".old", dir=path.parent))
        os.rmdir(old)
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
