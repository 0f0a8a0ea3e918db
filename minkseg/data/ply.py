"""PLY I/O for point clouds and meshes: plyfile decodes and encodes, MinkSeg validates and explains.

Why both: plyfile reads and writes every PLY layout, faces included (``minkseg predict`` must give a user's mesh
back with its faces), and memory-maps binary elements; the header is still parsed here first, so that every
malformed file gets one line saying what is wrong, where and how to fix it (plyfile's own messages name rows, not
fixes), and so that headers with ``\\r\\n`` line ends, which plyfile refuses, are read too. Binary list elements
(faces) are memory-mapped with the list lengths of their first row, and read row by row when their lengths vary
(mixed quads and triangles); ``benchmarks/ply_read.py`` compares the speed with the former hand-written reader.

Supported: ``ascii``, ``binary_little_endian`` and ``binary_big_endian`` 1.0; every PLY scalar type (both the
classic names ``uchar``/``float`` and the sized ones ``uint8``/``float32``). Anything malformed (wrong magic,
unknown format or type, missing ``end_header``, truncated data, a required property that is missing) raises a
:class:`~minkseg.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from minkseg.atomic import atomic_write_bytes
from minkseg.errors import DataError

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


def _list_lengths(path: Path, header: PlyHeader) -> dict[str, dict[str, int]]:
    """Per list element, the list lengths of its first row (triangle meshes: 3 for every face).

    plyfile memory-maps an element with list properties only when it is told their fixed lengths; taking them from
    the first row makes ScanNet meshes as fast to read as vertex-only clouds. It is a guess: an element whose lists
    vary (a quad among triangles) is then read row by row (:func:`_read_guessing_list_lengths`)."""
    order = header.byte_order
    lengths: dict[str, dict[str, int]] = {}
    offset = header.data_offset
    with open(path, "rb") as handle:
        for element in header.elements:
            if not element.has_lists:
                offset += element.count * element.row_dtype(order).itemsize
                continue
            if element.count == 0:
                continue
            row, known = 0, {}
            handle.seek(offset)
            for prop in element.properties:
                if prop.is_list:
                    count_dtype = np.dtype(order + prop.list_count_dtype)
                    raw = handle.read(count_dtype.itemsize)
                    if len(raw) < count_dtype.itemsize:
                        return lengths  # truncated: plyfile reports it
                    known[prop.name] = int(np.frombuffer(raw, count_dtype)[0])
                    handle.seek(known[prop.name] * np.dtype(prop.dtype).itemsize, os.SEEK_CUR)
                    row += count_dtype.itemsize + known[prop.name] * np.dtype(prop.dtype).itemsize
                else:
                    handle.seek(np.dtype(prop.dtype).itemsize, os.SEEK_CUR)
                    row += np.dtype(prop.dtype).itemsize
            lengths[element.name] = known
            offset += element.count * row
    return lengths


def _plyfile_error(path: Path, exc: Exception) -> DataError:
    """plyfile's parse errors as one line in MinkSeg's words (what, where, how to fix)."""
    element = getattr(exc, "element", None)
    name = getattr(element, "name", "?")
    count = getattr(element, "count", "?")
    row = getattr(exc, "row", None)
    message = getattr(exc, "message", str(exc))
    if message == "early end-of-file":
        return _fail(path, f"truncated PLY: element {name!r} has {row} of {count} rows")
    if message == "early end-of-line":
        return _fail(path, f"truncated PLY: ASCII element {name!r} row {row} has fewer values than properties "
                           "(truncated or malformed rows)")
    if message == "malformed input":
        return _fail(path, f"non-numeric value in ASCII element {name!r} (row {row})")
    if message == "expected end-of-line":
        return _fail(path, f"ASCII element {name!r} row {row} has more values than properties (malformed rows)")
    return _fail(path, f"unreadable PLY data ({exc})")


def _read_ascii_scalars(path: Path, header: PlyHeader) -> dict[str, np.ndarray]:
    """ASCII elements without list properties, tokenised at once: plyfile parses ASCII row by row in Python,
    about 5x slower (benchmarks/ply_read.py), and phone apps often export ASCII clouds."""
    with open(path, "rb") as handle:
        handle.seek(header.data_offset)
        lines = handle.read().splitlines()
    out, start = {}, 0
    for element in header.elements:
        rows = lines[start: start + element.count]
        start += element.count
        if len(rows) < element.count:
            raise _fail(path, f"truncated PLY: element {element.name!r} has {len(rows)} of {element.count} rows")
        width = len(element.properties)
        tokens = b" ".join(rows).split()
        if len(tokens) != element.count * width:
            raise _fail(path, f"ASCII element {element.name!r} has {len(tokens)} values, expected {element.count} "
                              f"rows x {width} properties (truncated or malformed rows)")
        try:
            values = np.array(tokens, dtype=np.float64).reshape(element.count, width)
        except ValueError:
            raise _fail(path, f"non-numeric value in ASCII element {element.name!r}") from None
        data = np.empty(element.count, dtype=element.row_dtype("="))
        for column, prop in enumerate(element.properties):
            data[prop.name] = values[:, column]
        out[element.name] = data
    return out


def _read_guessing_list_lengths(plyfile: Any, source: Any, known: dict[str, dict[str, int]]) -> Any:
    """``plyfile.PlyData.read`` with the first-row list lengths of :func:`_list_lengths`, dropping the guess for an
    element whose lists turn out to vary (that element is then read row by row, the others stay memory-mapped).

    Why both errors mean "the guess was wrong" for a guessed element: when a later row has other lengths than the
    first, the fixed-size rows either run past the end of the file (first face a quad, the rest triangles: the
    mapped element looks longer than the data, "early end-of-file") or misread a row's length (first face a
    triangle, a later one a quad: "unexpected list length"). Only an element read without a guess reports a real
    truncation, so a truly truncated file still gets its own error, from the row-by-row read."""
    known = dict(known)
    while True:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        try:
            return plyfile.PlyData.read(source, mmap="c", known_list_len=known)
        except plyfile.PlyElementParseError as exc:
            guessed = getattr(exc.element, "name", None)
            if guessed not in known or exc.message not in ("early end-of-file", "unexpected list length"):
                raise
            # the offsets of list elements after this one were computed from its guessed row size: drop them too
            names = list(known)
            for name in names[names.index(guessed):]:
                del known[name]


def _load(path: Path, header: PlyHeader) -> dict[str, np.ndarray]:
    """Every element of a validated file, by name in file order: through plyfile (binary elements memory-mapped),
    except ASCII files without list properties (:func:`_read_ascii_scalars`)."""
    import plyfile

    if header.format == "ascii" and not any(element.has_lists for element in header.elements):
        return _read_ascii_scalars(path, header)

    with open(path, "rb") as handle:
        raw_header = handle.read(header.data_offset)
    source: Any = path
    if b"\r" in raw_header:  # plyfile wants one kind of line end; our header parser already accepted the file
        source = io.BytesIO(raw_header.replace(b"\r\n", b"\n").replace(b"\r", b"\n") +
                            path.read_bytes()[header.data_offset:])
    known = {} if header.format == "ascii" else _list_lengths(path, header)
    try:
        data = _read_guessing_list_lengths(plyfile, source, known)
    except plyfile.PlyParseError as exc:
        raise _plyfile_error(path, exc) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, f"unreadable PLY data ({type(exc).__name__}: {exc})") from None
    return {element.name: element.data for element in data.elements}


def _check_binary_size(path: Path, header: PlyHeader, target: PlyElement) -> None:
    """A truncated binary file, said in bytes when the elements before ``target`` have fixed-size rows."""
    order = header.byte_order
    preceding = header.elements[: header.elements.index(target)]
    if header.format == "ascii" or any(e.has_lists for e in preceding) or target.has_lists:
        return
    needed = header.data_offset + sum(e.count * e.row_dtype(order).itemsize for e in preceding + [target])
    size = path.stat().st_size
    if needed > size:
        raise _fail(path, f"truncated PLY: element {target.name!r} needs {needed} bytes, file has {size}")


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
    _check_binary_size(path, header, target)
    rows = _load(path, header)[element]
    return {p.name: np.array(rows[p.name], dtype=np.dtype(p.dtype)) for p in target.properties}


@dataclass
class PlyFile:
    """A whole PLY file: every element as a structured array in file order (faces included), and how it was
    stored. What ``minkseg predict`` reads, so that its output keeps the input's vertices, properties and faces."""

    elements: dict[str, np.ndarray]
    format: str
    comments: list[str]

    @property
    def vertex(self) -> np.ndarray:
        return self.elements["vertex"]


