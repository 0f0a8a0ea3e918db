"""PLY reader/writer: round trips in every format and type, skipping other elements, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from minkseg.errors import DataError
from minkseg.data.ply import encode_ply, read_ply, read_ply_header, write_ply

ALL_TYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]


def _fields(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for code in ALL_TYPES:
        dt = np.dtype(code)
        if dt.kind == "f":
            out[f"p_{code}"] = rng.normal(0, 1000, n).astype(dt)
        else:
            info = np.iinfo(dt)
            out[f"p_{code}"] = rng.integers(info.min, info.max, n, endpoint=True, dtype=np.int64).astype(dt)
    return out


@pytest.mark.parametrize("binary,big_endian", [(True, False), (True, True), (False, False)])
def test_round_trip_every_type(tmp_path, binary, big_endian):
    fields = _fields(257)
    path = tmp_path / "a.ply"
    write_ply(path, fields, binary=binary, big_endian=big_endian, comments=["hello"])
    back = read_ply(path)
    assert list(back) == list(fields)
    for name, values in fields.items():
        assert back[name].dtype == values.dtype
        np.testing.assert_array_equal(back[name], values)
    header = read_ply_header(path)
    assert header.comments == ["hello"]
    assert header.format == {(True, False): "binary_little_endian", (True, True): "binary_big_endian",
                             (False, False): "ascii"}[(binary, big_endian)]


def _mesh_bytes(fmt: str, faces_first: bool, faces: list[list[int]] = ([0, 1, 2], [1, 2, 3]),
                newline: str = "\r\n") -> tuple[bytes, np.ndarray]:
    """A 4-vertex mesh written by hand (not by plyfile), faces of any lengths (triangles, quads). With ``\\n``
    line ends in the header, binary faces go through the memory-mapped path; ``\\r\\n`` headers do not."""
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3)
    faces = [np.array(face, dtype=np.int32) for face in faces]
    vertex_header = "element vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
    face_header = f"element face {len(faces)}\nproperty list uchar int vertex_indices\n"
    head = f"ply{newline}format {fmt} 1.0{newline}comment made by hand{newline}"
    head += (face_header + vertex_header) if faces_first else (vertex_header + face_header)
    head += "end_header\n"
    if fmt == "ascii":
        vtx = "".join(" ".join(str(v) for v in row) + "\n" for row in xyz)
        fcs = "".join(f"{len(row)} " + " ".join(str(v) for v in row) + "\n" for row in faces)
        body = (fcs + vtx) if faces_first else (vtx + fcs)
        return head.encode() + body.encode(), xyz
    order = "<" if fmt == "binary_little_endian" else ">"
    vtx = xyz.astype(order + "f4").tobytes()
    fcs = b"".join(np.array([len(row)], "u1").tobytes() + row.astype(order + "i4").tobytes() for row in faces)
    return head.encode() + ((fcs + vtx) if faces_first else (vtx + fcs)), xyz


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("faces_first", [False, True])
def test_reads_vertices_of_a_mesh_with_faces(tmp_path, fmt, faces_first):
    data, xyz = _mesh_bytes(fmt, faces_first)
    path = tmp_path / "mesh.ply"
    path.write_bytes(data)
    fields = read_ply(path, required=("x", "y", "z"))
    np.testing.assert_array_equal(np.stack([fields["x"], fields["y"], fields["z"]], 1), xyz)
    assert [e.name for e in read_ply_header(path).elements] == (["face", "vertex"] if faces_first else
                                                               ["vertex", "face"])


def _expect_error(path, *words):
    with pytest.raises(DataError) as info:
        read_ply(path, required=("x",))
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    return message


def test_rejects_truncated_binary(tmp_path):
    path = tmp_path / "t.ply"
    path.write_bytes(encode_ply({"x": np.arange(100, dtype=np.float32)})[:-3])
    _expect_error(path, "truncated")


def test_rejects_truncated_ascii(tmp_path):
    path = tmp_path / "t.ply"
    text = encode_ply({"x": np.arange(100, dtype=np.float32), "y": np.ones(100, np.float32)}, binary=False)
    path.write_bytes(text[: text.rfind(b" ")])  # last row loses its last value
    _expect_error(path, "ASCII")
    path.write_bytes(text[: text.rfind(b"\n", 0, len(text) - 1) - 40])  # whole rows missing
    _expect_error(path, "truncated")


@pytest.mark.parametrize("header,words", [
    (b"plx\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", ["not a PLY"]),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n1\n", ["end_header"]),
    (b"ply\nformat binary_middle_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", ["format"]),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float128 x\nend_header\n1\n", ["unknown PLY type"]),
    (b"ply\nformat ascii 1.0\nproperty float x\nelement vertex 1\nend_header\n1\n", ["before any element"]),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float y\nend_header\n1\n", ["lacks properties", "'x'"]),
    (b"ply\nformat ascii 1.0\nelement face 1\nproperty float x\nend_header\n1\n", ["no 'vertex' element"]),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\nabc\n", ["non-numeric"]),
    (b"ply\nelement vertex 1\nproperty float x\nend_header\n1\n", ["no 'format'"]),
])
def test_rejects_malformed_headers(tmp_path, header, words):
    path = tmp_path / "bad.ply"
    path.write_bytes(header)
    _expect_error(path, *words)


def test_missing_file_is_a_data_error(tmp_path):
    _expect_error(tmp_path / "nope.ply", "not found")


def test_write_is_atomic_and_rejects_bad_arrays(tmp_path):
    path = tmp_path / "a.ply"
    write_ply(path, {"x": np.zeros(3, np.float32)})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_ply(path, {"x": np.zeros(3, np.float32), "y": np.zeros(4, np.float32)})
    with pytest.raises(ValueError):
        write_ply(path, {"x": np.zeros(3, np.complex64)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ply"]  # no temp files left behind


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("faces_first", [False, True])
def test_whole_file_keeps_faces_and_round_trips(tmp_path, fmt, faces_first):
    from minkseg.data.ply import read_ply_file, write_ply_file

    data, xyz = _mesh_bytes(fmt, faces_first)
    path = tmp_path / "mesh.ply"
    path.write_bytes(data)
    mesh = read_ply_file(path)
    assert mesh.format == fmt and mesh.comments == ["made by hand"]
    assert list(mesh.elements) == (["face", "vertex"] if faces_first else ["vertex", "face"])
    np.testing.assert_array_equal(np.stack([mesh.vertex[a] for a in "xyz"], 1), xyz)
    assert [list(f) for f in mesh.elements["face"]["vertex_indices"]] == [[0, 1, 2], [1, 2, 3]]
    write_ply_file(tmp_path / "out.ply", mesh.elements, binary=fmt != "ascii")
    again = read_ply_file(tmp_path / "out.ply")
    np.testing.assert_array_equal(again.vertex, mesh.vertex)
    assert [list(f) for f in again.elements["face"]["vertex_indices"]] == [[0, 1, 2], [1, 2, 3]]


MIXED_FACES = {"quad first": [[0, 1, 2, 3], [0, 1, 2], [1, 2, 3]],
               "triangle first": [[0, 1, 2], [0, 1, 2, 3], [1, 2, 3]]}


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("faces_first", [False, True])
@pytest.mark.parametrize("order", sorted(MIXED_FACES))
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_mixed_quads_and_triangles_are_read(tmp_path, fmt, faces_first, order, newline):
    """List lengths that vary from row to row (a quad among triangles): the first row's lengths are only a guess."""
    from minkseg.data.ply import read_ply_file

    faces = MIXED_FACES[order]
    data, xyz = _mesh_bytes(fmt, faces_first, faces, newline)
    path = tmp_path / "mesh.ply"
    path.write_bytes(data)
    mesh = read_ply_file(path)
    np.testing.assert_array_equal(np.stack([mesh.vertex[a] for a in "xyz"], 1), xyz)
    assert [list(f) for f in mesh.elements["face"]["vertex_indices"]] == faces
    np.testing.assert_array_equal(np.stack([read_ply(path)[a] for a in "xyz"], 1), xyz)


@pytest.mark.parametrize("order", sorted(MIXED_FACES))
@pytest.mark.parametrize("uniform", [False, True])
def test_truncated_mesh_faces_are_still_refused(tmp_path, order, uniform):
    """The row-by-row fallback does not hide a file that really ends early: it reports the rows that are there."""
    from minkseg.data.ply import read_ply_file

    data, _ = _mesh_bytes("binary_little_endian", False, [[0, 1, 2]] * 3 if uniform else MIXED_FACES[order], "\n")
    path = tmp_path / "mesh.ply"
    path.write_bytes(data[:-5])  # the last face loses its last 5 bytes
    with pytest.raises(DataError) as info:
        read_ply_file(path)
    assert str(info.value) == (f"{path}: truncated PLY: element 'face' has 2 of 3 rows; re-export or re-download "
                               "the file")
