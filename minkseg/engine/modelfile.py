"""The trained-model file (``models/model.pt``): weights plus everything needed to use them on new points.

Why the file carries more than weights: ``minkseg predict`` and the ScanNet submission run the network on scans
that never went through params.yaml, so the file itself must say how the network was built (name, channels,
classes, dimension, stem), what its classes are called, and how a scene is turned into its input (voxel size,
clip box, the evaluation's voting angles and axis, the temporal window of 4D models). Loading always uses
``torch.load(weights_only=True)`` (:func:`minkseg.engine.checkpoints.load_torch`), so a tampered file cannot run code.

Keys (a plain dict of tensors, strings, numbers and lists):

=====================  =================================================================================
``state_dict``         the network weights
``model``              registry name (``Res16UNet14A``), with ``in_channels``, ``num_classes``, ``dimension``,
                       ``conv1_kernel_size``, ``bn_momentum``
``class_names``        one name per class id; ``dataset``: the registry name of the training dataset
``voxel_size``         metres; ``clip_bound``: ``[[lo, hi]] * 3`` around the scene (or camera) centre, or None
``rotation_angles``    degrees of the evaluation's test-time voting; ``rotation_axis``: ``x``/``y``/``z``
``temporal_numseq``    4D models: frames per window and ``temporal_dilation`` (frame stride); 1 and 1 for 3D
``ignore_label``       the label of unannotated points (255)
=====================  =================================================================================
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from minkseg.engine.checkpoints import load_torch, save_torch
from minkseg.errors import EngineError

__all__ = ["PREDICTION_KEYS", "save_model_file", "load_model_file", "build_from_payload"]

PREDICTION_KEYS = ("voxel_size", "clip_bound", "rotation_angles", "rotation_axis", "temporal_numseq",
                   "temporal_dilation", "ignore_label")
"""What :class:`minkseg.engine.predictor.Predictor` needs beyond the network; files written before these keys
existed are refused by it (the evaluate stage takes the same values from params.yaml instead)."""


def save_model_file(path: str | Path, state: Mapping[str, torch.Tensor], description: Mapping[str, Any]) -> Path:
    """Write weights + description atomically (``description`` holds every key of the table above but the weights)."""
    return save_torch({"state_dict": dict(state), **dict(description)}, path)


def build_from_payload(payload: Mapping[str, Any], path: str | Path) -> torch.nn.Module:
    """The network a loaded model file describes, with its weights (strict: every key and shape must fit)."""
    from minkseg.errors import MinkSegError
    from minkseg.nn import build_model

    try:
        model = build_model(payload["model"], int(payload["in_channels"]), int(payload["num_classes"]),
                            D=int(payload["dimension"]), conv1_kernel_size=int(payload["conv1_kernel_size"]),
                            bn_momentum=float(payload["bn_momentum"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineError(f"{path}: not a MinkSeg model file (missing or bad {exc}); re-run the train stage") from None
    except MinkSegError as exc:
        raise EngineError(f"{path}: cannot rebuild its network ({exc}); re-run the train stage") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise EngineError(f"{path}: weights do not fit {payload['model']} with {payload['num_classes']} classes "
                          f"({str(exc).splitlines()[0]}); re-run the train stage") from None
    return model


def load_model_file(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network a train stage saved; returns ``(model, payload)``. Every problem is one EngineError."""
    if not Path(path).is_file():
        raise EngineError(f"{path}: not found; run the train stage first (dvc repro)")
    payload = load_torch(path)
    if not isinstance(payload, dict) or "state_dict" not in payload or "model" not in payload:
        raise EngineError(f"{path}: not a MinkSeg model file (no 'model'/'state_dict'); re-run the train stage")
    return build_from_payload(payload, path), payload
