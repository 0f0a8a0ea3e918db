"""Resumable download from a local 127.0.0.1 server, size/sha256 records, and the safe extractor."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from minkseg.data.download import download, sidecar_path, verify_file
from minkseg.errors import DataError
from minkseg.data.extract import extract_archive, safe_extract
from tests.data_fixtures import fetch_raw, serve_bytes, tar_bytes, tar_file, tar_link, url_of

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def test_download_resumes_after_a_cut_connection_within_one_call(tmp_path):
    with serve_bytes(PAYLOAD, cut_after=300_000, cut_times=2) as server:
        record = download(url_of(server), tmp_path / "a.tar", retries=3, backoff=0.0, progress=False)
        requests = list(server.requests)
    assert (tmp_path / "a.tar").read_bytes() == PAYLOAD
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["size"] == len(PAYLOAD)
    assert json.loads(sidecar_path(tmp_path / "a.tar").read_text())["sha256"] == record["sha256"]
    assert requests == [None, "bytes=300000-", "bytes=600000-"]
    assert not (tmp_path / "a.tar.part").exists()


def test_interrupted_download_resumes_on_the_next_run(tmp_path):
    with serve_bytes(PAYLOAD, cut_after=123_457, cut_times=1) as server:
        with pytest.raises(DataError, match="failed.*re-run the download stage to resume"):
            download(url_of(server), tmp_path / "a.tar", retries=0, progress=False)
        assert (tmp_path / "a.tar.part").stat().st_size == 123_457
        assert not (tmp_path / "a.tar").exists()
        download(url_of(server), tmp_path / "a.tar", retries=0, progress=False)
        assert server.requests == [None, "bytes=123457-"]
    assert (tmp_path / "a.tar").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    with serve_bytes(PAYLOAD, cut_after=1000, cut_times=1, honour_range=False) as server:
        download(url_of(server), tmp_path / "a.tar", retries=2, backoff=0.0, progress=False)
    assert (tmp_path / "a.tar").read_bytes() == PAYLOAD


def test_records_are_checked(tmp_path):
    with serve_bytes(PAYLOAD) as server:
        url = url_of(server)
        with pytest.raises(DataError, match="sha256 .* does not match"):
            download(url, tmp_path / "a.tar", sha256="0" * 64, progress=False)
        assert not (tmp_path / "a.tar").exists() and not (tmp_path / "a.tar.part").exists()
        download(url, tmp_path / "a.tar", progress=False)
        n = len(server.requests)
        download(url, tmp_path / "a.tar", progress=False)  # present and matching its record: no request
        assert len(server.requests) == n
    data = bytearray(PAYLOAD)
    data[10] ^= 1
    (tmp_path / "a.tar").write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match"):
        verify_file(tmp_path / "a.tar")
    (tmp_path / "a.tar").write_bytes(PAYLOAD[:-1])
    with pytest.raises(DataError, match="size"):
        verify_file(tmp_path / "a.tar")


def test_http_errors_and_bad_urls_are_one_line(tmp_path):
    with serve_bytes(PAYLOAD) as server:
        with pytest.raises(DataError, match="HTTP 404"):
            download(url_of(server, "missing.tar"), tmp_path / "m.tar", progress=False)
    with pytest.raises(DataError, match="http"):
        download("ftp://example.org/x.tar", tmp_path / "x.tar", progress=False)
    with pytest.raises(DataError, match="failed .*after 0 bytes"):  # nothing listens there
        download("http://127.0.0.1:9/x.tar", tmp_path / "x.tar", retries=0, timeout=2, progress=False)



UNSAFE = {
    "dotdot": [tar_file("ok.txt"), tar_file("../evil.txt")],
    "nested_dotdot": [tar_file("a/../../evil.txt")],
    "absolute": [tar_file("/tmp/minkseg-evil.txt")],
    "symlink_out": [tar_link("link", "../evil_dir", tarfile.SYMTYPE)],
    "symlink_abs": [tar_link("link", "/etc", tarfile.SYMTYPE)],
    "hardlink_out": [tar_link("hard", "../evil.txt", tarfile.LNKTYPE)],
    "device": [tar_link("dev", "", tarfile.CHRTYPE)],
    "fifo": [tar_link("fifo", "", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_are_rejected_and_nothing_is_written(tmp_path, case):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(tar_bytes(UNSAFE[case]))
    target = tmp_path / "sandbox" / "target"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing|unsafe"):
        safe_extract(archive, target)
    assert sorted(p.name for p in (tmp_path / "sandbox").iterdir()) == ["target"]
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # nothing extracted, nothing lost
    assert (target / "keep.txt").read_text() == "mine"


def test_inner_bz2_with_dotdot_is_rejected(tmp_path):
    inner = tar_bytes([tar_file("SEQ/ok.txt"), tar_file("../../escape.txt")], mode="w:bz2")
    outer = tar_bytes([tar_file("SEQ.tar.bz2", inner)])
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "outer.tar").write_bytes(outer)
    with pytest.raises(DataError, match="refusing"):
        extract_archive(tmp_path / "raw" / "outer.tar", tmp_path / "raw", "x")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()
    assert not (tmp_path / "raw" / "SEQ").exists()


def test_safe_archive_extracts_with_internal_links_and_nested_bz2(tmp_path):
    inner = tar_bytes([tar_file("SEQ/point_clouds/000000.ply", b"ply"),
                       tar_link("SEQ/latest", "point_clouds/000000.ply", tarfile.SYMTYPE),
                  tar_link("SEQ/copy.ply", "SEQ/point_clouds/000000.ply", tarfile.LNKTYPE)], mode="w:bz2")
    outer = tar_bytes([tar_file("SEQ.tar.bz2", inner), tar_file("list.txt", b"SEQ\n")])
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Synthia4D.tar").write_bytes(outer)
    names = extract_archive(raw / "Synthia4D.tar", raw, "abc")
    assert names == ["SEQ.tar.bz2", "list.txt"]
    assert (raw / "SEQ/point_clouds/000000.ply").read_bytes() == b"ply"
    assert (raw / "SEQ/latest").read_bytes() == b"ply" and (raw / "SEQ/copy.ply").read_bytes() == b"ply"
    assert not (raw / "SEQ.tar.bz2").exists()  # inner archives are removed once extracted
    assert extract_archive(raw / "Synthia4D.tar", raw, "abc") == []  # recorded: not extracted twice
    assert not [p for p in raw.iterdir() if p.name.startswith(".extract")]


def test_truncated_archive_is_reported(tmp_path):
    archive = tmp_path / "t.tar.bz2"
    archive.write_bytes(tar_bytes([tar_file("a.txt", b"y" * 100_000)], mode="w:bz2")[:-50])
    with pytest.raises(DataError, match="corrupt or truncated"):
        safe_extract(archive, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_synthia4d_stage_downloads_and_extracts_when_frames_are_missing(tmp_path):
    """The real 'synthia4d' path against a local server: download -> record -> extract; the final check then
    reports the CVPR'19 frames that this tiny archive does not have."""
    inner = tar_bytes([tar_file("SYNTHIA-SEQS-01-DAWN/point_clouds/000000.ply", b"ply")], mode="w:bz2")
    payload = tar_bytes([tar_file("SYNTHIA-SEQS-01-DAWN.tar.bz2", inner)])
    with serve_bytes(payload, cut_after=700, cut_times=1) as server:
        with pytest.raises(DataError, match="lacks .* frames of the split lists"):
            fetch_raw("synthia4d", tmp_path / "raw", urls=[url_of(server)], splits=("val",), retries=2)
    assert (tmp_path / "raw/SYNTHIA-SEQS-01-DAWN/point_clouds/000000.ply").read_bytes() == b"ply"
    assert json.loads((tmp_path / "raw/Synthia4D.tar.json").read_text())["size"] == len(payload)
