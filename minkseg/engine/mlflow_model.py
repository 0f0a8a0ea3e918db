"""The trained network as an MLflow model: registrable, and loadable by MLflow alone to label a point cloud.

``models/model.pt`` is MinkSeg's own file; MLflow can neither register nor load a bare weights artifact. So the
train stage also logs it as a ``pyfunc`` model: the weights file as an artifact, the ``minkseg`` package itself as
code (``code_paths``: a fresh process, with only the pinned pip requirements installed, imports the very code that
trained it), and :class:`PointCloudSegmenter` as the wrapper. Prediction goes through
:class:`minkseg.engine.predictor.Predictor` -- the one inference path, the evaluate stage's -- so MLflow's labels
are the evaluation's (same voxel size, clip box and test-time voting, all read from the model file).

Input: a float32 array ``[N, 6]`` (x, y, z in metres, r, g, b in 0..255). Output: ``[N]`` int64 class ids (the
class names are in the model's metadata and in its ``class_names.json`` artifact).
``model_config`` (overridable at load: ``mlflow.pyfunc.load_model(uri, model_config={"voting_angles": [0]})``):
``voting_angles`` (None = the evaluation's) and ``device`` (auto / cpu / cuda).

MLflow is imported only here, and this module only when tracking is on.
"""
from __future__ import annotations

import json
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import mlflow
import numpy as np

__all__ = ["PointCloudSegmenter", "log_segmentation_model", "pip_requirements", "INPUT_COLUMNS"]

INPUT_COLUMNS = ("x", "y", "z", "r", "g", "b")
MODEL_NAME = "model"  # the model's name within its run: runs:/<run id>/model
WEIGHTS = "weights"  # the artifact key of models/model.pt
# What importing minkseg's inference path needs (besides the Python standard library), pinned at logging time.
RUNTIME_DISTRIBUTIONS = ("mlflow", "cloudpickle", "torch", "numpy", "scipy", "pydantic", "PyYAML", "tqdm")


def pip_requirements(distributions: Sequence[str] = RUNTIME_DISTRIBUTIONS) -> list[str]:
    """``name==version`` of each installed distribution; a local build tag (``2.13.0+cpu``) is dropped, as in
    requirements.txt, so that pip can resolve it from PyPI."""
    return [f"{name}=={re.sub(r'[+].*$', '', metadata.version(name))}" for name in distributions]


class PointCloudSegmenter(mlflow.pyfunc.PythonModel):
    """``predict(model_input [N, 6] xyz + rgb) -> labels [N]`` through MinkSeg's :class:`Predictor`."""

    def load_context(self, context: Any) -> None:
        from minkseg.engine.predictor import Predictor

        config = dict(context.model_config or {})
        self.predictor = Predictor.from_model_file(context.artifacts[WEIGHTS], device=config.get("device", "auto"),
                                                   voting_angles=config.get("voting_angles"))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate by them
        values = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
        points = np.asarray(values, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != len(INPUT_COLUMNS):
            raise ValueError(f"MinkSeg model input must be an [N, 6] array of x, y, z (metres), r, g, b (0..255) "
                             f"per point; got shape {points.shape}")
        return self.predictor.predict(points[:, :3], points[:, 3:]).labels


def log_segmentation_model(tracking_uri: str, run_id: str, weights: str | Path, description: dict[str, Any],
                           code_dir: str | Path | None = None) -> str:
    """Log ``weights`` (a MinkSeg model file) as the MLflow model ``model`` of run ``run_id``; returns its URI.

    ``description`` (class names, voxel size, voting angles, ...) goes into the model's metadata.
    """
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema, TensorSpec

    import minkseg

    mlflow.set_tracking_uri(tracking_uri)
    # The logged model belongs to the run's experiment (MLflow would otherwise file it under the default one).
    mlflow.set_experiment(experiment_id=mlflow.MlflowClient(tracking_uri).get_run(run_id).info.experiment_id)
    # float32, the dtype of point clouds on disk (PLY, our scene files); MLflow's schema check casts nothing, so a
    # float64 array must be passed as .astype(np.float32)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(INPUT_COLUMNS)))]),
                               outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]))
    code = Path(code_dir) if code_dir is not None else Path(minkseg.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as scratch:
        names = Path(scratch) / "class_names.json"
        names.write_text(json.dumps(list(description.get("class_names", []))))
        info = Model.log(artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id, python_model=PointCloudSegmenter(),
                         artifacts={WEIGHTS: str(weights), "class_names": str(names)}, code_paths=[str(code)],
                         pip_requirements=pip_requirements(), signature=signature,
                         model_config={"voting_angles": None, "device": "auto"},
                         metadata={key: value for key, value in description.items() if key != "state_dict"})
    return info.model_uri
