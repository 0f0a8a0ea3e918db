"""train.class_weights: balanced -- weights from the preprocess manifest's label counts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from minkseg.config import ConfigError, params_from_dict
from minkseg.data.class_balance import balanced_class_weights
from minkseg.errors import DataError
from minkseg.data.scenefile import MANIFEST
from minkseg.data.scenefile import FORMAT_VERSION
from tests.robust_workspace import REPO


def write_manifest(tmp_path, counts):
    manifest = {"format_version": FORMAT_VERSION, "splits": {"train": []}}
    if counts is not None:
        manifest["label_counts"] = {"train": counts}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_inverse_sqrt_frequency_normalised_over_present_classes(tmp_path):
    counts = [900, 0, 100, 25]
    weights = balanced_class_weights(write_manifest(tmp_path, counts))
    freq = np.array([900, 100, 25]) / 1025
    expected = freq ** -0.5 / (freq ** -0.5).mean()
    assert weights[1] == 1.0  # absent class: neutral
    assert np.allclose([weights[0], weights[2], weights[3]], expected, atol=1e-6)
    assert np.mean([weights[0], weights[2], weights[3]]) == pytest.approx(1.0)
    assert weights[3] == pytest.approx(2 * weights[2], rel=1e-5) and weights[2] == pytest.approx(3 * weights[0], rel=1e-5)


def test_missing_or_empty_counts_give_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no label counts for split 'train'; re-run the preprocess stage"):
        balanced_class_weights(write_manifest(tmp_path, None))
    with pytest.raises(DataError, match="has no labelled point"):
        balanced_class_weights(write_manifest(tmp_path, [0, 0, 0]))


def test_params_accept_balanced_and_name_the_key_for_a_typo():
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["train"]["class_weights"] = "balanced"
    assert params_from_dict(data).train.class_weights == "balanced"
    data["train"]["class_weights"] = "balance"
    with pytest.raises(ConfigError) as info:
        params_from_dict(data)
    message = str(info.value)
    assert message.startswith("params.yaml: train.class_weights:") and len(message.splitlines()) == 1, message
