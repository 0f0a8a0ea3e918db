"""The check_params stage: the first stage of dvc.yaml, every other stage depends on its marker file.

Why a stage of its own: ``dvc repro`` deletes a stage's outputs before running it, so a bad train param found by
the train stage itself came after models/model.pt was gone. The params are validated on loading
(:func:`minkseg.config.load_params`, in :mod:`minkseg.pipeline.cli`), so a bad value stops the run here, before any
output is deleted. The file's content never changes, so a re-run of this check re-runs nothing else. Light on
purpose: validating YAML needs neither torch nor mlflow, and this process starts on every ``dvc repro``.
"""
from __future__ import annotations

from minkseg.atomic import atomic_write_text
from minkseg.config import Params
from minkseg.pipeline.paths import PipelinePaths

__all__ = ["PARAMS_CHECKED", "run_check_params"]

PARAMS_CHECKED = "every params group passed minkseg/config.py's checks\n"  # the same bytes every time


def run_check_params(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> None:
    """Write the marker file (the params were validated when they were loaded)."""
    paths.params_checked.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.params_checked, PARAMS_CHECKED)
