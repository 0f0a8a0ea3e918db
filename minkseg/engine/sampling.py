"""Data order and per-sample randomness as pure functions of (seed, epoch, index).

Resuming a killed run must reproduce the uninterrupted run bit for bit. PyTorch's usual loaders make that
impossible: the shuffle and every worker's augmentation RNG are drawn from global state at the moment an
iterator is created, which is a different moment after a resume. Here the order of epoch ``e`` is
``permutation(seed, e)``, sharded across DDP ranks like DistributedSampler (padded so every rank gets the same
number of batches), and each sample is produced under RNGs seeded from ``(seed, epoch, index)``. The only data
state a checkpoint then needs is the number of batches consumed; resuming skips to that batch without loading
anything, and the result no longer depends on the number of loader workers.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

log = logging.getLogger(__name__)

__all__ = ["sample_seed", "EpochOrder", "ResumableBatchSampler", "SeededDataset", "ShardSampler",
           "limit_batch_points"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch, independent of where or when it is loaded."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochOrder:
    """This rank's sample indices for any epoch: a seeded permutation, padded and strided across ranks."""

    def __init__(self, dataset_len: int, seed: int, *, shuffle: bool = True, world_size: int = 1,
                 rank: int = 0) -> None:
        if dataset_len <= 0:
            raise ValueError("the training set is empty; check the dataset split and the voxelize stage's outputs")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.dataset_len = dataset_len
        self.seed = seed
        self.shuffle = shuffle
        self.world_size = world_size
        self.rank = rank
        self.per_rank = math.ceil(dataset_len / world_size)

    def indices(self, epoch: int) -> list[int]:
        """The ``per_rank`` indices this rank visits in ``epoch``, in order."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.dataset_len)
        else:
            order = np.arange(self.dataset_len)
        total = self.per_rank * self.world_size
        if total > self.dataset_len:  # repeat the head so that every rank has the same number of batches
            order = np.concatenate([order, np.resize(order, total - self.dataset_len)])
        return order[self.rank:total:self.world_size].tolist()


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, sample_seed)`` for one epoch, starting at a given batch (see :meth:`set_position`)."""

    def __init__(self, order: EpochOrder, batch_size: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch size must be > 0 (got {batch_size})")
        self.order = order
        self.batch_size = batch_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.order.per_rank / self.batch_size)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """The next ``iter()`` yields epoch ``epoch`` from batch ``start_batch`` on."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start batch {start_batch} outside an epoch of {self.batches_per_epoch} batches")
        self.epoch = epoch
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self.order.indices(self.epoch)
        for batch in range(self.start_batch, self.batches_per_epoch):
            chunk = indices[batch * self.batch_size:(batch + 1) * self.batch_size]
            yield [(index, sample_seed(self.order.seed, self.epoch, index)) for index in chunk]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class SeededDataset(Dataset):
    """Loads ``dataset[index]`` with python/numpy/torch(CPU) RNGs seeded from the sampler's per-sample seed.

    Augmentations may use the global RNGs; the caller's RNG states are restored afterwards, so loading in the
    main process (num_workers=0) leaves training randomness (dropout, ...) exactly as with worker processes.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        try:
            random.seed(seed)
            np.random.seed(seed)
            torch.random.default_generator.manual_seed(seed)
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order, without padding: evaluation must see every scene once."""

    def __init__(self, dataset_len: int, world_size: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, dataset_len, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _name(sample: Any) -> str:
    return str(sample.get("name", "?")) if isinstance(sample, dict) else "?"


def _num_points(sample: Any) -> int:
    coordinates = sample["coordinates"] if isinstance(sample, dict) else sample[0]
    return int(len(coordinates))


class limit_batch_points:  # noqa: N801 - used like a function wrapper
    """Wrap a collate function so a batch never exceeds ``limit`` points (the paper's train_limit_numpoints).

    Scenes are kept in order while the running total fits; the first scene is always kept so that an oversized
    scene still trains instead of stalling the run. Samples are dicts with "coordinates" (or tuples whose first
    item is the coordinates). A class rather than a closure so it pickles into loader worker processes.
    """

    def __init__(self, collate_fn: Any, limit: int) -> None:
        self.collate_fn = collate_fn
        self.limit = limit
        self._warned: set[str] = set()  # say it once per scene (and once for truncation), not every epoch

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def __call__(self, samples: Sequence[Any]) -> Any:
        if self.limit > 0:
            kept, total = [], 0
            for sample in samples:
                count = _num_points(sample)
                if count > self.limit:
                    name = _name(sample)
                    self._warn_once(f"scene:{name}", "scene %s has %d voxels, more than train.train_limit_numpoints "
                                    "(%d); it is trained alone in its batch", name, count, self.limit)
                if kept and total + count > self.limit:
                    self._warn_once("truncated", "batches are cut to stay within train.train_limit_numpoints (%d "
                                    "voxels), e.g. %d of %d scenes kept; the others are left out of that batch",
                                    self.limit, len(kept), len(samples))
                    break
                kept.append(sample)
                total += count
            samples = kept
        return self.collate_fn(list(samples))
