"""Tiny dense stand-ins for the engine tests: they exercise the real loop without minkseg.sparse/nn/data.

A "scene" is a handful of points whose label is the argmax of their first three features; the dataset adds
noise from the *global* numpy RNG (as augmentations do), and the network has dropout and optional batch norm,
so every source of randomness a real run has is present.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from minkseg.config import TrainParams

NUM_CLASSES = 3
NUM_FEATURES = 4


class ToyScenes(Dataset):
    def __init__(self, num_scenes: int, points: int = 48, seed: int = 0, augment: bool = True) -> None:
        self.num_scenes = num_scenes
        self.points = points
        self.seed = seed
        self.augment = augment

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, index])
        features = rng.normal(size=(self.points, NUM_FEATURES)).astype(np.float32)
        labels = features[:, :NUM_CLASSES].argmax(axis=1).astype(np.int64)
        labels[:: 11] = 255  # some unannotated points
        coordinates = rng.integers(0, 40, size=(self.points, 3)).astype(np.int32)
        if self.augment:
            features = features + np.random.normal(scale=0.05, size=features.shape).astype(np.float32)
        return {"coordinates": coordinates, "features": features, "labels": labels, "index": index}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    coordinates = [np.concatenate([np.full((len(s["coordinates"]), 1), b, dtype=np.int32), s["coordinates"]], 1)
                   for b, s in enumerate(samples)]
    return {
        "coordinates": torch.from_numpy(np.concatenate(coordinates)),
        "features": torch.from_numpy(np.concatenate([s["features"] for s in samples])),
        "labels": torch.from_numpy(np.concatenate([s["labels"] for s in samples])),
        "indices": [s["index"] for s in samples],
    }


def dense_input(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(batch["features"], dtype=torch.float32).to(device)


class ToyNet(nn.Module):
    def __init__(self, batch_norm: bool = True, hidden: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(NUM_FEATURES, hidden)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden, momentum=0.1))
        layers += [nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, NUM_CLASSES)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_params(**overrides: Any) -> TrainParams:
    values: dict[str, Any] = dict(
        model="ToyNet", conv1_kernel_size=3, bn_momentum=0.1, optimizer="sgd", lr=0.1, momentum=0.9,
        dampening=0.1, weight_decay=1e-4, adamw_betas=[0.9, 0.999], scheduler="poly", poly_power=0.9,
        step_size=5, step_gamma=0.5, onecycle_pct_start=0.3, onecycle_div_factor=25.0,
        onecycle_final_div_factor=1e4, iterations=12, batch_size=2, val_batch_size=2, train_limit_numpoints=0,
        grad_accum=1, amp="none", val_every=4, val_subset_every=0, val_subset_scenes=1, checkpoint_every=4, log_every=2,
        class_weights=None, lovasz_weight=0.0,
        num_workers=0, deterministic=True, augment=True, crop_voxels=0,
    )
    values.update(overrides)
    return TrainParams.model_validate(values)
