"""The preprocess stage: raw dataset -> one compact ``.npz`` per scene/frame plus ``manifest.json``.

Why a manifest: the training dataset needs per-scene point counts (batch packing), sequence/frame numbers (4D
windows) and the class table without opening thousands of files; the manifest carries all of it. Both formats (the
scene file and the manifest) are owned by :mod:`minkseg.data.scenefile`, with their readers.

Output layout (the whole directory is swapped in atomically, so a failed run leaves the old one untouched)::

    <out_dir>/manifest.json
    <out_dir>/<split>/<scene>.npz      (Synthia4D: ``<SEQUENCE>__<NNNNNN>.npz``)
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from minkseg.atomic import atomic_directory, atomic_write_json, check_writable
from minkseg.config import Params
from minkseg.data.parallel import run_parallel
from minkseg.data.scenefile import FORMAT_VERSION, MADE_BY, MANIFEST, save_scene, scene_filename
from minkseg.errors import DataError, MinkSegError
from minkseg.pipeline.lineage import checked_inputs, make_record
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.spec import dataset_spec, raw_location

if TYPE_CHECKING:
    from minkseg.datasets.base import SegmentationDataset

log = logging.getLogger(__name__)

__all__ = ["run_preprocess", "preprocess"]


def run_preprocess(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    """The stage: every scene of ``preprocess.splits`` of ``base.dataset`` into ``data/preprocessed``."""
    check_writable(paths.preprocessed.parent)
    made_by = make_record("preprocess", params, checked_inputs(params, paths, "preprocess"))
    return preprocess(dataset_spec(params), raw_location(params, paths), paths.preprocessed,
                      splits=tuple(params.preprocess.splits), workers=params.preprocess.num_workers,
                      progress=progress, made_by=made_by)


class _Collect(logging.Handler):
    """Keeps warnings of a worker so the parent process can report them (worker logs are otherwise lost)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _process_one(task: tuple["SegmentationDataset", str, str, str, str]
                 ) -> tuple[str, dict[str, Any] | None, str | None, list[str]]:
    """Worker: read one raw scene, write its npz; returns (entry, record, error message, warnings)."""
    dataset, raw_dir, split, entry, out_split_dir = task
    collect, data_log = _Collect(), logging.getLogger("minkseg")  # the readers log under minkseg.datasets
    data_log.addHandler(collect)
    try:
        scene = dataset.read_scene(raw_dir, split, entry)
        if scene.num_points == 0:  # nothing to train on or score: left out of the split by the caller
            return entry, None, None, collect.messages
        filename = scene_filename(scene.name)
        save_scene(Path(out_split_dir) / filename, scene)
    except DataError as exc:
        return entry, None, str(exc), collect.messages
    except MinkSegError:  # an unwritable output or a full disk is not this scene's fault: stop with its message
        raise
    except Exception as exc:  # a parse bug must still name the scene, not kill the pool silently
        return entry, None, f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).strip()})", collect.messages
    finally:
        data_log.removeHandler(collect)
    record: dict[str, Any] = {"name": scene.name, "file": f"{split}/{filename}", "num_points": scene.num_points,
                              "label_counts": np.bincount(scene.labels[scene.labels < dataset.num_classes],
                                                          minlength=dataset.num_classes).tolist()}
    record.update(dataset.scene_record(scene))
    return entry, record, None, collect.messages


def preprocess(dataset: "SegmentationDataset", raw_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
               splits: Sequence[str], workers: int = 1, progress: bool = True,
               made_by: Mapping[str, Any] | None = None) -> dict:
    """Convert every scene of ``splits`` of ``dataset`` (a :mod:`minkseg.datasets` object) to the compact
    format; returns the manifest written to ``out_dir``.

    ``made_by`` (what made the output: params and inputs) is stored in the manifest as is.

    Scenes are processed in ``workers`` processes with a progress bar. If any scene fails, the stage fails with
    the names of the failing scenes and ``out_dir`` keeps its previous content.
    """
    raw_dir = Path(raw_dir)
    dataset.check_raw(raw_dir, splits)
    with atomic_directory(out_dir) as staging:
        tasks = []
        for split in splits:
            (staging / split).mkdir()
            tasks += [(dataset, str(raw_dir), split, e, str(staging / split))
                      for e in dataset.split_entries(split, raw_dir)]
        outcomes = run_parallel(_process_one, tasks, workers, desc=f"preprocess {dataset.name}", progress=progress)
        results = {}
        for task, (entry, record, error, warnings) in zip(tasks, outcomes):
            results[task[2] + "/" + entry] = (record, error)
            if workers > 1 and len(tasks) > 1:  # in-process runs have logged them already
                for message in warnings:
                    log.warning("%s", message)
        failed = [(key, err) for key, (_, err) in results.items() if err is not None]
        if failed:
            names = ", ".join(key for key, _ in failed[:5]) + (" ..." if len(failed) > 5 else "")
            raise DataError(f"preprocess failed for {len(failed)} of {len(tasks)} scenes ({names}); first error: "
                            f"{failed[0][1]}")
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "dataset": dataset.name, "class_names": list(dataset.class_names),
            "ignore_label": dataset.ignore_label, "dimension": dataset.dimension, "unit": dataset.unit,
            "splits": {}, "label_counts": {}, "skipped": {},
        }
        if dataset.options_record() is not None:
            manifest["dataset_options"] = dataset.options_record()
        if made_by is not None:
            manifest[MADE_BY] = dict(made_by)
        for split in splits:
            entries = dataset.split_entries(split, raw_dir)
            # A scene without points (empty, or only NaN/inf points) is left out rather than refused: the official
            # split lists cannot be edited, so refusing would leave the user no way forward.
            skipped = [e for e in entries if results[f"{split}/{e}"][0] is None]
            for entry in skipped:
                log.warning("%s: no points; left out of split %s", entry, split)
            manifest["skipped"][split] = skipped
            records = [results[f"{split}/{e}"][0] for e in entries if results[f"{split}/{e}"][0] is not None]
            counts = np.zeros(dataset.num_classes, dtype=np.int64)
            for r in records:
                counts += np.asarray(r.pop("label_counts"))
            manifest["splits"][split] = records
            manifest["label_counts"][split] = counts.tolist()
        atomic_write_json(staging / MANIFEST, manifest)
    total = sum(len(v) for v in manifest["splits"].values())
    log.info("preprocessed %d scenes of %s into %s", total, dataset.name, out_dir)
    return manifest