def read_ply_file(path: str | os.PathLike) -> PlyFile:
    """All elements of a PLY file (validated like :func:`read_ply`); it must have a ``vertex`` element."""
    path = Path(path)
    header = read_ply_header(path)
    vertex = header.element("vertex")
    if vertex is None:
        names = [e.name for e in header.elements] or ["none"]
        raise _fail(path, f"PLY has no 'vertex' element (elements: {', '.join(names)})")
    _check_binary_size(path, header, vertex)
    elements = {name: np.array(rows) for name, rows in _load(path, header).items()}
    return PlyFile(elements=elements, format=header.format, comments=list(header.comments))


def encode_ply_file(elements: Mapping[str, np.ndarray], *, binary: bool = True, big_endian: bool = False,
                    comments: Sequence[str] = ()) -> bytes:
    """Structured arrays (one per element, list properties as object arrays) as PLY bytes, through plyfile."""
    import plyfile

    described = []
    for name, rows in elements.items():
        rows = np.asarray(rows)
        if rows.dtype.fields is None:
            raise ValueError(f"PLY element {name!r} must be a structured array")
        bools = [field for field, (dtype, *_) in rows.dtype.fields.items() if dtype == np.bool_]
        if bools:
            rows = rows.astype([(field, "u1" if field in bools else dtype)
                                for field, (dtype, *_) in rows.dtype.fields.items()])
        described.append(plyfile.PlyElement.describe(rows, name))
    data = plyfile.PlyData(described, text=not binary, byte_order=">" if big_endian else "<",
                           comments=list(comments))
    buffer = io.BytesIO()
    data.write(buffer)
    return buffer.getvalue()


