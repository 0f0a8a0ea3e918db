"""Speed of the plyfile-based PLY reader against the former hand-written one, on the same files in the same run.

Why a ratio: absolute MB/s depend on the machine and its load; the former reader (``legacy_ply_reader.py``, a
vectorised numpy parser) read vertices only, so the ratio says what switching to plyfile (which also gives faces
and writes meshes) costs. Target: within 1.5x on the binary mesh, the layout of every ScanNet scan.

    python benchmarks/ply_read.py [--points 1000000] [--repeats 5]

Files (written to a temporary folder): a binary ScanNet-like mesh (x y z float, red green blue alpha uchar, two
triangles per vertex), and the same vertices as ASCII. Each reader reads the ``vertex`` element (best of repeats).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import legacy_ply_reader  # noqa: E402
from minkseg.data.ply import encode_ply, read_ply, write_ply_file  # noqa: E402


def scannet_like_mesh(points: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vertex = np.empty(points, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                     ("blue", "u1"), ("alpha", "u1")])
    for axis in "xyz":
        vertex[axis] = rng.uniform(0, 8, points)
    for channel in ("red", "green", "blue"):
        vertex[channel] = rng.integers(0, 256, points)
    vertex["alpha"] = 255
    faces = np.empty(2 * points, dtype=[("vertex_indices", "O")])
    triangles = rng.integers(0, points, size=(2 * points, 3)).astype(np.int32)
    faces["vertex_indices"] = list(triangles)
    return {"vertex": vertex, "face": faces}


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--ascii-points", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mesh = scannet_like_mesh(args.points)
        binary = Path(tmp) / "mesh.ply"
        write_ply_file(binary, mesh)
        vertex = mesh["vertex"][: args.ascii_points]
        ascii_file = Path(tmp) / "cloud_ascii.ply"
        ascii_file.write_bytes(encode_ply({name: vertex[name] for name in vertex.dtype.names}, binary=False))
        for label, path in ((f"binary mesh, {args.points:,} vertices + {2 * args.points:,} faces", binary),
                            (f"ASCII cloud, {args.ascii_points:,} vertices", ascii_file)):
            new = read_ply(path)
            old = legacy_ply_reader.read_ply(path)
            assert all(np.array_equal(new[name], old[name]) for name in old), "the readers disagree"
            t_new = best_of(args.repeats, lambda: read_ply(path))
            t_old = best_of(args.repeats, lambda: legacy_ply_reader.read_ply(path))
            print(f"{label}: plyfile-based {t_new * 1000:.1f} ms, former reader {t_old * 1000:.1f} ms, "
                  f"ratio {t_new / t_old:.2f}x")


if __name__ == "__main__":
    main()
