"""The network of a run: built from params, described in its model file, saved, loaded and checked against the
dataset before it is used (file format: :mod:`minkseg.weights`)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from minkseg.config import Params
from minkseg.errors import EngineError
from minkseg.pipeline.lineage import RECORD_KEY
from minkseg.pipeline.spec import dataset_spec, voxel_params
from minkseg.weights import load_model_file, save_model_file

if TYPE_CHECKING:
    import torch

__all__ = ["IN_CHANNELS", "build_network", "model_description", "save_trained_model", "load_trained_model",
           "check_model_fits_dataset"]

IN_CHANNELS = 3  # features are colours (rgb / 255 - 0.5), as in the paper


def build_network(params: Params) -> "torch.nn.Module":
    """The untrained network ``train.model`` for ``base.dataset``'s classes and dimension."""
    from minkseg.nn.registry import build_model

    spec = dataset_spec(params)
    return build_model(params.train.model, IN_CHANNELS, spec.num_classes, D=spec.dimension,
                       conv1_kernel_size=params.train.conv1_kernel_size, bn_momentum=params.train.bn_momentum)


def model_description(params: Params) -> dict[str, Any]:
    """Everything the model file records besides the weights (format: :mod:`minkseg.weights`)."""
    spec = dataset_spec(params)
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


def save_trained_model(path: Path, state: Mapping[str, "torch.Tensor"], params: Params,
                       made_by: Mapping[str, Any] | None = None) -> Path:
    """Weights plus what is needed to rebuild the network and to use it on new scans (format: minkseg.weights), and
    what made them (params and inputs, checked by evaluate)."""
    description = model_description(params)
    if made_by is not None:
        description[RECORD_KEY] = dict(made_by)
    return save_model_file(path, state, description)


load_trained_model = load_model_file  # the stage-facing name (the evaluate stage and the tests use it)


def check_model_fits_dataset(path: Path, payload: Mapping[str, Any], params: Params) -> None:
    """A model file of another label space or dimension would be scored against the wrong classes; refuse it
    before any scene is read (a file from another dataset with the same classes is fine)."""
    spec = dataset_spec(params)
    network = payload["model"]
    same = (int(network["out_channels"]) == spec.num_classes and int(network["D"]) == spec.dimension
            and list(payload.get("class_names", spec.class_names)) == list(spec.class_names))
    if not same:
        raise EngineError(f"{path}: was trained on {payload.get('dataset', 'another dataset')} with "
                          f"{network['out_channels']} classes but base.dataset is {spec.name} with {spec.num_classes} "
                          "classes; re-run the train stage (dvc repro)")
