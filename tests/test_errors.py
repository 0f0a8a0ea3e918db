"""One home per error: every MinkSeg error class is defined in minkseg/errors.py, once."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import minkseg
from minkseg import errors

PACKAGE = Path(minkseg.__file__).resolve().parent
# The sparse engine mirrors MinkowskiEngine's API, whose own error class it keeps (not a user-facing MinkSeg error).
ME_API_ERRORS = {"sparse/tensor_base.py": {"CoordinatesMismatchError"}}


def _defined_error_classes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and not node.name.startswith("_"):
                if node.name not in ME_API_ERRORS.get(relative, set()):
                    found.setdefault(node.name, []).append(relative)
    return found


def test_every_error_class_is_defined_once_in_errors_py():
    defined = _defined_error_classes()
    assert {name: files for name, files in defined.items() if files != ["errors.py"]} == {}
    assert sorted(defined) == sorted(errors.__all__)


def test_public_reexports_are_the_same_classes():
    import minkseg.atomic
    import minkseg.config
    import minkseg.data.extract
    import minkseg.data.scenefile
    import minkseg.engine.trainer
    import minkseg.weights
    import minkseg.metrics
    import minkseg.nn
    import minkseg.pipeline.lineage

    assert minkseg.nn.CheckpointError is minkseg.weights.CheckpointError is errors.CheckpointError
    assert minkseg.nn.ModelError is errors.ModelError and minkseg.engine.trainer.EngineError is errors.EngineError
    assert minkseg.data.scenefile.DataError is errors.DataError and minkseg.config.ConfigError is errors.ConfigError
    assert minkseg.metrics.MetricsError is errors.MetricsError
    assert minkseg.atomic.AtomicWriteError is errors.AtomicWriteError
    assert minkseg.pipeline.lineage.StaleInputError is errors.StaleInputError
    assert minkseg.data.extract.CorruptArchiveError is errors.CorruptArchiveError


@pytest.mark.parametrize("family", [errors.ModelError, errors.EngineError, errors.MinkSegError, ValueError,
                                    RuntimeError])
def test_one_checkpoint_error_is_caught_by_every_family_that_meant_it(family):
    """The network layer (weight import) and the engine (resume, model file) raise the same class, so a caller
    catching either family -- or the built-in base the old classes had -- still catches it."""
    with pytest.raises(family):
        raise errors.CheckpointError("models/model.pt: refused to load")


def test_every_error_is_a_minkseg_error_the_stages_print_as_one_line():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.MinkSegError)
    assert str(errors.AtomicWriteError(28, "cannot write x: No space left on device")) == \
        "cannot write x: No space left on device"
    assert errors.CorruptArchiveError("a.tar: truncated", "unexpected end of data").detail == "unexpected end of data"
