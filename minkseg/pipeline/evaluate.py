"""The evaluate stage: score the trained model on every point of the evaluation split with test-time voting;
headline metrics JSON, per-class and confusion CSVs, confusion PNG, coloured PLY/PNG exports, one MLflow run."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from minkseg.atomic import check_writable
from minkseg.config import Params
from minkseg.engine.evaluator import Evaluator, headline_metrics, write_evaluation
from minkseg.engine.tracking import flatten_metrics, make_tracker
from minkseg.errors import EngineError
from minkseg.pipeline.lineage import RECORD_KEY, check_chain, records_on_disk
from minkseg.pipeline.mlflow_glue import check_tracking_store, device_tag
from minkseg.pipeline.model import check_model_fits_dataset, load_trained_model
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.voting import VotingScenes

log = logging.getLogger(__name__)

__all__ = ["run_evaluate", "read_training_summary"]


def run_evaluate(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping:
    """Score the trained model on every point of the evaluation split; metrics JSON, plots, PLY and PNG exports."""
    for directory in (paths.predictions, paths.metrics):
        check_writable(directory)
    check_tracking_store(params)
    model, payload = load_trained_model(paths.model)
    check_model_fits_dataset(paths.model, payload, params)
    check_chain(params, {**records_on_disk(paths, ("download", "preprocess", "voxelize")),
                         "train": (str(paths.model), payload.get(RECORD_KEY))})
    training = read_training_summary(paths.metrics / "train.json")
    evaluator = Evaluator.from_params(params, model, num_classes=int(payload["model"]["out_channels"]),
                                      class_names=payload["class_names"])
    tracker = make_tracker(params.mlflow, stage="evaluate", log_params=params.flat(), workdir=paths.root,
                           model=params.train.model, dataset=params.base.dataset,
                           device=device_tag(evaluator.device))
    with tracker:  # ends the run (and its pipeline run) when the stage ends, FAILED if it fails
        start = time.perf_counter()
        result = evaluator.evaluate(VotingScenes(params, paths), export_dir=paths.predictions,
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
