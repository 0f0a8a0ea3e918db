"""Every file of network weights MinkSeg reads or writes: training checkpoints, ``models/model.pt``, and the
original model zoo's ``.pth`` files (whose offset translation is :mod:`minkseg.nn.checkpoint`'s job).

Why one module: three loaders used to read weights, each with its own checks and messages, and two different
``CheckpointError`` classes. Now every weights file goes through :func:`load_torch` -- ``torch.load(...,
weights_only=True)``, which refuses pickles that could run code -- and :func:`state_dict_of`, and every problem is
one :class:`~minkseg.errors.CheckpointError` line naming the file. Writes are atomic (a kill leaves the previous
file). The network layer (weight import) and the engine (resume, evaluation, prediction) both use it, so it sits
beside :mod:`minkseg.atomic` and imports only torch; :func:`load_model_file` reaches the network registry lazily.

The model file (``models/model.pt``, format 2) describes itself, so loading is ``build_model(**payload["model"])``:

=====================  =================================================================================
``format``             2 (a file without it is format 1: read and converted, see :func:`read_model_file`)
``state_dict``         the network weights
``model``              the arguments of :func:`minkseg.nn.build_model`: ``name``, ``in_channels``,
                       ``out_channels`` (the class count), ``D``, ``conv1_kernel_size``, ``bn_momentum``
``class_names``        one name per class id; ``dataset``: the registry name of the training dataset
``voxelization``       :class:`minkseg.data.quantize.VoxelParams` as a dict (the clip box resolved to what
                       evaluation clips with, or None; temporal window 1 and 1 for a 3D model)
``rotation_angles``    degrees of the evaluation's test-time voting; ``rotation_axis``: ``x``/``y``/``z``
``made_by``            what made the weights (params and inputs; :mod:`minkseg.engine.lineage`)
=====================  =================================================================================
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from minkseg.atomic import atomic_open
from minkseg.errors import CheckpointError, ModelError

__all__ = ["MODEL_FILE_FORMAT", "save_torch", "load_torch", "state_dict_of", "strip_wrapper_prefix", "load_weights",
           "save_model_file", "read_model_file", "load_model_file", "CheckpointStore"]

MODEL_FILE_FORMAT = 2
START_OVER = ("re-save the weights as a plain state_dict, or delete a training checkpoint (data/checkpoints) to start "
              "over")
RETRAIN = "re-run the train stage"
_WRAPPER_PREFIXES = ("module.", "model.")  # DistributedDataParallel / wrapper-saved files
_SHOWN = 4  # names listed before "and N more"


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_torch(path: str | Path, fix: str = START_OVER) -> Any:
    """torch.load with ``weights_only=True`` onto the CPU; a failure is one CheckpointError line ending in ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain containers, which could "
            f"run code when unpickled (torch.load with weights_only=True: {_first_line(exc)}); {fix}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch file ({_first_line(exc)}); it may be truncated or not "
                              f"a weights file -- {fix}") from None


def _shown(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def state_dict_of(obj: Any, label: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """``(weights, architecture name or None)`` inside a loaded file: a bare state dict, or one under
    ``"state_dict"`` (the original training's files, with ``"arch"``; MinkSeg's model file) or ``"model"``
    (MinkSeg's training checkpoints)."""
    arch = None
    if isinstance(obj, Mapping):
        if isinstance(obj.get("state_dict"), Mapping):
            arch = obj.get("arch") if isinstance(obj.get("arch"), str) else None
            obj = obj["state_dict"]
        elif isinstance(obj.get("model"), Mapping):
            obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{label}: does not contain a model state_dict: it holds a {type(obj).__name__}, "
                              "expected a dict of parameter names to tensors")
    state = {str(key): value for key, value in obj.items()}
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not state or not_tensors:
        raise CheckpointError(f"{label}: does not contain a model state_dict (it is not a state dict: non-tensor "
                              f"entries {_shown(not_tensors) or '(empty)'}); expected {{'state_dict': {{name: "
                              "tensor}}}} or a bare {name: tensor}")
    return state, arch


def strip_wrapper_prefix(state: Mapping[str, torch.Tensor], expected: Any = None) -> dict[str, torch.Tensor]:
    """Drop a ``module.``/``model.`` prefix every key carries (a file saved from a DDP or wrapper module), unless
    the ``expected`` keys (the network loaded into, if known) carry it too."""
    expected = list(expected or [])
    for prefix in _WRAPPER_PREFIXES:
        if state and all(key.startswith(prefix) for key in state) and \
                not (expected and all(key.startswith(prefix) for key in expected)):
            return {key[len(prefix):]: value for key, value in state.items()}
    return dict(state)


def load_weights(model: torch.nn.Module, weights: str | Path | Mapping[str, Any], model_name: str = "the model",
                 fix: str = START_OVER) -> torch.nn.Module:
    """Load weights strictly (a path or a loaded object); a file for another architecture or class count is one
    line naming the mismatched, missing and unexpected keys."""
    if isinstance(weights, Mapping):
        source, loaded = "weights", weights
    else:
        source, loaded = str(weights), load_torch(weights, fix)
    state, _ = state_dict_of(loaded, source)
    expected = model.state_dict()
    state = strip_wrapper_prefix(state, expected)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [f"{key} is {list(state[key].shape)} in the file but {list(expected[key].shape)} in the model"
              for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or shapes:
        details = []
        if shapes:
            details.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]} (another class count or width?)")
        if missing:
            details.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{source}: weights do not fit {model_name} (saved for another model: "
                              f"{'; '.join(details)}); {fix}")
    model.load_state_dict(state, strict=True)
    return model


