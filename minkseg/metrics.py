"""Semantic-segmentation metrics from one confusion matrix (plus score histograms for mAP).

Everything is reduced to sums -- a confusion matrix of counts and, for average precision, per-class histograms of
scores -- because sums can be accumulated scene by scene, checkpointed and all-reduced across DDP ranks without
keeping millions of per-point predictions in memory. Conventions: rows are the ground truth ("actual"), columns
the prediction; points whose label equals ``ignore_label`` are left out everywhere; metrics are fractions in
[0, 1]; a class that never occurs (no ground truth and no prediction) is NaN and left out of the means, as in the
ScanNet benchmark.
"""

from __future__ import annotations

from minkseg.errors import MetricsError

from typing import Any, Sequence

import numpy as np

__all__ = [
    "MetricsError",
    "confusion_matrix",
    "iou_per_class",
    "accuracy_per_class",
    "overall_accuracy",
    "mean_iou",
    "mean_accuracy",
    "average_precision",
    "average_precision_from_histograms",
    "APAccumulator",
    "SegmentationMetrics",
    "summarize",
]


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, possibly on the GPU
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_class_ids(values: np.ndarray, num_classes: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = np.unique(values[(values < 0) | (values >= num_classes)])[:10].tolist()
        raise MetricsError(
            f"{what} contains class ids outside [0, {num_classes}): {bad}; labels must be mapped to "
            f"0..{num_classes - 1} (or the ignore label) before scoring"
        )


def confusion_matrix(target: Any, prediction: Any, num_classes: int, ignore_label: int = 255) -> np.ndarray:
    """Count (actual, predicted) pairs into an int64 ``[num_classes, num_classes]`` matrix, skipping ignored points."""
    if num_classes <= 0:
        raise MetricsError(f"num_classes must be > 0 (got {num_classes})")
    target_np = _as_numpy(target).reshape(-1).astype(np.int64, copy=False)
    prediction_np = _as_numpy(prediction).reshape(-1).astype(np.int64, copy=False)
    if target_np.shape != prediction_np.shape:
        raise MetricsError(
            f"labels and predictions differ in length ({target_np.size} vs {prediction_np.size}); "
            "predictions must be mapped back to every labelled point"
        )
    keep = target_np != ignore_label
    target_np, prediction_np = target_np[keep], prediction_np[keep]
    _check_class_ids(target_np, num_classes, "ground truth")
    _check_class_ids(prediction_np, num_classes, "prediction")
    flat = np.bincount(target_np * num_classes + prediction_np, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _check_square(cm: np.ndarray) -> np.ndarray:
    cm = _as_numpy(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise MetricsError(f"a confusion matrix must be square, got shape {tuple(cm.shape)}")
    return cm


def iou_per_class(cm: Any) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN for a class that is neither present nor predicted."""
    cm = _check_square(cm)
    tp = np.diag(cm)
    return _divide(tp, cm.sum(axis=0) + cm.sum(axis=1) - tp)


def accuracy_per_class(cm: Any) -> np.ndarray:
    """TP / (ground-truth count) per class, i.e. recall; NaN for a class absent from the ground truth."""
    cm = _check_square(cm)
    return _divide(np.diag(cm), cm.sum(axis=1))


def overall_accuracy(cm: Any) -> float:
    """Fraction of all scored points predicted correctly; NaN when nothing was scored."""
    cm = _check_square(cm)
    return float(_divide(np.asarray(np.trace(cm)), np.asarray(cm.sum())))


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def mean_iou(cm: Any) -> float:
    """Mean of :func:`iou_per_class` over classes where it is defined."""
    return _nanmean(iou_per_class(cm))


def mean_accuracy(cm: Any) -> float:
    """Mean of :func:`accuracy_per_class` over classes present in the ground truth."""
    return _nanmean(accuracy_per_class(cm))


def average_precision_from_histograms(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Per-class AP from score histograms ``[C, B]`` ordered from the lowest to the highest score bin.

    AP = sum over thresholds of (recall step) x (precision at that threshold), thresholds taken at every
    distinct score (here: bin) from high to low, ties counted together -- the definition scikit-learn's
    ``average_precision_score`` uses. NaN for a class without positives.
    """
    positives = np.asarray(positives, dtype=np.float64)[:, ::-1]
    negatives = np.asarray(negatives, dtype=np.float64)[:, ::-1]
    true_positives = np.cumsum(positives, axis=1)
    false_positives = np.cumsum(negatives, axis=1)
    precision = _divide(true_positives, true_positives + false_positives)
    total_positives = positives.sum(axis=1)
    weighted = np.where(positives > 0, positives * np.nan_to_num(precision), 0.0).sum(axis=1)
    return _divide(weighted, total_positives)


def _valid_scores(scores: Any, target: Any, ignore_label: int) -> tuple[np.ndarray, np.ndarray]:
    scores_np = _as_numpy(scores)
    target_np = _as_numpy(target).reshape(-1).astype(np.int64, copy=False)
    if scores_np.ndim != 2 or scores_np.shape[0] != target_np.size:
        raise MetricsError(
            f"scores must be [num_points, num_classes] matching {target_np.size} labels, got {tuple(scores_np.shape)}"
        )
    keep = target_np != ignore_label
    target_np = target_np[keep]
    _check_class_ids(target_np, scores_np.shape[1], "ground truth")
    return scores_np[keep], target_np


def average_precision(scores: Any, target: Any, ignore_label: int = 255) -> np.ndarray:
    """Exact per-class average precision of one-vs-rest ``scores`` ``[N, C]``; NaN for classes absent in ``target``."""
    scores_np, target_np = _valid_scores(scores, target, ignore_label)
    num_classes = scores_np.shape[1]
    result = np.full(num_classes, np.nan)
    for cls in range(num_classes):
        is_positive = target_np == cls
        if not is_positive.any():
            continue
        class_scores = scores_np[:, cls].astype(np.float64)
        distinct, inverse = np.unique(class_scores, return_inverse=True)  # ascending, ties share a bin
        positives = np.bincount(inverse, weights=is_positive, minlength=distinct.size)
        negatives = np.bincount(inverse, weights=~is_positive, minlength=distinct.size)
        result[cls] = average_precision_from_histograms(positives[None], negatives[None])[0]
    return result


class APAccumulator:
    """Streaming per-class average precision over probabilities in [0, 1], binned into ``bins`` equal bins.

    Exact AP needs every score of every point of the whole split in memory (ScanNet val: ~10^8 x 20); binning the
    scores keeps a fixed ``[2, C, bins]`` count array that sums across scenes and ranks. The only approximation is
    that scores inside one bin count as ties (1/bins resolution).
    """

    def __init__(self, num_classes: int, bins: int = 16384) -> None:
        if num_classes <= 0 or bins <= 1:
            raise MetricsError(f"APAccumulator needs num_classes > 0 and bins > 1 (got {num_classes}, {bins})")
        self.num_classes = num_classes
        self.bins = bins
        self.counts = np.zeros((2, num_classes, bins), dtype=np.int64)  # [negatives/positives, class, bin]

    def update(self, scores: Any, target: Any, ignore_label: int = 255) -> None:
        """Add the points of one batch/scene: ``scores`` ``[N, C]`` probabilities, ``target`` ``[N]`` labels."""
        scores_np, target_np = _valid_scores(scores, target, ignore_label)
        if scores_np.shape[1] != self.num_classes:
            raise MetricsError(f"scores have {scores_np.shape[1]} classes, expected {self.num_classes}")
        if not np.isfinite(scores_np).all():
            raise MetricsError("scores contain NaN or infinite values; the model output diverged")
        class_ids = np.arange(self.num_classes)[None, :]
        chunk = max(1, (1 << 22) // self.num_classes)  # bound the temporary [chunk, C] arrays to ~32 MB
        for start in range(0, scores_np.shape[0], chunk):
            part = scores_np[start:start + chunk].astype(np.float64)
            bin_index = np.clip((part * self.bins).astype(np.int64), 0, self.bins - 1)
            is_positive = (target_np[start:start + chunk, None] == class_ids).astype(np.int64)
            flat = (is_positive * self.num_classes + class_ids) * self.bins + bin_index
            self.counts += np.bincount(flat.reshape(-1), minlength=self.counts.size).reshape(self.counts.shape)

    def average_precision(self) -> np.ndarray:
        """Per-class AP so far; NaN for classes without positives."""
        return average_precision_from_histograms(self.counts[1], self.counts[0])


class SegmentationMetrics:
    """Accumulates a confusion matrix (and optionally AP histograms) over scenes; see :func:`summarize`."""

    def __init__(self, num_classes: int, ignore_label: int = 255, with_ap: bool = False,
                 ap_bins: int = 16384) -> None:
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.ap = APAccumulator(num_classes, ap_bins) if with_ap else None

    def update(self, target: Any, prediction: Any = None, scores: Any = None) -> None:
        """Add one scene: labels plus either predicted class ids or scores (then prediction = argmax)."""
        if prediction is None:
            if scores is None:
                raise MetricsError("update() needs predictions or scores")
            prediction = _as_numpy(scores).argmax(axis=1)
        self.confusion += confusion_matrix(target, prediction, self.num_classes, self.ignore_label)
        if self.ap is not None:
            if scores is None:
                raise MetricsError("mAP needs per-point scores; pass scores= to update()")
            self.ap.update(scores, target, self.ignore_label)

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The metrics dictionary of :func:`summarize` for everything added so far."""
        ap = self.ap.average_precision() if self.ap is not None else None
        return summarize(self.confusion, class_names, ap)


def summarize(cm: Any, class_names: Sequence[str] | None = None, ap: np.ndarray | None = None) -> dict[str, Any]:
    """All headline and per-class metrics of one confusion matrix as a JSON-ready dict.

    Keys: ``miou``, ``oa``, ``macc``, ``map`` (None without scores), ``per_class_iou`` / ``per_class_acc`` /
    ``per_class_ap`` (by class name), ``num_points`` and ``confusion_matrix`` (``labels`` + ``matrix``, rows are
    the ground truth). Undefined values are NaN here and become null in JSON.
    """
    cm = _check_square(cm).astype(np.int64)
    num_classes = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise MetricsError(f"{len(names)} class names for a {num_classes}-class confusion matrix")
    if len(set(names)) != len(names):
        raise MetricsError(f"class names must be unique to key per-class metrics, got {names}")
    if ap is not None and np.asarray(ap).shape != (num_classes,):
        raise MetricsError(f"ap must have one value per class ({num_classes}), got shape {np.asarray(ap).shape}")
    iou = iou_per_class(cm)
    acc = accuracy_per_class(cm)
    return {
        "miou": _nanmean(iou),
        "oa": overall_accuracy(cm),
        "macc": _nanmean(acc),
        "map": _nanmean(np.asarray(ap, dtype=np.float64)) if ap is not None else None,
        "per_class_iou": {name: float(value) for name, value in zip(names, iou)},
        "per_class_acc": {name: float(value) for name, value in zip(names, acc)},
        "per_class_ap": {name: float(value) for name, value in zip(names, ap)} if ap is not None else None,
        "num_points": int(cm.sum()),
        "confusion_matrix": {"labels": names, "matrix": cm.tolist()},
    }
