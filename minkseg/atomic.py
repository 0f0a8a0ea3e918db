"""All-or-nothing file writes.

A run can be killed at any instant (kill -9, a full disk, a preempted node). Every output MinkSeg writes goes
through here so that a reader -- DVC, a resumed run, a user -- sees either the previous complete file or the new
complete file, never a half-written one: the bytes go to a temporary file in the *same* directory (so the final
rename never crosses a filesystem), are flushed and fsync'ed, and only then replace the target with os.replace,
which POSIX guarantees to be atomic. The directory is fsync'ed afterwards so the rename itself survives a crash.
"""

from __future__ import annotations

from minkseg.errors import MinkSegError

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = [
    "AtomicWriteError",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "json_safe",
]


class AtomicWriteError(MinkSegError, OSError):
    """An output could not be written; the previous version of the file (if any) is untouched."""


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
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
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
        if isinstance(exc, OSError) and not isinstance(exc, AtomicWriteError):
            raise AtomicWriteError(
                exc.errno, f"cannot write {target}: {exc.strerror or exc}; the previous file (if any) is unchanged; "
                "check free disk space and permissions"
            ) from exc
        raise
    _fsync_directory(directory)


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
