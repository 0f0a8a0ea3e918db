"""Safe tar extraction (outer ``Synthia4D.tar`` and its inner ``*.tar.bz2``).

Why our own extractor: ``tarfile.extractall`` on an untrusted archive can write anywhere (``../`` names, absolute
paths, symlinks or hardlinks pointing outside, device files). Every member is checked before anything is written;
an unsafe member rejects the whole archive. Members are streamed once (bz2 archives are not decompressed twice)
into a hidden staging directory inside the target and moved into place only when the whole archive is good, so a
rejected or truncated archive leaves the target as it was.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from minkseg.atomic import remove_stale_temporaries, temporary_prefix
from minkseg.atomic import atomic_write_json
from minkseg.data.download import sidecar_path
from minkseg.errors import CorruptArchiveError, DataError

log = logging.getLogger(__name__)
# Lists the archives (by sha256) already extracted into a folder, so a re-run does not unpack tens of gigabytes
# again while a changed archive is extracted afresh.
EXTRACTED_MARKER = ".minkseg-extracted.json"

_DRIVE = re.compile(r"^[A-Za-z]:")
COPY_CHUNK = 1 << 20


def _clean_member_name(archive: Path, name: str) -> str:
    """Normalised relative POSIX path of a member, or a DataError if it could escape the target."""
    def refuse(reason: str) -> DataError:
        return DataError(f"{archive}: refusing to extract member {name!r}: {reason}; the archive is unsafe or "
                         f"corrupt, re-download it from a trusted source")
    if not name or "\x00" in name:
        raise refuse("empty name or NUL byte")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise refuse("absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise refuse("'..' path component")
    if not parts:
        return ""
    return "/".join(parts)


def _check_link(archive: Path, member: tarfile.TarInfo, name: str) -> str:
    target = member.linkname
    def refuse(reason: str) -> DataError:
        return DataError(f"{archive}: refusing to extract link {member.name!r} -> {target!r}: {reason}; the "
                         f"archive is unsafe, re-download it from a trusted source")
    if not target or target.startswith(("/", "\\")) or _DRIVE.match(target):
        raise refuse("absolute or empty link target")
    if member.issym():
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    else:  # hard links name another member of the archive
        resolved = posixpath.normpath(target)
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise refuse("points outside the extraction directory")
    return resolved


def _inside(root: Path, path: Path) -> bool:
    root_real = os.path.realpath(root)
    return os.path.commonpath([root_real, os.path.realpath(path)]) == root_real


def _remove_existing(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _extract_members(archive: Path, tar: tarfile.TarFile, staging: Path) -> list[str]:
    names: list[str] = []
    for member in tar:
        name = _clean_member_name(archive, member.name)
        if not name:
            continue
        dest = staging / name
        if not _inside(staging, dest.parent):
            raise DataError(f"{archive}: member {member.name!r} would be written through a link outside the "
                            f"target; the archive is unsafe, re-download it")
        if member.isdir():
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                _remove_existing(dest)
            dest.mkdir(parents=True, exist_ok=True)
            continue
        if member.isreg():
            dest.parent.mkdir(parents=True, exist_ok=True)
            _remove_existing(dest)
            source = tar.extractfile(member)
            mode = 0o755 if member.mode & 0o111 else 0o644
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, COPY_CHUNK)
            os.utime(dest, (member.mtime, member.mtime))
        elif member.issym():
            _check_link(archive, member, name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _remove_existing(dest)
            os.symlink(member.linkname, dest)
        elif member.islnk():
            resolved = _check_link(archive, member, name)
            source_path = staging / resolved
            if not source_path.is_file() or source_path.is_symlink() or not _inside(staging, source_path):
                raise DataError(f"{archive}: hard link {member.name!r} -> {member.linkname!r} does not name an "
                                f"earlier regular file of the archive; re-download it")
            dest.parent.mkdir(parents=True, exist_ok=True)
            _remove_existing(dest)
            shutil.copy2(source_path, dest)
        else:
            kind = "device file" if (member.ischr() or member.isblk()) else ("fifo" if member.isfifo() else
                                                                              "special member")
            raise DataError(f"{archive}: refusing to extract {kind} {member.name!r}; the archive is unsafe, "
                            f"re-download it from a trusted source")
        names.append(name)
    return names


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging directories; files replace files (nothing outside ``dst`` is touched)."""
    if not (dst.exists() or dst.is_symlink()):
        os.replace(src, dst)
    elif src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for child in list(src.iterdir()):
            _merge_move(child, dst / child.name)
        src.rmdir()
    else:
        _remove_existing(dst)
        os.replace(src, dst)


def safe_extract(archive: str | os.PathLike, target_dir: str | os.PathLike) -> list[str]:
    """Extract a (possibly compressed) tar into ``target_dir``; returns the member names extracted.

    Refuses absolute paths, ``..`` components, symlinks/hardlinks resolving outside the target and device files,
    fifos and other special members. Nothing is written outside ``target_dir``; on any error nothing changes in it.
    """
    archive, target = Path(archive), Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target, ".partial")  # the staging folder of an extraction that was killed
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix("extract"), suffix=".partial", dir=target))
    try:
        try:
            with tarfile.open(archive, mode="r|*") as tar:
                names = _extract_members(archive, tar, staging)
        except FileNotFoundError:
            raise DataError(f"{archive}: archive not found; re-run the download stage") from None
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise CorruptArchiveError(f"{archive}: corrupt or truncated archive ({exc}); delete it and re-download",
                                      detail=str(exc)) from None
        for child in list(staging.iterdir()):
            _merge_move(child, target / child.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return names


def _extracted(raw_dir: Path) -> dict[str, str]:
    try:
        return json.loads((raw_dir / EXTRACTED_MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def extract_archive(archive: str | os.PathLike, raw_dir: str | os.PathLike, sha256: str,
                    remove_inner: bool = True) -> list[str]:
    """Safely extract ``archive`` into ``raw_dir`` and then every ``*.tar.bz2`` it contained (in place, next to
    where it was); skipped when an archive with this sha256 was already extracted there."""
    archive, raw_dir = Path(archive), Path(raw_dir)
    done = _extracted(raw_dir)
    if done.get(archive.name) == sha256:
        log.info("%s already extracted into %s", archive.name, raw_dir)
        return []
    names = safe_extract(archive, raw_dir)
    inner = [n for n in names if n.endswith(".tar.bz2")]
    for name in inner:
        path = raw_dir / name
        try:
            safe_extract(path, path.parent)
        except DataError as exc:
            # The inner file is our own copy out of the archive: remove it (a re-run extracts it again) and name
            # the file the user can act on -- the downloaded archive.
            path.unlink(missing_ok=True)
            fix = f"delete {archive} and {sidecar_path(archive).name} and re-run the download stage"
            if isinstance(exc, CorruptArchiveError):
                raise DataError(f"{name} inside {archive} is corrupt or truncated ({exc.detail}); {fix}") from None
            raise DataError(f"{name} inside {archive}: {str(exc).removeprefix(f'{path}: ')}") from None
        if remove_inner:
            path.unlink()
    done[archive.name] = sha256
    atomic_write_json(raw_dir / EXTRACTED_MARKER, done)
    return names
