"""The pipeline's shape, checked from the source: dvc.yaml's code deps are each stage's import graph, imports flow
one way (stages -> pipeline -> engine/datasets/data/nn -> sparse), and the light stages stay light."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.stage_deps import REPO, _imported_names, expand, expected_deps

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_dvc_deps_are_exactly_the_code_the_stage_imports(stage):
    """Editing a module re-runs exactly the stages that run it (issue 14): a dep missing here would leave a stage
    stale after a change to its code, an extra one re-runs a stage for nothing. Fix: paste
    ``python tests/stage_deps.py``'s list for the stage into dvc.yaml."""
    listed = [dep for dep in STAGES[stage]["deps"] if dep.startswith(("minkseg/", "stages/"))]
    want = expected_deps()[stage]
    assert expand(listed) == expand(want), f"dvc.yaml stage {stage}: deps should be {want}"
    assert sorted(listed) == sorted(want), f"dvc.yaml stage {stage}: list the code deps as {want}"


def test_no_lower_layer_imports_the_pipeline():
    """The stage functions sit on top: data, datasets, nn, sparse and the engine never import minkseg.pipeline
    (nor the stage scripts), so any of them can be used, tested and depended on without the pipeline."""
    offenders = []
    for layer in ("data", "datasets", "nn", "sparse", "engine"):
        for path in sorted((REPO / "minkseg" / layer).rglob("*.py")):
            bad = sorted(name for name in _imported_names(path)
                         if name == "minkseg.pipeline" or name.startswith(("minkseg.pipeline.", "stages")))
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {', '.join(bad)}")
    assert offenders == []


def test_stage_scripts_are_thin():
    """stages/<stage>.py parses argv and calls run_<stage> of minkseg.pipeline.<stage>: nothing else to maintain."""
    for stage, spec in STAGES.items():
        script = REPO / spec["cmd"].split()[-1]
        assert script == REPO / "stages" / f"{stage}.py"
        imports = _imported_names(script)
        assert {f"minkseg.pipeline.{stage}.run_{stage}", "minkseg.pipeline.cli.run_stage"} <= imports, script
        assert not {name for name in imports if name.startswith("minkseg.")} - {
            f"minkseg.pipeline.{stage}", f"minkseg.pipeline.{stage}.run_{stage}", "minkseg.pipeline.cli",
            "minkseg.pipeline.cli.run_stage"}, script


def test_package_code_imports_networks_from_their_home_module():
    """``minkseg.nn`` resolves its names on first use (so that the network names load without torch); the import
    graph above cannot follow such a name to its module, so MinkSeg's own code imports from the module itself
    (``from minkseg.nn.registry import build_model``) and the stage deps stay exact."""
    import minkseg.nn

    lazy = {"minkseg.nn", *(f"minkseg.nn.{name}" for name in minkseg.nn.__all__)}
    offenders = sorted(str(path.relative_to(REPO))
                       for path in [*(REPO / "minkseg").rglob("*.py"), *(REPO / "stages").glob("*.py")]
                       if lazy & _imported_names(path))
    assert offenders == []


@pytest.mark.parametrize("stage", ["check_params", "download"])
def test_light_stage_modules_import_neither_torch_nor_mlflow(stage):
    """check_params writes a marker and download generates numpy scenes: importing their stage module and loading
    params.yaml (whose check of ``train.model`` reads the network names) must not cost torch's or mlflow's
    start-up."""
    code = (f"import sys; import minkseg.pipeline.cli, minkseg.pipeline.{stage}; "
            "from minkseg.config import load_params; load_params('params.yaml'); "
            "print(sorted(m for m in ('torch', 'mlflow', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[]"
