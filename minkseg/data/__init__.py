"""MinkSeg data layer: what every dataset shares -- PLY I/O (:mod:`.ply`), the on-disk formats each with its reader
and writer (:mod:`.scenefile`: preprocessed scenes + their manifest; :mod:`.evalfile`: voxelised evaluation samples),
the voxeliser (:mod:`.quantize`), augmentations (:mod:`.augment`), loaders and collate (:mod:`.datasets`,
:mod:`.collate`), class weights, and safe download and extraction (:mod:`.download`, :mod:`.extract`). The datasets
themselves are the registered modules of :mod:`minkseg.datasets`; the stages that drive these functions are
:mod:`minkseg.pipeline`.

Why this file imports nothing: a stage's DVC deps are exactly the modules it imports (tests/stage_deps.py reads
them from the import graph), and importing a submodule runs its package's ``__init__`` first. Re-exporting every
submodule here made the download stage depend on the training augmentations; import from the submodule instead.
"""
