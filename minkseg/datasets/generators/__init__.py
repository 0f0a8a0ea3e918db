"""Generators of the synthetic stand-in datasets (rooms in ScanNet's layout, streets in Synthia4D's archive format);
used by :mod:`minkseg.datasets.synthetic_scannet` and :mod:`minkseg.datasets.synthetic_synthia4d`."""
