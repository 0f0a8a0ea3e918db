"""The dataset registry: the one list of dataset names, filled by the dataset modules themselves.

Why a registry filled by a decorator (as Pointcept registers its datasets): a dataset is one module in this package
that puts ``@register_dataset`` on its class; nothing else lists it. ``params.yaml``'s ``base.dataset`` is checked
against :func:`dataset_names`, every stage asks :func:`build_dataset` for the object that answers its questions,
and a missing branch somewhere can no longer send one dataset down another's reader. The modules of this package
are imported on the first look-up, so a new file registers itself without being named anywhere.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from minkseg.errors import DataError

if TYPE_CHECKING:
    from minkseg.datasets.base import SegmentationDataset

__all__ = ["register_dataset", "dataset_class", "dataset_names", "build_dataset", "dataset_from_params",
           "option_groups"]

_REGISTRY: dict[str, type["SegmentationDataset"]] = {}
_NOT_DATASETS = {"base", "registry"}  # modules of this package that define no dataset
_T = TypeVar("_T", bound=type)


def register_dataset(cls: _T) -> _T:
    """Class decorator: make ``cls`` (a :class:`SegmentationDataset` with a ``name``) available by its name."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a class attribute `name` to be registered as a dataset")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise TypeError(f"dataset name {name!r} is registered twice ({_REGISTRY[name].__qualname__} and "
                        f"{cls.__qualname__})")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    """Import every dataset module of this package once (each registers its class on import)."""
    if getattr(_discover, "done", False):
        return
    package = Path(__file__).resolve().parent
    for module in pkgutil.iter_modules([str(package)]):
        if not module.ispkg and module.name not in _NOT_DATASETS:
            importlib.import_module(f"minkseg.datasets.{module.name}")
    _discover.done = True  # type: ignore[attr-defined]


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    _discover()
    return sorted(_REGISTRY)


def dataset_class(name: str) -> type["SegmentationDataset"]:
    """The class registered as ``name``; an unknown name is one :class:`DataError` listing the registered ones."""
    _discover()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DataError(f"unknown dataset {name!r}; {hint}set base.dataset to one of: "
                        f"{', '.join(dataset_names())}") from None


def build_dataset(name: str, options: Mapping[str, Any] | None = None) -> "SegmentationDataset":
    """The dataset ``name`` configured with its own params group (``download.<options_key>``, if it has one)."""
    return dataset_class(name)(options)


def dataset_from_params(params: Any) -> "SegmentationDataset":
    """The dataset ``base.dataset`` names, configured from its own params group if it declares one."""
    cls = dataset_class(params.base.dataset)
    options = None if cls.options_key is None else getattr(params.download, cls.options_key, None)
    return cls(options)


def option_groups() -> dict[str, tuple[str, Callable[[Any], Any]]]:
    """``{params key under download: (dataset name, validator)}`` for every dataset that declares options."""
    _discover()
    return {cls.options_key: (name, cls.Options.model_validate) for name, cls in sorted(_REGISTRY.items())
            if cls.options_key is not None and cls.Options is not None}
