"""What the validation curve costs the default run: one subset validation against one training step.

    python benchmarks/val_subset_cost.py            # default model, voxel size and scene size; 20 steps, 4 curve points

The train stage validates on the first ``train.val_subset_scenes`` val scenes every ``train.val_subset_every``
iterations to draw the curve. This runs the real train stage (``minkseg.pipeline.train.run_train``) on a small synthetic set of
default-sized rooms (params.yaml with 4 train / 2 val rooms, MLflow off) and times, in the same process, every
optimizer step and every subset validation; the default run's extra time is then about
``(iterations / val_subset_every) x validation`` against ``iterations x step``.
"""
from __future__ import annotations

import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from minkseg.config import params_from_dict  # noqa: E402
from minkseg.pipeline import download, preprocess, train, voxelize  # noqa: E402
from minkseg.pipeline.paths import PipelinePaths  # noqa: E402
from minkseg.engine import trainer as trainer_module  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    default_every, default_iterations = values["train"]["val_subset_every"], values["train"]["iterations"]
    values["download"]["synthetic"].update(num_train=4, num_val=2, num_test=1)
    values["preprocess"]["num_workers"] = 0
    values["mlflow"]["enabled"] = False
    values["train"].update(iterations=20, val_every=0, val_subset_every=5, checkpoint_every=0)
    params = params_from_dict(copy.deepcopy(values))
    times: dict[str, list[float]] = {"step": [], "subset": []}
    validate, step = trainer_module.Trainer.validate, trainer_module.Trainer._step

    def timed_validate(self, subset=False):
        start = time.perf_counter()
        result = validate(self, subset)
        if subset:
            times["subset"].append(time.perf_counter() - start)
        return result

    def timed_step(self, batches):
        start = time.perf_counter()
        result = step(self, batches)
        times["step"].append(time.perf_counter() - start)
        return result

    trainer_module.Trainer.validate, trainer_module.Trainer._step = timed_validate, timed_step
    with tempfile.TemporaryDirectory() as root:
        paths = PipelinePaths(Path(root))
        for stage in (download.run_download, preprocess.run_preprocess, voxelize.run_voxelize, train.run_train):
            stage(params, paths, progress=False)
    step_s, subset_s = statistics.median(times["step"]), statistics.median(times["subset"])
    extra = default_iterations // default_every * subset_s / (default_iterations * step_s)
    print(f"torch threads at the end: {torch.get_num_threads()}")
    print(f"training step: median {step_s:.3f} s over {len(times['step'])}; subset validation "
          f"({values['train']['val_subset_scenes']} scenes): median {subset_s:.3f} s over {len(times['subset'])}")
    print(f"default run ({default_iterations} iterations, a curve point every {default_every}): "
          f"+{100 * extra:.1f}% training time")


if __name__ == "__main__":
    main()
