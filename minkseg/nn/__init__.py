"""minkseg.nn: the paper's networks (Res16UNet / MinkUNet family in 3-D and 4-D), the TS-CRF, the registry
that builds them by name, and the import of the original model zoo's weights.

Why the names below load on first use: ``minkseg.nn.specs`` (the network names, used to check params) must
be importable without torch, and importing it runs this file first.

Built on ``minkseg.sparse`` only (``import minkseg.sparse as ME``), like ME model code.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "build_model": "registry", "count_parameters": "registry",
    "list_models": "specs", "canonical_name": "specs", "aliases_of": "specs", "get_spec": "specs",
    "UNetSpec": "specs", "Res16UNet": "res16unet",
    "load_original_checkpoint": "checkpoint", "read_state_dict": "checkpoint", "to_original_order": "checkpoint",
    "BLOCK_KERNEL_ORDERS": "checkpoint",
    "MeanFieldCRF": "crf", "CRFWrapper": "crf", "wrap_with_crf": "crf",
}
_FROM_ERRORS = ("ModelError", "CheckpointError")

__all__ = [*_HOMES, *_FROM_ERRORS]


def __getattr__(name: str) -> Any:
    if name in _FROM_ERRORS:
        return getattr(importlib.import_module("minkseg.errors"), name)
    if name in _HOMES:
        return getattr(importlib.import_module(f"minkseg.nn.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'minkseg.nn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
