"""Helpers shared by the tests/test_data_*.py files: tiny raw datasets written on the fly, a local HTTP server."""

from __future__ import annotations

import contextlib
import io
import http.server
import re
import tarfile
import threading
from dataclasses import fields
from pathlib import Path
from typing import Iterator

import numpy as np

from minkseg.data.datasets import EvalDataset
from minkseg.data.train_dataset import TrainDataset
from minkseg.data.quantize import DATASET_BOUND, VoxelParams
from minkseg.data.ply import write_ply
from minkseg.data.splits import SPLITS
from minkseg.datasets import RawReport, build_dataset
from minkseg.datasets.synthia4d import EXTRINSICS_PATH

# The loaders' required settings as the shipped params.yaml gives them (the library keeps no defaults of its own).
LOADER_PARAMS = dict(clip_bound=DATASET_BOUND, label_mode="ignore", temporal_numseq=3, temporal_dilation=30,
                     ignore_label=255)


def train_set(preprocessed, dataset: str, split: str = "train", **settings) -> TrainDataset:
    """A TrainDataset of ``dataset``'s preprocessed scenes (augmented unless ``augment=False``)."""
    voxel, rest = _split_settings({**LOADER_PARAMS, "augment": True, **settings})
    return TrainDataset(preprocessed, split, build_dataset(dataset), voxel, **rest)


def eval_set(preprocessed, dataset: str, split: str = "val", **settings) -> EvalDataset:
    voxel, rest = _split_settings({**LOADER_PARAMS, **settings})
    return EvalDataset(preprocessed, split, build_dataset(dataset), voxel, **rest)


def _split_settings(settings: dict) -> tuple[VoxelParams, dict]:
    """Keyword settings -> the VoxelParams they name, and the loader's other options (augment, rotation, ...)."""
    names = {field.name for field in fields(VoxelParams)}
    voxel = VoxelParams(**{key: value for key, value in settings.items() if key in names})
    return voxel, {key: value for key, value in settings.items() if key not in names}


def fetch_raw(dataset: str, raw_dir: Path, *, synthetic=None, urls=(), seed: int = 0, workers: int = 1,
              splits=SPLITS, **kwargs) -> RawReport:
    """The download stage's call for ``dataset`` with a tiny ``download.synthetic`` / ``download.synthia_urls``."""
    download = {"synthetic": synthetic, "synthia_urls": list(urls)}
    return build_dataset(dataset).fetch(raw_dir, _Group(download), seed=seed, splits=splits, workers=workers,
                                        progress=False, made_by=None, **kwargs)


class _Group(dict):
    """A ``download`` group for :func:`fetch_raw`: keys also read as attributes, as on the params model."""

    __getattr__ = dict.__getitem__


def write_scannet_scene(root: Path, scene: str, xyz: np.ndarray, rgb: np.ndarray, nyu40: np.ndarray | None,
                        test: bool = False) -> None:
    folder = root / ("scans_test" if test else "scans") / scene
    fields = {"x": xyz[:, 0].astype(np.float32), "y": xyz[:, 1].astype(np.float32),
              "z": xyz[:, 2].astype(np.float32), "red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2],
              "alpha": np.full(len(xyz), 255, np.uint8)}
    write_ply(folder / f"{scene}_vh_clean_2.ply", fields)
    if nyu40 is not None:
        write_ply(folder / f"{scene}_vh_clean_2.labels.ply", {**fields, "label": nyu40.astype(np.uint16)})


PLY_CLASSES = ["floor", "wall", "box"]


def write_labelled_plys(root: Path, count: int = 6, points: int = 1200, seed: int = 0,
                        label_property: str = "class_id", unlabelled: int = 99) -> list[str]:
    """A user's folder of small labelled scans (``ply-folder``): floor, two walls and a box per scene, in cm with z
    up, classes 0..2 (:data:`PLY_CLASSES`) in ``label_property`` and 5% of the points ``unlabelled``. Returns the
    file names (some in a subfolder, as users keep them)."""
    rng = np.random.default_rng(seed)
    names = []
    for index in range(count):
        n = points // 4
        floor = np.c_[rng.uniform(0, 400, (n, 2)), rng.normal(0, 0.5, n)]
        wall = np.c_[rng.normal(0, 0.5, n), rng.uniform(0, 400, n), rng.uniform(0, 250, n)]
        wall2 = np.c_[rng.uniform(0, 400, n), rng.normal(400, 0.5, n), rng.uniform(0, 250, n)]
        corner = rng.uniform(80, 250, 2)
        box = np.c_[corner + rng.uniform(0, 70, (n, 2)), rng.uniform(0, 80, n)]
        xyz = np.concatenate([floor, wall, wall2, box]).astype(np.float32)
        labels = np.repeat(np.array([0, 1, 1, 2]), n)
        labels[rng.random(len(labels)) < 0.05] = unlabelled
        base = np.array([[120, 110, 100], [200, 200, 195], [200, 200, 195], [150, 100, 60]])[np.repeat(np.arange(4), n)]
        rgb = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        name = f"scan_{index:02d}.ply" if index % 2 == 0 else f"site_b/scan_{index:02d}.ply"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_ply(root / name, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0],
                                "green": rgb[:, 1], "blue": rgb[:, 2], label_property: labels.astype(np.int32)})
        names.append(name)
    return names


def random_scene(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0, 3, (n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8)


def write_synthia_frame(root: Path, sequence: str, frame: int, xyz_cm: np.ndarray, rgb: np.ndarray,
                        labels: np.ndarray, extrinsics: np.ndarray | None = None) -> str:
    rel = f"{sequence}/point_clouds/{frame:06d}.ply"
    write_ply(root / rel, {"x": xyz_cm[:, 0].astype(np.float32), "y": xyz_cm[:, 1].astype(np.float32),
                           "z": xyz_cm[:, 2].astype(np.float32), "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2],
                           "l": labels.astype(np.uint8)})
    if extrinsics is not None:
        path = root / sequence / EXTRINSICS_PATH.format(frame=f"{frame:06d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(repr(float(v)) for v in extrinsics.reshape(-1)))
    return rel


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path, honours ``Range: bytes=N-``; cuts the first ``server.cut_times``
    responses after ``server.cut_after`` bytes (the connection is closed mid-body)."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        server = self.server
        server.requests.append(self.headers.get("Range"))
        if self.path.endswith("missing.tar"):
            self.send_error(404, "Not Found")
            return
        data = server.payload
        start = 0
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and server.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_times > 0:
            server.cut_times -= 1
            self.wfile.write(body[: server.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve_bytes(payload: bytes, cut_after: int = 0, cut_times: int = 0, honour_range: bool = True
                ) -> Iterator[http.server.ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1 (ephemeral port) serving ``payload``; yields the server object."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.payload, server.cut_after, server.cut_times = payload, cut_after, cut_times
    server.honour_range, server.requests = honour_range, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def url_of(server: http.server.ThreadingHTTPServer, name: str = "Synthia4D.tar") -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/{name}"


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    """An in-memory tar of (header, data) members; data None for links and directories."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def tar_file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def tar_link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None
