"""Procedural street sequences in the raw Synthia4D layout, packed as ``Synthia4D.tar`` of inner ``.tar.bz2``.

Why: the 4D code path (download, safe extraction, camera-to-world transform, temporal windows, 4D sparse
convolutions) must run end to end without the real 20+ GB archive. A car drives down a street with road, lane
markings, kerbed sidewalks, building facades, fences, trees, poles with signs and traffic lights; other cars and
pedestrians move between frames, so consecutive frames differ the way the 4D network should exploit. Each frame is
what a forward camera would see (a frustum up to ``view_range``, point density falling with distance), stored in
camera coordinates (cm, y up) with the camera extrinsics next to it, exactly as the reader expects. Colours overlap
across classes (grey road/sidewalk/building/pole/car, white markings vs. white cars) and each sequence has a
weather/lighting tint. Everything is a pure function of ``(seed, sequence index)``.
"""

from __future__ import annotations

import io
import math
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minkseg.atomic import atomic_write_bytes
from minkseg.data.parallel import run_parallel
from minkseg.data.ply import encode_ply
from minkseg.datasets.synthia4d import EXTRINSICS_PATH, SPLIT_FILES, world_to_camera

RAW = dict(void=0, building=2, road=3, sidewalk=4, fence=5, vegetation=6, pole=7, car=8, sign=9, pedestrian=10,
           lanemarking=12, light=15)
WEATHERS = ("DAWN", "SUMMER", "FALL", "WINTER", "NIGHT", "SUNSET", "FOG", "SPRING", "RAINNIGHT", "SOFTRAIN")
TINT = {"DAWN": (0.85, (1.05, 0.95, 0.9)), "SUMMER": (1.0, (1.0, 1.0, 1.0)), "FALL": (0.9, (1.05, 0.95, 0.85)),
        "WINTER": (1.05, (0.95, 1.0, 1.08)), "NIGHT": (0.45, (0.9, 0.9, 1.1)), "SUNSET": (0.8, (1.15, 0.9, 0.75)),
        "FOG": (0.9, (1.0, 1.0, 1.0)), "SPRING": (1.0, (0.98, 1.04, 0.98)), "RAINNIGHT": (0.4, (0.9, 0.95, 1.1)),
        "SOFTRAIN": (0.8, (0.95, 0.97, 1.02))}
GREY = np.array([(90, 90, 95), (120, 120, 118), (150, 148, 145), (175, 172, 168), (60, 60, 62)], float)
BUILDING = np.array([(168, 160, 150), (140, 80, 62), (200, 190, 170), (110, 110, 115), (180, 170, 140),
                     (150, 148, 145)], float)
VEGETATION = np.array([(60, 110, 50), (80, 130, 60), (40, 80, 35), (100, 120, 60)], float)
TRUNK = np.array([(90, 70, 50), (70, 60, 50)], float)
CAR = np.array([(200, 30, 30), (30, 40, 120), (220, 220, 225), (30, 30, 32), (150, 148, 145), (90, 90, 95),
                (200, 180, 40)], float)
CLOTHES = np.array([(40, 40, 60), (150, 40, 40), (200, 200, 190), (60, 90, 60), (120, 100, 80)], float)


@dataclass(frozen=True)
class SyntheticSynthiaConfig:
    """Frames per split (``num_*``) are grouped into sequences of ``frames_per_sequence``."""

    num_train: int = 48
    num_val: int = 16
    num_test: int = 16
    frames_per_sequence: int = 16
    points_per_scene: int = 8000  # per frame
    seed: int = 0
    view_range: float = 3000.0  # cm
    speed: tuple[float, float] = (80.0, 160.0)  # cm per frame of the ego car

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test, self.frames_per_sequence) < 1:
            raise ValueError("synthetic Synthia4D needs >= 1 frame per split and per sequence")
        if self.points_per_scene < 200:
            raise ValueError("synthetic Synthia4D needs points_per_scene >= 200")


def sequence_plan(config: SyntheticSynthiaConfig) -> list[tuple[str, str, int]]:
    """(split, sequence name, frame count) for every sequence, in a fixed order."""
    plan, k = [], 0
    for split, total in (("train", config.num_train), ("val", config.num_val), ("test", config.num_test)):
        count = math.ceil(total / config.frames_per_sequence)
        sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
        for size in sizes:
            plan.append((split, f"SYNTHIA-SEQS-{k + 1:02d}-{WEATHERS[k % len(WEATHERS)]}", size))
            k += 1
    return plan


