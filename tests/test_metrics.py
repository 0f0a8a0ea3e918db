"""Metrics against confusion matrices and average precisions computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from minkseg.metrics import (APAccumulator, MetricsError, SegmentationMetrics, accuracy_per_class,
                             average_precision, confusion_matrix, iou_per_class, mean_accuracy, mean_iou,
                             overall_accuracy, summarize)

NAN = float("nan")


def test_confusion_matrix_by_hand_with_ignore_label():
    target = [0, 0, 0, 1, 1, 2, 2, 2, 255, 1]
    prediction = [0, 1, 0, 1, 1, 2, 0, 2, 0, 2]
    cm = confusion_matrix(target, prediction, 4)
    # rows = actual, columns = predicted; the point labelled 255 is not counted
    np.testing.assert_array_equal(cm, [[2, 1, 0, 0], [0, 2, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(iou_per_class(cm), [2 / 4, 2 / 4, 2 / 4, NAN])
    np.testing.assert_array_equal(accuracy_per_class(cm), [2 / 3, 2 / 3, 2 / 3, NAN])
    assert mean_iou(cm) == pytest.approx(0.5)
    assert overall_accuracy(cm) == pytest.approx(6 / 9)
    assert mean_accuracy(cm) == pytest.approx(2 / 3)
    torch_cm = confusion_matrix(torch.tensor(target), torch.tensor(prediction), 4)
    np.testing.assert_array_equal(torch_cm, cm)


def test_a_predicted_but_absent_class_counts_as_zero_iou_but_not_in_macc():
    cm = confusion_matrix([0, 0, 1], [0, 2, 1], 3)
    np.testing.assert_array_equal(cm, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(iou_per_class(cm), [0.5, 1.0, 0.0])
    assert mean_iou(cm) == pytest.approx(0.5)
    np.testing.assert_array_equal(accuracy_per_class(cm), [0.5, 1.0, NAN])
    assert mean_accuracy(cm) == pytest.approx(0.75)
    assert overall_accuracy(cm) == pytest.approx(2 / 3)


def test_empty_and_invalid_inputs():
    cm = confusion_matrix([255, 255], [0, 1], 2)
    assert cm.sum() == 0 and math.isnan(mean_iou(cm)) and math.isnan(overall_accuracy(cm))
    with pytest.raises(MetricsError, match=r"ground truth contains class ids outside \[0, 3\): \[7\]"):
        confusion_matrix([0, 7], [0, 1], 3)
    with pytest.raises(MetricsError, match="prediction contains class ids outside"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(MetricsError, match="differ in length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(MetricsError, match="square"):
        mean_iou(np.zeros((2, 3)))


def test_average_precision_by_hand():
    # class 0 ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.6 (neg) -> AP = 0.5 * 1 + 0.5 * 2/3
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    target = np.array([0, 1, 0, 1])
    ap = average_precision(scores, target)
    assert ap[0] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # class 1 ranked: 0.4 (pos), 0.3 (neg), 0.2 (pos), 0.1 (neg) -> same shape
    assert ap[1] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties are one threshold: one positive and one negative at the same score -> precision 1/2
    assert average_precision(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([0, 1]))[0] == pytest.approx(0.5)
    # a class absent from the ground truth is NaN and left out of the mean; ignored points are skipped
    ap = average_precision(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.9, 0.1, 0.0]]), np.array([0, 1, 255]))
    assert ap[0] == 1.0 and ap[1] == 1.0 and math.isnan(ap[2])


def test_average_precision_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=2000)
    logits = rng.normal(size=(2000, 4)) + 1.5 * np.eye(4)[target]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = np.round(scores, 3)  # create ties on purpose
    ours = average_precision(scores, target)
    theirs = [sklearn_metrics.average_precision_score(target == c, scores[:, c]) for c in range(4)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_binned_ap_accumulates_in_chunks_and_agrees_with_exact():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, size=5000)
    target[::17] = 255
    logits = rng.normal(size=(5000, 3)) + 2.0 * np.eye(3)[np.minimum(target, 2)]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    accumulator = APAccumulator(3, bins=16384)
    for part in np.array_split(np.arange(5000), 7):
        accumulator.update(scores[part], target[part])
    np.testing.assert_allclose(accumulator.average_precision(), average_precision(scores, target), atol=1e-3)
    quantised = np.floor(scores * 16) / 16 + 1e-9  # scores already on bin edges: binning is exact
    coarse = APAccumulator(3, bins=16)
    coarse.update(quantised, target)
    np.testing.assert_allclose(coarse.average_precision(), average_precision(quantised, target), rtol=1e-12)
    with pytest.raises(MetricsError, match="NaN"):
        accumulator.update(np.full((1, 3), np.nan), np.array([0]))


def test_summary_has_every_key_by_class_name():
    metrics = SegmentationMetrics(3, with_ap=True)
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    metrics.update(np.array([0, 1, 1, 255]), scores=scores)
    summary = metrics.summary(["wall", "floor", "chair"])
    assert summary["confusion_matrix"] == {"labels": ["wall", "floor", "chair"],
                                           "matrix": [[1, 0, 0], [1, 1, 0], [0, 0, 0]]}
    assert summary["per_class_iou"]["wall"] == pytest.approx(0.5)
    assert summary["per_class_iou"]["floor"] == pytest.approx(0.5)
    assert math.isnan(summary["per_class_iou"]["chair"])
    assert summary["miou"] == pytest.approx(0.5) and summary["oa"] == pytest.approx(2 / 3)
    assert summary["macc"] == pytest.approx(0.75) and summary["num_points"] == 3
    assert summary["per_class_ap"]["wall"] == pytest.approx(1.0)  # wall: 0.8 pos, 0.6 neg, 0.2 neg
    assert summary["per_class_ap"]["floor"] == pytest.approx(1.0)  # floor: 0.7 pos, 0.3 pos, 0.1 neg
    assert summary["map"] == pytest.approx(1.0) and math.isnan(summary["per_class_ap"]["chair"])
    assert summarize(np.eye(2, dtype=int))["map"] is None
    with pytest.raises(MetricsError, match="unique"):
        summarize(np.eye(2, dtype=int), ["a", "a"])
