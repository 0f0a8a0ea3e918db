"""minkseg.atomic: outputs are replaced whole or not at all."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from minkseg.atomic import AtomicWriteError, atomic_open, atomic_write_json, atomic_write_text


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(target, "w") as handle:
            handle.write("half of the new conte")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_new_files_get_normal_permissions_and_existing_modes_are_kept(tmp_path):
    new = atomic_write_text(tmp_path / "sub" / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert new.stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(new, 0o640)
    atomic_write_text(new, "y")
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_text() == "y"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_unwritable_directory_is_one_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        with pytest.raises(AtomicWriteError, match="cannot write .*out.json: .*check that .* is writable"):
            atomic_write_json(locked / "out.json", {"a": 1})
    finally:
        os.chmod(locked, 0o700)


def test_unwritable_target_parent_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AtomicWriteError, match="cannot write"):
        atomic_write_text(blocker / "child.txt", "x")
    assert blocker.read_text() == "not a directory"


def test_json_is_strict_with_numpy_torch_and_nan(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"miou": np.float64(0.5), "nan": float("nan"),
                                                   "cm": np.eye(2, dtype=np.int64), "t": torch.tensor([1.5]),
                                                   "inf": np.float32("inf"), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"miou": 0.5, "nan": None, "cm": [[1, 0], [0, 1]], "t": [1.5],
                                            "inf": None, "n": 3}
    with pytest.raises(TypeError, match="cannot write a value of type object"):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_directory_is_replaced_whole_or_not_at_all(tmp_path):
    from minkseg.atomic import atomic_directory, save_npz_atomic

    target = tmp_path / "voxelized"
    with atomic_directory(target) as staging:
        save_npz_atomic(staging / "a.npz", {"x": np.arange(3)})
    with pytest.raises(RuntimeError, match="scene 2 failed"):
        with atomic_directory(target) as staging:
            (staging / "b.txt").write_text("half of the new output")
            raise RuntimeError("scene 2 failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voxelized"]  # no staging directory left behind
    assert [p.name for p in target.iterdir()] == ["a.npz"]
    np.testing.assert_array_equal(np.load(target / "a.npz")["x"], np.arange(3))
