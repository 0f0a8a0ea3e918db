"""One function per DVC stage: params in, library calls, outputs written atomically.

The stage scripts in ``stages/`` only parse arguments and call these, so the wiring between data, networks and
engine lives in one tested place. Paths are relative to the repository root (DVC runs every stage there).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from minkseg.atomic import atomic_write_json, check_writable
from minkseg.config import Params
from minkseg.engine import distributed
from minkseg.engine.errors import EngineError
from minkseg.engine.evaluator import HEADLINE_FROM_TRAINING, Evaluator, headline_metrics, write_evaluation
from minkseg.engine.modelfile import load_model_file, save_model_file
from minkseg.engine.predictor import voting_rotations
from minkseg.engine.runtime import current_governor
from minkseg.engine.tracking import Tracker, flatten_metrics, make_tracker
from minkseg.engine.trainer import Trainer, seed_everything

log = logging.getLogger(__name__)

__all__ = ["PipelinePaths", "run_download", "run_preprocess", "run_voxelize", "run_train", "run_evaluate",
           "load_trained_model"]

IN_CHANNELS = 3  # features are colours (rgb / 255 - 0.5), as in the paper
EXTERNAL_SOURCE = "source.json"  # what data/raw holds when the raw data lives in the user's own folder


@dataclass(frozen=True)
class PipelinePaths:
    """Where each stage writes; the same names appear in dvc.yaml."""

    root: Path = Path(".")

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "data" / "preprocessed"

    @property
    def voxelized(self) -> Path:
        return self.root / "data" / "voxelized"

    @property
    def checkpoints(self) -> Path:
        return self.root / "data" / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "models" / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"


def _external_root(params: Params) -> Path | None:
    """The user's own dataset folder for real datasets, or None when data/raw holds the raw data itself."""
    dataset = params.base.dataset
    if dataset == "scannet":
        return Path(params.download.scannet_root).expanduser()
    if dataset == "synthia4d" and params.download.synthia_root:
        return Path(params.download.synthia_root).expanduser()
    return None


def raw_location(params: Params, paths: PipelinePaths) -> Path:
    return _external_root(params) or paths.raw


def run_download(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """Make the raw data available: generate the synthetic datasets, download + extract Synthia4D, or check a
    local ScanNet copy. For external folders data/raw records what was found, so later stages see a change."""
    from minkseg.data import prepare_raw

    dataset = params.base.dataset
    external = _external_root(params)
    check_writable(paths.raw.parent)  # a read-only dataset folder of the user's is fine: it is only read
    synthetic = params.download.synthetic.model_dump()
    # Only the splits that will be preprocessed must be present in a user's copy (ScanNet's test scans are optional).
    report = prepare_raw(dataset, external or paths.raw, urls=params.download.synthia_urls, synthetic=synthetic,
                         seed=params.base.seed, splits=tuple(params.preprocess.splits),
                         workers=params.preprocess.num_workers, progress=progress)
    summary = {"dataset": dataset, "location": str(external or paths.raw), **_report_fields(report)}
    if external is not None:
        paths.raw.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.raw / EXTERNAL_SOURCE, summary)
    return summary


def _report_fields(report: Any) -> dict[str, Any]:
    fields = getattr(report, "__dict__", {})
    return {k: v for k, v in fields.items() if k not in ("dataset", "root") and _jsonable(v)}


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


