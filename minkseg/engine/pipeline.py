"""One function per DVC stage: params in, library calls, outputs written atomically.

The stage scripts in ``stages/`` only parse arguments and call these, so the wiring between data, networks and
engine lives in one tested place. Paths are relative to the repository root (DVC runs every stage there).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
import torch

from minkseg.atomic import atomic_write_json, atomic_write_text, check_writable
from minkseg.config import Params
from minkseg.engine import distributed
from minkseg.errors import EngineError
from minkseg.engine.evaluator import HEADLINE_FROM_TRAINING, Evaluator, headline_metrics, write_evaluation
from minkseg.engine.lineage import RAW_RECORD, RECORD_KEY, check_chain, make_record
from minkseg.engine.predictor import voting_rotations
from minkseg.engine.runtime import current_governor
from minkseg.engine.tracking import Tracker, check_store, default_tracking_uri, flatten_metrics, make_tracker
from minkseg.engine.trainer import Trainer, seed_everything
from minkseg.weights import load_model_file, save_model_file

if TYPE_CHECKING:
    from minkseg.data.quantize import VoxelParams

log = logging.getLogger(__name__)

__all__ = ["PipelinePaths", "run_check_params", "run_download", "run_preprocess", "run_voxelize", "run_train",
           "run_evaluate", "run_submit", "load_trained_model"]

IN_CHANNELS = 3  # features are colours (rgb / 255 - 0.5), as in the paper
EXTERNAL_SOURCE = "source.json"  # what data/raw holds when the raw data lives in the user's own folder


@dataclass(frozen=True)
class PipelinePaths:
    """Where each stage writes; the same names appear in dvc.yaml."""

    root: Path = Path(".")

    @property
    def params_checked(self) -> Path:
        return self.root / "data" / "params-checked.txt"

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

    @property
    def submission(self) -> Path:
        return self.root / "submission"


def _external_root(params: Params) -> Path | None:
    """The user's own dataset folder for real datasets, or None when data/raw holds the raw data itself."""
    return _dataset_spec(params).raw_root(params.download)


def raw_location(params: Params, paths: PipelinePaths) -> Path:
    return _external_root(params) or paths.raw


PARAMS_CHECKED = "every params group passed minkseg/config.py's checks\n"  # the same bytes every time


def run_check_params(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> None:
    """The first stage of dvc.yaml: the params were validated on loading (a bad value stopped the run there).

    Why a stage of its own: ``dvc repro`` deletes a stage's outputs before running it, so a bad train param found
    by the train stage itself came after models/model.pt was gone. Every other stage depends on this stage's
    file, so DVC runs it first and a bad param stops the run before any output is deleted. The file's content
    never changes, so a re-run of this check re-runs nothing else."""
    paths.params_checked.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.params_checked, PARAMS_CHECKED)


