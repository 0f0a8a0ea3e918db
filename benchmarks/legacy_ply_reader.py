"""The hand-written PLY vertex reader MinkSeg used before plyfile (commit fdf25aa), kept only as the speed baseline
of benchmarks/ply_read.py. Not imported by the package."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from minkseg.data.atomic import atomic_write_bytes
from minkseg.data.errors import DataError

PLY_TO_NUMPY = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
NUMPY_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
                "f4": "float", "f8": "double", "b1": "uchar"}
FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
MAX_HEADER_BYTES = 1 << 20
_FIX = "re-export or re-download the file"


@dataclass(frozen=True)
class PlyProperty:
    name: str
    dtype: str  # numpy kind+size code, e.g. "f4"
    list_count_dtype: str | None = None  # set for list properties

    @property
    def is_list(self) -> bool:
        return self.list_count_dtype is not None


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty] = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.is_list for p in self.properties)

    def row_dtype(self, byte_order: str) -> np.dtype:
        return np.dtype([(p.name, byte_order + p.dtype) for p in self.properties])


@dataclass
class PlyHeader:
    format: str
    elements: list[PlyElement]
    comments: list[str]
    data_offset: int

    @property
    def byte_order(self) -> str:
        return ">" if self.format == "binary_big_endian" else "<"

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


def _fail(path: Path, problem: str, fix: str = _FIX) -> DataError:
    return DataError(f"{path}: {problem}; {fix}")


def _parse_header(path: Path, head: bytes) -> PlyHeader:
    end = head.find(b"end_header")
    if head.split(b"\n", 1)[0].rstrip(b"\r") != b"ply":  # exactly "ply": "plyx" or "ply 2" is no PLY
        raise _fail(path, "not a PLY file (the first line must be 'ply')", "check the path points to a .ply file")
    if end < 0:
        raise _fail(path, "PLY header has no 'end_header' line (file truncated or not a PLY)")
    newline = head.find(b"\n", end)
    if newline < 0:
        raise _fail(path, "PLY header ends without a newline after 'end_header' (file truncated)")
    text = head[:end].decode("ascii", errors="replace")
    lines = [ln.strip() for ln in text.replace("\r", "").split("\n")][1:]
    fmt, elements, comments = None, [], []
    for lineno, line in enumerate(lines, start=2):
        if not line:
            continue
        words = line.split()
        key = words[0]
        if key in ("comment", "obj_info"):
            comments.append(line[len(key):].strip())
        elif key == "format":
            if len(words) != 3 or words[1] not in FORMATS:
                raise _fail(path, f"unsupported PLY format line {line!r} (header line {lineno})",
                            f"expected one of {', '.join(FORMATS)}")
            if words[2] != "1.0":
                raise _fail(path, f"unsupported PLY version {words[2]!r}", "only version 1.0 is supported")
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise _fail(path, f"malformed element line {line!r} (header line {lineno})")
            elements.append(PlyElement(words[1], int(words[2])))
        elif key == "property":
            if not elements:
                raise _fail(path, f"property before any element (header line {lineno})")
            if len(words) == 5 and words[1] == "list":
                if words[2] not in PLY_TO_NUMPY or words[3] not in PLY_TO_NUMPY:
                    raise _fail(path, f"unknown PLY type in {line!r} (header line {lineno})")
                prop = PlyProperty(words[4], PLY_TO_NUMPY[words[3]], PLY_TO_NUMPY[words[2]])
            elif len(words) == 3:
                if words[1] not in PLY_TO_NUMPY:
                    raise _fail(path, f"unknown PLY type {words[1]!r} (header line {lineno})",
                                f"valid types: {', '.join(sorted(PLY_TO_NUMPY))}")
                prop = PlyProperty(words[2], PLY_TO_NUMPY[words[1]])
            else:
                raise _fail(path, f"malformed property line {line!r} (header line {lineno})")
            if any(p.name == prop.name for p in elements[-1].properties):
                raise _fail(path, f"duplicate property {prop.name!r} in element {elements[-1].name!r}")
            elements[-1].properties.append(prop)
        else:
            raise _fail(path, f"unexpected header line {line!r} (header line {lineno})")
    if fmt is None:
        raise _fail(path, "PLY header has no 'format' line")
    return PlyHeader(fmt, elements, comments, newline + 1)


def read_ply_header(path: str | os.PathLike) -> PlyHeader:
    """Parse only the header (cheap: used to validate raw files and to list their properties)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; check the dataset path") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror}); check permissions") from None
    return _parse_header(path, head)


