"""Training and evaluation engine: the loop, losses, schedules, checkpoints, DDP helpers, evaluation, export, tracking.

Layering: the engine imports minkseg.metrics/config/atomic and torch; it reaches minkseg.sparse only lazily
(through the default input builder). Trainer and evaluator never import minkseg.data or minkseg.nn at import time
-- models, datasets, collate and voxeliser are handed in by the stage functions; the Predictor, which rebuilds a
network and its voxeliser from a model file, imports them lazily when it loads one, and the evaluator's PLY export
and axis names come from minkseg.data lazily (one home each).
"""

from minkseg.errors import CheckpointError, EngineError
from minkseg.engine.evaluator import EvalResult, Evaluator, write_evaluation
from minkseg.engine.losses import SegmentationLoss, lovasz_softmax
from minkseg.engine.predictor import PointPrediction, Predictor
from minkseg.engine.trainer import TrainResult, Trainer, resolve_device, seed_everything

__all__ = ["CheckpointError", "EngineError", "EvalResult", "Evaluator", "PointPrediction", "Predictor",
           "SegmentationLoss", "TrainResult", "Trainer",
           "lovasz_softmax", "resolve_device", "seed_everything", "write_evaluation"]
