"""Training and evaluation engine: the loop (:mod:`.trainer`), losses, schedules, sampling, DDP helpers
(:mod:`.distributed`), evaluation (:mod:`.evaluator`), prediction on new scans (:mod:`.predictor`), exports,
tracking (:mod:`.tracking`, :mod:`.mlflow_model`, :mod:`.provenance`), CPU runtime and RNG state.

Layering: the engine imports minkseg.metrics/config/atomic/weights and torch; it reaches minkseg.sparse only lazily
(through the default input builder). Trainer and evaluator never import minkseg.data or minkseg.nn at import time
-- models, datasets, collate and voxeliser are handed in by the stage functions (:mod:`minkseg.pipeline`); the
Predictor, which rebuilds a network and its voxeliser from a model file, imports them lazily when it loads one.
Nothing here imports minkseg.pipeline.

Why this file imports nothing: a stage's DVC deps are exactly the modules it imports (tests/stage_deps.py), and
importing any engine module runs this file first; re-exporting the trainer here made every user of the evaluator
depend on the training loop. Import from the submodule.
"""
