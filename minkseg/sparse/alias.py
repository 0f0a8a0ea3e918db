"""Run unchanged MinkowskiEngine code on minkseg.sparse: ``import MinkowskiEngine as ME`` resolves to this engine.

Opt-in, never by side effect of importing minkseg:

    python -m minkseg.sparse.alias your_script.py [args...]      # run a script with the alias on
    python -m minkseg.sparse.alias -m pytest tests/              # or a module
    import minkseg.sparse.alias; minkseg.sparse.alias.install()  # from Python, before ME code is imported

It never shadows a real MinkowskiEngine: ``install()`` refuses (returns False, with a warning) when one is
importable. Besides the package and its submodules (``MinkowskiEngine.utils``,
``MinkowskiEngine.MinkowskiSparseTensor``, ...) it maps ME's top-level ``Minkowski*`` module names
(``MinkowskiOps``, ``MinkowskiTensorField``, ``utils.gradcheck``, ...), which ME itself makes importable by appending its
package folder to ``sys.path``; like there, they come last, so a project's own ``utils`` still wins. Each name resolves to the
same module object as its minkseg home, so classes compare equal whichever name imported them. A name ME has and
minkseg does not yet fails to import, as it should.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import runpy
import sys
import warnings
from types import ModuleType

__all__ = ["ME_MODULES", "install", "uninstall", "installed", "main"]

# ME module (without the ``MinkowskiEngine.`` prefix) -> the minkseg module that holds the same public names.
ME_MODULES = {
    "MinkowskiSparseTensor": "minkseg.sparse.tensor",
    "MinkowskiTensorField": "minkseg.sparse.field",
    "MinkowskiTensor": "minkseg.sparse.tensor_base",
    "MinkowskiCoordinateManager": "minkseg.sparse.coordinates",
    "MinkowskiKernelGenerator": "minkseg.sparse.kernel",
    "MinkowskiConvolution": "minkseg.sparse.convolution",
    "MinkowskiPooling": "minkseg.sparse.pooling",
    "MinkowskiNonlinearity": "minkseg.sparse.pointwise",
    "MinkowskiNormalization": "minkseg.sparse.pointwise",
    "MinkowskiNetwork": "minkseg.sparse.pointwise",
    "MinkowskiOps": "minkseg.sparse.pointwise",
    "MinkowskiFunctional": "minkseg.sparse.functional",
    "MinkowskiBroadcast": "minkseg.sparse.broadcast",
    "MinkowskiPruning": "minkseg.sparse.structure",
    "MinkowskiUnion": "minkseg.sparse.structure",
    "modules": "minkseg.sparse.modules",
    "modules.resnet_block": "minkseg.sparse.modules.resnet_block",
    "modules.senet_block": "minkseg.sparse.modules.senet_block",
    "MinkowskiCommon": "minkseg.sparse.kernel",
    "MinkowskiChannelwiseConvolution": "minkseg.sparse.channelwise",
    "MinkowskiInterpolation": "minkseg.sparse.functions",
    "sparse_matrix_functions": "minkseg.sparse.functions",
    "utils": "minkseg.sparse.utils",
}
_PACKAGE = "MinkowskiEngine"


def _target(fullname: str) -> str | None:
    if fullname == _PACKAGE:
        return "minkseg.sparse"
    if fullname.startswith(_PACKAGE + "."):
        fullname = fullname[len(_PACKAGE) + 1:]
    if fullname in ME_MODULES:
        return ME_MODULES[fullname]
    if fullname.startswith("utils."):  # ME's utils.collation, utils.quantization, ... all live in one module here
        return ME_MODULES["utils"]
    return None


_UTILS_SUBMODULES = ("collation", "coords", "gradcheck", "init", "quantization", "summary")


def _children(name: str) -> list[str]:
    """The ME submodule names under an aliased package name (``MinkowskiEngine``, ``utils``, ``modules``, ...)."""
    inner = name[len(_PACKAGE) + 1:] if name.startswith(_PACKAGE + ".") else ("" if name == _PACKAGE else name)
    if inner == "" and name == _PACKAGE:
        return [f"{_PACKAGE}.{m}" for m in ME_MODULES]
    if inner == "utils":
        return [f"{name}.{m}" for m in _UTILS_SUBMODULES]
    if inner == "modules":
        return [f"{name}.{m.split('.', 1)[1]}" for m in ME_MODULES if m.startswith("modules.")]
    return []


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.alias = ""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        self.alias = spec.name
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed. Register the package's ME submodule names right away: imported
        later one by one, each would be set as an attribute of its parent (Python does that on first import) and
        replace a class or function of the same name (``MinkowskiEngine.MinkowskiConvolution``,
        ``utils.summary``); found in ``sys.modules``, nothing is set."""
        _register_children(self.alias)


