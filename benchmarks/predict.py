"""Points per second of ``minkseg predict``'s inference (Predictor.predict) on CPU, with and without voting.

Why in-process and per scene: the command's wall time also holds Python/torch start-up (seconds, once) and PLY
I/O (milliseconds); what scales with a user's scans is the network over the voting views, timed here scene by
scene after one warm-up pass, for the model file's own voting angles and for one unrotated view, in the same run.

    python benchmarks/predict.py --model models/model.pt SCAN.ply [SCAN.ply ...] [--repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minkseg.data.ply import read_ply  # noqa: E402
from minkseg.engine.predictor import Predictor  # noqa: E402
from minkseg.engine.runtime import configure_cpu_runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scans", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    configure_cpu_runtime(0)  # what the stages and `minkseg predict` run with
    scenes = []
    for path in args.scans:
        vertex = read_ply(path)
        scenes.append((np.stack([vertex[a] for a in "xyz"], 1),
                       np.stack([vertex[c] for c in ("red", "green", "blue")], 1)))
    total = sum(len(xyz) for xyz, _ in scenes)
    print(f"{len(scenes)} scans, {total:,} points, torch threads {torch.get_num_threads()}")
    for angles in (None, [0.0]):
        predictor = Predictor.from_model_file(args.model, device="cpu", voting_angles=angles)
        predictor.predict(*scenes[0])  # warm-up: allocator, kernel maps
        best = min(_timed(predictor, scenes) for _ in range(args.repeats))
        print(f"{len(predictor.voting_angles):>2} voting angle(s): {best:.2f} s for all scans, "
              f"{total / best:,.0f} points/s")


def _timed(predictor: Predictor, scenes) -> float:
    start = time.perf_counter()
    for xyz, rgb in scenes:
        predictor.predict(xyz, rgb)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
