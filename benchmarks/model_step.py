"""Res16UNet34C training step (forward + backward) on ScanNet-sized scenes: time and peak memory.

    python benchmarks/model_step.py                      # 2 scenes x ~150k voxels at 2 cm, CPU (+ CUDA if present)
    python benchmarks/model_step.py --voxels 40000 --repeats 2 --devices cpu

Scenes are built procedurally (a room: floor, four walls and box-shaped furniture, sampled as scanned
surfaces with 5 mm noise and quantised at 2 cm), so the benchmark needs no dataset. The same network is also
built in spconv 2.x (SubMConv3d for the stem and blocks, SparseConv3d k2 s2 down, SparseInverseConv3d up,
BatchNorm1d; identical widths, block counts and parameter count) and run on the same voxels, and the ratio
ours / spconv is printed. Every measurement runs in its own process (same seed, same voxels) so that its
peak memory is its own. spconv 2.3.8 cannot run backward on a CPU-only torch build (its
backward asks for a CUDA stream), so on CPU the comparison is forward-only (inference, no_grad) and the
training step is reported for our engine alone.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import minkseg  # noqa: E402,F401  (first: the OpenMP settings the stages run under, before torch loads)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import minkseg.sparse as ME  # noqa: E402
from minkseg.nn import build_model, count_parameters  # noqa: E402

VOXEL = 0.02


# ----------------------------------------------------------------------------------------------- scenes

def _rectangles(scale: float, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """(origin, u, v, label) surfaces of a furnished room whose floor is about (6 x 5) * scale metres."""
    w, d, h = 6.0 * scale, 5.0 * scale, 2.6 * min(1.0, scale)

    def rect(o, u, v, label):
        return np.array(o, float), np.array(u, float), np.array(v, float), label

    surfaces = [rect((0, 0, 0), (w, 0, 0), (0, d, 0), 1)]  # floor
    surfaces += [rect((0, 0, 0), (w, 0, 0), (0, 0, h), 0), rect((0, d, 0), (w, 0, 0), (0, 0, h), 0),
                 rect((0, 0, 0), (0, d, 0), (0, 0, h), 0), rect((w, 0, 0), (0, d, 0), (0, 0, h), 0)]
    for _ in range(max(2, int(4 * scale * scale))):  # furniture: boxes with a top and four sides
        sx, sy, sz = rng.uniform(0.4, 1.6), rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.1)
        sx, sy = min(sx, 0.4 * w), min(sy, 0.4 * d)  # small rooms (small --voxels) keep their furniture inside
        x0, y0 = rng.uniform(0.1, w - sx - 0.1), rng.uniform(0.1, d - sy - 0.1)
        label = int(rng.integers(2, 20))
        surfaces += [rect((x0, y0, sz), (sx, 0, 0), (0, sy, 0), label),
                     rect((x0, y0, 0), (sx, 0, 0), (0, 0, sz), label),
                     rect((x0, y0 + sy, 0), (sx, 0, 0), (0, 0, sz), label),
                     rect((x0, y0, 0), (0, sy, 0), (0, 0, sz), label),
                     rect((x0 + sx, y0, 0), (0, sy, 0), (0, 0, sz), label)]
    return surfaces


def _voxelise(scale: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points, labels = [], []
    for origin, u, v, label in _rectangles(scale, rng):
        nu = max(2, int(np.linalg.norm(u) / (VOXEL / 2)))
        nv = max(2, int(np.linalg.norm(v) / (VOXEL / 2)))
        a, b = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv), indexing="ij")
        p = origin + a.reshape(-1, 1) * u + b.reshape(-1, 1) * v
        points.append(p + rng.normal(0, 0.005, p.shape))
        labels.append(np.full(len(p), label))
    xyz, label = np.concatenate(points), np.concatenate(labels)
    voxels, first = np.unique(np.floor(xyz / VOXEL).astype(np.int64), axis=0, return_index=True)
    voxels -= voxels.min(0)
    colors = rng.uniform(0, 1, (len(voxels), 3)).astype(np.float32)
    return voxels, colors, label[first]


def scene(target_voxels: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A room rescaled until it quantises to roughly ``target_voxels`` voxels."""
    scale = 1.0
    for _ in range(4):
        voxels, colors, labels = _voxelise(scale, seed)
        scale *= math.sqrt(target_voxels / len(voxels))
    return voxels, colors, labels