def _register_children(name: str) -> None:
    for child in _children(name):
        target = _target(child)
        if target is not None and child not in sys.modules:
            sys.modules[child] = importlib.import_module(target)
            _register_children(child)  # MinkowskiEngine.utils -> MinkowskiEngine.utils.summary, ...


class _AliasFinder(importlib.abc.MetaPathFinder):
    """``package=True``: ``MinkowskiEngine`` and its submodules (first on ``sys.meta_path``). ``package=False``: ME's
    top-level module names (``MinkowskiOps``, ``utils.gradcheck``, ...), last on ``sys.meta_path``, the way ME
    appends its folder to ``sys.path``: a module of the same name anywhere on the path wins."""

    def __init__(self, package: bool) -> None:
        self.package = package

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 (importlib's protocol)
        if (fullname.split(".")[0] == _PACKAGE) != self.package:
            return None
        module = _target(fullname)
        if module is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(module),
                                               is_package=fullname in (_PACKAGE, f"{_PACKAGE}.modules", "modules",
                                                                       "utils", f"{_PACKAGE}.utils"))


_finders: list[_AliasFinder] = []


def installed() -> bool:
    return bool(_finders) and all(f in sys.meta_path for f in _finders)


def install() -> bool:
    """Make ``import MinkowskiEngine`` resolve to minkseg.sparse; False (and a warning) when a real
    MinkowskiEngine is importable, which is then left alone."""
    if installed():
        return True
    if importlib.util.find_spec(_PACKAGE) is not None:
        warnings.warn("a real MinkowskiEngine is installed; the minkseg alias is not installed and ME code will use "
                      "the real one", stacklevel=2)
        return False
    # first: ``MinkowskiEngine.utils`` must be this alias, not a second copy of minkseg/sparse/utils.py that the path
    # finder would load from the aliased package's folder
    _finders[:] = [_AliasFinder(package=True), _AliasFinder(package=False)]
    sys.meta_path.insert(0, _finders[0])
    sys.meta_path.append(_finders[1])
    return True


def uninstall() -> None:
    """Remove the alias and forget the modules imported through it."""
    for finder in _finders:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
    _finders.clear()
    top_level = set(ME_MODULES) | {"utils"}
    for name in [n for n in sys.modules if n == _PACKAGE or n.startswith(_PACKAGE + ".") or n in top_level
                 or n.startswith("utils.")]:
        if getattr(sys.modules[name], "__name__", "").startswith("minkseg."):
            del sys.modules[name]


def main(argv: list[str] | None = None) -> int:
    """``python -m minkseg.sparse.alias script.py args`` / ``-m module args``: run with the alias installed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m minkseg.sparse.alias SCRIPT [ARGS...] | -m MODULE [ARGS...]\n"
              "Runs MinkowskiEngine code unchanged on minkseg.sparse (import MinkowskiEngine resolves to it).")
        return 0 if argv else 2
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print("minkseg.sparse.alias: -m needs a module name", file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
