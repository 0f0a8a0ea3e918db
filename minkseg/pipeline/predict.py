"""``minkseg predict``: segment one's own scans with a trained model file, writing labels at the original points.

Why outputs keep the input: a user opens the result next to (or instead of) the scan, so ``<name>.ply`` is the
input file itself -- every vertex with its original coordinates (same type, bit-identical), colours and other
properties, and its faces -- plus an int ``label`` property (class id; names in the header comments). MeshLab
shows only the one ``red green blue`` colour set and ignores extra properties, and CloudCompare asks which
properties to use as colours, so the class colours go into a second file, ``<name>_labels.ply`` (same vertices
and faces, colours replaced by the class palette), which both open and show directly; CloudCompare also shows
``label`` of either file as a scalar field. ``--probabilities`` adds ``<name>.probs.npy`` (float32 [N, classes]).

Inputs: PLY (binary or ASCII, cloud or mesh, with or without colours), ``.npy`` / ``.txt`` rows of xyz or xyzrgb,
folders of those (streamed one file at a time), and -- for 4D models -- Synthia4D-format sequence folders
(``<SEQUENCE>/point_clouds/NNNNNN.ply`` in centimetres, optional camera extrinsics), every frame predicted inside
the temporal window the model was trained with. A bad input is one ``minkseg predict: error:`` line; the other
inputs are still predicted, and the exit status is 2 when any failed. Every file is written atomically.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from minkseg.atomic import atomic_open
from minkseg.pipeline.cli import EXIT_USER_ERROR, progress_wanted, report_error, run_guarded
from minkseg.errors import EngineError
from minkseg.engine.export import colorize, palette
from minkseg.engine.predictor import Predictor, check_finite_rows
from minkseg.engine.runtime import configure_cpu_runtime
from minkseg.errors import MinkSegError

log = logging.getLogger("minkseg.predict")

__all__ = ["main", "predict_command", "build_parser"]

POINT_SUFFIXES = (".ply", ".npy", ".txt")
COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
DEFAULT_OUTDIR = "predicted"


@dataclass
class Cloud:
    """One input scene: the points for the network and the file content to write back with labels."""

    name: str
    source: Path
    xyz: np.ndarray  # [N, 3] as stored (written back unchanged)
    rgb: np.ndarray | None  # [N, 3] 0..255, None for a colourless cloud
    elements: dict[str, np.ndarray]  # the PLY elements to write back (vertex first for npy/txt inputs)
    comments: list[str]


def _colour_fields(vertex: np.ndarray) -> tuple[str, str, str] | None:
    names = vertex.dtype.names or ()
    return next((triple for triple in COLOUR_NAMES if all(n in names for n in triple)), None)


def _colours_0_255(values: np.ndarray) -> np.ndarray:
    """Colours as 0..255 floats: float colours in 0..1 (some exporters write those) are scaled, others clipped."""
    values = np.asarray(values)
    scale = 255.0 if (np.issubdtype(values.dtype, np.floating) and values.size
                      and np.nanmax(values) <= 1.0) else 1.0
    return np.clip(values.astype(np.float64) * scale, 0.0, 255.0)


def read_cloud(path: Path, name: str | None = None) -> Cloud:
    """A PLY, ``.npy`` or ``.txt`` file as a :class:`Cloud`; anything unusable is one DataError/EngineError line."""
    from minkseg.errors import DataError
    from minkseg.data.ply import read_ply_file

    name = name or path.stem
    suffix = path.suffix.lower()
    if suffix == ".ply":
        ply = read_ply_file(path)
        vertex = ply.vertex
        missing = [axis for axis in "xyz" if axis not in (vertex.dtype.names or ())]
        if missing:
            raise DataError(f"{path}: PLY element 'vertex' lacks properties {missing} (has "
                            f"{list(vertex.dtype.names or ())}); export the file with x, y, z vertex properties")
        xyz = np.stack([vertex[axis] for axis in "xyz"], axis=1)
        fields = _colour_fields(vertex)
        rgb = None if fields is None else _colours_0_255(np.stack([vertex[f] for f in fields], axis=1))
        return Cloud(name, path, xyz, rgb, dict(ply.elements), list(ply.comments))
    if suffix not in (".npy", ".txt"):
        raise DataError(f"{path}: not a point file (use .ply, .npy or .txt with xyz or xyzrgb rows)")
    try:
        if suffix == ".npy":
            rows = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8", errors="strict")
            rows = np.loadtxt(text.replace(",", " ").splitlines(), dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise DataError(f"{path}: not readable as {suffix} rows of numbers ({str(exc).splitlines()[0]}); write "
                        "xyz or xyzrgb rows") from None
    rows = np.asarray(rows)
    if rows.ndim == 2 and rows.shape[0] == 0:
        rows = rows.reshape(0, 3)
    if rows.ndim != 2 or rows.shape[1] not in (3, 6) or not np.issubdtype(rows.dtype, np.number):
        raise DataError(f"{path}: needs [N, 3] (xyz) or [N, 6] (xyz rgb) rows of numbers, got shape {rows.shape}")
    xyz = rows[:, :3] if np.issubdtype(rows.dtype, np.floating) else rows[:, :3].astype(np.float64)
    rgb = _colours_0_255(rows[:, 3:6]) if rows.shape[1] == 6 else None
    vertex = np.empty(len(rows), dtype=[(axis, xyz.dtype.str) for axis in "xyz"] +
                      ([(c, "u1") for c in ("red", "green", "blue")] if rgb is not None else []))
    for axis, column in zip("xyz", xyz.T):
        vertex[axis] = column
    if rgb is not None:
        for channel, column in zip(("red", "green", "blue"), np.nan_to_num(rgb).T):
            vertex[channel] = np.round(column)
    return Cloud(name, path, xyz, rgb, {"vertex": vertex}, [])


def _with_labels(vertex: np.ndarray, labels: np.ndarray, colours: np.ndarray | None) -> np.ndarray:
    """The vertex rows plus an int ``label`` column (an input ``label`` is kept as ``input_label``); with
    ``colours``, red/green/blue hold them (added when the input had none, other colour sets left as they were)."""
    names = list(vertex.dtype.names or ())
    renamed = ["input_label" if n == "label" else n for n in names]
    fields = [(new, vertex.dtype.fields[old][0]) for old, new in zip(names, renamed)]
    colour_names = ("red", "green", "blue")
    if colours is not None:
        fields = [(n, np.dtype("u1") if n in colour_names else dt) for n, dt in fields]
        fields += [(c, np.dtype("u1")) for c in colour_names if c not in renamed]
    fields.append(("label", np.dtype("<i4")))
    out = np.empty(len(vertex), dtype=fields)
    for old, new in zip(names, renamed):
        if colours is None or new not in colour_names:
            out[new] = vertex[old]
    if colours is not None:
        for channel, column in zip(colour_names, colours.T):
            out[channel] = column
    out["label"] = labels
    return out


def write_outputs(cloud: Cloud, labels: np.ndarray, probabilities: np.ndarray | None, outdir: Path,
                  class_names: Sequence[str]) -> list[Path]:
    """``<name>.ply`` (input + label), ``<name>_labels.ply`` (class colours), optional ``<name>.probs.npy``."""
    from minkseg.data.ply import write_ply_file

    outdir.mkdir(parents=True, exist_ok=True)
    comments = cloud.comments + ["minkseg predict: label = class id; " +
                                 ", ".join(f"{i} {n}" for i, n in enumerate(class_names)) + "; 255 = not predicted"]
    written = []
    for suffix, colours in (("", None), ("_labels", colorize(labels, palette(len(class_names))))):
        elements = dict(cloud.elements)
        elements["vertex"] = _with_labels(cloud.elements["vertex"], labels, colours)
        path = outdir / f"{cloud.name}{suffix}.ply"
        write_ply_file(path, elements, comments=comments)
        written.append(path)
    if probabilities is not None:
        path = outdir / f"{cloud.name}.probs.npy"
        with atomic_open(path, "wb") as handle:
            np.save(handle, probabilities.astype(np.float32))
        written.append(path)
    return written


# -- inputs -------------------------------------------------------------------------------------------------------

@dataclass
class Job:
    """One unit of work: a point file, or (4D) one frame of a sequence folder."""

    path: Path
    name: str
    sequence: Path | None = None  # the sequence folder of a 4D frame


def _sequence_frames(folder: Path) -> list[Path] | None:
    clouds = folder / "point_clouds"
    if not clouds.is_dir():
        return None
    return sorted(p for p in clouds.iterdir() if p.suffix.lower() == ".ply" and p.stem.isdigit())


def discover(inputs: Sequence[str], temporal: bool) -> tuple[list[Job], list[str]]:
    """Every job of the command line and, apart, one message per input that cannot be predicted (missing, an empty
    folder, a sequence folder for a 3D model, a name another input already writes): those are reported and counted
    as failed while the others are still predicted. Names are checked before any work (listing is cheap; the files
    themselves are read one at a time)."""
    jobs: list[Job] = []
    problems: list[str] = []
    for text in inputs:
        path = Path(text)
        if not path.exists():
            problems.append(f"{path}: no such file or folder; check the path")
        elif path.is_dir():
            frames = _sequence_frames(path)
            if frames is not None:
                if temporal:
                    jobs += [Job(frame, f"{path.name}/{frame.stem}", sequence=path) for frame in frames]
                else:
                    problems.append(f"{path}: a Synthia4D sequence folder, but the model is 3D; predict the frames "
                                    f"as PLY files ({path}/point_clouds) or use a 4D model")
                continue
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in POINT_SUFFIXES)
            if files:
                jobs += [Job(file, file.stem) for file in files]
            else:
                problems.append(f"{path}: no .ply, .npy or .txt files in this folder")
        else:
            jobs.append(Job(path, path.stem))
    seen: dict[str, Path] = {}
    unique: list[Job] = []
    for job in jobs:
        if job.name in seen:
            problems.append(f"{job.path}: would be written as {job.name}.ply like {seen[job.name]}, so it is skipped; "
                            "predict it into a different output folder (-o)")
        else:
            seen[job.name] = job.path
            unique.append(job)
    return unique, problems


# -- 4D -----------------------------------------------------------------------------------------------------------

def _read_frame(path: Path, sequence: Path) -> tuple[Cloud, np.ndarray, np.ndarray]:
    """A Synthia4D frame: the cloud to write back, and its points as the network sees them (metres, world).
    NaN rows are refused here, before the camera transform mixes them into the other coordinates."""
    from minkseg.datasets.synthia4d import frame_in_metres

    cloud = read_cloud(path, name=path.stem)
    check_finite_rows(str(path), "coordinates", cloud.xyz)
    xyz, centre, _ = frame_in_metres(sequence, path.stem, cloud.xyz)
    return cloud, xyz, centre


def window_of(index: int, count: int, numseq: int, dilation: int) -> tuple[list[int], int]:
    """Frames of the window that predicts frame ``index`` and its position in it: the window starting at the frame
    (as the evaluation's windows do), or, near the end of the sequence, the one ending at it."""
    span = (numseq - 1) * dilation
    if index + span < count:
        return [index + k * dilation for k in range(numseq)], 0
    return [index - span + k * dilation for k in range(numseq)], numseq - 1


def _predict_sequence_frame(predictor: Predictor, job: Job, frames: list[Path]) -> tuple[Cloud, object]:
    index = frames.index(job.path)
    span = (predictor.temporal_numseq - 1) * predictor.temporal_dilation
    if len(frames) <= span:
        raise EngineError(f"{job.sequence}: {len(frames)} frames, but the model's window needs {span + 1} "
                          f"({predictor.temporal_numseq} frames {predictor.temporal_dilation} apart); predict a longer "
                          "sequence")
    members, position = window_of(index, len(frames), predictor.temporal_numseq, predictor.temporal_dilation)
    loaded = [_read_frame(frames[i], job.sequence) for i in members]
    window = [(xyz, cloud.rgb, centre) for cloud, xyz, centre in loaded]
    return loaded[position][0], predictor.predict_window(window, name=job.name)[position]


# -- the command --------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minkseg predict", description="Segment your own scans with a trained "
                                     "MinkSeg model: labels at every original point.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="PLY (cloud or mesh), .npy/.txt of xyz[rgb] rows, a folder of those, or (4D models) a "
                             "Synthia4D sequence folder")
    parser.add_argument("-o", "--outdir", default=DEFAULT_OUTDIR, help=f"output folder (default: {DEFAULT_OUTDIR})")
    parser.add_argument("--model", default="models/model.pt", help="model file (default: models/model.pt)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--voting-angles", default=None,
                        help="comma-separated degrees, e.g. 0,90,180,270 (default: the model's evaluation angles)")
    parser.add_argument("--probabilities", action="store_true", help="also write <name>.probs.npy [N, classes]")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply coordinates by this to get metres (0.001 for millimetres, 0.01 for cm)")
    parser.add_argument("--max-points", type=int, default=None,
                        help="points per network pass; larger scenes are split into tiles (default: 4,000,000)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _angles(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        angles = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise EngineError(f"--voting-angles: {text!r} is not a comma-separated list of degrees (e.g. 0,90,180,270)") \
            from None
    if not angles:
        raise EngineError("--voting-angles: give at least one angle (0 for no voting)")
    return angles


def predict_command(args: argparse.Namespace) -> int:
    """Run the parsed command; returns the number of inputs that failed (each reported as one line)."""
    if not args.scale > 0:
        raise EngineError(f"--scale must be > 0 (got {args.scale})")
    options = {} if args.max_points is None else {"max_points": args.max_points}
    configure_cpu_runtime(0)  # as the stages with the default base.num_threads: threads follow the free cores
    predictor = Predictor.from_model_file(args.model, device=args.device, voting_angles=_angles(args.voting_angles),
                                          **options)
    jobs, problems = discover(args.inputs, predictor.temporal)
    for problem in problems:
        report_error("predict", problem)
    outdir = Path(args.outdir)
    failed = len(problems)
    sequences: dict[Path, list[Path]] = {}
    for job in tqdm(jobs, desc="predict", unit="scan", disable=not progress_wanted(args.no_progress)):
        try:
            if job.sequence is not None:
                frames = sequences.setdefault(job.sequence, _sequence_frames(job.sequence) or [])
                cloud, result = _predict_sequence_frame(predictor, job, frames)
                target = outdir / job.sequence.name
            else:
                if predictor.temporal:
                    log.warning("%s: a single cloud for a 4D model; predicted as a window of one frame", job.path)
                cloud = read_cloud(job.path, job.name)
                xyz = cloud.xyz if args.scale == 1.0 else np.asarray(cloud.xyz, dtype=np.float64) * args.scale
                result = (predictor.predict_window([(xyz, cloud.rgb, None)], name=str(job.path))[0]
                          if predictor.temporal else predictor.predict(xyz, cloud.rgb, name=str(job.path)))
                target = outdir
            write_outputs(cloud, result.labels, result.probabilities if args.probabilities else None, target,
                          predictor.class_names)
        except MinkSegError as exc:
            report_error("predict", str(exc))
            failed += 1
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """``minkseg predict ...`` (the console command's only subcommand so far)."""
    logging.basicConfig(level=logging.INFO, format="minkseg predict: %(message)s")
    top = argparse.ArgumentParser(prog="minkseg", description="MinkSeg command line")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("predict", help="segment your own scans with a trained model", add_help=False)
    argv = list(argv) if argv is not None else None
    _, rest = top.parse_known_args(argv)
    args = build_parser().parse_args(rest)
    failures: list[int] = []
    code = run_guarded("predict", lambda: failures.append(predict_command(args)), rerun_hint="re-run the command")
    if code == 0 and failures and failures[0]:
        return EXIT_USER_ERROR
    return code


if __name__ == "__main__":  # python -m minkseg.pipeline.predict predict ... (what the console script runs)
    sys.exit(main())
