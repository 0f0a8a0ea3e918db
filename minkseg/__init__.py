"""MinkSeg: Minkowski CNNs for 3D/4D semantic segmentation, as a reproducible DVC pipeline."""
from minkseg.openmp_env import apply_openmp_defaults as _apply_openmp_defaults

# Before anything imports torch: libgomp reads its wait settings once, when torch loads it (minkseg/openmp_env.py).
_apply_openmp_defaults()

__version__ = "0.1.0"