def write_ply_file(path: str | os.PathLike, elements: Mapping[str, np.ndarray], *, binary: bool = True,
                   big_endian: bool = False, comments: Sequence[str] = ()) -> None:
    """Write several elements (a mesh: vertex + face) atomically."""
    atomic_write_bytes(path, encode_ply_file(elements, binary=binary, big_endian=big_endian, comments=comments))


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
    for name, a in arrays.items():
        code = a.dtype.str[1:] if a.dtype != bool else "b1"
        if code not in NUMPY_TO_PLY:
            raise ValueError(f"PLY cannot store dtype {a.dtype} (property {name!r}); cast it first")
    rows = np.empty(next(iter(lengths))[0], dtype=[(name, "u1" if a.dtype == bool else a.dtype.str[1:])
                                                  for name, a in arrays.items()])
    for name, a in arrays.items():
        rows[name] = a
    return encode_ply_file({"vertex": rows}, binary=binary, big_endian=big_endian, comments=comments)


def write_ply(path: str | os.PathLike, fields: Mapping[str, np.ndarray], binary: bool = True,
              big_endian: bool = False, comments: Sequence[str] = ()) -> None:
    """Write a vertex-only PLY atomically (temp file in the same directory + ``os.replace``)."""
    atomic_write_bytes(path, encode_ply(fields, binary=binary, big_endian=big_endian, comments=comments))