def _skip_binary_element(path: Path, buf: memoryview, offset: int, element: PlyElement, order: str) -> int:
    """Return the offset after ``element``. Fixed-size rows are skipped arithmetically; rows with list
    properties are skipped vectorised when every list has the same length (triangle meshes), else row by row."""
    if not element.has_lists:
        return offset + element.count * element.row_dtype(order).itemsize
    if element.count == 0:
        return offset
    # Assume constant list lengths, taken from the first row, then verify.
    fields, pos = [], offset
    for p in element.properties:
        if p.is_list:
            cnt_dt = np.dtype(order + p.list_count_dtype)
            if pos + cnt_dt.itemsize > len(buf):
                raise _fail(path, f"truncated data in element {element.name!r}")
            n = int(np.frombuffer(buf, cnt_dt, 1, pos)[0])
            fields += [(p.name + "__n", cnt_dt), (p.name, np.dtype(order + p.dtype), (n,))]
            pos += cnt_dt.itemsize + n * np.dtype(p.dtype).itemsize
        else:
            fields.append((p.name, np.dtype(order + p.dtype)))
            pos += np.dtype(p.dtype).itemsize
    row = np.dtype(fields)
    end = offset + element.count * row.itemsize
    if end <= len(buf):
        rows = np.frombuffer(buf, row, element.count, offset)
        lengths = {f[0]: f[2][0] for f in fields if len(f) == 3}
        if all(np.all(rows[name + "__n"] == n) for name, n in lengths.items()):
            return end
    for _ in range(element.count):  # variable-length lists: rare, so a plain loop is acceptable
        for p in element.properties:
            if p.is_list:
                cnt_dt = np.dtype(order + p.list_count_dtype)
                if offset + cnt_dt.itemsize > len(buf):
                    raise _fail(path, f"truncated data in element {element.name!r}")
                n = int(np.frombuffer(buf, cnt_dt, 1, offset)[0])
                offset += cnt_dt.itemsize + n * np.dtype(p.dtype).itemsize
            else:
                offset += np.dtype(p.dtype).itemsize
    if offset > len(buf):
        raise _fail(path, f"truncated data in element {element.name!r}")
    return offset


def _read_binary(path: Path, header: PlyHeader, target: PlyElement) -> np.ndarray:
    order = header.byte_order
    size = path.stat().st_size
    offset = header.data_offset
    preceding = header.elements[: header.elements.index(target)]
    if any(e.has_lists for e in preceding):
        buf = memoryview(path.read_bytes())
        for e in preceding:
            offset = _skip_binary_element(path, buf, offset, e, order)
    else:
        offset += sum(e.count * e.row_dtype(order).itemsize for e in preceding)
    row = target.row_dtype(order)
    needed = offset + target.count * row.itemsize
    if needed > size:
        raise _fail(path, f"truncated PLY: element {target.name!r} needs {needed} bytes, file has {size}")
    return np.fromfile(path, dtype=row, count=target.count, offset=offset)


def _read_ascii(path: Path, header: PlyHeader, target: PlyElement) -> np.ndarray:
    with open(path, "rb") as f:
        f.seek(header.data_offset)
        body = f.read()
    lines = body.splitlines()
    # Every row of every element is one line in ASCII PLY; skip the rows of the elements before ours.
    start = sum(e.count for e in header.elements[: header.elements.index(target)])
    rows = [ln for ln in lines[start: start + target.count]]
    if len(rows) < target.count:
        raise _fail(path, f"truncated PLY: element {target.name!r} has {len(rows)} of {target.count} rows")
    nprops = len(target.properties)
    tokens = b" ".join(rows).split()
    if len(tokens) != target.count * nprops:
        raise _fail(path, f"ASCII element {target.name!r} has {len(tokens)} values, expected "
                          f"{target.count} rows x {nprops} properties (truncated or malformed rows)")
    try:
        values = np.array(tokens, dtype=np.float64).reshape(target.count, nprops)
    except ValueError:
        raise _fail(path, f"non-numeric value in ASCII element {target.name!r}") from None
    out = np.empty(target.count, dtype=target.row_dtype("="))
    for i, p in enumerate(target.properties):
        out[p.name] = values[:, i]
    return out


