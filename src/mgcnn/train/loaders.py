"""The device-resident loaders of a run: the training part (less the validation split), the test split and the
validation split, each sharded over the processes of a distributed run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import DeviceLoader, validation_split
from .config import TrainConfig
from .process import Process


def _subset(images: torch.Tensor, labels: torch.Tensor, n: int | None, shuffle: bool, what: str):
    """The first ``n`` samples (of a fixed shuffle if ``shuffle``); ``n`` larger than the split is an error, never
    silently fewer samples than the config records."""
    if n is None:
        return images, labels
    if n > len(labels):
        raise ValueError(f"{what}={n} is larger than the {len(labels):,} images it selects from; use at most "
                         f"{len(labels)}, or null for all of them")
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:n] if shuffle else torch.arange(n)
    return images[idx], labels[idx]


@dataclass
class Loaders:
    train: DeviceLoader
    test: DeviceLoader
    val: DeviceLoader | None


def make_loaders(cfg: TrainConfig, data, proc: Process) -> Loaders:
    """Device-resident loaders: the training part (less the validation split), the test split, the validation."""
    train_idx, val_idx = validation_split(len(data.train_labels), cfg.val_fraction)
    train_x, train_y = _subset(data.train_images[train_idx], data.train_labels[train_idx], cfg.train_subset,
                               shuffle=True, what="train_subset")
    test_x, test_y = _subset(data.test_images, data.test_labels, cfg.test_subset, shuffle=False,
                             what="test_subset")
    common = dict(mean=data.spec.mean, std=data.spec.std, device=proc.device, channels_last=cfg.channels_last,
                  rank=proc.rank, world_size=proc.world_size)
    eval_batch = cfg.eval_batch_size * proc.world_size
    loaders = Loaders(
        train=DeviceLoader(train_x, train_y, cfg.batch_size, train=True, seed=cfg.seed,
                           crop_padding=cfg.crop_padding, flip=cfg.flip, augment=cfg.augment, **common),
        test=DeviceLoader(test_x, test_y, eval_batch, train=False, **common),
        val=None if val_idx is None else DeviceLoader(data.train_images[val_idx], data.train_labels[val_idx],
                                                      eval_batch, train=False, **common))
    if len(loaders.train) == 0:
        raise ValueError(f"the training set has {len(train_y)} samples, fewer than one batch of {cfg.batch_size}")
    return loaders
