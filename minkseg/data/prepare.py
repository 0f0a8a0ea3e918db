"""Download stage logic: make the raw data of a dataset available in its raw layout.

* ``scannet``: nothing can be fetched (terms of use); the local copy is checked and every missing file reported.
* ``synthia4d``: every archive URL (default: the paper's ``Synthia4D.tar``; ``<url>#sha256=<hex>`` pins its
  checksum) is downloaded resumably into the raw folder, checked against its size/sha256 record, and safely
  extracted together with the ``*.tar.bz2`` inside.
  A folder that already holds the split frames is only checked.
* ``synthetic-scannet``: rooms are generated straight into the ScanNet layout.
* ``synthetic-synthia4d``: sequences are packed into a ``Synthia4D.tar`` of inner ``.tar.bz2`` files, which then
  goes through the very same record/verify/extract path as a downloaded archive.

Why extraction is recorded: ``.minkseg-extracted.json`` lists the archives (by sha256) already extracted, so a
re-run does not unpack tens of gigabytes again, while a changed archive is extracted afresh.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

from minkseg.data.atomic import atomic_directory, atomic_write_json
from minkseg.data.download import download, record_file, sidecar_path, verify_file
from minkseg.data.errors import DataError
from minkseg.data.extract import CorruptArchiveError, safe_extract
from minkseg.data.preprocess import MADE_BY_FILE, check_raw
from minkseg.data.registry import get_spec
from minkseg.data.synthetic_scannet import SyntheticScanNetConfig, generate_synthetic_scannet
from minkseg.data.synthetic_synthia4d import SyntheticSynthiaConfig, write_synthetic_synthia_tar

log = logging.getLogger(__name__)

SYNTHIA4D_URL = "http://cvgl.stanford.edu/data2/Synthia4D.tar"
EXTRACTED_MARKER = ".minkseg-extracted.json"
SPLITS = ("train", "val", "test")


@dataclass
class RawReport:
    """What the download stage produced (written as JSON by the stage)."""

    dataset: str
    raw_dir: str
    scenes: dict[str, int]  # scenes/frames per split
    archives: list[dict[str, Any]] = field(default_factory=list)  # size/sha256 records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _archive_name(url: str) -> str:
    name = Path(urlparse(url).path).name
    if not name.endswith((".tar", ".tar.bz2", ".tbz2", ".tar.gz", ".tgz")):
        raise DataError(f"archive URL {url!r} does not end in .tar/.tar.bz2/.tar.gz; give the archive's URL")
    return name


def prepare_synthia4d(raw_dir: Path, urls: Sequence[str], splits: Sequence[str], retries: int,
                      progress: bool) -> RawReport:
    spec = get_spec("synthia4d")
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        return RawReport(spec.name, str(raw_dir), check_raw(spec, raw_dir, splits))
    except DataError:
        pass  # not there yet: fetch it
    records = []
    for entry in urls or [SYNTHIA4D_URL]:
        url, sha256 = split_checksum(entry)
        target = raw_dir / _archive_name(url)
        record = download(url, target, sha256=sha256, retries=retries, progress=progress)
        extract_archive(target, raw_dir, record["sha256"])
        records.append(record)
    return RawReport(spec.name, str(raw_dir), check_raw(spec, raw_dir, splits), records)


def prepare_synthetic_synthia4d(raw_dir: Path, config: SyntheticSynthiaConfig, workers: int,
                                progress: bool, made_by: Mapping[str, Any] | None = None) -> RawReport:
    """Generate the archive, then treat it exactly like a downloaded one (record, verify, safe extraction).
    The raw folder is built aside and swapped in whole, so a re-run never mixes two generations."""
    spec = get_spec("synthetic-synthia4d")
    with atomic_directory(raw_dir) as staging:
        archive = staging / "Synthia4D.tar"
        write_synthetic_synthia_tar(archive, config, workers=workers, progress=progress)
        record_file(archive, url=None)
        record = verify_file(archive)
        extract_archive(archive, staging, record["sha256"])
        check_raw(spec, staging, SPLITS)
        _write_made_by(staging, made_by)
    return RawReport(spec.name, str(raw_dir), check_raw(spec, raw_dir, SPLITS), [record])


def _write_made_by(staging: Path, made_by: Mapping[str, Any] | None) -> None:
    """The record of what made generated data goes into the staging folder: it is swapped in with the data."""
    if made_by is not None:
        atomic_write_json(staging / MADE_BY_FILE, dict(made_by))


def _generator_config(cls: type, dataset: str, seed: int, options: dict[str, Any]) -> Any:
    valid = {f.name for f in fields(cls)} - {"seed"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise DataError(f"unknown size option(s) {unknown} for {dataset}; valid: {', '.join(sorted(valid))}")
    try:
        return cls(seed=seed, **options)
    except ValueError as exc:
        raise DataError(f"bad synthetic dataset size for {dataset}: {exc}; fix download.synthetic") from None


def prepare_raw(dataset: str, raw_dir: str | os.PathLike, *, urls: Sequence[str] = (),
                synthetic: dict[str, Any] | None = None, seed: int = 0, splits: Sequence[str] = SPLITS,
                workers: int = 1, retries: int = 5, progress: bool = True,
                made_by: Mapping[str, Any] | None = None) -> RawReport:
    """Make ``dataset``'s raw data available in ``raw_dir`` (see module docstring); returns a report.

    ``synthetic`` sizes the generated datasets (keys of :class:`SyntheticScanNetConfig` /
    :class:`SyntheticSynthiaConfig`, e.g. ``num_train``, ``num_val``, ``points_per_scene``); ``seed`` makes
    them reproducible. For ``scannet`` and ``synthia4d``, ``raw_dir`` is the user's dataset folder. ``made_by``
    (what made generated data: params) is written next to it as ``made_by.json``; for the user's own folders,
    which this function only reads or fills, the caller records it.
    """
    spec = get_spec(dataset)
    raw_dir = Path(raw_dir)
    options = dict(synthetic or {})
    if dataset == "scannet":
        return RawReport(dataset, str(raw_dir), check_raw(spec, raw_dir, splits))
    if dataset == "synthia4d":
        return prepare_synthia4d(raw_dir, urls, splits, retries, progress)
    if dataset == "synthetic-scannet":
        config = _generator_config(SyntheticScanNetConfig, dataset, seed, options)
        with atomic_directory(raw_dir) as staging:
            generate_synthetic_scannet(staging, config, workers=workers, progress=progress)
            _write_made_by(staging, made_by)
        return RawReport(dataset, str(raw_dir), check_raw(spec, raw_dir, SPLITS))
    config = _generator_config(SyntheticSynthiaConfig, dataset, seed, options)
    return prepare_synthetic_synthia4d(raw_dir, config, workers, progress, made_by)
