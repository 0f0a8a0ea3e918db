"""Issue 6, case 7: the download stage against archives and servers MinkSeg does not control.

The `synthia4d` download stage runs in-process against a local 127.0.0.1 server: unsafe tar members (``../``,
absolute paths, links leaving the target) are refused with nothing written outside the dataset folder and nothing
extracted inside it; a corrupt inner ``.tar.bz2``, a file that no longer matches its size/sha256 record, or a
checksum the user pinned in the URL are refused by name; a download cut off half-way (by a dropped connection, or
a kill that left the ``.part`` file) continues from where it stopped. The CVPR'19 split lists are replaced by a
one-frame list so that a good archive passes the stage's final check.
"""
from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

import minkseg.datasets.base
from tests.data_fixtures import serve_bytes, tar_bytes, tar_file, tar_link, url_of
from tests.robust_workspace import error_line, leftovers, run_stage_here, snapshot, tiny_params, write_params

FRAME = "SYNTHIA-SEQS-05-FOG/point_clouds/000000.ply"



def _frame_ply() -> bytes:
    from minkseg.data.ply import encode_ply
    import numpy as np

    n = 4
    return encode_ply({"x": np.arange(n, dtype=np.float32), "y": np.zeros(n, np.float32),
                       "z": np.ones(n, np.float32), "r": np.zeros(n, np.uint8), "g": np.zeros(n, np.uint8),
                       "b": np.zeros(n, np.uint8), "l": np.full(n, 3, np.uint8)})


def good_archive() -> bytes:
    inner = tar_bytes([tar_file(FRAME, _frame_ply())], mode="w:bz2")
    return tar_bytes([tar_file("SYNTHIA-SEQS-05-FOG.tar.bz2", inner)])


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> dict[str, Path]:
    meta = tmp_path / "meta"
    meta.mkdir()
    for name in ("train_cvpr19.txt", "val_cvpr19.txt", "test_cvpr19.txt"):
        (meta / name).write_text(f"{FRAME} {FRAME[:-4]}_label.ply\n")
    monkeypatch.setattr(minkseg.datasets.base, "META_DIR", meta)
    outside = tmp_path / "sandbox"  # every escape attempt aims here (the parent of the dataset folder)
    root = outside / "Synthia"
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    return {"repo": repo, "root": root, "outside": outside}


def _params(ws: dict[str, Path], url: str) -> None:
    params = tiny_params(base__dataset="synthia4d", preprocess__splits=["val"])
    params["download"].update(synthia_root=str(ws["root"]), synthia_urls=[url])
    write_params(ws["repo"], params)


def _download(ws, capsys, monkeypatch) -> tuple[int, str]:
    return run_stage_here(ws["repo"], "download", capsys, monkeypatch)