def run_preprocess(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    from minkseg.data import preprocess

    check_writable(paths.preprocessed.parent)
    return preprocess(params.base.dataset, raw_location(params, paths), paths.preprocessed,
                      splits=tuple(params.preprocess.splits), workers=params.preprocess.num_workers,
                      progress=progress)


def run_voxelize(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    from minkseg.data import voxelize_split

    v = params.voxelize
    check_writable(paths.voxelized.parent)
    return voxelize_split(paths.preprocessed, paths.voxelized, splits=(params.evaluate.split,),
                          voxel_size=v.voxel_size, clip_bound=_clip(v.clip_bound), label_mode=v.label_mode,
                          temporal_numseq=v.temporal_numseq, temporal_dilation=v.temporal_dilation,
                          workers=params.preprocess.num_workers, progress=progress)


def _clip(clip_bound: Any) -> Any:
    from minkseg.data.datasets import SPEC_DEFAULT

    return SPEC_DEFAULT if clip_bound == "dataset" else clip_bound


def _dataset_spec(params: Params):
    from minkseg.data import get_spec

    return get_spec(params.base.dataset)


def build_network(params: Params) -> torch.nn.Module:
    from minkseg.nn import build_model

    spec = _dataset_spec(params)
    return build_model(params.train.model, IN_CHANNELS, spec.num_classes, D=spec.dimension,
                       conv1_kernel_size=params.train.conv1_kernel_size, bn_momentum=params.train.bn_momentum)


def run_train(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """Train with resumable checkpoints in data/checkpoints; best weights to models/model.pt, curves to metrics/."""
    from minkseg.data import TrainDataset, VoxelizedDataset, balanced_class_weights, collate

    distributed.relaunch_from_params(params.base)  # replaces this process with torchrun when > 1 process
    dist = distributed.init_from_env("cuda" if params.base.device == "cuda" else "cpu")
    if dist.is_main:  # fail in the first second, not after days of training
        for directory in (paths.checkpoints, paths.model.parent, paths.metrics):
            check_writable(directory)
    spec = _dataset_spec(params)
    v, t = params.voxelize, params.train
    train_set = TrainDataset(paths.preprocessed, "train", voxel_size=v.voxel_size, clip_bound=_clip(v.clip_bound),
                             augment=t.augment, label_mode=v.label_mode, temporal_numseq=v.temporal_numseq,
                             temporal_dilation=v.temporal_dilation)
    val_set = VoxelizedDataset(paths.voxelized, params.evaluate.split)
    weights = balanced_class_weights(paths.preprocessed) if t.class_weights == "balanced" else None
    seed_everything(params.base.seed)  # the initial weights are part of "same params, same result"
    model = build_network(params)

    def tracker(run_id: str | None):  # called by fit() once it knows whether it resumes an MLflow run
        return make_tracker(params.mlflow, stage="train", log_params=params.flat(), run_id=run_id,
                            is_main=dist.is_main, workdir=paths.root, model=params.train.model,
                            dataset=params.base.dataset, device=_device_tag(trainer.device))

    trainer = Trainer.from_params(params, model, train_dataset=train_set, collate_fn=collate,
                                  num_classes=spec.num_classes, val_dataset=val_set, class_names=spec.class_names,
                                  checkpoint_dir=paths.checkpoints, curves_dir=paths.metrics, tracker=tracker,
                                  progress=progress, class_weights=weights)
    start = time.perf_counter()
    with _finished_on_error(trainer):
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
            save_trained_model(paths.model, state, params)
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


@contextlib.contextmanager
def _finished_on_error(trainer: Trainer) -> Iterator[None]:
    """Ends the trainer's MLflow run (and its pipeline run) as FAILED / KILLED when training raises."""
    try:
        yield
    except BaseException as exc:
        if trainer.tracker is not None:
            trainer.tracker.__exit__(type(exc), exc, exc.__traceback__)
        raise


def _device_tag(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: the device a run used, as a tag."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def save_trained_model(path: Path, state: Mapping[str, torch.Tensor], params: Params) -> Path:
    """Weights plus what is needed to rebuild the network and to use it on new scans (format: modelfile)."""
    return save_model_file(path, state, model_description(params))


def model_description(params: Params) -> dict[str, Any]:
    """Everything the model file records besides the weights (see minkseg.engine.modelfile)."""
    spec = _dataset_spec(params)
    v, e = params.voxelize, params.evaluate
    from minkseg.data.samples import is_temporal

    clip = spec.clip_bound_test if v.clip_bound == "dataset" else v.clip_bound  # what evaluation clips with
    temporal = is_temporal(spec, v.temporal_numseq)
    description = {"model": params.train.model, "in_channels": IN_CHANNELS, "num_classes": spec.num_classes,
                   "dimension": spec.dimension, "conv1_kernel_size": params.train.conv1_kernel_size,
                   "bn_momentum": params.train.bn_momentum, "class_names": list(spec.class_names),
                   "dataset": spec.name, "voxel_size": float(v.voxel_size),
                   "clip_bound": None if clip is None else [[float(lo), float(hi)] for lo, hi in clip],
                   "rotation_angles": [float(angle) for angle in e.rotation_angles],
                   "rotation_axis": e.rotation_axis,
                   "temporal_numseq": int(v.temporal_numseq) if temporal else 1,
                   "temporal_dilation": int(v.temporal_dilation) if temporal else 1,
                   "ignore_label": int(params.base.ignore_label)}
    return description


load_trained_model = load_model_file  # the stage-facing name (the evaluate stage and the tests use it)


def _check_model_fits_dataset(path: Path, payload: Mapping[str, Any], params: Params) -> None:
    """A model file of another label space or dimension would be scored against the wrong classes; refuse it
    before any scene is read (a file from another dataset with the same classes is fine)."""
    spec = _dataset_spec(params)
    same = (int(payload["num_classes"]) == spec.num_classes and int(payload["dimension"]) == spec.dimension
            and list(payload.get("class_names", spec.class_names)) == list(spec.class_names))
    if not same:
        raise EngineError(f"{path}: was trained on {payload.get('dataset', 'another dataset')} with "
                          f"{payload['num_classes']} classes but base.dataset is {spec.name} with {spec.num_classes} "
                          "classes; re-run the train stage (dvc repro)")


class _VotingScenes:
    """Evaluation scenes as the evaluator wants them: one voxelised view per rotation angle, loaded lazily."""

    def __init__(self, params: Params, paths: PipelinePaths) -> None:
        from minkseg.data import EvalDataset, VoxelizedDataset

        v, e = params.voxelize, params.evaluate
        self.base = VoxelizedDataset(paths.voxelized, e.split)
        angles = voting_rotations(e.rotation_angles)  # the Predictor's view order, so both sum alike
        self.rotated = [EvalDataset(paths.preprocessed, e.split, voxel_size=v.voxel_size,
                                    clip_bound=_clip(v.clip_bound), label_mode=v.label_mode,
                                    temporal_numseq=v.temporal_numseq, temporal_dilation=v.temporal_dilation,
                                    rotation_degrees=angle, rotation_axis=e.rotation_axis)
                        for angle in angles if angle != 0]
        self.include_base = bool(angles) and angles[0] == 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self.base[index]
        views = ([base] if self.include_base else []) + [dataset[index] for dataset in self.rotated]
        return {"name": base["name"], "labels": base["point_labels"], "views": views}


def run_evaluate(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    """Score the trained model on every point of the evaluation split; metrics JSON, plots, PLY and PNG exports."""
    for directory in (paths.predictions, paths.metrics):
        check_writable(directory)
    model, payload = load_trained_model(paths.model)
    _check_model_fits_dataset(paths.model, payload, params)
    training = read_training_summary(paths.metrics / "train.json")
    evaluator = Evaluator.from_params(params, model, num_classes=int(payload["num_classes"]),
                                      class_names=payload["class_names"])
    tracker = make_tracker(params.mlflow, stage="evaluate", log_params=params.flat(), workdir=paths.root,
                           model=params.train.model, dataset=params.base.dataset,
                           device=_device_tag(evaluator.device))
    with tracker:  # ends the run (and its pipeline run) when the stage ends, FAILED if it fails
        start = time.perf_counter()
        result = evaluator.evaluate(_VotingScenes(params, paths), export_dir=paths.predictions,
                                    export_count=params.evaluate.export_count, progress=progress)
        paths.predictions.mkdir(parents=True, exist_ok=True)
        written = write_evaluation(result, metrics_path=paths.metrics / "eval.json",
                                   per_class_path=paths.metrics / "per_class.csv",
                                   confusion_csv_path=paths.metrics / "confusion.csv",
                                   confusion_png_path=paths.metrics / "confusion.png",
                                   class_names=payload["class_names"], training=training)
        tracker.log_metrics({**flatten_metrics(result.metrics),
                             "eval/seconds": round(time.perf_counter() - start, 1)})
        tracker.log_summary({key: value for key, value in headline_metrics(result.metrics, training).items()
                             if isinstance(value, (int, float))})
        for path in written:
            if Path(path).suffix == ".png":
                tracker.log_artifact(path)
    return result.metrics


def read_training_summary(path: Path) -> dict[str, Any] | None:
    """The train stage's ``metrics/train.json`` (its numbers head the evaluation's metrics file); None when the
    model was trained elsewhere and the file is absent."""
    try:
        summary = json.loads(Path(path).read_text())
    except FileNotFoundError:
        log.info("%s not found: the metrics file will hold the evaluation's numbers only", path)
        return None
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: unreadable ({exc}); re-run the train stage (dvc repro -f train)") from None
    if not isinstance(summary, dict):
        raise EngineError(f"{path}: not a JSON object; re-run the train stage (dvc repro -f train)")
    return summary