class Surfaces:
    """Uniform samples of simple surfaces (cm) with raw labels and colours."""

    def __init__(self, rng: np.random.Generator, density: float) -> None:
        self.rng, self.density = rng, density  # points per cm^2
        self.pts, self.cols, self.labs = [], [], []

    def _add(self, pts: np.ndarray, label: int, color: np.ndarray, noise: float = 8.0) -> None:
        self.pts.append(pts)
        self.cols.append(color + self.rng.normal(0, noise, (len(pts), 3)))
        self.labs.append(np.full(len(pts), label, dtype=np.int64))

    def rect(self, origin, u, v, label: int, color: np.ndarray) -> None:
        origin, u, v = (np.asarray(a, float) for a in (origin, u, v))
        n = self.rng.poisson(self.density * float(np.linalg.norm(np.cross(u, v))))
        ab = self.rng.random((n, 2))
        self._add(origin + ab[:, :1] * u + ab[:, 1:] * v, label, color)

    def box(self, lo, hi, label: int, color: np.ndarray) -> None:
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        dx, dy, dz = x1 - x0, y1 - y0, z1 - z0
        for o, u, v in (((x0, y0, z0), (0, dy, 0), (0, 0, dz)), ((x1, y0, z0), (0, dy, 0), (0, 0, dz)),
                        ((x0, y0, z0), (dx, 0, 0), (0, dy, 0)), ((x0, y0, z1), (dx, 0, 0), (0, dy, 0)),
                        ((x0, y1, z0), (dx, 0, 0), (0, 0, dz))):
            self.rect(o, u, v, label, color)

    def cylinder(self, base, radius: float, height: float, label: int, color: np.ndarray) -> None:
        n = self.rng.poisson(self.density * 2 * math.pi * radius * height)
        a, h = self.rng.uniform(0, 2 * math.pi, n), self.rng.uniform(0, height, n)
        base = np.asarray(base, float)
        self._add(base + np.stack([radius * np.cos(a), h, radius * np.sin(a)], 1), label, color)

    def sphere(self, center, radius: float, label: int, color: np.ndarray) -> None:
        n = self.rng.poisson(self.density * 4 * math.pi * radius ** 2)
        d = self.rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        self._add(np.asarray(center, float) + radius * d * self.rng.uniform(0.85, 1.0, (n, 1)), label, color)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.pts:
            return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64)
        return np.concatenate(self.pts), np.concatenate(self.cols), np.concatenate(self.labs)