# ----------------------------------------------------------------------------------------------- spconv twin

def spconv_res16unet(spec, in_channels: int, out_channels: int) -> nn.Module:
    """The same U-Net in spconv: same widths, block counts and kernel volumes (so the same parameter count)."""
    import spconv.pytorch as sp

    class Block(nn.Module):
        def __init__(self, cin, cout, key):
            super().__init__()
            self.conv1 = sp.SubMConv3d(cin, cout, 3, bias=False, indice_key=key)
            self.norm1 = nn.BatchNorm1d(cout)
            self.conv2 = sp.SubMConv3d(cout, cout, 3, bias=False, indice_key=key)
            self.norm2 = nn.BatchNorm1d(cout)
            self.down = None
            if cin != cout:
                self.down = sp.SparseSequential(sp.SubMConv3d(cin, cout, 1, bias=False, indice_key=key + "1x1"),
                                                nn.BatchNorm1d(cout))

        def forward(self, x):
            out = self.conv1(x)
            out = out.replace_feature(torch.relu(self.norm1(out.features)))
            out = self.conv2(out)
            out = out.replace_feature(self.norm2(out.features))
            residual = x if self.down is None else self.down(x)
            return out.replace_feature(torch.relu(out.features + residual.features))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            planes, layers = spec.planes, spec.layers
            self.stem = sp.SubMConv3d(in_channels, 32, 3, bias=False, indice_key="subm1")
            self.bn0 = nn.BatchNorm1d(32)
            self.downs, self.down_bns, self.enc = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            width, widths = 32, []
            for level in range(4):
                self.downs.append(sp.SparseConv3d(width, width, 2, 2, bias=False, indice_key=f"down{level}"))
                self.down_bns.append(nn.BatchNorm1d(width))
                key = f"subm{2 ** (level + 1)}"
                self.enc.append(nn.Sequential(*[Block(width if i == 0 else planes[level], planes[level], key)
                                                for i in range(layers[level])]))
                width = planes[level]
                widths.append(width)
            skips = [widths[2], widths[1], widths[0], 32]
            self.ups, self.up_bns, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
            for level in range(4):
                up = planes[4 + level]
                self.ups.append(sp.SparseInverseConv3d(width, up, 2, bias=False, indice_key=f"down{3 - level}"))
                self.up_bns.append(nn.BatchNorm1d(up))
                key = f"subm{2 ** (3 - level)}"
                self.dec.append(nn.Sequential(*[Block(up + skips[level] if i == 0 else up, up, key)
                                                for i in range(layers[4 + level])]))
                width = up
            self.final = sp.SubMConv3d(width, out_channels, 1, bias=True, indice_key="subm1")

        def forward(self, x):
            x = self.stem(x)
            x = x.replace_feature(torch.relu(self.bn0(x.features)))
            skips = [x]
            for down, bn, blocks in zip(self.downs, self.down_bns, self.enc):
                x = down(x)
                x = blocks(x.replace_feature(torch.relu(bn(x.features))))
                skips.append(x)
            skips.pop()
            for up, bn, blocks in zip(self.ups, self.up_bns, self.dec):
                x = up(x)
                skip = skips.pop()
                x = x.replace_feature(torch.cat([torch.relu(bn(x.features)), skip.features], 1))
                x = blocks(x)
            return self.final(x)

    return Net()


# ----------------------------------------------------------------------------------------------- measuring

MODES = ("train step (fwd+bwd)", "inference (fwd, no_grad)")


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _load_batch(path: str, device: torch.device):
    data = np.load(path)
    counts = data["counts"].tolist()
    coordinates = ME.utils.batched_coordinates(list(torch.from_numpy(data["voxels"]).int().split(counts)))
    return (coordinates.to(device), torch.from_numpy(data["colors"]).to(device),
            torch.from_numpy(data["labels"]).long().to(device), len(counts))


