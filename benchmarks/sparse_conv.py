"""Engine benchmark: one 3^3 submanifold conv (32 -> 32 channels) on a ScanNet-sized scene, minkseg vs spconv.

Prints kernel-map build, forward and backward times for both engines measured in the same run, and the ratios
(spconv time / minkseg time: above 1.0 means minkseg is faster). CPU always, CUDA too when present.

    python benchmarks/sparse_conv.py [--voxels 300000] [--repeats 5] [--device cpu|cuda|all]
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import minkseg  # noqa: F401  (first: the OpenMP settings the stages run under, before torch loads)
import numpy as np
import torch

import minkseg.sparse as ME
from minkseg.engine.runtime import configure_cpu_runtime


def room_scene(target_voxels: int, voxel: float = 0.02, seed: int = 0) -> np.ndarray:
    """Voxel coordinates of a procedurally built room (floor, walls, furniture boxes) at ``voxel`` metres.

    Surfaces, not volumes, like a real scan: about 9 of 27 neighbours are active, which is what makes sparse conv
    cost what it costs. The room is scaled until it holds about ``target_voxels`` voxels.
    """
    rng = np.random.default_rng(seed)
    side = np.sqrt(target_voxels / 560_000.0)
    width, depth, height = 8.0 * side, 6.0 * side, 3.0
    step = voxel / 2
    xs, ys, zs = np.arange(0, width, step), np.arange(0, depth, step), np.arange(0, height, step)
    parts = [np.stack(np.meshgrid(xs, ys, [0.0], indexing="ij"), -1).reshape(-1, 3)]
    for x_wall in (0.0, width):
        parts.append(np.stack(np.meshgrid([x_wall], ys, zs, indexing="ij"), -1).reshape(-1, 3))
    for y_wall in (0.0, depth):
        parts.append(np.stack(np.meshgrid(xs, [y_wall], zs, indexing="ij"), -1).reshape(-1, 3))
    for _ in range(int(12 * side * side)):
        lo = rng.uniform([0.5, 0.5, 0.0], [width - 1.5, depth - 1.5, 0.0])
        size = rng.uniform([0.4, 0.4, 0.4], [1.2, 1.2, 1.2])
        top = np.stack(np.meshgrid(np.arange(lo[0], lo[0] + size[0], step),
                                   np.arange(lo[1], lo[1] + size[1], step), [size[2]], indexing="ij"), -1)
        parts.append(top.reshape(-1, 3))
    points = np.concatenate(parts) + rng.normal(0, voxel / 4, (sum(len(p) for p in parts), 3))
    coords = np.unique(np.floor(points / voxel).astype(np.int32), axis=0)
    return coords - coords.min(0)  # spconv wants non-negative indices inside its spatial shape


def timed(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    """Median wall time of ``fn`` over ``repeats`` runs (after one warm-up), synchronising CUDA."""
    result = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_minkseg(coords: torch.Tensor, feats: torch.Tensor, weight: torch.Tensor, repeats: int) -> dict:
    device = feats.device
    layer = ME.MinkowskiConvolution(32, 32, 3, dimension=3).to(device)
    with torch.no_grad():
        layer.kernel.copy_(weight)

    def build_map():
        x = ME.SparseTensor(feats, coords)
        return x.coordinate_manager.kernel_map_for(x.coordinate_map_key, x.coordinate_map_key, layer.kernel_generator)

    t_map, kmap = timed(build_map, repeats, device)
    x = ME.SparseTensor(feats.requires_grad_(True), coords)
    x.coordinate_manager.kernel_map_for(x.coordinate_map_key, x.coordinate_map_key, layer.kernel_generator)
    t_fwd, out = timed(lambda: layer(x), repeats, device)
    grad = torch.ones_like(out.F)
    t_bwd, _ = timed(lambda: torch.autograd.grad(layer(x).F, [x.F, layer.kernel], grad), repeats, device)
    t_bwd -= t_fwd  # the lambda also ran a forward
    return {"map": t_map, "fwd": t_fwd, "bwd": max(t_bwd, 0.0), "out": out.F.detach(), "pairs": sum(kmap.pair_counts())}


def bench_spconv(coords: torch.Tensor, feats: torch.Tensor, weight_spconv: torch.Tensor, repeats: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import spconv.pytorch as spconv
    device = feats.device
    layer = spconv.SubMConv3d(32, 32, 3, bias=False, indice_key="subm").to(device)
    with torch.no_grad():
        layer.weight.copy_(weight_spconv)
    shape = (coords[:, 1:].max(0).values + 1).tolist()
    batch = int(coords[:, 0].max()) + 1

    from spconv.core import ConvAlgo
    from spconv.pytorch import ops as spconv_ops

    algo = layer.algo if device.type == "cuda" else ConvAlgo.Native  # the CPU build only has the native algo

    def build_map():  # the same work spconv does inside its first SubMConv3d call on a new tensor
        return spconv_ops.get_indice_pairs(coords, batch, shape, algo, [3, 3, 3], [1, 1, 1], [1, 1, 1],
                                           [1, 1, 1], [0, 0, 0], subm=True)

    t_map, _ = timed(build_map, repeats, device)
    x = spconv.SparseConvTensor(feats.requires_grad_(True), coords, shape, batch)
    layer(x)
    t_fwd, out = timed(lambda: layer(x), repeats, device)  # ... and a forward reusing the cached map
    grad = torch.ones_like(out.features)
    t_bwd = None  # spconv 2.3.8's CPU build has no backward (it asks torch for a CUDA stream and fails)
    if device.type == "cuda":
        t_bwd, _ = timed(lambda: torch.autograd.grad(layer(x).features, [x.features, layer.weight], grad),
                         repeats, device)
        t_bwd = max(t_bwd - t_fwd, 0.0)
    return {"map": t_map, "fwd": t_fwd, "bwd": t_bwd, "out": out}


def to_spconv_weight(weight: torch.Tensor) -> torch.Tensor:
    """[27, in, out] in ME order (first axis fastest) -> spconv's [out, k0, k1, k2, in]."""
    offsets = ME.kernel_offsets((3, 3, 3)) + 1
    out = torch.zeros(weight.shape[2], 3, 3, 3, weight.shape[1], dtype=weight.dtype, device=weight.device)
    for k, (i, j, l) in enumerate(offsets.tolist()):
        out[:, i, j, l, :] = weight[k].t()
    return out


