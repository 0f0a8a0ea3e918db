"""Procedural indoor rooms written in the exact raw ScanNet layout (the default, download-free dataset).

Why it is built the way it is: the default pipeline must train in minutes on a CPU, yet the task must need
*spatial context*. So the classes deliberately share colours and heights, the way real rooms do:

* colours come from shared palettes: walls, doors, window frames and white cabinets are all off-white; tables,
  desks, cabinets, bookshelves, chairs, doors and wooden floors share one wood palette; beds, sofas, curtains and
  upholstered chairs share one fabric palette; every object draws its own base colour, shading depends on the
  surface orientation and a room-wide light falloff, and points get colour noise;
* heights overlap: table, desk and low-cabinet tops are all at 0.7-0.95 m, chair seats, sofa seats, beds and
  coffee tables at 0.4-0.6 m, walls/doors/windows/curtains/bookshelves/wardrobes all span the upper range.

What separates the classes is shape and arrangement (legs vs. solid boxes, desks against a wall with a drawer
pedestal vs. free-standing tables with chairs around, doors recessed into the wall down to the floor, windows
recessed with a sill, folded curtains hanging beside windows, shelves with books), which a sparse U-Net sees and a
per-point colour or height classifier does not. Rooms are irregular (rectangles or L-shapes of random size and
orientation), surfaces hidden behind or under furniture are not sampled, and random scan holes are punched out.
Points are labelled with nyu40 ids; pillows, rugs and clutter use ids outside the 20 benchmark classes, so ignored
points occur as in ScanNet. Everything is a pure function of ``(seed, scene index)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minkseg.atomic import atomic_write_text
from minkseg.data.parallel import run_parallel
from minkseg.data.ply import write_ply
from minkseg.datasets.scannet import LABEL_SUFFIX, MESH_SUFFIX, SPLIT_FILES

NYU = dict(wall=1, floor=2, cabinet=3, bed=4, chair=5, sofa=6, table=7, door=8, window=9, bookshelf=10,
           desk=14, curtain=16, pillow=18, floor_mat=20, otherprop=40)

LIGHT = np.array([(226, 222, 214), (236, 231, 221), (208, 204, 196), (218, 224, 230), (202, 202, 200),
                  (232, 220, 198), (214, 210, 222), (190, 186, 178)], dtype=np.float64)
WOOD = np.array([(150, 110, 72), (122, 86, 56), (182, 142, 98), (96, 72, 52), (198, 170, 132), (160, 132, 102),
                 (112, 102, 96), (214, 200, 176)], dtype=np.float64)
FABRIC = np.array([(62, 82, 140), (140, 54, 52), (92, 120, 82), (200, 190, 170), (72, 72, 78), (170, 150, 118),
                   (122, 92, 130), (222, 216, 204), (150, 112, 72)], dtype=np.float64)
FLOOR = np.array([(132, 122, 112), (160, 130, 96), (102, 96, 92), (182, 172, 152), (122, 86, 56), (150, 150, 146)],
                 dtype=np.float64)
GLASS = np.array([(196, 206, 216), (226, 232, 238), (176, 186, 196), (210, 214, 206)], dtype=np.float64)
METAL = np.array([(90, 90, 95), (150, 150, 155), (40, 40, 42), (200, 200, 204)], dtype=np.float64)


@dataclass(frozen=True)
class SyntheticScanNetConfig:
    """Size of the generated dataset; ``points_per_scene`` is the mean point count (density adapts to the room)."""

    num_train: int = 24
    num_val: int = 8
    num_test: int = 2
    points_per_scene: int = 40000
    seed: int = 0
    room_size: tuple[float, float] = (4.2, 6.5)  # metres, side length range
    position_noise: float = 0.004  # metres
    color_noise: float = 7.0  # RGB units

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("synthetic ScanNet needs >= 1 train, val and test scene")
        if self.points_per_scene < 1000:
            raise ValueError("synthetic ScanNet needs points_per_scene >= 1000")


def scene_names(config: SyntheticScanNetConfig) -> dict[str, list[str]]:
    counts = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    names, start = {}, 0
    for split, count in counts.items():
        names[split] = [f"scene{start + i:04d}_00" for i in range(count)]
        start += count
    return names


# ----------------------------------------------------------------------------------------------------------------
# Surface sampling in an object's local frame (x along its width, y away from the wall / its depth, z up).


class Parts:
    """Accumulates labelled, coloured surface samples of one object at a fixed density (points per m^2)."""

    LIGHT_DIR = np.array([0.35, 0.55, 0.76])

    def __init__(self, rng: np.random.Generator, density: float, color_noise: float) -> None:
        self.rng, self.density, self.color_noise = rng, density, color_noise
        self.points: list[np.ndarray] = []
        self.colors: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def rect(self, origin, u, v, label: int, color: np.ndarray, keep: float = 1.0) -> None:
        origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
        normal = np.cross(u, v)
        area = float(np.linalg.norm(normal))
        n = self.rng.poisson(self.density * area * keep)
        if n == 0:
            return
        ab = self.rng.random((n, 2))
        pts = origin + ab[:, :1] * u + ab[:, 1:] * v
        shade = 0.82 + 0.18 * abs(float(normal @ self.LIGHT_DIR)) / max(area, 1e-9)
        cols = color * shade + self.rng.normal(0.0, self.color_noise, (n, 3))
        self.points.append(pts)
        self.colors.append(cols)
        self.labels.append(np.full(n, label, dtype=np.int64))

    def box(self, lo, hi, label: int, color: np.ndarray, faces: str = "+x -x +y -y +z") -> None:
        """Sample the listed faces of the axis-aligned box [lo, hi] (bottom faces are never visible)."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        dx, dy, dz = x1 - x0, y1 - y0, z1 - z0
        spec = {
            "+x": ((x1, y0, z0), (0, dy, 0), (0, 0, dz)), "-x": ((x0, y0, z0), (0, dy, 0), (0, 0, dz)),
            "+y": ((x0, y1, z0), (dx, 0, 0), (0, 0, dz)), "-y": ((x0, y0, z0), (dx, 0, 0), (0, 0, dz)),
            "+z": ((x0, y0, z1), (dx, 0, 0), (0, dy, 0)), "-z": ((x0, y0, z0), (dx, 0, 0), (0, dy, 0)),
        }
        for face in faces.split():
            self.rect(*spec[face], label=label, color=color)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.points:
            return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=np.int64)
        return np.concatenate(self.points), np.concatenate(self.colors), np.concatenate(self.labels)


def pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 12.0) -> np.ndarray:
    """An object's base colour: a palette entry plus a small per-object shift."""
    return palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3)


def pick_any(rng: np.random.Generator, palettes: list[np.ndarray], p: list[float] | None = None) -> np.ndarray:
    return pick(rng, palettes[int(rng.choice(len(palettes), p=p))])


@dataclass
class Furniture:
    """A generated object in its local frame plus what the placer needs to know about it."""

    width: float  # extent along local x
    depth: float  # extent along local y
    height: float
    parts: Parts
    solid: bool  # hides the floor under it
    hides_wall: bool  # hides the wall behind it (placed against a wall)
    clutter_top: float | None = None  # height of a top surface where clutter may be put


def make_bed(rng, parts: Parts) -> Furniture:
    w, d, h = rng.uniform(1.3, 1.8), rng.uniform(1.9, 2.15), rng.uniform(0.42, 0.62)
    head_h, t = rng.uniform(0.85, 1.25), 0.06
    frame, cover = pick_any(rng, [WOOD, FABRIC]), pick(rng, FABRIC)
    parts.box((0, 0, 0), (w, t, head_h), NYU["bed"], frame, "+y +z -x +x")
    parts.box((0, t, 0), (w, d, h), NYU["bed"], cover, "+z +y -x +x")
    for i in range(rng.integers(1, 3)):
        pw = min(0.55, w / 2 - 0.05)
        x0 = 0.05 + i * (w / 2) if w > 1.1 else (w - pw) / 2
        parts.box((x0, t + 0.05, h), (x0 + pw, t + 0.42, h + 0.13), NYU["pillow"], pick(rng, FABRIC),
                  "+x -x +y +z")
    return Furniture(w, d, head_h, parts, solid=True, hides_wall=True)


def make_sofa(rng, parts: Parts) -> Furniture:
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 0.96)
    seat, back, arm_h = rng.uniform(0.38, 0.5), rng.uniform(0.72, 0.92), rng.uniform(0.52, 0.68)
    arm_w, back_t = rng.uniform(0.12, 0.22), rng.uniform(0.16, 0.26)
    color = pick(rng, FABRIC)
    parts.box((0, 0, 0), (w, back_t, back), NYU["sofa"], color, "+y +z -x +x -y")
    parts.box((0, back_t, 0), (arm_w, d, arm_h), NYU["sofa"], color, "+z +y -x +x")
    parts.box((w - arm_w, back_t, 0), (w, d, arm_h), NYU["sofa"], color, "+z +y -x +x")
    parts.box((arm_w, back_t, 0), (w - arm_w, d, seat), NYU["sofa"], color, "+z +y")
    if rng.random() < 0.5:
        parts.box((arm_w + 0.05, back_t, seat), (arm_w + 0.45, back_t + 0.15, seat + 0.38), NYU["pillow"],
                  pick(rng, FABRIC), "+x -x +y +z")
    return Furniture(w, d, back, parts, solid=True, hides_wall=True)


def make_chair(rng, parts: Parts) -> Furniture:
    s, seat_h = rng.uniform(0.42, 0.52), rng.uniform(0.42, 0.5)
    seat_t, leg, top = rng.uniform(0.03, 0.07), rng.uniform(0.025, 0.045), rng.uniform(0.78, 0.98)
    frame = pick_any(rng, [WOOD, METAL])
    cushion = pick(rng, FABRIC) if rng.random() < 0.6 else frame
    for x in (0.0, s - leg):
        for y in (0.0, s - leg):
            parts.box((x, y, 0), (x + leg, y + leg, seat_h - seat_t), NYU["chair"], frame, "+x -x +y -y")
    parts.box((0, 0, seat_h - seat_t), (s, s, seat_h), NYU["chair"], cushion, "+x -x +y -y +z -z")
    parts.box((0, 0, seat_h), (s, 0.04, top), NYU["chair"], cushion, "+x -x +y -y +z")
    return Furniture(s, s, top, parts, solid=False, hides_wall=False)


