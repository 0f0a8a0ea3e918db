"""`minkseg predict` as a user runs it: every input kind, outputs at the original points, one line per bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from minkseg.data.ply import encode_ply, read_ply_file, write_ply_file
from minkseg.engine.export import palette
from minkseg.pipeline.predict import main, window_of
from minkseg.engine.runtime import configure_cpu_runtime
from tests.robust_workspace import REPO, child_env, evaluator_predictions, shared_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return shared_workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def expected(workspace, tmp_path_factory):
    """The evaluator's per-point labels of the val scenes."""
    return evaluator_predictions(workspace, tmp_path_factory)


def val_mesh(workspace, index: int = 0):
    name = (workspace / "data" / "raw" / "scannetv2_val.txt").read_text().split()[index]
    return name, workspace / "data" / "raw" / "scans" / name / f"{name}_vh_clean_2.ply"


@pytest.fixture(autouse=True)
def cpu_runtime_restored():
    """The command starts the thread governor (as the stages do); it must not outlive the test in this session."""
    threads = torch.get_num_threads()
    yield
    configure_cpu_runtime(threads)


def predict(workspace, capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["predict", "--model", str(workspace / "models" / "model.pt"), "--device", "cpu",
                 "--no-progress", *map(str, args)])
    return code, capsys.readouterr().err


def assert_same_points(source_vertex, output_vertex):
    assert len(output_vertex) == len(source_vertex)
    for axis in "xyz":  # bit-identical, type included
        assert output_vertex[axis].dtype == source_vertex[axis].dtype
        assert output_vertex[axis].tobytes() == source_vertex[axis].tobytes()


def test_binary_ply_gets_the_evaluators_labels_at_its_own_points(workspace, expected, tmp_path, capsys):
    name, mesh = val_mesh(workspace)
    code, err = predict(workspace, capsys, mesh, "-o", tmp_path, "--probabilities")
    assert code == 0, err
    source = read_ply_file(mesh)
    out = read_ply_file(tmp_path / f"{mesh.stem}.ply")
    assert_same_points(source.vertex, out.vertex)
    for channel in ("red", "green", "blue", "alpha"):
        np.testing.assert_array_equal(out.vertex[channel], source.vertex[channel])
    np.testing.assert_array_equal(out.vertex["label"], np.load(expected / f"{name}.npy"))
    coloured = read_ply_file(tmp_path / f"{mesh.stem}_labels.ply")
    assert_same_points(source.vertex, coloured.vertex)
    np.testing.assert_array_equal(coloured.vertex["red"], palette(20)[out.vertex["label"], 0])
    probabilities = np.load(tmp_path / f"{mesh.stem}.probs.npy")
    assert probabilities.shape == (len(source.vertex), 20) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities.argmax(1), out.vertex["label"])
    assert any("0 wall, 1 floor" in comment for comment in out.comments)


@pytest.mark.parametrize("binary", [False, True], ids=["ascii", "binary"])
def test_mesh_with_faces_keeps_them(workspace, expected, tmp_path, capsys, binary):
    """A mesh of quads and triangles (the first face a quad: binary faces are memory-mapped at its length first)."""
    name, mesh = val_mesh(workspace, 1)
    vertex = read_ply_file(mesh).vertex
    face_list = [[0, 1, 2, 3], [2, 3, 4], [5, 6, 7]]
    faces = np.empty(len(face_list), dtype=[("vertex_indices", "O")])
    faces["vertex_indices"] = [np.array(face, np.int32) for face in face_list]
    source = tmp_path / "room.ply"
    write_ply_file(source, {"vertex": vertex, "face": faces}, binary=binary)
    fmt = "binary_little_endian" if binary else "ascii"
    assert source.read_bytes().startswith(f"ply\nformat {fmt} 1.0".encode())
    code, err = predict(workspace, capsys, source, "-o", tmp_path / "out")
    assert code == 0, err
    out = read_ply_file(tmp_path / "out" / "room.ply")
    assert_same_points(read_ply_file(source).vertex, out.vertex)
    np.testing.assert_array_equal(out.vertex["label"], np.load(expected / f"{name}.npy"))
    for file in ("room.ply", "room_labels.ply"):
        kept = read_ply_file(tmp_path / "out" / file).elements["face"]["vertex_indices"]
        assert [list(f) for f in kept] == face_list


def test_npy_txt_and_folder_inputs(workspace, expected, tmp_path, capsys, caplog):
    name, mesh = val_mesh(workspace)
    vertex = read_ply_file(mesh).vertex
    rows = np.stack([vertex[c].astype(np.float32) for c in ("x", "y", "z", "red", "green", "blue")], axis=1)
    folder = tmp_path / "scans"
    folder.mkdir()
    np.save(folder / "a.npy", rows)
    np.savetxt(folder / "b.txt", rows[:, :3], fmt="%.9g")  # colourless
    (folder / "notes.md").write_text("not a scan")
    code, err = predict(workspace, capsys, folder, "-o", tmp_path / "out")
    assert code == 0, err
    a = read_ply_file(tmp_path / "out" / "a.ply").vertex
    for i, axis in enumerate("xyz"):
        assert a[axis].tobytes() == np.ascontiguousarray(rows[:, i]).tobytes()
    np.testing.assert_array_equal(a["label"], np.load(expected / f"{name}.npy"))
    b = read_ply_file(tmp_path / "out" / "b_labels.ply").vertex
    assert len(b) == len(rows) and {"red", "green", "blue", "label"} <= set(b.dtype.names)
    assert "b.txt: no colours; filled with grey" in caplog.text  # a warning; stderr in a terminal
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ply", "a_labels.ply", "b.ply",
                                                                    "b_labels.ply"]


