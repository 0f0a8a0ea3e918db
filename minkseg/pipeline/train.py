"""The train stage: resumable checkpoints in data/checkpoints, best weights in models/model.pt, curves in metrics/,
one MLflow run (a child of the pipeline run)."""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from minkseg.atomic import atomic_write_json, check_writable
from minkseg.config import Params
from minkseg.data.class_balance import balanced_class_weights
from minkseg.data.collate import collate
from minkseg.data.datasets import VoxelizedDataset
from minkseg.data.train_dataset import TrainDataset
from minkseg.engine import distributed
from minkseg.engine.evaluator import HEADLINE_FROM_TRAINING
from minkseg.engine.runtime import current_governor
from minkseg.engine.tracking import Tracker, make_tracker
from minkseg.engine.trainer import Trainer, seed_everything
from minkseg.pipeline.lineage import checked_inputs, make_record
from minkseg.pipeline.mlflow_glue import check_tracking_store, device_tag, finished_on_error
from minkseg.pipeline.model import build_network, model_description, save_trained_model
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.spec import dataset_spec, voxel_params

log = logging.getLogger(__name__)

__all__ = ["run_train"]


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:  # absent: the dataset reading it says so
        return "-"


def run_train(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """Train with resumable checkpoints in data/checkpoints; best weights to models/model.pt, curves to metrics/."""
    distributed.relaunch_from_params(params.base)  # replaces this process with torchrun when > 1 process
    dist = distributed.init_from_env("cuda" if params.base.device == "cuda" else "cpu")
    if dist.is_main:  # fail in the first second, not after days of training
        for directory in (paths.checkpoints, paths.model.parent, paths.metrics):
            check_writable(directory)
        check_tracking_store(params)
    made_by = make_record("train", params, checked_inputs(params, paths, "train"))
    # What a checkpoint must match to be resumed: every param of the run (device and threads too), its inputs'
    # records, and their manifests (scenes, point and label counts: a re-made input under the same params).
    resume_fingerprint = "+".join([params.fingerprint(), made_by["fingerprint"],
                                   *(_file_hash(d / "manifest.json") for d in (paths.preprocessed, paths.voxelized))])
    spec = dataset_spec(params)
    t = params.train
    train_set = TrainDataset(paths.preprocessed, "train", spec, voxel_params(params), augment=t.augment,
                             crop_voxels=t.crop_voxels)
    val_set = VoxelizedDataset(paths.voxelized, params.evaluate.split, ignore_label=params.base.ignore_label)
    weights = balanced_class_weights(paths.preprocessed) if t.class_weights == "balanced" else None
    seed_everything(params.base.seed)  # the initial weights are part of "same params, same result"
    model = build_network(params)

    def tracker(run_id: str | None):  # called by fit() once it knows whether it resumes an MLflow run
        return make_tracker(params.mlflow, stage="train", log_params=params.flat(), run_id=run_id,
                            is_main=dist.is_main, workdir=paths.root, model=params.train.model,
                            dataset=params.base.dataset, device=device_tag(trainer.device))

    trainer = Trainer.from_params(params, model, train_dataset=train_set, collate_fn=collate,
                                  num_classes=spec.num_classes, val_dataset=val_set, class_names=spec.class_names,
                                  checkpoint_dir=paths.checkpoints, curves_dir=paths.metrics, tracker=tracker,
                                  progress=progress, class_weights=weights, fingerprint=resume_fingerprint)
    start = time.perf_counter()
    with finished_on_error(trainer):
        result = trainer.fit()
    summary = {"best_val_miou": result.best_miou, "best_iteration": result.best_iteration,
               "iterations": result.iterations, "resumed_from": result.resumed_from,
               "train_seconds": round(time.perf_counter() - start, 1),
               "parameters": sum(p.numel() for p in model.parameters()),
               # > 0: the governor gave up threads to a busy neighbour, so the run is not bit-identical to a quiet one
               "cpu_thread_changes": governor.changes if (governor := current_governor()) is not None else 0}
    if dist.is_main:
        tracker = trainer.tracker or Tracker()
        with tracker:  # ends the run (and its pipeline run) now, FAILED if saving fails
            state = result.best_state if result.best_state is not None else result.last_state
            save_trained_model(paths.model, state, params, made_by)
            atomic_write_json(paths.metrics / "train.json", summary)
            numbers = {key: float(value) for key, value in summary.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            tracker.log_metrics({f"train.{key}": value for key, value in numbers.items()})
            tracker.log_summary({key: numbers[source] for key, source in HEADLINE_FROM_TRAINING.items()
                                 if source in numbers})
            uri = tracker.log_model(paths.model, model_description(params))
            if uri:
                log.info("MLflow model %s (register: mlflow.register_model('%s', 'minkseg'))", uri, uri)
    return summary
