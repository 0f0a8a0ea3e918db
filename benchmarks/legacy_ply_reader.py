"""The hand-written PLY data reader MinkSeg used before plyfile (commit fdf25aa), kept only as the speed baseline
of benchmarks/ply_read.py. Not imported by the package. Header parsing and errors were kept unchanged in
minkseg.data.ply and are imported from there: only the data-reading part (what plyfile replaced) lives here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from minkseg.data.ply import PlyElement, PlyHeader, _fail, read_ply_header


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