def run_download(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """Make the raw data available: generate the synthetic datasets, download + extract Synthia4D, or check a
    local ScanNet copy. For external folders data/raw records what was found, so later stages see a change."""
    dataset = params.base.dataset
    external = _external_root(params)
    check_writable(paths.raw.parent)  # a read-only dataset folder of the user's is fine: it is only read
    # Only the splits that will be preprocessed must be present in a user's copy (ScanNet's test scans are optional).
    made_by = make_record("download", params, {})
    report = _dataset_spec(params).fetch(external or paths.raw, params.download, seed=params.base.seed,
                                         splits=tuple(params.preprocess.splits),
                                         workers=params.preprocess.num_workers, progress=progress,
                                         made_by=None if external is not None else made_by)
    summary = {"dataset": dataset, "location": str(external or paths.raw), **_report_fields(report)}
    if external is not None:
        paths.raw.mkdir(parents=True, exist_ok=True)
        atomic_write_json(paths.raw / EXTERNAL_SOURCE, summary)
        atomic_write_json(paths.raw / RAW_RECORD, made_by)
    return summary


def _report_fields(report: Any) -> dict[str, Any]:
    fields = getattr(report, "__dict__", {})
    return {k: v for k, v in fields.items() if k not in ("dataset", "root") and _jsonable(v)}


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or damaged: no record
        return None


def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:  # absent: the dataset reading it says so
        return "-"


def _records(paths: PipelinePaths, stages: tuple[str, ...]) -> dict[str, tuple[str, Any]]:
    """What made each output of ``stages`` that is on disk: stage -> (output, record or None). Outputs that are
    absent are left out (the stage reading them says how to make them)."""
    found: dict[str, tuple[str, Any]] = {}
    if "download" in stages and paths.raw.is_dir():
        found["download"] = (str(paths.raw), _read_json(paths.raw / RAW_RECORD))
    for stage, directory in (("preprocess", paths.preprocessed), ("voxelize", paths.voxelized)):
        if stage in stages and (directory / "manifest.json").is_file():
            manifest = _read_json(directory / "manifest.json")
            found[stage] = (str(directory), manifest.get(RECORD_KEY) if isinstance(manifest, dict) else None)
    return found


def _checked_inputs(params: Params, paths: PipelinePaths, stage: str) -> dict[str, tuple[str, Any]]:
    """Refuse (one line naming the stage to re-run) inputs made by other params or from other data; returns
    their records, from which ``stage``'s own record is made."""
    upstream = ("download", "preprocess", "voxelize")
    found = _records(paths, upstream[:upstream.index(stage)] if stage in upstream else upstream)
    check_chain(params, found)
    return found


def run_preprocess(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    from minkseg.data import preprocess

    check_writable(paths.preprocessed.parent)
    made_by = make_record("preprocess", params, _checked_inputs(params, paths, "preprocess"))
    return preprocess(_dataset_spec(params), raw_location(params, paths), paths.preprocessed,
                      splits=tuple(params.preprocess.splits), workers=params.preprocess.num_workers,
                      progress=progress, made_by=made_by)


def run_voxelize(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    from minkseg.data import voxelize_split

    check_writable(paths.voxelized.parent)
    made_by = make_record("voxelize", params, _checked_inputs(params, paths, "voxelize"))
    return voxelize_split(paths.preprocessed, paths.voxelized, (params.evaluate.split,), _dataset_spec(params),
                          voxel_params(params),
                          workers=params.preprocess.num_workers, progress=progress, made_by=made_by)


def voxel_params(params: Params) -> VoxelParams:
    """The one :class:`minkseg.data.quantize.VoxelParams` of a run (voxelize.* and base.ignore_label), handed to
    the voxelize stage, the training and evaluation datasets alike."""
    from minkseg.data.quantize import VoxelParams

    v = params.voxelize
    return VoxelParams(voxel_size=v.voxel_size, clip_bound=v.clip_bound, label_mode=v.label_mode,
                       ignore_label=params.base.ignore_label, temporal_numseq=v.temporal_numseq,
                       temporal_dilation=v.temporal_dilation)


def _dataset_spec(params: Params):
    """The dataset object (minkseg.datasets) every stage asks instead of branching on its name."""
    from minkseg.datasets import dataset_from_params

    return dataset_from_params(params)


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
        _check_tracking_store(params)
    made_by = make_record("train", params, _checked_inputs(params, paths, "train"))
    # What a checkpoint must match to be resumed: every param of the run (device and threads too), its inputs'
    # records, and their manifests (scenes, point and label counts: a re-made input under the same params).
    resume_fingerprint = "+".join([params.fingerprint(), made_by["fingerprint"],
                                   *(_file_hash(d / "manifest.json") for d in (paths.preprocessed, paths.voxelized))])
    spec = _dataset_spec(params)
    t = params.train
    train_set = TrainDataset(paths.preprocessed, "train", spec, voxel_params(params), augment=t.augment)
    val_set = VoxelizedDataset(paths.voxelized, params.evaluate.split, ignore_label=params.base.ignore_label)
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
                                  progress=progress, class_weights=weights, fingerprint=resume_fingerprint)
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


def _check_tracking_store(params: Params) -> None:
    """A broken MLflow store stops the stage before it works, not after (evaluate logs only at its end)."""
    if params.mlflow.enabled:
        check_store(params.mlflow.tracking_uri or default_tracking_uri())


def save_trained_model(path: Path, state: Mapping[str, torch.Tensor], params: Params,
                       made_by: Mapping[str, Any] | None = None) -> Path:
    """Weights plus what is needed to rebuild the network and to use it on new scans (format: minkseg.weights), and
    what made them (params and inputs, checked by evaluate)."""
    description = model_description(params)
    if made_by is not None:
        description[RECORD_KEY] = dict(made_by)
    return save_model_file(path, state, description)


def model_description(params: Params) -> dict[str, Any]:
    """Everything the model file records besides the weights (format: :mod:`minkseg.weights`)."""
    from dataclasses import replace

    spec = _dataset_spec(params)
    v, e = params.voxelize, params.evaluate
    voxel = voxel_params(params)
    temporal = spec.is_temporal(v.temporal_numseq)
    voxel = replace(voxel, clip_bound=spec.clip_bound_test if v.clip_bound == "dataset" else voxel.clip_bound,
                    temporal_numseq=voxel.temporal_numseq if temporal else 1,
                    temporal_dilation=voxel.temporal_dilation if temporal else 1)  # what evaluation uses
    network = {"name": params.train.model, "in_channels": IN_CHANNELS, "out_channels": spec.num_classes,
               "D": spec.dimension, "conv1_kernel_size": params.train.conv1_kernel_size,
               "bn_momentum": params.train.bn_momentum}
    return {"model": network, "class_names": list(spec.class_names), "dataset": spec.name,
            "voxelization": voxel.as_dict(), "rotation_angles": [float(angle) for angle in e.rotation_angles],
            "rotation_axis": e.rotation_axis}


load_trained_model = load_model_file  # the stage-facing name (the evaluate stage and the tests use it)


def _check_model_fits_dataset(path: Path, payload: Mapping[str, Any], params: Params) -> None:
    """A model file of another label space or dimension would be scored against the wrong classes; refuse it
    before any scene is read (a file from another dataset with the same classes is fine)."""
    spec = _dataset_spec(params)
    network = payload["model"]
    same = (int(network["out_channels"]) == spec.num_classes and int(network["D"]) == spec.dimension
            and list(payload.get("class_names", spec.class_names)) == list(spec.class_names))
    if not same:
        raise EngineError(f"{path}: was trained on {payload.get('dataset', 'another dataset')} with "
                          f"{network['out_channels']} classes but base.dataset is {spec.name} with {spec.num_classes} "
                          "classes; re-run the train stage (dvc repro)")


class _VotingScenes:
    """Evaluation scenes as the evaluator wants them: one voxelised view per rotation angle, loaded lazily."""

    def __init__(self, params: Params, paths: PipelinePaths) -> None:
        from minkseg.data import EvalDataset, VoxelizedDataset

        e = params.evaluate
        self.base = VoxelizedDataset(paths.voxelized, e.split, ignore_label=params.base.ignore_label)
        angles = voting_rotations(e.rotation_angles)  # the Predictor's view order, so both sum alike
        voxel = voxel_params(params)
        spec = _dataset_spec(params)
        self.rotated = [EvalDataset(paths.preprocessed, e.split, spec, voxel, rotation_degrees=angle,
                                    rotation_axis=e.rotation_axis)
                        for angle in angles if angle != 0]
        self.include_base = bool(angles) and angles[0] == 0
        self.preprocessed = paths.preprocessed
        self.export_count = e.export_count

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        base = self.base[index]
        views = ([base] if self.include_base else []) + [dataset[index] for dataset in self.rotated]
        scene = {"name": base["name"], "labels": base["point_labels"], "views": views}
        if index < self.export_count:  # exported scenes carry their original points and colours
            from minkseg.data import load_scene

            frames = [load_scene(self.preprocessed / source) for source in base["sources"]]
            scene["points"] = np.concatenate([frame.coords for frame in frames])
            scene["colors"] = np.concatenate([frame.colors for frame in frames])
        return scene


def run_evaluate(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    """Score the trained model on every point of the evaluation split; metrics JSON, plots, PLY and PNG exports."""
    for directory in (paths.predictions, paths.metrics):
        check_writable(directory)
    _check_tracking_store(params)
    model, payload = load_trained_model(paths.model)
    _check_model_fits_dataset(paths.model, payload, params)
    check_chain(params, {**_records(paths, ("download", "preprocess", "voxelize")),
                         "train": (str(paths.model), payload.get(RECORD_KEY))})
    training = read_training_summary(paths.metrics / "train.json")
    evaluator = Evaluator.from_params(params, model, num_classes=int(payload["model"]["out_channels"]),
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


def run_submit(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """The ScanNet benchmark submission of the test split (``scans_test``): every test mesh predicted with the
    evaluation's voting, written as the benchmark's zip of ``<scene>.txt`` nyu40 ids and validated against the
    official test list and each mesh's vertex count. Other dataset families have no such benchmark format; for them
    the stage only records that (the folder is a DVC output either way)."""
    from tqdm import tqdm

    from minkseg.atomic import atomic_directory
    from minkseg.data.ply import read_ply
    from minkseg.datasets.scannet import scene_files
    from minkseg.engine.predictor import Predictor
    from minkseg.engine.runtime import configure_cpu_runtime
    from minkseg.engine.submission import ARCHIVE, encode_scene, to_nyu40, validate_archive, write_archive

    check_writable(paths.submission.parent)
    spec = _dataset_spec(params)
    if not spec.scannet_benchmark:
        with atomic_directory(paths.submission) as staging:
            summary = {"dataset": spec.name, "applicable": False,
                       "reason": "the ScanNet benchmark format applies to ScanNet-format datasets only"}
            atomic_write_json(staging / "summary.json", summary)
        return summary
    root = raw_location(params, paths)
    scenes = spec.split_entries("test", root)
    meshes = {scene: scene_files(root, scene, "test")[0] for scene in scenes}
    missing = [scene for scene, mesh in meshes.items() if not mesh.is_file()]
    if missing:
        raise EngineError(f"{spec.split_file('test', root)} names {len(missing)} test scene(s) without a mesh under "
                          f"{root} (e.g. {meshes[missing[0]]}); download the test scans (download-scannet.py "
                          "--type _vh_clean_2.ply) or re-run the download stage")
    configure_cpu_runtime(params.base.num_threads)
    predictor = Predictor.from_model_file(paths.model, device=params.base.device,
                                          voting_angles=params.evaluate.rotation_angles)
    if predictor.class_names != list(spec.class_names):
        raise EngineError(f"{paths.model}: its classes are not the 20 ScanNet benchmark classes; re-run the train "
                          "stage on a ScanNet-format dataset (dvc repro)")
    texts, counts = {}, {}
    for scene in tqdm(scenes, desc="submit", unit="scene", disable=not progress):
        vertex = read_ply(meshes[scene], required=("x", "y", "z", "red", "green", "blue"))
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
        rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
        texts[scene] = encode_scene(to_nyu40(predictor.predict(xyz, rgb, name=str(meshes[scene])).labels, scene))
        counts[scene] = len(xyz)
    with atomic_directory(paths.submission) as staging:
        archive = write_archive(staging / ARCHIVE, texts)
        lines = validate_archive(archive, counts, scenes)
        summary = {"dataset": spec.name, "applicable": True, "archive": ARCHIVE, "scenes": len(lines),
                   "vertices": int(sum(lines.values())), "validated": True,
                   "rotation_angles": list(predictor.voting_angles)}
        atomic_write_json(staging / "summary.json", summary)
    return summary


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