# -- the model file ----------------------------------------------------------------------------------------------

def save_model_file(path: str | Path, state: Mapping[str, torch.Tensor], description: Mapping[str, Any]) -> Path:
    """Write weights + description (every key of the table above but ``state_dict`` and ``format``) atomically."""
    return save_torch({"format": MODEL_FILE_FORMAT, "state_dict": dict(state), **dict(description)}, path)


_FORMAT1_VOXEL_KEYS = ("voxel_size", "clip_bound", "ignore_label", "temporal_numseq", "temporal_dilation")


def _from_format1(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """A format-1 file (the network's arguments and the voxel parameters as flat keys) in format 2's shape; keys
    it never had stay absent, for the reader to name."""
    try:
        network = {"name": payload["model"], "in_channels": int(payload["in_channels"]),
                   "out_channels": int(payload["num_classes"]), "D": int(payload["dimension"]),
                   "conv1_kernel_size": int(payload["conv1_kernel_size"]),
                   "bn_momentum": float(payload["bn_momentum"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a MinkSeg model file (missing or bad {exc}); {RETRAIN}") from None
    rest = {key: value for key, value in payload.items()
            if key not in (*_FORMAT1_VOXEL_KEYS, "in_channels", "num_classes", "dimension", "conv1_kernel_size",
                           "bn_momentum")}
    voxelization = {key: payload[key] for key in _FORMAT1_VOXEL_KEYS if key in payload}
    return {**rest, "format": MODEL_FILE_FORMAT, "model": network, "voxelization": voxelization}


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The payload of a model file in the current format (a format-1 file is converted in memory)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; run the train stage first (dvc repro)")
    payload = load_torch(path, RETRAIN)
    if not isinstance(payload, dict) or "state_dict" not in payload or "model" not in payload:
        raise CheckpointError(f"{path}: not a MinkSeg model file (no 'model'/'state_dict'); {RETRAIN}")
    if isinstance(payload["model"], str) and "format" not in payload:
        payload = _from_format1(payload, path)
    if payload.get("format") != MODEL_FILE_FORMAT or not isinstance(payload["model"], Mapping):
        raise CheckpointError(f"{path}: model file format {payload.get('format')!r}, this MinkSeg reads format "
                              f"{MODEL_FILE_FORMAT} (and 1); {RETRAIN} with this version")
    return payload


def load_model_file(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network a train stage saved, ``build_model(**payload["model"])`` with its weights loaded
    strictly; returns ``(model, payload)``. Every problem is one CheckpointError line."""
    from minkseg.nn.registry import build_model  # the network registry: the only thing here above torch

    payload = read_model_file(path)
    network = dict(payload["model"])
    try:
        model = build_model(**network)
    except ModelError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its network ({exc}); {RETRAIN}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a MinkSeg model file (bad network arguments {network}: "
                              f"{_first_line(exc)}); {RETRAIN}") from None
    name = f"{network.get('name')} with {network.get('out_channels')} classes"
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit {name} ({_first_line(exc)}); {RETRAIN}") from None
    return model, payload


# -- training checkpoints ----------------------------------------------------------------------------------------

class CheckpointStore:
    """A directory holding ``last.pt`` (full resumable state) and ``best.pt`` (best validation weights)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def save_last(self, state: Mapping[str, Any]) -> Path:
        return save_torch(dict(state), self.last_path)

    def load_last(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none yet."""
        if not self.last_path.exists():
            return None
        state = load_torch(self.last_path)
        if not isinstance(state, dict) or "iteration" not in state or "model" not in state:
            raise CheckpointError(f"{self.last_path}: not a MinkSeg training checkpoint; move it away to start over")
        return state

    def save_best(self, model_state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
        return save_torch({"model": dict(model_state), "meta": dict(meta)}, self.best_path)

    def load_best(self) -> dict[str, Any] | None:
        if not self.best_path.exists():
            return None
        return load_torch(self.best_path)
