"""What made each stage output: the params that shaped it and the outputs it was made from.

Why: ``dvc repro`` re-runs a stage when its params or inputs change, but a stage run by hand reads whatever lies
on disk. Voxelising at one voxel size and training at another validated on mismatched samples (mIoU 0.0), and the
finished run was then "resumed" after re-voxelising. So every output another stage reads carries a record::

    {"stage": "voxelize", "params": {"voxelize.voxel_size": 0.06, ...},
     "inputs": {"preprocess": "<its record's fingerprint>"}, "fingerprint": "<hash of the three>"}

(``data/raw/made_by.json``, ``"made_by"`` in ``data/preprocessed/manifest.json`` and
``data/voxelized/manifest.json``, and in ``models/model.pt``), and every stage checks the whole chain it builds on
before it does any work: a recorded param that differs from the params now, an input re-made since, or a missing
record is one line naming the stage to re-run first. The train record's fingerprint is also what a checkpoint must
match to be resumed (with the run's device and thread settings), so a run whose inputs changed starts over.

Which params: only those the stage reads *and* that shape its output (a subset of its ``params`` in dvc.yaml). A
record then changes exactly when the output's content does, so DVC re-runs nothing it did not re-run before, and
after ``dvc repro`` every record matches. Metadata only: no sample, weight or metric depends on it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from minkseg.config import SPEED_ONLY_KEYS, Params
from minkseg.data.scenefile import MADE_BY as RECORD_KEY
from minkseg.datasets.base import MADE_BY_FILE as RAW_RECORD
from minkseg.errors import StaleInputError
from minkseg.pipeline.paths import PipelinePaths

__all__ = ["CHAIN", "RAW_RECORD", "RECORD_KEY", "StaleInputError", "stage_params", "make_record", "check_chain",
           "records_on_disk", "checked_inputs"]

CHAIN = ("download", "preprocess", "voxelize", "train")  # stages whose outputs later stages read, in order
INPUTS = {"download": (), "preprocess": ("download",), "voxelize": ("preprocess",), "train": ("preprocess", "voxelize")}
# RAW_RECORD: the record's file inside data/raw; RECORD_KEY: its key in a manifest or the model file.
_UNSET = object()

_STAGE_KEYS = {
    "preprocess": ("base.dataset", "preprocess.splits"),
    "voxelize": ("voxelize", "evaluate.split"),
    "train": ("base", "voxelize", "train", "evaluate.split"),
}
# Read by the stage but not what its output *is*: where and on how many processes or threads it runs (a model
# trained on a GPU is evaluated on a CPU; those change the last digits, not the meaning) and speed-only settings.
_NOT_RECORDED = ("base.device", "base.num_threads", "base.num_gpus", "base.num_nodes", "base.node_rank",
                 "base.rdzv_endpoint", *SPEED_ONLY_KEYS)


def stage_params(stage: str, params: Params) -> dict[str, Any]:
    """The flat params (``{"voxelize.voxel_size": 0.06, ...}``) that shape ``stage``'s output."""
    if stage == "download":  # what makes the raw data is the dataset's to say (a user's folder, or seed + sizes)
        from minkseg.datasets import dataset_class

        prefixes = dataset_class(params.base.dataset).download_params
    else:
        prefixes = _STAGE_KEYS[stage]
    return {key: value for key, value in params.flat().items()
            if key not in _NOT_RECORDED and any(key == p or key.startswith(p + ".") for p in prefixes)}


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def make_record(stage: str, params: Params, found: Mapping[str, tuple[str, Mapping[str, Any] | None]]
                ) -> dict[str, Any]:
    """The record of ``stage``'s output made now from the inputs in ``found`` (stage -> (label, record))."""
    inputs = {name: found[name][1]["fingerprint"] for name in INPUTS[stage]
              if name in found and found[name][1] is not None}
    own = stage_params(stage, params)
    return {"stage": stage, "params": own, "inputs": inputs,
            "fingerprint": _hash({"stage": stage, "params": own, "inputs": inputs})}


def _fix(stage: str) -> str:
    return f"re-run the {stage} stage first (dvc repro, or python stages/{stage}.py)"


def _show(value: Any) -> str:
    return json.dumps(value) if value is not _UNSET else "(unset)"


def check_chain(params: Params, found: Mapping[str, tuple[str, Mapping[str, Any] | None]]) -> None:
    """Refuse the first output of ``found`` (stage -> (label, record or None)), in pipeline order, that was made
    by other params than ``params``, from other inputs than those on disk, or that has no record at all."""
    for stage in CHAIN:
        if stage not in found:
            continue
        label, record = found[stage]
        if not isinstance(record, Mapping) or not {"params", "inputs", "fingerprint"} <= set(record):
            raise StaleInputError(f"{label} has no record of the params that made it (written by an older MinkSeg, "
                                  f"or by hand); {_fix(stage)}")
        now, then = stage_params(stage, params), dict(record["params"])
        changed = [key for key in sorted(set(now) | set(then)) if now.get(key, _UNSET) != then.get(key, _UNSET)]
        if changed:
            key = changed[0]
            more = f" (and {len(changed) - 1} more key(s))" if len(changed) > 1 else ""
            raise StaleInputError(f"{label} was made with {key}: {_show(then.get(key, _UNSET))}, but the params now "
                                  f"say {_show(now.get(key, _UNSET))}{more}; {_fix(stage)}")
        for name in INPUTS[stage]:
            if name not in found or found[name][1] is None:
                continue  # that input is not on disk (deleted to save space): nothing to compare against
            if record["inputs"].get(name) != found[name][1].get("fingerprint"):
                raise StaleInputError(f"{label} was made from another {found[name][0]} than the one there now; "
                                      f"{_fix(stage)}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or damaged: no record
        return None


def records_on_disk(paths: PipelinePaths, stages: tuple[str, ...]) -> dict[str, tuple[str, Any]]:
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


def checked_inputs(params: Params, paths: PipelinePaths, stage: str) -> dict[str, tuple[str, Any]]:
    """Refuse (one line naming the stage to re-run) inputs made by other params or from other data; returns
    their records, from which ``stage``'s own record is made."""
    upstream = ("download", "preprocess", "voxelize")
    found = records_on_disk(paths, upstream[:upstream.index(stage)] if stage in upstream else upstream)
    check_chain(params, found)
    return found
