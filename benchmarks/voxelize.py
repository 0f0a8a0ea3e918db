"""Throughput of preprocess + voxelise on a ~1M-point ScanNet-format scene, against a plain numpy.unique baseline.

Why a baseline in the same run: absolute points/s depend on the machine; the ratio to ``numpy.unique(axis=0)``
quantisation of the same points (measured here, now) is what tells whether our pipeline is efficient.

    python benchmarks/voxelize.py [--points 1000000] [--voxel-size 0.05] [--repeats 3]

Stages timed (best of ``--repeats``):
  preprocess   read the mesh + label PLYs, map labels, write the compact .npz (minkseg.data.preprocess's per-scene work)
  voxelize     load the .npz and quantise with labels and the inverse map (what the voxelize stage does per scene)
  train-voxelize  the same with the training augmentation (elastic distortion, rotation, scale, colour)
  baseline     numpy.floor + numpy.unique(axis=0, return_index, return_inverse) on the in-memory points
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minkseg.data.augment import ElasticDistortion, training_transforms  # noqa: E402
from minkseg.data.scenefile import load_scene, save_scene  # noqa: E402
from minkseg.datasets import build_dataset  # noqa: E402
from minkseg.datasets.generators.rooms import SyntheticScanNetConfig, generate_room, write_scene  # noqa: E402
from minkseg.datasets.scannet import read_scannet_scene  # noqa: E402
from minkseg.data.quantize import Voxelizer  # noqa: E402


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--voxel-size", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # One thread, like a DataLoader worker (and like the single-threaded numpy baseline).
    torch.set_num_threads(1)

    config = SyntheticScanNetConfig(points_per_scene=args.points, room_size=(9.0, 12.0))
    xyz, rgb, nyu40 = generate_room(config, 0)
    if len(xyz) < 0.95 * args.points:  # the generator hits its point target only on average: scale the density
        config = SyntheticScanNetConfig(points_per_scene=int(args.points ** 2 / len(xyz)), room_size=(9.0, 12.0))
        xyz, rgb, nyu40 = generate_room(config, 0)
    n = len(xyz)
    spec = build_dataset("scannet")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_scene(root, "train", "scene0000_00", xyz, rgb, nyu40)
        npz = root / "scene0000_00.npz"

        def preprocess_one():
            save_scene(npz, read_scannet_scene(root, "scene0000_00", "train"))

        voxelizer = Voxelizer(args.voxel_size, ignore_label=spec.ignore_label)

        def voxelize_one():
            scene = load_scene(npz)
            return voxelizer.voxelize(scene.coords, scene.colors, scene.labels)

        augmenting = Voxelizer(args.voxel_size, rotation_bound=spec.rotation_bound, scale_bound=spec.scale_bound)
        elastic, post = ElasticDistortion(spec.elastic_params, p=1.0), training_transforms(spec.up_axis, 3)

        def train_voxelize_one():
            rng = np.random.default_rng(0)
            scene = load_scene(npz)
            coords, _, _ = elastic(scene.coords.astype(np.float64), None, None, rng)
            vox = augmenting.voxelize(coords, scene.colors.astype(np.float32), scene.labels, rng=rng)
            return post(vox.coords, vox.feats, vox.labels, rng)

        t_pre, _ = best_of(args.repeats, preprocess_one)
        t_vox, vox = best_of(args.repeats, voxelize_one)
        t_train, _ = best_of(args.repeats, train_voxelize_one)

    points = xyz.astype(np.float64)

    def baseline():
        grid = np.floor(points / args.voxel_size).astype(np.int64)
        return np.unique(grid, axis=0, return_index=True, return_inverse=True)

    t_base, (uniq, _, _) = best_of(args.repeats, baseline)
    assert len(uniq) == len(vox.coords), "baseline and voxeliser disagree on the number of voxels"

    rate = lambda seconds: n / seconds  # noqa: E731
    print(f"scene: {n:,} points -> {len(vox.coords):,} voxels at {args.voxel_size} m (best of {args.repeats})")
    print(f"preprocess (PLY -> npz)        {t_pre * 1e3:8.1f} ms  {rate(t_pre):12,.0f} points/s")
    print(f"voxelize (npz -> voxels+inv)   {t_vox * 1e3:8.1f} ms  {rate(t_vox):12,.0f} points/s")
    print(f"preprocess + voxelize          {(t_pre + t_vox) * 1e3:8.1f} ms  {rate(t_pre + t_vox):12,.0f} points/s")
    print(f"train voxelize (augmented)     {t_train * 1e3:8.1f} ms  {rate(t_train):12,.0f} points/s")
    print(f"baseline numpy.unique(axis=0)  {t_base * 1e3:8.1f} ms  {rate(t_base):12,.0f} points/s")
    print(f"ratio (preprocess + voxelize) / baseline throughput: {t_base / (t_pre + t_vox):.2f}x")
    print(f"ratio voxelize / baseline throughput:                {t_base / t_vox:.2f}x")


if __name__ == "__main__":
    main()