def _bad_inputs(tmp_path, workspace):
    _, mesh = val_mesh(workspace)
    vertex = read_ply_file(mesh).vertex
    xyz = np.stack([vertex[a] for a in "xyz"], axis=1).astype(np.float64)
    (tmp_path / "fake.ply").write_text("hello, I am a text file\n")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with_nan = xyz.copy()
    with_nan[7] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    (tmp_path / "mm.ply").write_bytes(encode_ply({a: (xyz[:, i] * 1000).astype(np.float32)
                                                  for i, a in enumerate("xyz")}))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other_project.pt")
    return {
        "missing": ([tmp_path / "nope.ply"], "nope.ply: no such file or folder; check the path"),
        "not a ply": ([tmp_path / "fake.ply"], "fake.ply: not a PLY file (the first line must be 'ply')"),
        "empty": ([tmp_path / "empty.npy"], "empty.npy: the cloud has no points; nothing to segment"),
        "nan": ([tmp_path / "nan.npy"], f"{tmp_path / 'nan.npy'}: 1 of {len(xyz)} points have NaN/inf coordinates "
                                        "(first: row 7); remove those rows (or fix the export) and re-run"),
        "millimetres": ([tmp_path / "mm.ply"], "the coordinates look like millimetres: rescale them to metres "
                                               "(minkseg predict --scale 0.001"),
        "other project": ([mesh, "--model", tmp_path / "other_project.pt"],
                          "other_project.pt: not a MinkSeg model file (no 'model'/'state_dict')"),
    }


@pytest.mark.parametrize("case", ["missing", "not a ply", "empty", "nan", "millimetres", "other project"])
def test_bad_input_is_one_line_exit_2_and_no_output(workspace, tmp_path, capsys, case):
    args, message = _bad_inputs(tmp_path, workspace)[case]
    out = tmp_path / "out"
    code, err = predict(workspace, capsys, *args, "-o", out)
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("minkseg predict: error: ")]
    assert len(lines) == 1 and message in lines[0], err
    if case == "nan":
        assert lines[0] == f"minkseg predict: error: {message}"
    assert not out.exists() or not list(out.iterdir())


def test_bad_inputs_do_not_stop_the_good_ones(workspace, tmp_path, capsys):
    """A missing path, an empty folder and a name another input already writes: one line each, counted as failed
    (exit 2), and the good input is still predicted."""
    _, mesh = val_mesh(workspace)
    (tmp_path / "empty").mkdir()
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / mesh.name).write_bytes(mesh.read_bytes())
    out = tmp_path / "out"
    code, err = predict(workspace, capsys, tmp_path / "nope.ply", mesh, tmp_path / "empty", tmp_path / "again",
                        "--voting-angles", "0", "-o", out)
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("minkseg predict: error: ")]
    assert errors == [
        f"minkseg predict: error: {tmp_path / 'nope.ply'}: no such file or folder; check the path",
        f"minkseg predict: error: {tmp_path / 'empty'}: no .ply, .npy or .txt files in this folder",
        f"minkseg predict: error: {tmp_path / 'again' / mesh.name}: would be written as {mesh.stem}.ply like {mesh}, "
        "so it is skipped; predict it into a different output folder (-o)"], err
    assert sorted(p.name for p in out.iterdir()) == [mesh.name, f"{mesh.stem}_labels.ply"]
    assert len(read_ply_file(out / mesh.name).vertex) == len(read_ply_file(mesh).vertex)


def test_progress_bar_on_request(workspace, tmp_path, capsys, monkeypatch):
    """MINKSEG_PROGRESS=1 shows the bar over inputs on stderr even when it is not a terminal (and over --no-progress:
    the variable is how logs of CI runs ask for it)."""
    _, mesh = val_mesh(workspace)
    monkeypatch.setenv("MINKSEG_PROGRESS", "1")
    code, err = predict(workspace, capsys, mesh, "--voting-angles", "0", "-o", tmp_path)
    assert code == 0, err
    assert "predict:" in err and "100%" in err and "1/1" in err, err


def test_runs_under_the_stages_cpu_runtime(workspace, tmp_path, capsys, monkeypatch):
    """The command sets the CPU runtime (thread governor, allocator) as the stages do with the default
    base.num_threads (0: threads follow the free cores)."""
    from minkseg.pipeline import predict as command

    calls = []
    monkeypatch.setattr(command, "configure_cpu_runtime", calls.append)
    _, mesh = val_mesh(workspace)
    code, err = predict(workspace, capsys, mesh, "--voting-angles", "0", "-o", tmp_path)
    assert code == 0, err
    assert calls == [0]


