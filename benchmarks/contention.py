"""Contention benchmark: default training steps timed on a quiet machine and next to a CPU-bound neighbour.

    python benchmarks/contention.py [--steps 30] [--voxels 9000] [--neighbours 1 | --pair]

The default run's step (Res16UNet14A with a 5^3 stem, one room of about --voxels voxels, cross-entropy, AdamW) runs
in a fresh process per setting, because libgomp reads its wait settings only when torch loads it:

  old      what the train stage did before: torch's default threads (all cores) and libgomp's default spin
           (GOMP_SPINCOUNT=300000, its documented default)
  new      what every stage does now: ``import minkseg`` bounds the spin (minkseg/openmp_env.py) and the
           thread governor follows the free cores (minkseg/engine/runtime.py)
  pinned1  one thread, for reference (what a busy 2-core machine can give one process)

Each setting runs quiet, then next to ``--neighbours`` processes that each spin a Python loop on one core (what
`dvc exp run --queue` workers, a test run or an IDE do). Printed: mean step seconds, and the ratios busy / quiet
(a fair share on 2 cores with one neighbour is about 2x) and new / old on a quiet machine (a regression check),
all measured in this one run. With --pair the busy run is two copies of the same training started together, as
`dvc queue start -j 2` runs two experiments: a fair share is again about 2x each. A run past --cap-seconds stops early and reports the steps it made.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "old": {"GOMP_SPINCOUNT": "300000"},
    "new": {},
    "pinned1": {},
}


def child(args: argparse.Namespace) -> dict:
    """The timed steps, in this (fresh) process; ``import minkseg`` comes before torch, as in the stages."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import minkseg  # noqa: F401  (applies the OpenMP defaults before torch loads)
    import torch

    import minkseg.sparse as ME
    from minkseg.engine import runtime
    from minkseg.nn import build_model
    from model_step import scene

    # old: torch's own default count, pinned (no governor); new: the governor; pinned1: one thread
    runtime.configure_cpu_runtime({"old": torch.get_num_threads(), "new": 0, "pinned1": 1}[args.child])
    voxels, colors, labels = scene(args.voxels, args.seed)
    coords = torch.cat([torch.zeros(len(voxels), 1, dtype=torch.int32), torch.as_tensor(voxels, dtype=torch.int32)], 1)
    feats = torch.as_tensor(colors)
    target = torch.as_tensor(labels, dtype=torch.long)
    torch.manual_seed(args.seed)
    model = build_model("Res16UNet14A", 3, 20, conv1_kernel_size=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    start = time.perf_counter()
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        out = model(ME.SparseTensor(feats, coords)).F
        loss = torch.nn.functional.cross_entropy(out, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        runtime.balance_threads()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > args.cap_seconds:
            break
    governor = runtime.current_governor()
    return {"mean": sum(times) / max(len(times), 1), "steps": len(times),
            "threads_end": torch.get_num_threads(), "changes": governor.changes if governor else 0,
            "voxels": len(voxels)}


def _child_command(setting: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, __file__, "--child", setting, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--voxels", str(args.voxels), "--seed", str(args.seed), "--cap-seconds", str(args.cap_seconds)]


def _child_env(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(SETTINGS[setting])
    return env


def measure(setting: str, neighbours: int, args: argparse.Namespace) -> dict:
    """The setting's steps alone, next to ``neighbours`` spinning processes, or (--pair) next to a twin of itself."""
    env = _child_env(setting)
    if neighbours and args.pair:
        # Two identical training processes started together, as `dvc queue start -j 2` runs two experiments.
        twins = [subprocess.Popen(_child_command(setting, args), env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [json.loads(twin.communicate()[0].strip().splitlines()[-1]) for twin in twins]
        return {**results[0], "mean": sum(r["mean"] for r in results) / 2,
                "threads_end": "/".join(str(r["threads_end"]) for r in results)}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(neighbours)]
    try:
        time.sleep(0.5 if hogs else 0)
        out = subprocess.run(_child_command(setting, args), env=env, capture_output=True, text=True, check=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--voxels", type=int, default=9000, help="voxels of the room (default run: ~7-10k at 6 cm)")
    parser.add_argument("--neighbours", type=int, default=1, help="CPU-bound neighbour processes")
    parser.add_argument("--pair", action="store_true",
                        help="the busy run is two copies of the same training side by side (dvc queue start -j 2)")
    parser.add_argument("--settings", default="old,new,pinned1")
    parser.add_argument("--cap-seconds", type=float, default=120.0, help="stop a setting's run after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    print(f"{os.cpu_count()} CPUs, {args.steps} timed steps after {args.warmup} warm-up, ~{args.voxels} voxels, " +
          ("two identical trainings side by side in the busy runs (their mean step)" if args.pair
           else f"{args.neighbours} busy neighbour process(es) in the busy runs"))
    print(f"  {'setting':<8} {'quiet s/step':>12} {'busy s/step':>12} {'busy/quiet':>10} {'threads':>8} "
          f"{'changes':>7} {'steps':>9}")
    results = {}
    for setting in args.settings.split(","):
        quiet = measure(setting, 0, args)
        busy = measure(setting, args.neighbours, args)
        results[setting] = (quiet, busy)
        print(f"  {setting:<8} {quiet['mean']:12.3f} {busy['mean']:12.3f} {busy['mean'] / quiet['mean']:10.2f} "
              f"{str(busy['threads_end']):>8} {busy['changes']:>7} {quiet['steps']:>4}/{busy['steps']:<4}", flush=True)
    if "old" in results and "new" in results:
        (oq, ob), (nq, nb) = results["old"], results["new"]
        print(f"new vs old: quiet {nq['mean'] / oq['mean']:.2f}x the old step time, "
              f"busy {nb['mean'] / ob['mean']:.3f}x (slowdown next to a neighbour: old {ob['mean'] / oq['mean']:.1f}x, "
              f"new {nb['mean'] / nq['mean']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
