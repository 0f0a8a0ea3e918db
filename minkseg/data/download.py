"""Resumable HTTP download with a progress bar and a size/sha256 sidecar.

Why resumable: ``Synthia4D.tar`` is large and academic servers drop connections. Bytes go to ``<file>.part``; a
broken transfer is retried with an HTTP ``Range`` request from where it stopped (also across runs, since the
``.part`` file stays), and only a complete file is renamed into place. Its size and sha256 are recorded in
``<file>.json``; a later run checks the file against that record instead of downloading again, so a silently
corrupted or replaced archive is noticed before it is extracted.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from minkseg.atomic import atomic_write_json
from minkseg.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "minkseg-downloader/1"
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_TRANSIENT = (ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError, urllib.error.URLError,
              OSError)


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_file(path: str | os.PathLike, url: str | None = None) -> dict[str, Any]:
    """Measure ``path`` and write its sidecar ``{"url", "size", "sha256"}``; returns the record."""
    path = Path(path)
    record = {"file": path.name, "url": url, "size": path.stat().st_size, "sha256": sha256_file(path)}
    atomic_write_json(sidecar_path(path), record)
    return record


def verify_file(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """Check ``path`` against its sidecar (and an expected sha256 if given); returns the record."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no size/sha256 record {side.name}; delete the file and re-run the download "
                        f"stage") from None
    except json.JSONDecodeError:
        raise DataError(f"{side}: corrupt record; delete it and {path.name}, then re-run the download") from None
    size = path.stat().st_size
    if size != record.get("size"):
        raise DataError(f"{path}: size {size} differs from the recorded {record.get('size')}; the file changed or "
                        f"is incomplete, delete it and re-run the download stage")
    actual = sha256_file(path)
    if actual != record.get("sha256") or (sha256 and actual != sha256.lower()):
        raise DataError(f"{path}: sha256 {actual} does not match the expected "
                        f"{sha256 or record.get('sha256')}; delete it and re-run the download stage")
    return record


def _parse_total(headers: Any, status: int, offset: int) -> tuple[int | None, int]:
    """(total size or None, first byte this response carries)."""
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
        if not match:
            return None, -1
        total = None if match.group(3) == "*" else int(match.group(3))
        return total, int(match.group(1))
    length = headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), 0


def _fetch_once(url: str, part: Path, timeout: float, bar: tqdm) -> tuple[int | None, bool]:
    """One request continuing ``part``; returns (total size, complete?). Raises transient errors to the caller."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the .part may already be complete
            match = re.search(r"/(\d+)", exc.headers.get("Content-Range", "") if exc.headers else "")
            if match and int(match.group(1)) == offset:
                return offset, True
            part.unlink()  # the server does not recognise our partial file: start over
            return None, False
        if 400 <= exc.code < 500:
            raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL in "
                            f"params.yaml") from None
        raise
    with response:
        status = response.status
        total, first = _parse_total(response.headers, status, offset)
        if status == 206 and first != offset:
            part.unlink()
            return None, False
        mode = "ab" if status == 206 else "wb"  # a 200 answer ignores Range: restart from byte 0
        if status != 206:
            offset = 0
        bar.reset(total=total)
        bar.update(offset)
        with open(part, mode) as out:
            while block := response.read(CHUNK):
                try:
                    out.write(block)
                except OSError as exc:  # a local problem (disk full, permissions) is not worth retrying
                    raise DataError(f"cannot write {part}: {exc.strerror}; free disk space or fix permissions, "
                                    f"then re-run the download stage (it resumes)") from None
                bar.update(len(block))
    size = part.stat().st_size
    if total is None:
        return size, True  # no length announced: the server closing the stream is the only end marker
    if size > total:
        part.unlink()
        raise DataError(f"download of {url} produced {size} bytes but the server announced {total}; re-run")
    return total, size == total


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, retries: int = 5,
             timeout: float = 60.0, backoff: float = 1.0, progress: bool = True) -> dict[str, Any]:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check it, record size/sha256; returns the record.

    An existing ``dest`` is verified against its sidecar (and ``sha256``) instead of being downloaded again.
    """
    dest = Path(dest)
    if not url.startswith(("http://", "https://")):
        raise DataError(f"unsupported URL {url!r}; use an http:// or https:// address (or place the archive "
                        f"in the raw folder yourself)")
    if dest.exists():
        if sidecar_path(dest).exists():
            return verify_file(dest, sha256)
        record = record_file(dest, url)
        if sha256 and record["sha256"] != sha256.lower():
            raise DataError(f"{dest}: sha256 {record['sha256']} does not match the expected {sha256}; delete it "
                            f"and re-run the download stage")
        return record
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    with tqdm(desc=f"download {dest.name}", unit="B", unit_scale=True, unit_divisor=1024,
              disable=not progress) as bar:
        while True:
            try:
                _, complete = _fetch_once(url, part, timeout, bar)
            except DataError:
                raise
            except _TRANSIENT as exc:
                complete, reason = False, f"{type(exc).__name__}: {exc}"
            else:
                reason = "connection closed early"
            if complete:
                break
            after = part.stat().st_size if part.exists() else 0
            failures += 1
            if failures > retries:
                raise DataError(f"download of {url} failed ({reason}) after {after} bytes; check the URL and the "
                                f"network, then re-run the download stage to resume from {part.name}")
            log.warning("download of %s interrupted (%s) at %d bytes; resuming", url, reason, after)
            time.sleep(backoff * failures)
    actual = sha256_file(part)
    if sha256 and actual != sha256.lower():
        part.unlink()
        raise DataError(f"download of {url}: sha256 {actual} does not match the expected {sha256}; the partial "
                        f"file was removed, re-run the download stage")
    os.replace(part, dest)
    record = {"file": dest.name, "url": url, "size": dest.stat().st_size, "sha256": actual}
    atomic_write_json(sidecar_path(dest), record)
    return record


def split_checksum(entry: str) -> tuple[str, str | None]:
    """``https://host/a.tar#sha256=<hex>`` -> (URL, expected sha256): a pinned checksum travels with its URL in
    ``download.synthia_urls``, so a server that returns other bytes (the right size or not) is refused."""
    url, _, fragment = entry.partition("#")
    if not fragment:
        return url, None
    key, _, value = fragment.partition("=")
    if key != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise DataError(f"download.synthia_urls: {entry!r}: the part after '#' must be sha256=<64 hex digits>")
    return url, value.lower()


def archive_name(url: str) -> str:
    name = Path(urlparse(url).path).name
    if not name.endswith((".tar", ".tar.bz2", ".tbz2", ".tar.gz", ".tgz")):
        raise DataError(f"archive URL {url!r} does not end in .tar/.tar.bz2/.tar.gz; give the archive's URL")
    return name