def child(args) -> dict:
    """One (engine, mode, device) measurement in a fresh process, so its peak is its own.

    CPU peak = the process's peak resident set (getrusage) minus the resident set once the model and the
    batch are in memory; CUDA peak = the allocator's peak above what is allocated at that point.
    """
    device = torch.device(args.device)
    coordinates, features, labels, batch = _load_batch(args.scenes, device)
    model = build_model(args.model, 3, 20).to(device)
    loss_fn = nn.CrossEntropyLoss()
    if args.engine == "spconv":
        import spconv.pytorch as sp
        net = spconv_res16unet(model.spec, 3, 20).to(device)
        assert count_parameters(net) == count_parameters(model), "the spconv twin must have the same size"
        shape = (((coordinates[:, 1:].max(0).values + 1 + 15) // 16) * 16).tolist()  # no cropping at stride 16

        def forward():
            return net(sp.SparseConvTensor(features, coordinates, shape, batch)).features
    else:
        net = model

        def forward():
            return net(ME.SparseTensor(features, coordinates)).F

    def step():
        if args.mode == MODES[0]:
            net.train()
            net.zero_grad(set_to_none=True)
            loss_fn(forward(), labels).backward()
        else:
            net.eval()
            with torch.no_grad():
                forward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_now()
    times = []
    for index in range(args.warmup + args.repeats):
        start = time.perf_counter()
        step()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"median": statistics.median(times), "min": min(times), "peak": peak}


def _measure_in_subprocess(engine: str, mode: str, device: str, scenes_path: str, args) -> dict | str:
    command = [sys.executable, __file__, "--child", engine, mode, "--device", device, "--scenes", scenes_path,
               "--model", args.model, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        return errors[-1].strip() if errors else f"exit code {done.returncode}"
    return json.loads(lines[-1])


def run_device(device: str, scenes_path: str, args) -> None:
    engines = ["ours"] + ([] if args.no_spconv else ["spconv"])
    results = {}
    print(f"  {'engine':<8} {'what':<26} {'median s':>9} {'min s':>8} {'peak MiB':>9}")
    for engine in engines:
        for mode in MODES:
            result = _measure_in_subprocess(engine, mode, device, scenes_path, args)
            if isinstance(result, str):
                print(f"  {engine:<8} {mode:<26} failed: {result}")
                continue
            results[(engine, mode)] = result
            print(f"  {engine:<8} {mode:<26} {result['median']:9.3f} {result['min']:8.3f} "
                  f"{result['peak'] / 2 ** 20:9.1f}", flush=True)
    for mode in MODES:
        if ("ours", mode) in results and ("spconv", mode) in results:
            ours, theirs = results[("ours", mode)], results[("spconv", mode)]
            print(f"  ratio ours/spconv, {mode}: time {ours['median'] / theirs['median']:.2f}x, "
                  f"peak memory {ours['peak'] / max(theirs['peak'], 1):.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Res16UNet34C")
    parser.add_argument("--voxels", type=int, default=150_000, help="voxels per scene (ScanNet at 2 cm: ~150k)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, plus cuda when present)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-spconv", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--scenes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.child:
        args.engine, args.mode = args.child
        print(json.dumps(child(args)))
        return 0

    scenes = [scene(args.voxels, args.seed + i) for i in range(args.batch)]
    devices = ["cpu", "cuda"] if args.devices == "auto" else [args.devices]
    if "cuda" in devices and not torch.cuda.is_available():
        devices.remove("cuda")
        print("CUDA not available: CPU only")
    sizes = ", ".join(f"{len(v):,}" for v, _, _ in scenes)
    print(f"{args.model}, batch of {args.batch} scenes ({sizes} voxels at {VOXEL * 100:.0f} cm), "
          f"{args.repeats} timed repeats after {args.warmup} warm-up, each measurement in its own process, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "scenes.npz")
        np.savez(path, voxels=np.concatenate([v for v, _, _ in scenes]),
                 colors=np.concatenate([c for _, c, _ in scenes]),
                 labels=np.concatenate([lab for _, _, lab in scenes]),
                 counts=np.array([len(v) for v, _, _ in scenes]))
        for name in devices:
            label = torch.cuda.get_device_name(0) if name == "cuda" else "CPU"
            print(f"[{name}] {label}")
            run_device(name, path, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