def make_table(rng, parts: Parts, coffee: bool = False) -> Furniture:
    if coffee:
        w, d, h = rng.uniform(0.8, 1.25), rng.uniform(0.45, 0.7), rng.uniform(0.38, 0.52)
    else:
        w, d, h = rng.uniform(1.0, 1.9), rng.uniform(0.7, 1.0), rng.uniform(0.7, 0.8)
    t, leg, inset = rng.uniform(0.03, 0.06), rng.uniform(0.04, 0.07), rng.uniform(0.03, 0.1)
    color = pick(rng, WOOD)
    legs = color if rng.random() < 0.7 else pick(rng, METAL)
    parts.box((0, 0, h - t), (w, d, h), NYU["table"], color, "+x -x +y -y +z -z")
    for x in (inset, w - inset - leg):
        for y in (inset, d - inset - leg):
            parts.box((x, y, 0), (x + leg, y + leg, h - t), NYU["table"], legs, "+x -x +y -y")
    if coffee and rng.random() < 0.5:
        parts.box((inset, inset, 0.1), (w - inset, d - inset, 0.12), NYU["table"], color, "+z +x -x +y -y")
    return Furniture(w, d, h, parts, solid=False, hides_wall=False, clutter_top=h)


def make_desk(rng, parts: Parts) -> Furniture:
    w, d, h = rng.uniform(1.1, 1.7), rng.uniform(0.58, 0.78), rng.uniform(0.7, 0.8)
    t, ped = rng.uniform(0.025, 0.05), rng.uniform(0.38, 0.48)
    color = pick(rng, WOOD)
    parts.box((0, 0, h - t), (w, d, h), NYU["desk"], color, "+x -x +y +z -z")
    left = rng.random() < 0.5
    px0 = 0.0 if left else w - ped
    parts.box((px0, 0.02, 0), (px0 + ped, d - 0.02, h - t), NYU["desk"], color, "+x -x +y")
    for k in range(3):  # drawer fronts
        z0 = 0.05 + k * (h - t - 0.05) / 3
        parts.box((px0 + 0.03, d - 0.02, z0 + 0.02), (px0 + ped - 0.03, d, z0 + (h - t - 0.05) / 3 - 0.02),
                  NYU["desk"], color * 0.92, "+y +z")
    sx0 = w - 0.03 if left else 0.0
    parts.box((sx0, 0.02, 0), (sx0 + 0.03, d - 0.02, h - t), NYU["desk"], color, "+x -x +y")
    mx0, mx1 = (ped, w - 0.03) if left else (0.03, w - ped)
    parts.box((mx0, 0.0, 0.3), (mx1, 0.02, h - t), NYU["desk"], color, "+y")
    return Furniture(w, d, h, parts, solid=False, hides_wall=True, clutter_top=h)


def make_cabinet(rng, parts: Parts, tall: bool) -> Furniture:
    if tall:
        w, d, h = rng.uniform(0.8, 1.3), rng.uniform(0.5, 0.62), rng.uniform(1.75, 2.15)
    else:
        w, d, h = rng.uniform(0.45, 1.6), rng.uniform(0.38, 0.6), rng.uniform(0.55, 0.95)
    color = pick_any(rng, [WOOD, LIGHT], p=[0.6, 0.4])
    # A recessed plinth (toe kick) under the body, as on real cabinets: a shape cue at least one coarse voxel deep
    # that a desk (legs or pedestal) or a wall does not have.
    plinth, kick = rng.uniform(0.08, 0.12), rng.uniform(0.06, 0.09)
    parts.box((0, 0, 0), (w, d - kick, plinth), NYU["cabinet"], color * 0.7, "+x -x +y")
    parts.box((0, 0, plinth), (w, d, h), NYU["cabinet"], color, "+x -x +y +z")
    parts.rect((0, d - kick, plinth), (w, 0, 0), (0, kick, 0), NYU["cabinet"], color * 0.6)  # underside of the body
    doors = max(1, int(round(w / 0.5)))
    for k in range(doors):  # handles: small bars standing out of the front
        x = (k + 0.5) * w / doors + (0.18 if k % 2 == 0 else -0.18) * (w / doors)
        x = min(max(x, 0.05), w - 0.05)
        zc = h * (0.55 if tall else 0.8)
        parts.box((x - 0.012, d, zc - 0.07), (x + 0.012, d + 0.035, zc + 0.07), NYU["cabinet"], pick(rng, METAL),
                  "+x -x +y +z")
    return Furniture(w, d, h, parts, solid=True, hides_wall=True, clutter_top=None if tall else h)


def make_bookshelf(rng, parts: Parts) -> Furniture:
    w, d, h = rng.uniform(0.75, 1.3), rng.uniform(0.28, 0.4), rng.uniform(1.5, 2.15)
    color, b = pick_any(rng, [WOOD, LIGHT], p=[0.7, 0.3]), 0.02
    label = NYU["bookshelf"]
    parts.box((0, 0, 0), (b, d, h), label, color, "+x -x +y +z")
    parts.box((w - b, 0, 0), (w, d, h), label, color, "+x -x +y +z")
    parts.box((b, 0, h - b), (w - b, d, h), label, color, "+z +y -z")
    parts.rect((b, 0.01, 0), (w - 2 * b, 0, 0), (0, 0, h - b), label, color * 0.9)  # back panel, inside
    levels = int(rng.integers(4, 7))
    shelf_z = np.linspace(0.06, h - b, levels + 1)[:-1]
    for z in shelf_z:
        parts.box((b, 0, z - b), (w - b, d, z), label, color, "+z +y")
        x = b + rng.uniform(0, 0.1)
        gap = (h - b) / levels
        while x < w - b - 0.07:
            bw = rng.uniform(0.02, 0.07)
            if rng.random() < 0.82:
                bh = min(rng.uniform(0.14, 0.32), gap - 0.04)
                bd = rng.uniform(0.14, d - 0.03)
                parts.box((x, 0.02, z), (x + bw, 0.02 + bd, z + bh), label,
                          rng.uniform(20, 235, 3), "+y +z")
            x += bw + 0.003
    return Furniture(w, d, h, parts, solid=True, hides_wall=True)


