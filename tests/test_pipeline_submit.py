"""The ScanNet benchmark submission on the synthetic test split, checked against the benchmark's documented format."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import yaml

from minkseg.config import params_from_dict
from minkseg.data.ply import read_ply, read_ply_header
from minkseg.datasets.scannet import SCANNET_VALID_NYU40
from minkseg.errors import EngineError
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.submit import run_submit
from minkseg.engine.predictor import Predictor
from minkseg.pipeline.submission import ARCHIVE, encode_scene, validate_archive, write_archive
from tests.robust_workspace import copy_workspace, edit_params, refused, shared_workspace


@pytest.fixture
def root(tmp_path_factory, tmp_path):
    return copy_workspace(shared_workspace(tmp_path_factory), tmp_path / "ws")


def test_submission_matches_the_benchmark_format_and_the_predictor(root):
    params = params_from_dict(yaml.safe_load((root / "params.yaml").read_text()))
    summary = run_submit(params, PipelinePaths(root), progress=False)
    test_list = (root / "data" / "raw" / "scannetv2_test.txt").read_text().split()
    assert summary["applicable"] and summary["validated"] and summary["scenes"] == len(test_list)
    predictor = Predictor.from_model_file(root / "models" / "model.pt", device="cpu")
    with zipfile.ZipFile(root / "submission" / ARCHIVE) as archive:
        # the documented layout: <scene>.txt per test scan, at the archive root, nothing else
        assert sorted(archive.namelist()) == sorted(f"{scene}.txt" for scene in test_list)
        for scene in test_list:
            mesh = root / "data" / "raw" / "scans_test" / scene / f"{scene}_vh_clean_2.ply"
            lines = archive.read(f"{scene}.txt").decode("ascii").splitlines()
            # one line per mesh vertex, in vertex order, each one integer nyu40 id of the 20 classes
            assert len(lines) == read_ply_header(mesh).element("vertex").count
            ids = np.array([int(line) for line in lines])
            assert set(ids.tolist()) <= set(SCANNET_VALID_NYU40)
            vertex = read_ply(mesh)
            labels = predictor.predict(np.stack([vertex[a] for a in "xyz"], 1),
                                       np.stack([vertex[c] for c in ("red", "green", "blue")], 1)).labels
            np.testing.assert_array_equal(ids, np.asarray(SCANNET_VALID_NYU40)[labels])
    assert json.loads((root / "submission" / "summary.json").read_text())["vertices"] == summary["vertices"]


def test_missing_test_mesh_is_refused_with_one_line(root, capsys, monkeypatch):
    scene = (root / "data" / "raw" / "scannetv2_test.txt").read_text().split()[0]
    (root / "data" / "raw" / "scans_test" / scene / f"{scene}_vh_clean_2.ply").unlink()
    line = refused(root, "submit", capsys, monkeypatch)
    assert line.startswith("minkseg submit: error: data/raw/scannetv2_test.txt names 1 test scene(s) without a mesh")


def test_other_dataset_families_record_that_no_benchmark_format_applies(root):
    edit_params(root, base__dataset="synthetic-synthia4d")
    params = params_from_dict(yaml.safe_load((root / "params.yaml").read_text()))
    summary = run_submit(params, PipelinePaths(root), progress=False)
    assert summary["applicable"] is False and not (root / "submission" / ARCHIVE).exists()


@pytest.mark.parametrize("scenes, counts, message", [
    ({"a": encode_scene([1, 2]), "b": encode_scene([3])}, {"a": 2, "b": 2}, "b.txt has 1 lines but b_vh_clean_2.ply "
                                                                             "has 2 vertices"),
    ({"a": encode_scene([1, 2])}, {"a": 2, "b": 1}, "1 scene(s) of the test list are missing (e.g. b)"),
    ({"a": encode_scene([1, 13]), "b": encode_scene([3])}, {"a": 2, "b": 1}, "a.txt has ids [13] that are not nyu40"),
    ({"a": b"1\nx\n", "b": encode_scene([3])}, {"a": 2, "b": 1}, "a.txt has a line that is not one integer"),
    ({"a": encode_scene([1]), "b": encode_scene([3]), "c": encode_scene([4])}, {"a": 1, "b": 1},
     "c.txt is not a scene of the test list"),
])
def test_validator_catches_what_the_benchmark_would_reject(tmp_path, scenes, counts, message):
    write_archive(tmp_path / "s.zip", scenes)
    with pytest.raises(EngineError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        validate_archive(tmp_path / "s.zip", counts, sorted(counts))
