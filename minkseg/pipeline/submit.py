"""The submit stage: the ScanNet benchmark submission of the test split (``scans_test``), every test mesh predicted
with the evaluation's voting, written as the benchmark's zip of ``<scene>.txt`` nyu40 ids (format:
:mod:`minkseg.pipeline.submission`) and validated against the official test list and each mesh's vertex count.
Other datasets have no such benchmark format; for them the stage only records that (the folder is a DVC output
either way)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from minkseg.atomic import atomic_directory, atomic_write_json, check_writable
from minkseg.config import Params
from minkseg.data.ply import read_ply
from minkseg.datasets.scannet import scene_files
from minkseg.engine.predictor import Predictor
from minkseg.engine.runtime import configure_cpu_runtime
from minkseg.errors import EngineError
from minkseg.pipeline.paths import PipelinePaths
from minkseg.pipeline.spec import dataset_spec, raw_location
from minkseg.pipeline.submission import ARCHIVE, encode_scene, to_nyu40, validate_archive, write_archive

__all__ = ["run_submit"]


def run_submit(params: Params, paths: PipelinePaths = PipelinePaths(), progress: bool = True) -> Mapping[str, Any]:
    """Write ``submission/`` (the benchmark zip + summary.json, or a summary saying the format does not apply)."""
    check_writable(paths.submission.parent)
    spec = dataset_spec(params)
    if not spec.scannet_benchmark:
        with atomic_directory(paths.submission) as staging:
            summary = {"dataset": spec.name, "applicable": False,
                       "reason": "the ScanNet benchmark format applies to ScanNet-format datasets only"}
            atomic_write_json(staging / "summary.json", summary)
        return summary
    root = raw_location(params, paths)
    scenes = spec.split_entries("test", root)
    meshes = {scene: scene_files(root, scene, "test")[0] for scene in scenes}
    missing = [scene for scene, mesh in meshes.items() if not mesh.is_file()]
    if missing:
        raise EngineError(f"{spec.split_file('test', root)} names {len(missing)} test scene(s) without a mesh under "
                          f"{root} (e.g. {meshes[missing[0]]}); download the test scans (download-scannet.py "
                          "--type _vh_clean_2.ply) or re-run the download stage")
    configure_cpu_runtime(params.base.num_threads)
    predictor = Predictor.from_model_file(paths.model, device=params.base.device,
                                          voting_angles=params.evaluate.rotation_angles)
    if predictor.class_names != list(spec.class_names):
        raise EngineError(f"{paths.model}: its classes are not the 20 ScanNet benchmark classes; re-run the train "
                          "stage on a ScanNet-format dataset (dvc repro)")
    texts, counts = {}, {}
    for scene in tqdm(scenes, desc="submit", unit="scene", disable=not progress):
        vertex = read_ply(meshes[scene], required=("x", "y", "z", "red", "green", "blue"))
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
        rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
        texts[scene] = encode_scene(to_nyu40(predictor.predict(xyz, rgb, name=str(meshes[scene])).labels, scene))
        counts[scene] = len(xyz)
    with atomic_directory(paths.submission) as staging:
        archive = write_archive(staging / ARCHIVE, texts)
        lines = validate_archive(archive, counts, scenes)
        summary = {"dataset": spec.name, "applicable": True, "archive": ARCHIVE, "scenes": len(lines),
                   "vertices": int(sum(lines.values())), "validated": True,
                   "rotation_angles": list(predictor.voting_angles)}
        atomic_write_json(staging / "summary.json", summary)
    return summary