def make_clutter(rng, parts: Parts, width: float, depth: float, top: float) -> None:
    """Small objects on a table/desk/cabinet top, labelled as nyu40 'otherprop' (ignored by the benchmark)."""
    for _ in range(rng.integers(0, 4)):
        cw, cd, ch = rng.uniform(0.08, 0.45), rng.uniform(0.08, 0.35), rng.uniform(0.03, 0.4)
        if cw >= width - 0.1 or cd >= depth - 0.1:
            continue
        x, y = rng.uniform(0.05, width - cw - 0.05), rng.uniform(0.05, depth - cd - 0.05)
        parts.box((x, y, top), (x + cw, y + cd, top + ch), NYU["otherprop"], rng.uniform(20, 235, 3),
                  "+x -x +y -y +z")


# ----------------------------------------------------------------------------------------------------------------
# Room layout


@dataclass
class Edge:
    start: np.ndarray  # (2,)
    direction: np.ndarray  # unit (2,)
    length: float

    @property
    def normal(self) -> np.ndarray:  # inward for a counter-clockwise polygon
        return np.array([-self.direction[1], self.direction[0]])

    @property
    def yaw(self) -> float:
        return math.atan2(self.direction[1], self.direction[0])


def to_room(points: np.ndarray, origin: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    out = points.copy()
    out[:, 0] = c * points[:, 0] - s * points[:, 1] + origin[0]
    out[:, 1] = s * points[:, 0] + c * points[:, 1] + origin[1]
    return out


def footprint(origin: np.ndarray, yaw: float, width: float, depth: float) -> np.ndarray:
    """Axis-aligned box [xmin, ymin, xmax, ymax] of a rotated local rectangle [0,w]x[0,d]."""
    corners = to_room(np.array([[0, 0, 0], [width, 0, 0], [0, depth, 0], [width, depth, 0]], float), origin, yaw)
    return np.array([corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()])


def overlaps(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


class Room:
    """Room outline, wall openings and placed objects; :meth:`points` renders everything."""

    def __init__(self, rng: np.random.Generator, config: SyntheticScanNetConfig) -> None:
        self.rng, self.config = rng, config
        lo, hi = config.room_size
        self.width, self.depth = rng.uniform(lo, hi), rng.uniform(lo, hi)
        self.height = rng.uniform(2.4, 3.0)
        self.cut = None  # removed corner [xmin, ymin, xmax, ymax] for L-shaped rooms
        w, d = self.width, self.depth
        if rng.random() < 0.45:
            cw, cd = w * rng.uniform(0.28, 0.42), d * rng.uniform(0.28, 0.42)
            self.cut = np.array([w - cw, d - cd, w, d])
            corners = [(0, 0), (w, 0), (w, d - cd), (w - cw, d - cd), (w - cw, d), (0, d)]
        else:
            corners = [(0, 0), (w, 0), (w, d), (0, d)]
        corners = np.array(corners, dtype=float)
        self.edges = []
        for i in range(len(corners)):
            a, b = corners[i], corners[(i + 1) % len(corners)]
            length = float(np.linalg.norm(b - a))
            self.edges.append(Edge(a, (b - a) / length, length))
        self.busy = {i: [] for i in range(len(self.edges))}  # occupied [s0, s1, top z] intervals along edges
        self.wall_holes = {i: [] for i in range(len(self.edges))}  # (s0, s1, z0, z1) openings in walls
        self.wall_hidden = {i: [] for i in range(len(self.edges))}  # (s0, s1, z0, z1) regions hidden behind things
        self.footprints: list[np.ndarray] = []
        self.solid: list[np.ndarray] = []
        self.windows: list[tuple[int, float, float, float, float]] = []
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    # -- helpers ------------------------------------------------------------------------------------------------
    def new_parts(self, density: float) -> Parts:
        return Parts(self.rng, density, self.config.color_noise)

    def inside(self, box: np.ndarray, margin: float = 0.02) -> bool:
        if box[0] < margin or box[1] < margin or box[2] > self.width - margin or box[3] > self.depth - margin:
            return False
        return self.cut is None or not overlaps(box, self.cut, margin)

    def free_on_edge(self, edge: int, s0: float, s1: float, top: float, gap: float = 0.05) -> bool:
        if s0 < 0.05 or s1 > self.edges[edge].length - 0.05:
            return False
        return all(s1 + gap <= b0 or b1 + gap <= s0 or top <= bz for b0, b1, bz in self.busy[edge])

    def add(self, pts: np.ndarray, cols: np.ndarray, labs: np.ndarray) -> None:
        if len(pts):
            self.parts.append((pts, cols, labs))

    # -- wall openings --------------------------------------------------------------------------------------------
    def add_door(self, density: float) -> bool:
        rng = self.rng
        w, h = rng.uniform(0.8, 1.0), rng.uniform(1.98, 2.12)
        for _ in range(30):
            e = int(rng.integers(len(self.edges)))
            edge = self.edges[e]
            if edge.length < w + 0.4:
                continue
            s0 = rng.uniform(0.1, edge.length - w - 0.1)
            if not self.free_on_edge(e, s0 - 0.15, s0 + w + 0.15, 99.0):
                continue
            break
        else:
            return False
        # Recess = wall thickness (12-25 cm in real buildings): at least one coarse voxel deep.
        parts, recess = self.new_parts(density), rng.uniform(0.12, 0.22)
        color = pick_any(rng, [LIGHT, WOOD], p=[0.6, 0.4])
        trim = color * rng.uniform(0.9, 1.05)
        # Jambs and head of the door frame (between the wall plane y=0 and the recess).
        parts.box((s0 - 0.06, -recess, 0), (s0, 0.02, h + 0.06), NYU["door"], trim, "+x -x +y")
        parts.box((s0 + w, -recess, 0), (s0 + w + 0.06, 0.02, h + 0.06), NYU["door"], trim, "+x -x +y")
        parts.box((s0, -recess, h), (s0 + w, 0.02, h + 0.06), NYU["door"], trim, "+y -z")
        handle = pick(rng, METAL)
        if rng.random() < 0.7:  # closed leaf at the back of the recess
            parts.rect((s0, -recess, 0), (w, 0, 0), (0, 0, h), NYU["door"], color)
            hx = s0 + w - 0.1 if rng.random() < 0.5 else s0 + 0.06
            parts.box((hx, -recess, 0.98), (hx + 0.04, -recess + 0.07, 1.04), NYU["door"], handle, "+x -x +y +z")
        else:  # leaf swung into the room around its hinge; the doorway itself shows nothing
            angle = rng.uniform(0.5, 1.5)
            leaf = self.new_parts(density)
            leaf.box((0, 0, 0), (w, 0.04, h), NYU["door"], color, "+x -x +y -y +z")
            lp, lc, ll = leaf.arrays()
            parts.points.append(to_room(lp, np.array([s0, 0.0]), angle))
            parts.colors.append(lc)
            parts.labels.append(ll)
        pts, cols, labs = parts.arrays()
        edge = self.edges[e]
        self.add(to_room(pts, edge.start, edge.yaw), cols, labs)
        self.busy[e].append((s0 - 0.15, s0 + w + 0.15, 99.0))
        self.wall_holes[e].append((s0, s0 + w, -1.0, h))
        # keep the swing area of the door free from furniture
        a = edge.start + edge.direction * s0
        b = edge.start + edge.direction * (s0 + w) + edge.normal * w
        self.footprints.append(np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1])]))
        return True

    def add_window(self, density: float) -> bool:
        rng = self.rng
        w = rng.uniform(0.7, 2.0)
        z0 = rng.uniform(0.75, 1.05)
        z1 = min(z0 + rng.uniform(0.9, 1.5), self.height - 0.15)
        for _ in range(30):
            e = int(rng.integers(len(self.edges)))
            edge = self.edges[e]
            if edge.length < w + 0.5:
                continue
            s0 = rng.uniform(0.2, edge.length - w - 0.2)
            if self.free_on_edge(e, s0 - 0.1, s0 + w + 0.1, 99.0):
                break
        else:
            return False
        parts, recess = self.new_parts(density), rng.uniform(0.14, 0.24)
        frame = pick(rng, LIGHT)
        label = NYU["window"]
        parts.box((s0, -recess, z0 - 0.02), (s0 + w, rng.uniform(0.02, 0.06), z0), label, frame, "+z +y")  # sill
        parts.rect((s0, -recess, z1), (w, 0, 0), (0, recess, 0), label, frame)  # head
        parts.rect((s0, -recess, z0), (0, recess, 0), (0, 0, z1 - z0), label, frame)  # jambs
        parts.rect((s0 + w, -recess, z0), (0, recess, 0), (0, 0, z1 - z0), label, frame)
        parts.rect((s0, -recess, z0), (w, 0, 0), (0, 0, z1 - z0), label, pick(rng, GLASS, 20),
                   keep=rng.uniform(0.3, 0.7))  # glass scans poorly
        mullions = int(w // 0.7)
        for k in range(1, mullions + 1):
            x = s0 + k * w / (mullions + 1)
            parts.box((x - 0.025, -recess, z0), (x + 0.025, -recess + 0.05, z1), label, frame, "+x -x +y")
        pts, cols, labs = parts.arrays()
        self.add(to_room(pts, edge.start, edge.yaw), cols, labs)
        self.busy[e].append((s0 - 0.1, s0 + w + 0.1, z0 - 0.05))
        self.wall_holes[e].append((s0, s0 + w, z0, z1))
        self.windows.append((e, s0, w, z0, z1))
        return True

    def add_curtains(self, window: tuple[int, float, float, float, float], density: float) -> None:
        rng = self.rng
        e, s0, w, z0, z1 = window
        edge = self.edges[e]
        top = min(self.height - 0.05, z1 + rng.uniform(0.05, 0.3))
        bottom = rng.uniform(0.02, 0.1) if rng.random() < 0.5 else z0 - rng.uniform(0.05, 0.2)
        color, label = pick(rng, FABRIC), NYU["curtain"]
        panel = rng.uniform(0.3, 0.6)
        # Folds deep and wide enough to show at the default voxel size (real drapes: 15-30 cm folds).
        fold, amp, offset = rng.uniform(0.18, 0.3), rng.uniform(0.06, 0.1), rng.uniform(0.12, 0.2)
        parts = self.new_parts(density)
        for a in (s0 - panel * 0.6, s0 + w - panel * 0.4):
            a0, a1 = max(0.05, a), min(edge.length - 0.05, a + panel)
            if a1 - a0 < 0.1:
                continue
            area = (a1 - a0) * (top - bottom) * 1.3  # folds add surface
            n = rng.poisson(density * area)
            s = rng.uniform(a0, a1, n)
            z = rng.uniform(bottom, top, n)
            y = offset + amp * np.sin(2 * np.pi * s / fold)
            slope = np.cos(2 * np.pi * s / fold)
            cols = color * (0.85 + 0.12 * slope)[:, None] + rng.normal(0, self.config.color_noise, (n, 3))
            parts.points.append(np.stack([s, y, z], 1)), parts.colors.append(cols)
            parts.labels.append(np.full(n, label))
            self.wall_hidden[e].append((a0, a1, bottom, top))
            self.busy[e].append((a0, a1, bottom - 0.05))
        pts, cols, labs = parts.arrays()
        self.add(to_room(pts, edge.start, edge.yaw), cols, labs)

    # -- furniture -----------------------------------------------------------------------------------------------
    def place_against_wall(self, item: Furniture, gap: float = 0.02) -> tuple[np.ndarray, float] | None:
        rng = self.rng
        lengths = np.array([e.length for e in self.edges])
        for _ in range(40):
            e = int(rng.choice(len(self.edges), p=lengths / lengths.sum()))
            edge = self.edges[e]
            if edge.length < item.width + 0.2:
                continue
            s0 = rng.uniform(0.05, edge.length - item.width - 0.05)
            if not self.free_on_edge(e, s0, s0 + item.width, item.height):
                continue
            origin = edge.start + edge.direction * s0 + edge.normal * gap
            box = footprint(origin, edge.yaw, item.width, item.depth)
            if not self.inside(box, 0.0) or any(overlaps(box, f, 0.05) for f in self.footprints):
                continue
            self.busy[e].append((s0, s0 + item.width, 99.0))
            if item.hides_wall:
                self.wall_hidden[e].append((s0 + 0.03, s0 + item.width - 0.03, -1.0, item.height - 0.03))
            self.commit(item, origin, edge.yaw, box)
            return origin, edge.yaw
        return None

    def place_free(self, item: Furniture, yaw: float | None = None, margin: float = 0.45,
                   near: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
        rng = self.rng
        for _ in range(60):
            theta = yaw if yaw is not None else float(rng.integers(4)) * math.pi / 2
            if near is not None:
                center = near + rng.uniform(-0.3, 0.3, 2)
            else:
                center = np.array([rng.uniform(margin, self.width - margin), rng.uniform(margin, self.depth - margin)])
            c, s = math.cos(theta), math.sin(theta)
            half = np.array([item.width / 2, item.depth / 2])
            origin = center - np.array([c * half[0] - s * half[1], s * half[0] + c * half[1]])
            box = footprint(origin, theta, item.width, item.depth)
            if not self.inside(box, 0.3) or any(overlaps(box, f, 0.15) for f in self.footprints):
                continue
            self.commit(item, origin, theta, box)
            return origin, theta
        return None

    def commit(self, item: Furniture, origin: np.ndarray, yaw: float, box: np.ndarray) -> None:
        if item.clutter_top is not None:
            make_clutter(self.rng, item.parts, item.width, item.depth, item.clutter_top)
        pts, cols, labs = item.parts.arrays()
        self.add(to_room(pts, origin, yaw), cols, labs)
        self.footprints.append(box)
        if item.solid:
            self.solid.append(box)

    def _place_chair(self, center: np.ndarray, theta: float, avoid: np.ndarray, density: float) -> None:
        """Put a chair centred at ``center`` facing ``theta``; it may tuck under ``avoid`` (its table/desk)."""
        chair = make_chair(self.rng, self.new_parts(density))
        c, s = math.cos(theta), math.sin(theta)
        half = np.array([chair.width / 2, chair.depth / 2])
        origin = center - np.array([c * half[0] - s * half[1], s * half[0] + c * half[1]])
        box = footprint(origin, theta, chair.width, chair.depth)
        if self.inside(box, 0.05) and not any(overlaps(box, f, 0.02) for f in self.footprints if f is not avoid):
            self.commit(chair, origin, theta, box)

    def chairs_around(self, origin: np.ndarray, yaw: float, item: Furniture, count: int, density: float) -> None:
        """Chairs along the long sides of a free-standing table, facing it, partly pushed under it."""
        rng = self.rng
        table_box = self.footprints[-1]
        per_side = max(1, int(item.width // 0.6))
        slots = []
        for k in range(per_side):
            x = (k + 0.5) * item.width / per_side
            slots += [(x, False), (x, True)]
        order = rng.permutation(len(slots))
        for x, far_side in (slots[i] for i in order[:count]):
            pull = rng.uniform(-0.05, 0.2) + 0.24
            y = item.depth + pull if far_side else -pull
            center = to_room(np.array([[x, y, 0.0]]), origin, yaw)[0, :2]
            theta = yaw + (math.pi if far_side else 0.0) + rng.uniform(-0.2, 0.2)
            self._place_chair(center, theta, table_box, density)

    def desk_chair(self, origin: np.ndarray, yaw: float, desk: Furniture, density: float) -> None:
        """A chair in front of a desk (the desk stands against a wall at local y=0), facing the wall."""
        rng = self.rng
        x = desk.width / 2 + rng.uniform(-0.2, 0.2)
        y = desk.depth + rng.uniform(-0.1, 0.2)
        center = to_room(np.array([[x, y, 0.0]]), origin, yaw)[0, :2]
        self._place_chair(center, yaw + math.pi + rng.uniform(-0.35, 0.35), self.footprints[-1], density)

    # -- structure --------------------------------------------------------------------------------------------------
    def structure(self, density: float) -> None:
        rng = self.rng
        wall_color, floor_color = pick(rng, LIGHT), pick(rng, FLOOR)
        for e, edge in enumerate(self.edges):
            n = rng.poisson(density * edge.length * self.height)
            s, z = rng.uniform(0, edge.length, n), rng.uniform(0, self.height, n)
            keep = np.ones(n, dtype=bool)
            for s0, s1, z0, z1 in self.wall_holes[e] + self.wall_hidden[e]:
                keep &= ~((s >= s0) & (s <= s1) & (z >= z0) & (z <= z1))
            s, z = s[keep], z[keep]
            pts = np.stack([s, np.zeros_like(s), z], 1)
            color = wall_color if rng.random() < 0.8 else pick(rng, LIGHT)
            cols = color * rng.uniform(0.88, 1.0) + rng.normal(0, self.config.color_noise, (len(s), 3))
            self.add(to_room(pts, edge.start, edge.yaw), cols, np.full(len(s), NYU["wall"]))
            # baseboard: a thin strip standing out of the wall
            n = rng.poisson(density * edge.length * 0.08)
            s, z = rng.uniform(0, edge.length, n), rng.uniform(0, 0.08, n)
            keep = np.ones(n, dtype=bool)
            for s0, s1, z0, z1 in self.wall_holes[e] + self.wall_hidden[e]:
                keep &= ~((s >= s0) & (s <= s1) & (z >= z0) & (z <= z1))
            pts = np.stack([s[keep], np.full(keep.sum(), 0.015), z[keep]], 1)
            cols = pick(rng, WOOD if rng.random() < 0.5 else LIGHT) + rng.normal(0, 7, (len(pts), 3))
            self.add(to_room(pts, edge.start, edge.yaw), cols, np.full(len(pts), NYU["wall"]))
        area = self.width * self.depth
        n = rng.poisson(density * area)
        xy = rng.random((n, 2)) * [self.width, self.depth]
        keep = np.ones(n, dtype=bool)
        if self.cut is not None:
            keep &= ~((xy[:, 0] >= self.cut[0]) & (xy[:, 1] >= self.cut[1]))
        for box in self.solid:
            keep &= ~((xy[:, 0] >= box[0] + 0.03) & (xy[:, 0] <= box[2] - 0.03) & (xy[:, 1] >= box[1] + 0.03)
                      & (xy[:, 1] <= box[3] - 0.03))
        xy = xy[keep]
        light = np.array([rng.uniform(0, self.width), rng.uniform(0, self.depth)])
        shade = 1.0 - 0.12 * np.linalg.norm(xy - light, axis=1) / max(self.width, self.depth)
        cols = floor_color * shade[:, None] + rng.normal(0, self.config.color_noise, (len(xy), 3))
        self.add(np.column_stack([xy, np.zeros(len(xy))]), cols, np.full(len(xy), NYU["floor"]))
        if rng.random() < 0.35:  # a rug: nyu40 'floor mat', ignored by the benchmark
            rw, rd = rng.uniform(1.0, 2.2), rng.uniform(0.8, 1.6)
            x0, y0 = rng.uniform(0.2, self.width - 0.2), rng.uniform(0.2, self.depth - 0.2)
            if self.inside(np.array([x0, y0, x0 + rw, y0 + rd]), 0.2):
                rug = self.new_parts(density)
                rug.rect((x0, y0, 0.012), (rw, 0, 0), (0, rd, 0), NYU["floor_mat"], pick(rng, FABRIC))
                pts, cols, labs = rug.arrays()
                keep = np.ones(len(pts), dtype=bool)
                for box in self.solid:
                    keep &= ~((pts[:, 0] >= box[0]) & (pts[:, 0] <= box[2]) & (pts[:, 1] >= box[1])
                              & (pts[:, 1] <= box[3]))
                self.add(pts[keep], cols[keep], labs[keep])

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pts = np.concatenate([p[0] for p in self.parts])
        cols = np.concatenate([p[1] for p in self.parts])
        labs = np.concatenate([p[2] for p in self.parts])
        return pts, cols, labs


def furnish(room: Room, density: float) -> None:
    """Mixed-use rooms: most classes occur in most rooms, so every training scene teaches every class.

    Large pieces go first (they need the most free wall space), then the free-standing table with its chairs.
    """
    rng = room.rng
    P = room.new_parts

    def wall(item: Furniture):
        return room.place_against_wall(item)

    if rng.random() < 0.55:
        wall(make_bed(rng, P(density)))
    if rng.random() < 0.6:
        sofa = make_sofa(rng, P(density))
        placed = wall(sofa)
        if placed and rng.random() < 0.6:
            origin, yaw = placed
            front = to_room(np.array([[sofa.width / 2, sofa.depth + 0.65, 0.0]]), origin, yaw)[0, :2]
            room.place_free(make_table(rng, P(density), coffee=True), yaw=yaw, near=front)
    if rng.random() < 0.8:
        table = make_table(rng, P(density))
        placed = room.place_free(table, margin=0.9)
        if placed:
            room.chairs_around(*placed, table, int(rng.integers(2, 5)), density)
    for _ in range(rng.integers(1, 3)):
        desk = make_desk(rng, P(density))
        placed = wall(desk)
        if placed:
            room.desk_chair(*placed, desk, density)
    if rng.random() < 0.75:
        wall(make_bookshelf(rng, P(density)))
    for _ in range(rng.integers(1, 3)):
        wall(make_cabinet(rng, P(density), tall=rng.random() < 0.3))
    for _ in range(rng.integers(0, 2)):
        room.place_free(make_chair(rng, P(density)), yaw=float(rng.uniform(0, 2 * math.pi)))


def punch_holes(rng: np.random.Generator, pts: np.ndarray, count: int) -> np.ndarray:
    """Boolean keep-mask with ``count`` spherical scan holes (missing geometry, as in real reconstructions)."""
    keep = np.ones(len(pts), dtype=bool)
    for center in pts[rng.integers(0, len(pts), count)]:
        radius = rng.uniform(0.08, 0.3)
        keep &= np.sum((pts - center) ** 2, axis=1) > radius ** 2
    return keep


def generate_room(config: SyntheticScanNetConfig, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One room as (xyz float32 [N,3] in metres, rgb uint8 [N,3], nyu40 uint16 [N])."""
    rng = np.random.default_rng([config.seed, index])
    room = Room(rng, config)
    # Density so that the expected point count is ``points_per_scene``: walls + floor + ~35% for furniture.
    perimeter = sum(e.length for e in room.edges)
    area = room.width * room.depth
    if room.cut is not None:
        area -= (room.cut[2] - room.cut[0]) * (room.cut[3] - room.cut[1])
    density = config.points_per_scene / (1.35 * (perimeter * room.height + area))
    for _ in range(1 if rng.random() < 0.5 else 2):
        room.add_door(density)
    for _ in range(rng.integers(1, 4)):
        room.add_window(density)
    for window in list(room.windows):
        if rng.random() < 0.55:
            room.add_curtains(window, density)
    furnish(room, density)
    room.structure(density)
    pts, cols, labs = room.points()
    keep = punch_holes(rng, pts, int(rng.integers(3, 9)))
    pts, cols, labs = pts[keep], cols[keep], labs[keep]
    # Room-wide light falloff, then a random pose (ScanNet scenes have arbitrary yaw, floor near z=0).
    light = np.array([room.width * rng.uniform(0.2, 0.8), room.depth * rng.uniform(0.2, 0.8), room.height])
    falloff = 1.0 - 0.18 * np.linalg.norm(pts - light, axis=1) / np.linalg.norm([room.width, room.depth, 3.0])
    cols = np.clip(cols * falloff[:, None], 0, 255)
    pts = pts + rng.normal(0.0, config.position_noise, pts.shape)
    pts = to_room(pts, np.zeros(2), float(rng.uniform(0, 2 * math.pi)))
    pts[:, :2] -= pts[:, :2].min(0) - rng.uniform(0.0, 0.5, 2)
    order = rng.permutation(len(pts))  # no label order leaks through the vertex order
    return (pts[order].astype(np.float32), np.round(cols[order]).astype(np.uint8),
            labs[order].astype(np.uint16))


def write_scene(root: Path, split: str, name: str, xyz: np.ndarray, rgb: np.ndarray, nyu40: np.ndarray) -> None:
    folder = root / ("scans_test" if split == "test" else "scans") / name
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0], "green": rgb[:, 1],
              "blue": rgb[:, 2], "alpha": np.full(len(xyz), 255, dtype=np.uint8)}
    write_ply(folder / f"{name}{MESH_SUFFIX}", fields, comments=["synthetic ScanNet-like room (minkseg)"])
    if split != "test":
        write_ply(folder / f"{name}{LABEL_SUFFIX}", {**fields, "label": nyu40},
                  comments=["nyu40 labels of the synthetic room (minkseg)"])


def _generate_one(args: tuple[SyntheticScanNetConfig, str, str, int, str]) -> str:
    config, split, name, index, root = args
    xyz, rgb, nyu40 = generate_room(config, index)
    write_scene(Path(root), split, name, xyz, rgb, nyu40)
    return name


def generate_synthetic_scannet(root: str | os.PathLike, config: SyntheticScanNetConfig, workers: int = 1,
                               progress: bool = True) -> dict[str, list[str]]:
    """Write the whole dataset (scans/, scans_test/ and the three split lists) into ``root``; returns the splits."""
    root = Path(root)
    names = scene_names(config)
    tasks = []
    for split in ("train", "val", "test"):
        tasks += [(config, split, name, len(tasks) + i, str(root)) for i, name in enumerate(names[split])]
    run_parallel(_generate_one, tasks, workers, desc="generate synthetic-scannet", unit="room", progress=progress)
    for split, filename in SPLIT_FILES.items():
        atomic_write_text(root / filename, "".join(f"{n}\n" for n in names[split]))
    return names
