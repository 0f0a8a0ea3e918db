"""Prediction export people can look at: coloured PLY files, PNG renders, confusion-matrix plot data.

PLY is what MeshLab and CloudCompare open directly; the PNG (ground truth beside prediction, seen from above)
is what a README or an MLflow run page can show; the confusion CSV is what ``dvc plots show`` renders with its
confusion template. Every file is written atomically. matplotlib is imported lazily and drawn on a bare Agg
canvas (no pyplot, no GUI), so headless servers work and only the evaluate stage pays the import.
"""

from __future__ import annotations

import colorsys
import csv
import io
from pathlib import Path
from typing import Sequence

import numpy as np

from minkseg.atomic import atomic_write_bytes, atomic_write_text

__all__ = ["SCANNET20_COLORS", "palette", "colorize", "write_point_cloud", "render_scene_png", "render_confusion_png",
           "write_per_class_csv",
           "confusion_rows", "write_confusion_csv"]

# ScanNet's conventional colours of its 20 benchmark classes (wall ... otherfurniture), as used by its tools.
SCANNET20_COLORS = np.array([
    (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
    (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
    (247, 182, 210), (219, 219, 141), (255, 127, 14), (158, 218, 229), (44, 160, 44), (112, 128, 144),
    (227, 119, 194), (82, 84, 163),
], dtype=np.uint8)

IGNORE_COLOR = np.array([0, 0, 0], dtype=np.uint8)


def palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours: ScanNet's for 20 classes, evenly spaced hues otherwise."""
    if num_classes == len(SCANNET20_COLORS):
        return SCANNET20_COLORS.copy()
    hues = np.arange(num_classes) / max(num_classes, 1)
    colours = [colorsys.hsv_to_rgb(h, 0.65 if i % 2 else 0.9, 0.95 if i % 2 else 0.75) for i, h in enumerate(hues)]
    return (np.asarray(colours).reshape(-1, 3) * 255).round().astype(np.uint8)


def colorize(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Per-point colours for class ids; ids outside the palette (the ignore label) are black."""
    labels = np.asarray(labels).reshape(-1)
    out = np.broadcast_to(IGNORE_COLOR, (labels.size, 3)).copy()
    known = (labels >= 0) & (labels < len(colours))
    out[known] = colours[labels[known]]
    return out


def write_point_cloud(path: str | Path, xyz: np.ndarray, rgb: np.ndarray, *, labels: np.ndarray | None = None,
                      predictions: np.ndarray | None = None) -> Path:
    """A binary PLY point cloud: x y z (float32), red green blue (uchar) and optional int ``label``/``prediction``.

    Only the columns are chosen here; encoding and the atomic write are :func:`minkseg.data.ply.write_ply`'s, the
    one PLY writer (``minkseg predict`` writes through it too)."""
    from minkseg.data.ply import write_ply

    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"write_point_cloud needs [N, >=3] coordinates, got {xyz.shape}")
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    fields = {axis: xyz[:, index] for index, axis in enumerate("xyz")}
    fields.update({name: rgb[:, channel] for channel, name in enumerate(("red", "green", "blue"))})
    for name, values in (("label", labels), ("prediction", predictions)):
        if values is not None:
            fields[name] = np.asarray(values).reshape(-1).astype("<i4")
    write_ply(path, fields, comments=["written by MinkSeg"])
    return Path(path)


def _figure_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight")
    return buffer.getvalue()


def _new_figure(**kwargs):
    # A bare Figure on an Agg canvas: no pyplot, so no global backend switch and no GUI, even headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(**kwargs)
    FigureCanvasAgg(figure)
    return figure


def render_scene_png(path: str | Path, xyz: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                     class_names: Sequence[str], *, title: str = "", max_points: int = 200_000,
                     up_axis: int = 2) -> Path:
    """Top-down view of a scene, ground truth beside prediction, with a legend of the classes present."""
    from matplotlib.lines import Line2D

    xyz = np.asarray(xyz)[:, :3]
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    if xyz.shape[0] > max_points:  # a fixed stride keeps the picture deterministic
        keep = np.linspace(0, xyz.shape[0] - 1, max_points).astype(np.int64)
        xyz, labels, predictions = xyz[keep], labels[keep], predictions[keep]
    plane = [axis for axis in range(3) if axis != up_axis]
    order = np.argsort(xyz[:, up_axis], kind="stable")  # draw low points first so the top surface shows
    colours = palette(len(class_names))
    marker_size = float(np.clip(30_000 / max(xyz.shape[0], 1), 0.3, 4.0))  # sparse scenes get bigger dots
    figure = _new_figure(figsize=(12, 6), dpi=100)
    axes = figure.subplots(1, 2)
    for ax, values, name in ((axes[0], labels, "ground truth"), (axes[1], predictions, "prediction")):
        ax.scatter(xyz[order, plane[0]], xyz[order, plane[1]], c=colorize(values[order], colours) / 255.0,
                   s=marker_size, linewidths=0, rasterized=True)
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.set_axis_off()
    present = sorted(set(np.unique(labels).tolist()) | set(np.unique(predictions).tolist()))
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[c] / 255.0, label=class_names[c])
               for c in present if 0 <= c < len(class_names)]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    data = _figure_bytes(figure)
    return atomic_write_bytes(path, data)


def render_confusion_png(path: str | Path, cm: np.ndarray, class_names: Sequence[str]) -> Path:
    """Row-normalised confusion matrix heat map (rows: ground truth), for MLflow and the README."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(5.0, 0.45 * len(class_names) + 2)
    figure = _new_figure(figsize=(size, size), dpi=100)
    ax = figure.subplots()
    image = ax.imshow(normalised, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    data = _figure_bytes(figure)
    return atomic_write_bytes(path, data)


def confusion_rows(cm: np.ndarray, max_rows: int = 20_000) -> np.ndarray:
    """Counts per (actual, predicted) cell for a row-per-point plot file of at most ``max_rows`` rows.

    DVC's confusion template counts rows; one row per point of a whole split would be millions. Up to
    ``max_rows`` points the counts are exact; beyond, they are scaled to ``max_rows`` by largest-remainder
    rounding, so the picture keeps its proportions (the exact matrix is in the metrics JSON).
    """
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    if total <= max_rows:
        return cm.copy()
    scaled = cm.astype(np.float64) * (max_rows / total)
    counts = np.floor(scaled).astype(np.int64)
    remainder = max_rows - int(counts.sum())
    if remainder > 0:
        order = np.argsort(-(scaled - counts).reshape(-1), kind="stable")[:remainder]
        counts.reshape(-1)[order] += 1
    return counts


def write_confusion_csv(path: str | Path, cm: np.ndarray, class_names: Sequence[str],
                        max_rows: int = 20_000) -> Path:
    """``actual,predicted`` rows (class names) for ``dvc plots show`` with the confusion template."""
    counts = confusion_rows(cm, max_rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["actual", "predicted"])
    for actual, predicted in zip(*np.nonzero(counts)):
        row = [class_names[actual], class_names[predicted]]
        writer.writerows([row] * int(counts[actual, predicted]))
    return atomic_write_text(path, buffer.getvalue())


def write_per_class_csv(path: str | Path, metrics: dict) -> Path:
    """``class,iou,acc,ap`` rows for the per-class bar charts of ``dvc plots show``.

    Classes that never occur (no ground truth, never predicted: IoU undefined) get no row, so that a 20-class
    label space scored on a 12-class scene set draws 12 bars; an undefined single value is an empty cell.
    """
    iou, acc = metrics["per_class_iou"], metrics["per_class_acc"]
    ap = metrics.get("per_class_ap") or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class", "iou", "acc", "ap"])

    def cell(value) -> str:
        return "" if value is None or not np.isfinite(value) else f"{float(value):.6g}"

    for name, value in iou.items():
        if value is not None and np.isfinite(value):
            writer.writerow([name, cell(value), cell(acc.get(name)), cell(ap.get(name))])
    return atomic_write_text(path, buffer.getvalue())
