"""The code each DVC stage runs, read from the import graph: what dvc.yaml's ``deps`` of that stage must list.

Why static (the source's ``import`` statements) rather than ``sys.modules`` after an import: the stages import much
of their code lazily, inside the function that needs it (so that ``check_params`` need not load torch), and which
lazy imports run depends on the dataset. Every ``import`` anywhere in a module counts, except those under
``if TYPE_CHECKING:`` (never executed). Two rules complete the graph: importing ``a.b.c`` runs ``a/__init__.py`` and
``a/b/__init__.py`` first, and the dataset registry imports every module of its package
(:func:`minkseg.datasets.registry._discover`), so reaching it reaches them all.

Run ``python tests/stage_deps.py`` to print the deps of every stage, in dvc.yaml's form: a folder whose every Python
file is needed is listed as the folder (it then also covers the package's data files, e.g. the split lists).
"""
from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "minkseg"
# Modules that import every module of their package by name at run time (importlib), so the graph cannot see them.
_DISCOVERS_PACKAGE = {"minkseg.datasets.registry": "minkseg.datasets"}


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` (``minkseg.data.ply``) in this checkout, or None if there is none."""
    base = REPO.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(path: Path) -> set[str]:
    """Every absolute module name an import statement of ``path`` names (function bodies included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # kept only where it is a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def code_files(script: Path) -> set[Path]:
    """Every file of this repository that running ``script`` may execute: the script and its import closure."""
    seen: set[Path] = set()
    todo = [script.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        modules: set[str] = set()
        for name in _imported_names(path):
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                modules.update(_with_parents(name))
        for name in list(modules):
            if name in _DISCOVERS_PACKAGE:
                package_dir = _module_file(_DISCOVERS_PACKAGE[name]).parent
                modules.update(_module_name(p) for p in package_dir.glob("*.py"))
        todo.extend(f for f in map(_module_file, modules) if f is not None and f not in seen)
    return seen


def _python_files(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*.py")}


def as_deps(files: set[Path]) -> list[str]:
    """``files`` in dvc.yaml's form: repository-relative paths, a package folder in place of all of its files."""
    deps: set[str] = set()
    covered: set[Path] = set()
    for folder in sorted({f.parent for f in files}, key=lambda p: len(p.parts)):
        if folder == REPO / PACKAGE or not folder.is_relative_to(REPO / PACKAGE) or \
                any(folder.is_relative_to(REPO / d) for d in deps):
            continue
        inside = _python_files(folder)
        if inside <= files:
            deps.add(str(folder.relative_to(REPO)))
            covered |= inside
    deps.update(str(f.relative_to(REPO)) for f in files - covered)
    return sorted(deps, key=lambda d: (not d.startswith("stages/"), d))


def expand(deps: list[str]) -> set[Path]:
    """dvc.yaml deps -> the Python files of this repository they cover (data deps and other files left out)."""
    files: set[Path] = set()
    for dep in deps:
        path = (REPO / dep).resolve()
        if path.is_dir():
            files |= _python_files(path)
        elif path.suffix == ".py":
            files.add(path)
    return files


def stage_script(cmd: str) -> Path:
    """``python stages/train.py`` -> the script's path."""
    [script] = [word for word in cmd.split() if word.endswith(".py")]
    return REPO / script


@functools.cache
def expected_deps() -> dict[str, list[str]]:
    """Every dvc.yaml stage -> the code deps it must list."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: as_deps(code_files(stage_script(stage["cmd"]))) for name, stage in stages.items()}


if __name__ == "__main__":
    for stage, deps in expected_deps().items():
        print(f"{stage}:")
        for dep in deps:
            print(f"      - {dep}")
    sys.exit(0)
