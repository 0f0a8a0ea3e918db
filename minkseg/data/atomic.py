"""Import path kept for the data modules of issue #14's other half (datasets branch); nothing is defined here.

Every all-or-nothing writer (files, numpy archives, whole directories) lives in :mod:`minkseg.atomic`. This
re-export lets data/prepare.py (edited on the datasets branch) keep importing from here until both halves are
merged; then its import moves to ``minkseg.atomic`` and this file goes.
"""
from minkseg.atomic import atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text, save_npz_atomic

__all__ = ["atomic_directory", "save_npz_atomic", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]