def test_millimetres_rescaled_give_the_metre_labels(workspace, tmp_path, capsys):
    _, mesh = val_mesh(workspace)
    vertex = read_ply_file(mesh).vertex
    (tmp_path / "mm.ply").write_bytes(encode_ply({a: vertex[a].astype(np.float64) * 1000 for a in "xyz"}))
    (tmp_path / "m.ply").write_bytes(encode_ply({a: vertex[a].astype(np.float64) for a in "xyz"}))
    one_pass = ("--voting-angles", "0", "-o", tmp_path / "o")
    assert predict(workspace, capsys, tmp_path / "mm.ply", "--scale", "0.001", *one_pass)[0] == 0
    assert predict(workspace, capsys, tmp_path / "m.ply", *one_pass)[0] == 0
    mm, m = (read_ply_file(tmp_path / "o" / f).vertex for f in ("mm.ply", "m.ply"))
    assert mm["x"].tobytes() == (vertex["x"].astype(np.float64) * 1000).tobytes()  # written back as given
    assert (mm["label"] == m["label"]).mean() > 0.99  # x 1000 x 0.001 is not always the same double


def test_console_command_runs_as_a_process(workspace, tmp_path):
    _, mesh = val_mesh(workspace)
    done = subprocess.run([sys.executable, "-m", "minkseg.pipeline.predict", "predict", str(mesh), "-o", str(tmp_path),
                           "--model", str(workspace / "models" / "model.pt"), "--voting-angles", "0"],
                          cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_ply_file(tmp_path / mesh.name).vertex) == len(read_ply_file(mesh).vertex)


def test_4d_window_of_each_frame():
    assert window_of(0, 10, 3, 2) == ([0, 2, 4], 0)
    assert window_of(5, 10, 3, 2) == ([5, 7, 9], 0)
    assert window_of(6, 10, 3, 2) == ([2, 4, 6], 2)
    assert window_of(9, 10, 3, 2) == ([5, 7, 9], 2)


def test_4d_model_predicts_every_frame_of_a_sequence_folder(tmp_path, capsys):
    """A Synthia4D-format folder (frames in cm): one output per frame, each at its own original points."""
    from minkseg.weights import save_model_file
    from minkseg.nn import build_model

    torch.manual_seed(0)
    names = [f"c{i}" for i in range(12)]
    model = build_model("STRes16UNet14A", 3, 12, D=4)
    save_model_file(tmp_path / "model4d.pt", model.state_dict(), {
        "model": {"name": "STRes16UNet14A", "in_channels": 3, "out_channels": 12, "D": 4, "conv1_kernel_size": 3,
                  "bn_momentum": 0.02},
        "class_names": names, "dataset": "synthetic-synthia4d",
        "voxelization": {"voxel_size": 0.5, "clip_bound": [[-25.0, 25.0]] * 3, "label_mode": "ignore",
                         "ignore_label": 255, "temporal_numseq": 3, "temporal_dilation": 2},
        "rotation_angles": [0.0], "rotation_axis": "y"})
    rng = np.random.default_rng(0)
    sequence = tmp_path / "SYNTHIA-SEQS-01-DAWN"
    (sequence / "point_clouds").mkdir(parents=True)
    counts = []
    for frame in range(6):
        count = 300 + 10 * frame
        counts.append(count)
        (sequence / "point_clouds" / f"{frame:06d}.ply").write_bytes(encode_ply({
            "x": rng.uniform(-1500, 1500, count).astype(np.float32), "y": rng.uniform(-200, 300, count).astype(
                np.float32), "z": rng.uniform(-1500, 1500, count).astype(np.float32),
            "r": rng.integers(0, 256, count).astype(np.uint8), "g": rng.integers(0, 256, count).astype(np.uint8),
            "b": rng.integers(0, 256, count).astype(np.uint8)}))
    capsys.readouterr()
    code = main(["predict", str(sequence), "--model", str(tmp_path / "model4d.pt"), "--device", "cpu",
                 "--no-progress", "-o", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    for frame, count in enumerate(counts):
        source = read_ply_file(sequence / "point_clouds" / f"{frame:06d}.ply").vertex
        out = read_ply_file(tmp_path / "out" / sequence.name / f"{frame:06d}.ply").vertex
        assert_same_points(source, out)
        assert ((out["label"] >= 0) & (out["label"] < 12) | (out["label"] == 255)).all()
    short = tmp_path / "SHORT"
    (short / "point_clouds").mkdir(parents=True)
    (short / "point_clouds" / "000000.ply").write_bytes((sequence / "point_clouds" / "000000.ply").read_bytes())
    code = main(["predict", str(short), "--model", str(tmp_path / "model4d.pt"), "--device", "cpu",
                 "--no-progress", "-o", str(tmp_path / "short_out")])
    assert code == 2
    assert "SHORT: 1 frames, but the model's window needs 5 (3 frames 2 apart)" in capsys.readouterr().err