def read_ply(path: str | os.PathLike, element: str = "vertex",
             required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read one element of a PLY file as ``{property name: 1-D native-endian array}`` in file order.

    ``required`` lists property names that must exist; a missing one is reported with the names that do exist.
    """
    path = Path(path)
    header = read_ply_header(path)
    target = header.element(element)
    if target is None:
        names = [e.name for e in header.elements] or ["none"]
        raise _fail(path, f"PLY has no {element!r} element (elements: {', '.join(names)})")
    if target.has_lists:
        lists = [p.name for p in target.properties if p.is_list]
        raise _fail(path, f"element {element!r} has list properties {lists}, which point clouds do not use",
                    "export the vertices with scalar properties only")
    present = [p.name for p in target.properties]
    missing = [name for name in required if name not in present]
    if missing:
        raise _fail(path, f"PLY element {element!r} lacks properties {missing} (has {present})",
                    "export the file with these vertex properties")
    rows = _read_ascii(path, header, target) if header.format == "ascii" else _read_binary(path, header, target)
    return {p.name: np.ascontiguousarray(rows[p.name]).astype(np.dtype(p.dtype), copy=False)
            for p in target.properties}


def first_present(fields: Mapping[str, np.ndarray], path: str | os.PathLike, *candidates: str) -> np.ndarray:
    """Return the first of several alias property names (e.g. ``red``/``r``) that exists in ``fields``."""
    for name in candidates:
        if name in fields:
            return fields[name]
    raise DataError(f"{path}: PLY vertex element lacks a property named {' or '.join(repr(c) for c in candidates)}"
                    f" (has {list(fields)}); export the file with this property")


def encode_ply(fields: Mapping[str, np.ndarray], binary: bool = True, big_endian: bool = False,
               comments: Sequence[str] = ()) -> bytes:
    """Encode equal-length 1-D arrays as the ``vertex`` element of a PLY file."""
    if not fields:
        raise ValueError("encode_ply needs at least one property")
    arrays = {name: np.asarray(a) for name, a in fields.items()}
    lengths = {a.shape for a in arrays.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"PLY properties must be 1-D arrays of one length, got shapes "
                         f"{ {n: a.shape for n, a in arrays.items()} }")
    count = next(iter(lengths))[0]
    fmt = ("binary_big_endian" if big_endian else "binary_little_endian") if binary else "ascii"
    head = ["ply", f"format {fmt} 1.0"] + [f"comment {c}" for c in comments] + [f"element vertex {count}"]
    codes = {}
    for name, a in arrays.items():
        code = a.dtype.str[1:] if a.dtype != bool else "b1"
        if code not in NUMPY_TO_PLY:
            raise ValueError(f"PLY cannot store dtype {a.dtype} (property {name!r}); cast it first")
        codes[name] = "u1" if code == "b1" else code
        head.append(f"property {NUMPY_TO_PLY[code]} {name}")
    head.append("end_header")
    header = ("\n".join(head) + "\n").encode("ascii")
    if binary:
        order = ">" if big_endian else "<"
        rows = np.empty(count, dtype=[(n, order + c) for n, c in codes.items()])
        for name, a in arrays.items():
            rows[name] = a
        return header + rows.tobytes()
    out = io.BytesIO()
    table = np.empty((count, len(arrays)), dtype=object)
    fmts = []
    for i, (name, a) in enumerate(arrays.items()):
        table[:, i] = a.astype(np.float64 if codes[name][0] == "f" else np.int64)
        fmts.append({"f4": "%.9g", "f8": "%.17g"}.get(codes[name], "%d"))
    np.savetxt(out, table, fmt=fmts, delimiter=" ")
    return header + out.getvalue()


def write_ply(path: str | os.PathLike, fields: Mapping[str, np.ndarray], binary: bool = True,
              big_endian: bool = False, comments: Sequence[str] = ()) -> None:
    """Write a vertex-only PLY atomically (temp file in the same directory + ``os.replace``)."""
    atomic_write_bytes(path, encode_ply(fields, binary=binary, big_endian=big_endian, comments=comments))
