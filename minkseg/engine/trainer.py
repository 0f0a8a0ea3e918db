"""The training loop shared by 3D and 4D models, one process or many.

Iteration-based (like the paper: 120k steps, not epochs), with the whole run state -- weights, optimizer, grad
scaler, every RNG, the position in the data order, best-so-far weights and the training curves -- written to a
checkpoint directory atomically every ``checkpoint_every`` steps, so that a killed run resumes to bit-identical
final weights on CPU. The engine knows nothing about sparse tensors except through ``input_builder`` (a batch
dict -> model input); the default builds a ``minkseg.sparse.SparseTensor`` and imports that module lazily.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from minkseg.atomic import atomic_write_text
from minkseg.config import Params, TrainParams, speed_only_keys
from minkseg.engine import distributed
from minkseg.engine.rng import rng_state, set_rng_state
from minkseg.errors import EngineError
from minkseg.engine.losses import SegmentationLoss
from minkseg.engine.runtime import balance_threads, configure_cpu_runtime
from minkseg.engine.sampling import EpochOrder, ResumableBatchSampler, SeededDataset, ShardSampler, limit_batch_points
from minkseg.engine.schedules import make_schedule, set_learning_rate
from minkseg.metrics import confusion_matrix, summarize
from minkseg.weights import CheckpointStore, load_weights

__all__ = ["Trainer", "TrainResult", "CURVE_FILES", "sparse_input", "logits_of", "resolve_device", "seed_everything",
           "configure_determinism", "rng_guard", "unwrap", "write_curves"]

log = logging.getLogger(__name__)

# torch's BatchNorm refusal of a single value per channel in training mode (a one-voxel coarsest level).
_BATCH_NORM_NEEDS_TWO = "Expected more than 1 value per channel when training"


InputBuilder = Callable[[Mapping[str, Any], torch.device], Any]


def sparse_input(batch: Mapping[str, Any], device: torch.device) -> Any:
    """Default input builder: ``SparseTensor(features, coordinates)`` from a collated batch dict."""
    import minkseg.sparse as ME  # lazy: the engine must import without the sparse engine being built

    coordinates = torch.as_tensor(batch["coordinates"]).to(device=device, dtype=torch.int32)
    features = torch.as_tensor(batch["features"]).to(device=device, dtype=torch.float32)
    return ME.SparseTensor(features=features, coordinates=coordinates)


def logits_of(output: Any) -> torch.Tensor:
    """Per-voxel logits ``[N, C]`` from a model output (a SparseTensor's ``.F`` or a plain tensor)."""
    logits = getattr(output, "F", output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise EngineError(f"the model must return per-voxel logits [N, num_classes] (a SparseTensor or tensor), "
                          f"got {type(output).__name__}")
    return logits


def resolve_device(requested: str | torch.device, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when visible else CPU; ``cuda`` without a GPU is an error, not a silent fallback."""
    if isinstance(requested, torch.device):
        return requested
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EngineError("base.device is cuda but no CUDA device is visible to PyTorch; set base.device: cpu "
                              "(or auto), or install a CUDA build of torch")
        return torch.device("cuda", local_rank if requested == "cuda" else torch.device(requested).index)
    if requested != "cpu":
        raise EngineError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) -- call before building the model."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def configure_determinism(enabled: bool) -> None:
    """Deterministic kernels where PyTorch has them (warn, not fail, where it does not)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is not None and "torch._inductor" not in sys.modules:
        # torch.use_deterministic_algorithms imports the whole torch.compile stack (torch._inductor, 2-10 s of a
        # stage's start-up on a 2-core machine) only to copy the flag into the compiler's config; nothing here
        # compiles, so set the kernels' flag alone. The compiler, if imported later, keeps its own default.
        set_flag(enabled, warn_only=True)
    else:
        torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


@contextlib.contextmanager
def rng_guard() -> Iterator[None]:
    """Run a block (validation) without disturbing the training RNG streams."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in unwrap(model).state_dict().items()}


def _csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in fields})
    return buffer.getvalue()


CURVE_FILES = {"train": ("train.csv", ["step", "loss", "lr"]),
               "val": ("val.csv", ["step", "miou", "oa", "macc"]),
               "val_subset": ("val_subset.csv", ["step", "miou", "oa", "macc"])}
"""Curve name -> (file in the curves directory, columns): what `dvc plots` draws."""


def write_curves(directory: str | Path, curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[Path]:
    """Training curves as ``train.csv`` (step, loss, lr), ``val.csv`` (full validations) and ``val_subset.csv``
    (the cheap validations on a fixed subset of scenes), each ``step, miou, oa, macc``, for `dvc plots`."""
    directory = Path(directory)
    return [atomic_write_text(directory / name, _csv_text(curves.get(key, []), columns))
            for key, (name, columns) in CURVE_FILES.items()]


def _out_of_memory(when: str, batch: Mapping[str, Any], fix: str) -> EngineError:
    """One line naming the scenes of the batch that did not fit and the params that shrink it.

    Why not retry with half the batch: that would change the gradient of that step and break the guarantee that
    the same params give the same weights; the user chooses the smaller batch in params.yaml instead.
    """
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    names = [str(name) for name in batch.get("names") or []]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    voxels = len(batch["coordinates"]) if "coordinates" in batch else "?"
    scenes = f" from scenes {shown}" if names else ""
    return EngineError(f"out of memory {when} on a batch of {voxels} voxels{scenes}; {fix}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` hands back; ``best_state`` is the weights to ship (last ones without validation)."""

    best_state: dict[str, torch.Tensor]
    last_state: dict[str, torch.Tensor]
    best_miou: float | None
    best_iteration: int | None
    iterations: int
    resumed_from: int | None
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tracking_run_id: str | None = None


class Trainer:
    """Train a segmentation model on collated batch dicts.

    Batches are dicts with ``coordinates`` (int32 ``[N, 1 + D]``, batch index first), ``features`` (float32
    ``[N, C]``) and ``labels`` (int64 ``[N]``, ``ignore_label`` for unannotated voxels). The trainer builds its own
    loaders from ``train_dataset`` / ``val_dataset`` + ``collate_fn`` because the data order must be a pure
    function of (seed, epoch) for exact resumption (see :mod:`minkseg.engine.sampling`). Call inside a torchrun
    process group for DDP; the model is wrapped and the data sharded automatically.

    Arguments beyond the obvious: ``input_builder(batch, device)`` makes the model input (default: a
    ``minkseg.sparse.SparseTensor``); the model returns logits ``[N, num_classes]`` as a tensor or a
    SparseTensor. ``checkpoint_dir`` holds ``last.pt``/``best.pt`` and is resumed from when its fingerprint
    (``fingerprint`` -- e.g. ``Params.fingerprint()`` -- plus seed, class count, dataset size and world size)
    matches. ``curves_dir`` receives the :data:`CURVE_FILES`. ``tracker`` is a :class:`Tracker` or a factory
    ``run_id | None -> Tracker`` (called in :meth:`fit` with the run id of a resumed checkpoint).
    ``on_iteration_end(iteration)`` is a hook (tests use it to simulate a kill).
    """

    def __init__(
        self,
        model: nn.Module,
        params: TrainParams,
        *,
        train_dataset: Any,
        collate_fn: Callable[[list[Any]], Mapping[str, Any]],
        num_classes: int,
        seed: int,
        device: str | torch.device = "cpu",
        val_dataset: Any = None,
        val_collate_fn: Callable[[list[Any]], Mapping[str, Any]] | None = None,
        input_builder: InputBuilder | None = None,
        ignore_label: int = 255,
        class_names: Sequence[str] | None = None,
        checkpoint_dir: str | Path | None = None,
        curves_dir: str | Path | None = None,
        tracker: Any = None,
        fingerprint: str | None = None,
        progress: bool = True,
        on_iteration_end: Callable[[int], None] | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        self.params = params
        self.resolved_class_weights = class_weights  # what train.class_weights 'balanced' became for this data
        self.dist = distributed.current()
        self.device = resolve_device(device, self.dist.local_rank)
        self.num_classes = num_classes
        self.seed = seed
        self.ignore_label = ignore_label
        self.class_names = list(class_names) if class_names is not None else None
        self.input_builder = input_builder or sparse_input
        self.store = CheckpointStore(checkpoint_dir) if checkpoint_dir is not None else None
        self.curves_dir = Path(curves_dir) if curves_dir is not None else None
        # A tracker, or a factory called in fit() with the MLflow run id of a resumed checkpoint (else None),
        # so that a resumed training keeps logging into the run it started.
        self._tracker_factory = tracker if tracker is not None and not hasattr(tracker, "log_metrics") else None
        self.tracker = tracker if self.dist.is_main and self._tracker_factory is None else None
        self.progress = progress and self.dist.is_main
        self.on_iteration_end = on_iteration_end
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise EngineError(f"{len(self.class_names)} class names for {num_classes} classes")

        configure_determinism(params.deterministic)
        self.amp = self._resolve_amp(params.amp)
        self.model = model.to(self.device)
        self.optimizer = self._build_optimizer(self.model)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.schedule = make_schedule(
            params.scheduler, params.iterations, poly_power=params.poly_power, step_size=params.step_size,
            step_gamma=params.step_gamma, pct_start=params.onecycle_pct_start,
            div_factor=params.onecycle_div_factor, final_div_factor=params.onecycle_final_div_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.criterion = SegmentationLoss(ignore_label, self._class_weights(), params.lovasz_weight).to(self.device)
        if self.dist.is_distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.train_dataset = train_dataset
        if len(train_dataset) == 0:
            raise EngineError("the training set is empty; check the train split and the preprocess stage's output")
        self.order = EpochOrder(len(train_dataset), seed, world_size=self.dist.world_size, rank=self.dist.rank)
        self.batch_sampler = ResumableBatchSampler(self.order, params.batch_size)
        collate = limit_batch_points(collate_fn, params.train_limit_numpoints)
        self.train_loader = DataLoader(
            SeededDataset(train_dataset), batch_sampler=self.batch_sampler, collate_fn=collate,
            num_workers=params.num_workers, persistent_workers=params.num_workers > 0,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(seed))
        self.val_loader = None
        self.val_subset_loader = None
        if val_dataset is not None:
            if len(val_dataset) == 0:
                raise EngineError("the validation set is empty; check the dataset split or pass no val_dataset")
            self.val_loader = self._val_loader(val_dataset, val_collate_fn or collate_fn)
            if params.val_subset_every:
                # The first scenes, always the same ones, so that the points of the curve compare with each other.
                subset = Subset(val_dataset, range(min(params.val_subset_scenes, len(val_dataset))))
                self.val_subset_loader = self._val_loader(subset, val_collate_fn or collate_fn)
        self.fingerprint = self._fingerprint(fingerprint)

        self.iteration = 0
        self.batches_seen = 0
        self.best_miou: float | None = None
        self.best_iteration: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.curves: dict[str, list[dict[str, Any]]] = {key: [] for key in CURVE_FILES}
        self._resumed_run_id: str | None = None

    @classmethod
    def from_params(cls, params: Params, model: nn.Module, **kwargs: Any) -> "Trainer":
        """A trainer configured from the whole params.yaml (seed, device, ignore label, fingerprint, threads)."""
        configure_cpu_runtime(params.base.num_threads)
        kwargs.setdefault("seed", params.base.seed)
        kwargs.setdefault("device", params.base.device)
        kwargs.setdefault("ignore_label", params.base.ignore_label)
        kwargs.setdefault("fingerprint", params.fingerprint())
        return cls(model, params.train, **kwargs)

    # -- construction helpers -------------------------------------------------------------------------------

    def _val_loader(self, dataset: Any, collate_fn: Callable[[list[Any]], Mapping[str, Any]]) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.params.val_batch_size,
            sampler=ShardSampler(len(dataset), self.dist.world_size, self.dist.rank),
            collate_fn=collate_fn, num_workers=self.params.num_workers,
            persistent_workers=self.params.num_workers > 0, pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed))

    def _resolve_amp(self, amp: str) -> str:
        if amp == "none":
            return amp
        if self.device.type != "cuda":
            warnings.warn(f"train.amp: {amp} needs CUDA; training in float32 on {self.device}", stacklevel=3)
            return "none"
        if amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise EngineError("train.amp: bf16 is not supported by this GPU; use fp16 or none")
        return amp

    def _build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        p = self.params
        if p.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, dampening=p.dampening,
                                   weight_decay=p.weight_decay)
        return torch.optim.AdamW(model.parameters(), lr=p.lr, betas=tuple(p.adamw_betas),
                                 weight_decay=p.weight_decay)

    def _class_weights(self) -> torch.Tensor | None:
        weights = self.resolved_class_weights if self.resolved_class_weights is not None else self.params.class_weights
        if weights is None:
            return None
        if weights == "balanced":
            raise EngineError("train.class_weights: 'balanced' needs the training data's label counts; pass "
                              "class_weights= (see minkseg.data.balanced_class_weights)")
        if len(weights) != self.num_classes:
            raise EngineError(f"train.class_weights: has {len(weights)} values but the dataset has "
                              f"{self.num_classes} classes; give one weight per class or null")
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def _fingerprint(self, user: str | None) -> str:
        # What must match for a checkpoint to be resumed: the caller's params hash plus the run's shape.
        payload = {
            "user": user if user is not None else self.params.model_dump(mode="json", exclude=speed_only_keys("train")),
            "seed": self.seed,
            "num_classes": self.num_classes,
            "train_len": len(self.train_dataset),
            "world_size": self.dist.world_size,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # -- data -----------------------------------------------------------------------------------------------

    def _batches(self) -> Iterator[Mapping[str, Any]]:
        """Endless batches starting at ``batches_seen``; the epoch and offset follow from that count alone."""
        per_epoch = self.batch_sampler.batches_per_epoch
        epoch, offset = divmod(self.batches_seen, per_epoch)
        while True:
            self.batch_sampler.set_position(epoch, offset)
            yield from self.train_loader
            epoch, offset = epoch + 1, 0

    # -- one step -------------------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _labels(self, batch: Mapping[str, Any]) -> torch.Tensor:
        labels = torch.as_tensor(batch["labels"]).to(torch.int64).reshape(-1)
        valid = labels[labels != self.ignore_label]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.num_classes):
            raise EngineError(f"a batch has label {int(valid.max())} but the model predicts {self.num_classes} "
                              f"classes (ignore label {self.ignore_label}); check the dataset's label mapping")
        return labels.to(self.device, non_blocking=True)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] != labels.shape[0]:
            raise EngineError(f"the model returned {logits.shape[0]} rows for {labels.shape[0]} labelled voxels; "
                              "its output must keep the input coordinates (tensor stride 1)")
        if logits.shape[1] != self.num_classes:
            raise EngineError(f"the model outputs {logits.shape[1]} classes but the dataset has {self.num_classes}")
        if not bool((labels != self.ignore_label).any()):
            return logits.sum() * 0.0  # nothing annotated: a zero loss that still touches every parameter (DDP)
        return self.criterion(logits.float(), labels)

    def _skip_tiny_batch(self, batch: Mapping[str, Any]) -> None:
        """A batch whose coarsest level holds one voxel (a tiny scene alone in its batch) cannot be batch-normalised
        in training mode. One process skips it (a warning names the scenes; the layers before the failing batch norm
        have already counted it in their running statistics, identically in every run). Under DDP skipping on one
        rank would hang the others in the gradient all-reduce, so there it is a clear error instead."""
        names = ", ".join(str(name) for name in batch.get("names") or []) or "?"
        voxels = len(batch["coordinates"]) if "coordinates" in batch else "?"
        what = (f"iteration {self.iteration + 1}: a batch of {voxels} voxels from scenes {names} has too few voxels "
                "for batch norm at the network's coarsest level")
        if self.dist.is_distributed:
            raise EngineError(f"{what}; raise train.batch_size or lower voxelize.voxel_size")
        log.warning("%s; skipped it (raise train.batch_size or lower voxelize.voxel_size if this repeats)", what)

    def _step(self, batches: Iterator[Mapping[str, Any]]) -> torch.Tensor | None:
        """One optimizer step over ``grad_accum`` batches; returns the summed loss, or None when every batch of the
        step had to be skipped (then the weights do not change)."""
        accum = self.params.grad_accum
        step_loss = torch.zeros((), device=self.device)
        used = 0
        for micro in range(accum):
            batch = next(batches)
            self.batches_seen += 1
            sync = (self.model.no_sync() if isinstance(self.model, nn.parallel.DistributedDataParallel)
                    and micro < accum - 1 else contextlib.nullcontext())
            with sync:
                labels = self._labels(batch)
                try:
                    with self._autocast():
                        output = self.model(self.input_builder(batch, self.device))
                    loss = self._loss(logits_of(output), labels) / accum
                    self.scaler.scale(loss).backward()
                except torch.OutOfMemoryError:
                    raise _out_of_memory(f"in iteration {self.iteration + 1}", batch,
                                         "lower train.batch_size or train.train_limit_numpoints (or raise "
                                         "voxelize.voxel_size), then re-run") from None
                except ValueError as exc:
                    if _BATCH_NORM_NEEDS_TWO not in str(exc):
                        raise
                    self._skip_tiny_batch(batch)
                    continue
            step_loss += loss.detach()
            used += 1
        if used == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        if not torch.isfinite(step_loss):
            raise EngineError(f"the training loss became {float(step_loss)} at iteration {self.iteration + 1}; "
                              "lower train.lr, or set train.amp: none if mixed precision is on")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        balance_threads()
        return step_loss

    # -- validation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, subset: bool = False) -> dict[str, Any]:
        """Voxel-level metrics on the validation set, or on its fixed subset (confusion matrices summed over
        ranks). Runs in eval mode under :func:`rng_guard`, so it changes neither the weights, the batch-norm
        statistics nor the random streams of the training: validating more often never changes the result."""
        loader = self.val_subset_loader if subset else self.val_loader
        if loader is None:
            raise EngineError("validate() needs a val_dataset" + (" and train.val_subset_every > 0" if subset else ""))
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        with rng_guard():
            for batch in loader:
                labels = self._labels(batch)
                try:
                    with self._autocast():
                        logits = logits_of(model(self.input_builder(batch, self.device)))
                except torch.OutOfMemoryError:
                    raise _out_of_memory(f"validating after iteration {self.iteration}", batch,
                                         "lower train.val_batch_size (or raise voxelize.voxel_size), then re-run") \
                        from None
                confusion += confusion_matrix(labels, logits.argmax(dim=1), self.num_classes, self.ignore_label)
                balance_threads()
        model.train(was_training)
        confusion = distributed.all_reduce_array(confusion)
        return summarize(confusion, self.class_names)

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _state(self, rng: list[Any]) -> dict[str, Any]:
        return {
            "format": "minkseg-train-v1",
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "data": {"batches_seen": self.batches_seen, "batches_per_epoch": self.batch_sampler.batches_per_epoch,
                     "seed": self.seed, "world_size": self.dist.world_size},
            "model": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.params.scheduler, "iteration": self.iteration},
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "best": {"miou": self.best_miou, "iteration": self.best_iteration},
            "curves": self.curves,
            "tracking_run_id": getattr(self.tracker, "run_id", None),
        }

    def save_checkpoint(self) -> None:
        """Write ``last.pt`` (rank 0; every rank contributes its RNG state) and the curve files."""
        rng = distributed.all_gather_object(rng_state())
        if self.dist.is_main:
            if self.store is not None:
                self.store.save_last(self._state(rng))
            if self.curves_dir is not None:
                write_curves(self.curves_dir, self.curves)

    def _resume(self) -> int | None:
        if self.store is None:
            return None
        state = self.store.load_last()
        if state is None:
            return None
        if state.get("fingerprint") != self.fingerprint:
            if self.dist.is_main:
                log.warning("%s was written by a run with other params or data (fingerprint %s, now %s); "
                            "starting from scratch and replacing it", self.store.last_path,
                            state.get("fingerprint"), self.fingerprint)
            return None
        load_weights(unwrap(self.model), state["model"], self.params.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.batches_seen = int(state["data"]["batches_seen"])
        self.best_miou = state["best"]["miou"]
        self.best_iteration = state["best"]["iteration"]
        self.curves = {key: list(state["curves"].get(key, [])) for key in CURVE_FILES}
        best = self.store.load_best()
        if best is not None and self.best_iteration is not None:
            if best.get("meta", {}).get("fingerprint") != self.fingerprint:
                raise EngineError(f"{self.store.best_path} does not belong to {self.store.last_path} (another run "
                                  "wrote it); delete the checkpoint directory to start over")
            self.best_state = dict(best["model"])
        set_rng_state(state["rng"][self.dist.rank])
        self._resumed_run_id = state.get("tracking_run_id")
        return self.iteration

    # -- the loop -------------------------------------------------------------------------------------------

    def _log_train(self, loss_sum: torch.Tensor, count: int, lr: float) -> None:
        reduced = distributed.all_reduce_sum(torch.stack([loss_sum.double().cpu(), torch.tensor(float(count),
                                                                                                dtype=torch.float64)]))
        if float(reduced[1]) == 0:  # every step of the window was skipped: no loss to report
            return
        loss = float(reduced[0] / reduced[1])
        row = {"step": self.iteration, "loss": loss, "lr": lr}
        self.curves["train"].append(row)
        if self.tracker is not None:
            self.tracker.log_metrics({"train/loss": loss, "train/lr": lr}, step=self.iteration)

    def _record_validation(self, curve: str, metrics: Mapping[str, Any]) -> None:
        row = {"step": self.iteration, "miou": metrics["miou"], "oa": metrics["oa"], "macc": metrics["macc"]}
        self.curves[curve].append(row)
        if self.tracker is not None:
            self.tracker.log_metrics({f"{curve}/{key}": value for key, value in row.items()
                                      if key != "step" and value is not None and math.isfinite(value)},
                                     step=self.iteration)

    def _run_validation(self) -> dict[str, Any]:
        metrics = self.validate()
        miou = metrics["miou"]
        self._record_validation("val", metrics)
        if not math.isnan(miou) and (self.best_miou is None or miou > self.best_miou):
            self.best_miou, self.best_iteration = miou, self.iteration
            self.best_state = _cpu_state(self.model)
            if self.dist.is_main and self.store is not None:
                self.store.save_best(self.best_state, {"iteration": self.iteration, "miou": miou,
                                                       "fingerprint": self.fingerprint})
        return metrics

    def fit(self) -> TrainResult:
        """Train to ``params.iterations`` (resuming from the checkpoint directory when it fits) and return weights."""
        p = self.params
        resumed_from = self._resume()
        if self._tracker_factory is not None and self.dist.is_main:
            self.tracker = self._tracker_factory(self._resumed_run_id if resumed_from is not None else None)
        if resumed_from is None:
            seed_everything(int(np.random.SeedSequence([self.seed, self.dist.rank]).generate_state(1)[0]))
        elif self.dist.is_main:
            log.info("resuming from %s at iteration %d", self.store.last_path, resumed_from)
        self.model.train()
        batches = self._batches()
        window_loss = torch.zeros((), device=self.device)
        window_count = 0
        bar = tqdm(total=p.iterations, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True,
                   mininterval=1.0, disable=not self.progress)
        try:
            while self.iteration < p.iterations:
                lr = set_learning_rate(self.optimizer, self.base_lrs, self.schedule(self.iteration))
                loss = self._step(batches)
                self.iteration += 1
                if loss is not None:
                    window_loss += loss
                    window_count += 1
                last = self.iteration == p.iterations
                if self.iteration % p.log_every == 0 or last:
                    self._log_train(window_loss, window_count, lr)
                    if self.curves["train"]:
                        bar.set_postfix(loss=f"{self.curves['train'][-1]['loss']:.4f}", lr=f"{lr:.2e}",
                                        refresh=False)
                    window_loss, window_count = torch.zeros((), device=self.device), 0
                if self.val_subset_loader is not None and (self.iteration % p.val_subset_every == 0 or last):
                    self._record_validation("val_subset", self.validate(subset=True))
                if self.val_loader is not None and ((p.val_every and self.iteration % p.val_every == 0) or last):
                    metrics = self._run_validation()
                    if self.progress:
                        bar.write(f"iteration {self.iteration}: val mIoU {metrics['miou']:.4f}")
                if (p.checkpoint_every and self.iteration % p.checkpoint_every == 0) or last:
                    self.save_checkpoint()
                bar.update(1)
                if self.on_iteration_end is not None:
                    self.on_iteration_end(self.iteration)
        finally:
            bar.close()
        if self.dist.is_main and self.curves_dir is not None:
            write_curves(self.curves_dir, self.curves)
        last_state = _cpu_state(self.model)
        best_state = self.best_state if self.best_state is not None else last_state
        return TrainResult(best_state=best_state, last_state=last_state, best_miou=self.best_miou,
                           best_iteration=self.best_iteration, iterations=self.iteration, resumed_from=resumed_from,
                           curves=copy.deepcopy(self.curves), tracking_run_id=getattr(self.tracker, "run_id", None))