def run(device: torch.device, voxels: int, repeats: int) -> None:
    torch.manual_seed(0)
    vox = room_scene(voxels)
    coords = ME.batched_coordinates([vox]).to(device)
    feats = torch.randn(coords.shape[0], 32, device=device)
    weight = torch.empty(27, 32, 32, device=device).uniform_(-(1 / (32 * 27) ** 0.5), (1 / (32 * 27) ** 0.5))
    ours = bench_minkseg(coords, feats.clone(), weight, repeats)
    theirs = bench_spconv(coords, feats.clone(), to_spconv_weight(weight), repeats)
    # same coordinates in, same order out for a submanifold conv: check the numbers agree before timing means much
    diff = (theirs["out"].features.detach() - ours["out"]).abs().max().item()
    print(f"\n== {device.type.upper()}  voxels={coords.shape[0]:,}  kernel pairs={ours['pairs']:,}  "
          f"threads={torch.get_num_threads()}  max|minkseg-spconv|={diff:.2e}")
    if diff > 1e-3:
        print(f"   note: spconv's output differs from minkseg's by {diff:.2g}; spconv 2.3.8's CPU kernels race with "
              "more than one thread (run --threads 1: they then agree to ~1e-6)")
    print(f"{'':14}{'minkseg ms':>12}{'spconv ms':>12}{'ratio spconv/minkseg':>24}")
    for key, label in (("map", "kernel map"), ("fwd", "forward"), ("bwd", "backward")):
        if theirs[key] is None:
            print(f"{label:14}{ours[key] * 1e3:12.1f}{'n/a':>12}{'n/a (spconv CPU: no backward)':>30}")
            continue
        print(f"{label:14}{ours[key] * 1e3:12.1f}{theirs[key] * 1e3:12.1f}{theirs[key] / max(ours[key], 1e-9):24.2f}")
    if theirs["bwd"] is not None:
        conv_ours, conv_theirs = ours["fwd"] + ours["bwd"], theirs["fwd"] + theirs["bwd"]
        print(f"{'conv fwd+bwd':14}{conv_ours * 1e3:12.1f}{conv_theirs * 1e3:12.1f}{conv_theirs / conv_ours:24.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    configure_cpu_runtime(args.threads)  # what the train/evaluate stages use (both engines run under it)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    elif args.device == "cuda":
        raise SystemExit("benchmarks/sparse_conv.py: --device cuda but no CUDA device is available")
    for device in devices:
        run(device, args.voxels, args.repeats)


if __name__ == "__main__":
    main()
