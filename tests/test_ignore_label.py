"""``base.ignore_label`` is honoured by the whole chain: any allowed value gives the same metrics as 255.

Why this can hold: the scene and voxelised files store unannotated points as 255 (uint8; minkseg.data.scenefile),
and the loaders map that to ``base.ignore_label`` where labels reach the loss and the metrics. Before, the loss and
the metrics ignored ``base.ignore_label`` while the files said 255, so any other value trained on wrong labels.
"""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from minkseg.config import ConfigError, params_from_dict
from tests.data_fixtures import write_labelled_plys
from tests.test_datasets_ply_folder import ply_params, run_pipeline

TIMING = ("train_s",)  # seconds, the one number of eval.json that is not a result


def _results(root) -> tuple[dict, list, list]:
    metrics = json.loads((root / "metrics/eval.json").read_text())
    tables = []
    for name in ("per_class.csv", "confusion.csv"):
        with open(root / "metrics" / name, newline="") as handle:
            tables.append(list(csv.reader(handle)))
    return {k: v for k, v in metrics.items() if k not in TIMING}, tables[0], tables[1]


def test_another_ignore_label_gives_the_same_metrics_as_255(tmp_path):
    folder = tmp_path / "scans"
    write_labelled_plys(folder, count=6, points=800)  # 5% of the points unlabelled: the ignore label matters
    root = tmp_path / "ws"
    root.mkdir()
    first = run_pipeline(root, ply_params(folder))
    assert first["points"] > 0
    before = _results(root)
    # 1000 does not fit the uint8 label files at all: only a mapping where labels leave the files can honour it.
    for output in ("data/checkpoints", "models", "metrics", "predictions"):
        shutil.rmtree(root / output, ignore_errors=True)
    params = ply_params(folder)
    params["base"]["ignore_label"] = 1000
    run_pipeline(root, params)
    assert _results(root) == before


def test_an_ignore_label_that_is_a_class_id_is_refused():
    params = ply_params("unused")
    params["base"]["ignore_label"] = 2
    with pytest.raises(ConfigError, match=r"base.ignore_label: 2 is a class id of ply-folder \(classes 0..2\); use "
                                          r"a value >= 3"):
        params_from_dict(params)