UNSAFE = {
    "dotdot": ([tar_file("SYNTHIA-SEQS-05-FOG/ok.txt"), tar_file("../evil.txt")],
               "refusing to extract member '../evil.txt': '..' path component"),
    "absolute": ([tar_file("/tmp/minkseg-robust-evil.txt")],
                 "refusing to extract member '/tmp/minkseg-robust-evil.txt': absolute path"),
    "symlink": ([tar_link("SYNTHIA-SEQS-05-FOG", "../../outside_dir", tarfile.SYMTYPE),
                 tar_file("SYNTHIA-SEQS-05-FOG/evil.txt")],
                "refusing to extract link 'SYNTHIA-SEQS-05-FOG' -> '../../outside_dir': points outside the "
                "extraction directory"),
    "hardlink": ([tar_link("hard.txt", "../evil.txt", tarfile.LNKTYPE)],
                 "refusing to extract link 'hard.txt' -> '../evil.txt': points outside the extraction directory"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archive_is_refused_and_nothing_is_written(workspace, capsys, monkeypatch, case):
    members, problem = UNSAFE[case]
    payload = tar_bytes(members)
    with serve_bytes(payload) as server:
        _params(workspace, url_of(server))
        code, stderr = _download(workspace, capsys, monkeypatch)
    assert code == 2
    archive = workspace["root"] / "Synthia4D.tar"
    assert error_line(stderr, "download") == (f"minkseg download: error: {archive}: {problem}; the archive is "
                                              "unsafe or corrupt, re-download it from a trusted source"
                                              if case in ("dotdot", "absolute") else
                                              f"minkseg download: error: {archive}: {problem}; the archive is "
                                              "unsafe, re-download it from a trusted source")
    # Only the downloaded archive and its size/sha256 record: nothing extracted, nothing outside, no staging.
    assert sorted(p.name for p in workspace["outside"].iterdir()) == ["Synthia"]
    assert sorted(p.name for p in workspace["root"].iterdir()) == ["Synthia4D.tar", "Synthia4D.tar.json"]
    assert not Path("/tmp/minkseg-robust-evil.txt").exists()
    assert not (workspace["repo"] / "data" / "raw").exists()


def test_corrupt_inner_bz2_names_the_archive_to_delete(workspace, capsys, monkeypatch):
    inner = tar_bytes([tar_file(FRAME, _frame_ply() * 2000)], mode="w:bz2")
    payload = tar_bytes([tar_file("SYNTHIA-SEQS-05-FOG.tar.bz2", inner[: len(inner) // 2])])
    with serve_bytes(payload) as server:
        _params(workspace, url_of(server))
        code, stderr = _download(workspace, capsys, monkeypatch)
    assert code == 2
    archive = workspace["root"] / "Synthia4D.tar"
    line = error_line(stderr, "download")
    assert line.startswith(f"minkseg download: error: SYNTHIA-SEQS-05-FOG.tar.bz2 inside {archive} is corrupt or "
                           "truncated (")
    assert line.endswith(f"delete {archive} and {archive.name}.json and re-run the download stage")
    assert sorted(p.name for p in workspace["root"].iterdir()) == ["Synthia4D.tar", "Synthia4D.tar.json"]
    assert leftovers(workspace["outside"]) == []


def test_archive_that_no_longer_matches_its_record(workspace, capsys, monkeypatch):
    root = workspace["root"]
    root.mkdir(parents=True)
    payload = good_archive()
    (root / "Synthia4D.tar").write_bytes(payload[:-512])  # replaced/truncated after it was recorded
    (root / "Synthia4D.tar.json").write_text(json.dumps({"file": "Synthia4D.tar", "url": "x", "size": len(payload),
                                                         "sha256": hashlib.sha256(payload).hexdigest()}))
    before = snapshot(root)
    with serve_bytes(payload) as server:
        _params(workspace, url_of(server))
        code, stderr = _download(workspace, capsys, monkeypatch)
        assert server.requests == []  # a recorded file is checked, never silently downloaded again
    assert code == 2
    assert error_line(stderr, "download") == (
        f"minkseg download: error: {root / 'Synthia4D.tar'}: size {len(payload) - 512} differs from the recorded "
        f"{len(payload)}; the file changed or is incomplete, delete it and re-run the download stage")
    assert snapshot(root) == before


def test_checksum_pinned_in_the_url_is_enforced(workspace, capsys, monkeypatch):
    payload = good_archive()
    with serve_bytes(payload) as server:
        _params(workspace, url_of(server) + "#sha256=" + "0" * 64)
        code, stderr = _download(workspace, capsys, monkeypatch)
    assert code == 2
    assert error_line(stderr, "download").startswith(
        f"minkseg download: error: download of {url_of(server)}: sha256 {hashlib.sha256(payload).hexdigest()} does "
        f"not match the expected {'0' * 64}; the partial file was removed")
    assert not workspace["root"].exists() or list(workspace["root"].iterdir()) == []

    with serve_bytes(payload) as server:  # the right checksum: accepted
        _params(workspace, url_of(server) + "#sha256=" + hashlib.sha256(payload).hexdigest())
        code, stderr = _download(workspace, capsys, monkeypatch)
    assert code == 0, stderr


def test_download_cut_off_half_way_resumes(workspace, capsys, monkeypatch):
    payload = good_archive()
    root = workspace["root"]
    root.mkdir(parents=True)
    (root / "Synthia4D.tar.part").write_bytes(payload[:3000])  # what a killed earlier run left
    with serve_bytes(payload, cut_after=2000, cut_times=1) as server:  # and this run's connection drops once
        _params(workspace, url_of(server))
        code, stderr = _download(workspace, capsys, monkeypatch)
        requests = list(server.requests)
    assert code == 0, stderr
    assert requests == ["bytes=3000-", "bytes=5000-"]
    assert (root / "Synthia4D.tar").read_bytes() == payload and not (root / "Synthia4D.tar.part").exists()
    assert (root / FRAME).is_file()
    source = json.loads((workspace["repo"] / "data" / "raw" / "source.json").read_text())
    assert source["dataset"] == "synthia4d" and source["scenes"] == {"val": 1}
    assert leftovers(workspace["outside"]) == []
