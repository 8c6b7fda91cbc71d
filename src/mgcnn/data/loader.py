"""Device-resident batches with batched augmentation (the pattern of Keller Jordan's cifar10-airbench).

A split is one uint8 tensor on the training device. Each epoch draws, from a generator seeded by ``(seed, epoch)``:
a permutation, and for every sample a crop offset and a flip bit (and, with ``augment="autoaugment"``, the draws of
the AutoAugment policy, :mod:`mgcnn.data.augment`). Batches are index slices; the crop is one gather, the flip one
``torch.where``, AutoAugment one op per group of images that share a sub-policy step, the normalisation one fused
multiply-add on the batch. No per-sample Python, no workers.

Because the randomness of an epoch is a function of ``(seed, epoch)`` and of the sample's position in the
permutation, (a) a resumed run sees exactly the batches it would have seen, and (b) ``world_size`` ranks, each
taking every ``world_size``-th position, see together exactly the global batches of a single-process run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import AUGMENTS, AutoAugment

PadMode = Literal["constant", "reflect", "replicate", "circular"]  # torch.nn.functional.pad's modes


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def random_crop(x: Tensor, offsets: Tensor, padding: int, mode: PadMode = "constant",
                size: int | None = None) -> Tensor:
    """Crop each image of ``x`` (B, C, H, W) from its ``padding``-padded version at ``offsets`` (B, 2) in [0, 2p].

    ``size`` (default: H = W) crops a smaller centred window that moves with the same offsets: each image is shifted
    by up to ``padding`` pixels either way, then its central ``size`` x ``size`` part is kept. The shift
    augmentation is thus the same at every size, which is what progressive resizing by cropping needs.
    """
    b, c, h, w = x.shape
    s = h if size is None else size
    if s > min(h, w) or (h - s) % 2 or (w - s) % 2:
        raise ValueError(f"crop size {s} must be at most {min(h, w)} and differ from {h}x{w} by an even number")
    xp = F.pad(x, (padding,) * 4, mode=mode)  # (B, C, H+2p, W+2p)
    rows = offsets[:, 0:1] + (h - s) // 2 + torch.arange(s, device=x.device)  # (B, s)
    cols = offsets[:, 1:2] + (w - s) // 2 + torch.arange(s, device=x.device)  # (B, s)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, s, s)


class DeviceLoader:
    """Iterate over ``(images, labels)`` batches of one split, augmenting on the device.

    Args:
        images: uint8 (N, C, H, W); labels: int64 (N,). Moved to ``device`` once.
        batch_size: the *global* batch size; each of ``world_size`` ranks yields ``batch_size // world_size``.
        train: shuffle, augment and drop the last incomplete batch; otherwise sequential, all samples, no aug.
        crop_padding: random-crop padding (0 disables); flip: random horizontal flip.
        crop_size: train on the central ``crop_size`` x ``crop_size`` window of each shifted image (None: the full
            stored size); the attribute may be changed between epochs (progressive resizing).
        pad_mode: how the crop pads (:data:`PadMode`): ``"constant"`` (zeros), ``"reflect"``, ...
        augment: ``"none"``, ``"autoaugment"`` (AutoAugment's CIFAR-10 policy, :mod:`mgcnn.data.augment`, after
            the crop and the flip, on the training split only), or an :class:`~mgcnn.data.augment.AutoAugment`.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train: bool,
        seed: int = 0,
        crop_padding: int = 4,
        flip: bool = True,
        pad_mode: PadMode = "constant",
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        crop_size: int | None = None,
        augment: str | AutoAugment = "none",
    ):
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be divisible by the world size {world_size}")
        if isinstance(augment, str) and augment not in AUGMENTS:
            raise ValueError(f"augment={augment!r} is not supported; use one of {AUGMENTS}")
        self.augment: AutoAugment | None = (
            augment if isinstance(augment, AutoAugment) else AutoAugment() if augment == "autoaugment" else None)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.crop_padding, self.flip, self.pad_mode = crop_padding, flip, pad_mode
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        c = images.shape[1]
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=self.device))).view(1, c, 1, 1)
        self.shift = (-torch.tensor(mean, device=self.device) / torch.tensor(std, device=self.device)).view(1, c, 1, 1)
        self.epoch = 0
        self.crop_size = crop_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.images)
        if self.train:
            return n // self.batch_size
        per = self.batch_size // self.world_size
        mine = len(range(self.rank, n, self.world_size))
        return (mine + per - 1) // per

    def _normalise(self, x: Tensor) -> Tensor:
        x = x.float() * self.scale + self.shift  # (B, C, H, W) float32
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, per = len(self.images), self.batch_size // self.world_size
        if not self.train:
            idx = torch.arange(self.rank, n, self.world_size, device=self.device)
            for i in range(0, len(idx), per):
                j = idx[i : i + per]
                yield self._normalise(self.images[j]), self.labels[j]
            return
        g = epoch_generator(self.seed, self.epoch)
        perm = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        # drawn after the others, and only when used: the crops and flips of a run without it stay as they were
        aug = self.augment
        policy = aug.draw(n, g) if aug is not None else None
        usable = (n // self.batch_size) * self.batch_size
        mine = torch.arange(self.rank, usable, self.world_size)  # positions in the permutation for this rank
        perm, offsets, flips = perm[mine].to(self.device), offsets[mine].to(self.device), flips[mine].to(self.device)
        # the groups of every batch, planned on the CPU and moved to the device in one transfer
        plans = aug.plan(policy[mine], per, self.device) if aug is not None and policy is not None else None
        for i in range(0, len(perm), per):
            j = perm[i : i + per]
            x = self.images[j]  # (b, C, H, W) uint8
            if self.crop_padding or self.crop_size is not None:
                x = random_crop(x.float(), offsets[i : i + per], self.crop_padding, self.pad_mode, self.crop_size)
            if self.flip:
                x = torch.where(flips[i : i + per, None, None, None], x.flip(3), x)
            if aug is not None and plans is not None:
                x = aug.apply(x.float(), plans[i // per])
            yield self._normalise(x), self.labels[j]
