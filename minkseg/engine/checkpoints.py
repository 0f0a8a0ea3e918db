"""Resumable training state and safe weight loading.

Checkpoints are written atomically (a kill leaves the previous one intact) and read with
``torch.load(weights_only=True)``, which refuses pickles that could run code. That loader only accepts tensors
and plain containers, so every piece of state is stored in that form -- including the python/numpy RNG states,
which are converted to int64 tensors and back.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from minkseg.atomic import atomic_open
from minkseg.errors import CheckpointError

__all__ = ["rng_state", "set_rng_state", "save_torch", "load_torch", "extract_state_dict", "load_model_weights",
           "CheckpointStore"]


def rng_state() -> dict[str, Any]:
    """Every RNG a training step touches, in a weights_only-loadable form."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(int(v) for v in python_state["internal"].tolist()),
                     python_state["gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_torch(obj: Any, path: str | Path) -> Path:
    """torch.save to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    return Path(path)


def load_torch(path: str | Path) -> Any:
    """torch.load with weights_only=True onto the CPU; every failure becomes one CheckpointError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain containers, which "
            f"could run code when unpickled ({first_line}); re-save weights as a plain state_dict, or delete a "
            f"training checkpoint (data/checkpoints) to start over"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch file ({first_line}); it may be truncated or not a checkpoint -- "
            "delete it to start over"
        ) from None


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The model weights inside a loaded file: a bare state_dict, or one under "model"/"state_dict"."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items()):
            return dict(obj)
    raise CheckpointError(f"{source}: does not contain a model state_dict (a mapping of parameter names to tensors)")


def load_model_weights(model: torch.nn.Module, weights: str | Path | Mapping[str, torch.Tensor],
                       model_name: str = "the model") -> None:
    """Load weights strictly; a file for another architecture or class count gets a message naming the keys."""
    if isinstance(weights, Mapping):
        source, state = "weights", extract_state_dict(weights, "weights")
    else:
        source = str(weights)
        state = extract_state_dict(load_torch(weights), source)
    if set(state) and all(key.startswith("module.") for key in state):  # saved from a DDP wrapper
        state = {key[len("module."):]: value for key, value in state.items()}
    expected = model.state_dict()
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
        raise CheckpointError(f"{source}: was saved for another model than {model_name}: " + "; ".join(details))
    model.load_state_dict(state, strict=True)


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
