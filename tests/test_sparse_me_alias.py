"""The opt-in alias: unchanged ``import MinkowskiEngine`` code runs on minkseg.sparse, and never over a real ME."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ME_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import MinkowskiEngine as ME
    import MinkowskiEngine.utils as utils
    from MinkowskiEngine.utils import sparse_quantize
    from MinkowskiOps import MinkowskiToSparseTensor
    from MinkowskiTensorField import TensorField
    from MinkowskiTensor import SparseTensorQuantizationMode
    from utils.gradcheck import gradcheck  # ME's folder is on sys.path, so its utils is top-level too
    from MinkowskiEngine.modules.resnet_block import BasicBlock
    import MinkowskiEngine.MinkowskiFunctional as MF
    assert MF.relu is ME.MinkowskiFunctional.relu and BasicBlock.expansion == 1 and gradcheck is ME.utils.gradcheck
    import minkseg.sparse
    assert ME is minkseg.sparse and utils is minkseg.sparse.utils
    assert TensorField is minkseg.sparse.TensorField and MinkowskiToSparseTensor is ME.MinkowskiToSparseTensor
    x = ME.SparseTensor(torch.ones(3, 1), torch.IntTensor([[0, 0], [0, 0], [0, 1]]))
    assert len(x) == 2
    try:
        import MinkowskiEngine.MinkowskiNotAModule  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("an unknown ME module imported")
    print("ALIAS-OK", sys.argv[1:])
""")


def _env(extra_path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, str(REPO)) if p)
    return env


def test_script_runs_unchanged_through_the_alias(tmp_path):
    script = tmp_path / "me_code.py"
    script.write_text(ME_SCRIPT)
    out = subprocess.run([sys.executable, "-m", "minkseg.sparse.alias", str(script), "a", "b"], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ALIAS-OK ['a', 'b']" in out.stdout


def test_without_the_alias_minkowskiengine_is_not_importable(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import minkseg.sparse; import MinkowskiEngine"], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "No module named 'MinkowskiEngine'" in out.stderr


def test_a_real_minkowskiengine_is_never_shadowed(tmp_path):
    fake = tmp_path / "site" / "MinkowskiEngine"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    code = ("import warnings, minkseg.sparse.alias as a\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    ok = a.install()\n"
            "import MinkowskiEngine\n"
            "print(ok, MinkowskiEngine.REAL, 'real MinkowskiEngine' in str(w[0].message))\n")
    out = subprocess.run([sys.executable, "-c", code], env=_env(str(tmp_path / "site")), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]


def test_install_and_uninstall_in_process():
    import minkseg.sparse.alias as alias
    assert alias.install() is True
    try:
        import MinkowskiEngine
        import minkseg.sparse
        assert MinkowskiEngine is minkseg.sparse
    finally:
        alias.uninstall()
    assert "MinkowskiEngine" not in sys.modules and not alias.installed()


def test_a_projects_own_utils_module_wins_over_mes(tmp_path):
    (tmp_path / "utils.py").write_text("MINE = True\n")
    script = tmp_path / "me_code.py"
    script.write_text("import MinkowskiEngine as ME\nimport utils\nprint('OWN' if utils.MINE else 'ME')\n")
    out = subprocess.run([sys.executable, "-m", "minkseg.sparse.alias", str(script)], env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OWN"


def test_importing_me_submodules_never_replaces_classes_or_functions(tmp_path):
    script = tmp_path / "me_code.py"
    script.write_text(textwrap.dedent("""
        import MinkowskiEngine as ME
        import MinkowskiEngine.MinkowskiConvolution
        from MinkowskiEngine.utils.summary import summary
        from utils.gradcheck import gradcheck
        import utils.summary
        assert isinstance(ME.MinkowskiConvolution, type), ME.MinkowskiConvolution
        assert callable(ME.utils.summary) and callable(gradcheck) and callable(summary)
        import utils
        assert callable(utils.summary) and callable(utils.gradcheck)
        print("NO-CLOBBER")
    """))
    out = subprocess.run([sys.executable, "-m", "minkseg.sparse.alias", str(script)], env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "NO-CLOBBER"
