"""MinkSeg: Minkowski CNNs for 3D/4D semantic segmentation, as a reproducible DVC pipeline."""
__version__ = "0.1.0"
