"""minkseg.datasets: one registered module per dataset.

To add a dataset, add ``minkseg/datasets/<name>.py`` with a :class:`SegmentationDataset` subclass decorated with
:func:`register_dataset` (see ``ply_folder.py`` for a complete small one); it is found by its ``name``, which is
then a valid ``base.dataset``. Settings of its own go into a pydantic ``Options`` model read from
``download.<options_key>`` in params.yaml. What every dataset shares (PLY I/O, the scene file format, split list
reading, download and extraction) lives in :mod:`minkseg.data`.
"""

from minkseg.datasets.base import RawReport, SegmentationDataset
from minkseg.datasets.registry import (build_dataset, dataset_class, dataset_from_params, dataset_names,
                                       option_groups, register_dataset)

__all__ = ["RawReport", "SegmentationDataset", "build_dataset", "dataset_class", "dataset_from_params",
           "dataset_names", "option_groups", "register_dataset"]
