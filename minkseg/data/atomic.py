"""Atomic writes the data layer needs beyond :mod:`minkseg.atomic`: numpy archives and whole directories.

Why whole directories: the preprocess and voxelize stages produce hundreds of files; if one scene fails, the
previous complete output directory must stay as it was rather than become a mix of old and new files. So the new
content is built in a hidden staging directory next to the target and swapped in with ``os.replace`` at the end.
A run killed with SIGKILL cannot remove its staging directory; like the temporary files of :mod:`minkseg.atomic`
it carries its writer's host and pid, and the next run into the same folder removes it once that writer is gone.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from minkseg.atomic import (atomic_write_bytes, atomic_write_json, atomic_write_text, remove_stale_temporaries,
                            temporary_prefix)

__all__ = ["atomic_directory", "save_npz_atomic", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
    """``np.savez`` into memory, then an atomic write (a file object also stops numpy appending '.npz')."""
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``path`` as a whole when the block succeeds.

    The old directory (if any) is removed only after the new one is in place; on failure the staging directory
    is deleted and ``path`` is left exactly as it was.
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