def pick(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    return palette[rng.integers(len(palette))] + rng.uniform(-12, 12, 3)


def build_street(rng: np.random.Generator, length: float, density: float) -> tuple[Surfaces, float, float]:
    """Static world along +z from 0 to ``length``; returns (surfaces, road half width, sidewalk width)."""
    s = Surfaces(rng, density)
    half, walk = rng.uniform(350, 500), rng.uniform(250, 400)
    s.rect((-half, 0, 0), (2 * half, 0, 0), (0, 0, length), RAW["road"], pick(rng, GREY[:2]))
    mark = np.array([235, 232, 220.0]) if rng.random() < 0.7 else np.array([230, 200, 60.0])
    for z in np.arange(rng.uniform(0, 300), length, 600):
        s.rect((-8, 0.5, z), (16, 0, 0), (0, 0, 300), RAW["lanemarking"], mark)
    for side in (-1, 1):
        s.rect((side * (half - 30) - 7, 0.5, 0), (14, 0, 0), (0, 0, length), RAW["lanemarking"], mark)
        inner = side * half
        outer = side * (half + walk)
        walk_color = pick(rng, GREY[1:4])
        s.rect((min(inner, outer), 15, 0), (walk, 0, 0), (0, 0, length), RAW["sidewalk"], walk_color)
        s.rect((inner, 0, 0), (0, 15, 0), (0, 0, length), RAW["sidewalk"], walk_color)  # kerb
        z = rng.uniform(-500, 0)
        while z < length:  # building blocks with gaps
            block, gap = rng.uniform(800, 2500), rng.uniform(200, 700)
            height, setback = rng.uniform(600, 2500), rng.uniform(0, 200)
            x = outer + side * setback
            color = pick(rng, BUILDING)
            s.rect((x, 0, z), (0, height, 0), (0, 0, block), RAW["building"], color)
            for z_side in (z, z + block):
                s.rect((x, 0, z_side), (side * 800, 0, 0), (0, height, 0), RAW["building"], color * 0.9)
            for _ in range(int(block * height / 4e5)):  # darker windows on the facade, still 'building'
                wz, wy = rng.uniform(z, z + block - 150), rng.uniform(250, height - 200)
                s.rect((x - side * 2, wy, wz), (0, 120, 0), (0, 0, 120), RAW["building"], color * 0.55)
            if rng.random() < 0.5:  # fence across the gap
                s.rect((outer, 15, z + block), (0, rng.uniform(120, 200), 0), (0, 0, gap), RAW["fence"],
                       pick(rng, GREY) * 0.8)
            z += block + gap
        for z in np.arange(rng.uniform(0, 800), length, rng.uniform(800, 1500)):  # trees along the kerb
            x = side * (half + rng.uniform(60, 120))
            trunk_h = rng.uniform(250, 380)
            s.cylinder((x, 15, z), 15, trunk_h, RAW["vegetation"], pick(rng, TRUNK))
            r = rng.uniform(150, 280)
            s.sphere((x, 15 + trunk_h + 0.7 * r, z), r, RAW["vegetation"], pick(rng, VEGETATION))
        for z in np.arange(rng.uniform(0, 1500), length, rng.uniform(1800, 3000)):  # poles, signs, lights
            x = side * (half + 30)
            h = rng.uniform(450, 800)
            s.cylinder((x, 15, z), 8, h, RAW["pole"], pick(rng, GREY))
            if rng.random() < 0.5:
                s.box((x - side * 50, 15 + h - 120, z - 5), (x + side * 10, 15 + h - 40, z + 5), RAW["sign"],
                      np.array([200, 40, 40.0]) if rng.random() < 0.5 else np.array([40, 70, 180.0]))
            else:
                s.box((x - side * 160, 15 + h - 90, z - 20), (x - side * 110, 15 + h, z + 20), RAW["light"],
                      np.array([40, 40, 42.0]))
        for z in np.arange(rng.uniform(0, 2000), length, rng.uniform(1500, 3000)):  # bins etc.: void
            x = side * (half + walk * rng.uniform(0.3, 0.8))
            s.box((x - 30, 15, z - 30), (x + 30, 110, z + 30), RAW["void"], pick(rng, CLOTHES))
    return s, half, walk


def make_car(rng: np.random.Generator, density: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = Surfaces(rng, density)
    length, width, color = rng.uniform(380, 480), rng.uniform(170, 195), pick(rng, CAR)
    s.box((-width / 2, 30, -length / 2), (width / 2, 110, length / 2), RAW["car"], color)
    s.box((-width / 2 + 10, 110, -length / 4), (width / 2 - 10, 160, length / 4), RAW["car"], color * 0.7)
    for x in (-width / 2, width / 2):
        for z in (-length / 3, length / 3):
            s.cylinder((x, 0, z), 32, 10, RAW["car"], np.array([25, 25, 25.0]))
    return s.arrays()


def make_pedestrian(rng: np.random.Generator, density: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = Surfaces(rng, density)
    h = rng.uniform(155, 190)
    s.cylinder((0, 0, 0), rng.uniform(18, 26), h - 25, RAW["pedestrian"], pick(rng, CLOTHES))
    s.sphere((0, h - 12, 0), 12, RAW["pedestrian"], np.array([200, 160, 130.0]))
    return s.arrays()


def extrinsics_for(position: np.ndarray, yaw: float) -> np.ndarray:
    """The 4x4 matrix the Synthia reader turns into camera->world = rotation about y by ``yaw`` + ``position``."""
    c, s = math.cos(yaw), math.sin(yaw)
    rot_y = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    flip = np.diag([1.0, -1.0, -1.0])
    rotation = flip @ rot_y.T @ flip  # (p * flip) @ rotation * flip == p @ rot_y.T
    stored = rotation.copy()
    stored[0, :] *= -1.0
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = stored
    extrinsics[3, :3] = -(position * np.array([1.0, -1.0, -1.0])) / 100.0
    extrinsics[:3, 3] = 0.0
    return extrinsics


def render_sequence(config: SyntheticSynthiaConfig, index: int, frames: int, weather: str
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Frames of one sequence as (camera xyz cm, rgb uint8, raw label uint8, extrinsics 4x4)."""
    rng = np.random.default_rng([config.seed, 1000 + index])
    speed = rng.uniform(*config.speed)
    length = frames * speed + config.view_range + 1000
    budget = 6.0 * config.points_per_scene * length / config.view_range
    # Street area ~ length * (2 * (half + walk) + facades ~ 2 * 1200): density in points per cm^2.
    density = budget / (length * 3800.0)
    street, half, walk = build_street(rng, length, density)
    static = street.arrays()
    movers = []
    for _ in range(int(rng.integers(3, 8))):  # cars: two lanes in opposite directions, some parked
        lane = rng.choice([-1, 1])
        parked = rng.random() < 0.3
        x = lane * (half - 110 if parked else half / 2)
        v = 0.0 if parked else -lane * rng.uniform(60, 200)
        movers.append((make_car(rng, density * 2), np.array([x, 0.0, rng.uniform(0, length)]), v))
    for _ in range(int(rng.integers(3, 10))):
        side = rng.choice([-1, 1])
        x = side * (half + walk * rng.uniform(0.2, 0.9))
        movers.append((make_pedestrian(rng, density * 3), np.array([x, 15.0, rng.uniform(0, length)]),
                       rng.uniform(-20, 20)))
    scale, tint = TINT[weather]
    camera_x = -half / 2
    out = []
    for f in range(frames):
        position = np.array([camera_x + 20 * math.sin(f / 7), 150.0, f * speed + 200])
        yaw = 0.04 * math.sin(f / 5 + index)
        parts = [static]
        for (p, c, l), start, v in movers:
            parts.append((p + start + np.array([0, 0, v * f]), c, l))
        pts = np.concatenate([p[0] for p in parts])
        cols = np.concatenate([p[1] for p in parts])
        labs = np.concatenate([p[2] for p in parts])
        extrinsics = extrinsics_for(position, yaw)
        cam = world_to_camera(pts, extrinsics)
        forward = cam[:, 2]  # camera coordinates: x right, y up, z forward; keep a frustum in front
        visible = (forward > 100) & (forward < config.view_range) & (np.abs(cam[:, 0]) < forward * 1.2)
        idx = np.nonzero(visible)[0]
        weight = 1.0 / (1.0 + (forward[idx] / 800.0) ** 2)
        n = min(config.points_per_scene, len(idx))
        chosen = np.sort(rng.choice(idx, n, replace=False, p=weight / weight.sum())) if n else idx[:0]
        rgb = cols[chosen] * scale * np.asarray(tint)
        if weather == "FOG":
            fog = np.clip(forward[np.searchsorted(idx, chosen)] / config.view_range, 0, 1)[:, None]
            rgb = rgb * (1 - 0.6 * fog) + 200 * 0.6 * fog
        out.append((cam[chosen].astype(np.float32), np.clip(np.round(rgb), 0, 255).astype(np.uint8),
                    labs[chosen].astype(np.uint8), extrinsics))
    return out


def _pack_sequence(task: tuple[SyntheticSynthiaConfig, int, str, int, str]) -> list[str]:
    """Render one sequence and write ``<tmp>/<SEQ>.tar.bz2``; returns the frame paths for the split list."""
    config, index, sequence, frames, tmp = task
    weather = sequence.rsplit("-", 1)[1]
    entries = []
    with tarfile.open(Path(tmp) / f"{sequence}.tar.bz2", "w:bz2") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
        for f, (xyz, rgb, lab, extrinsics) in enumerate(render_sequence(config, index, frames, weather)):
            stem = f"{f:06d}"
            ply = encode_ply({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "r": rgb[:, 0], "g": rgb[:, 1],
                              "b": rgb[:, 2], "l": lab})
            add(f"{sequence}/point_clouds/{stem}.ply", ply)
            add(f"{sequence}/{EXTRINSICS_PATH.format(frame=stem)}",
                (" ".join(f"{v:.9g}" for v in extrinsics.reshape(-1)) + "\n").encode())
            entries.append(f"{sequence}/point_clouds/{stem}.ply")
    return entries


def write_synthetic_synthia_tar(path: str | os.PathLike, config: SyntheticSynthiaConfig, workers: int = 1,
                                progress: bool = True) -> dict[str, list[str]]:
    """Write ``Synthia4D.tar`` (inner ``<SEQ>.tar.bz2`` + split lists) atomically; returns the split entries."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plan = sequence_plan(config)
    with tempfile.TemporaryDirectory(prefix=".synthia-", dir=path.parent) as tmp:
        tasks = [(config, i, seq, frames, tmp) for i, (_, seq, frames) in enumerate(plan)]
        entries = run_parallel(_pack_sequence, tasks, workers, desc="generate synthetic-synthia4d",
                               unit="sequence", progress=progress)
        splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for (split, _, _), frames in zip(plan, entries):
            splits[split] += frames
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as outer:
            for _, seq, _ in plan:
                outer.add(Path(tmp) / f"{seq}.tar.bz2", arcname=f"{seq}.tar.bz2")
            for split, filename in SPLIT_FILES.items():
                data = "".join(f"{e}\n" for e in splits[split]).encode()
                info = tarfile.TarInfo(filename)
                info.size, info.mode, info.mtime = len(data), 0o644, 0
                outer.addfile(info, io.BytesIO(data))
        atomic_write_bytes(path, buffer.getvalue())
    return splits
