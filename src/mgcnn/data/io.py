"""Loading a registered dataset through its spec: find it, read it, check it, pad it; no torchvision.

:func:`load_dataset` asks the spec's reader (:mod:`mgcnn.data.readers`) for the arrays of the candidate folders
``<root>/<name>/`` of every data root (:func:`mgcnn.data.registry.data_roots`), checks that they are the images and
labels the spec describes, and returns them as uint8 tensors zero-padded to ``spec.image_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import registry
from .readers import (
    SplitArrays,
    locate_files,
    md5_bytes,
    md5_file,
)
from .registry import DatasetCorruptError, DatasetSpec, data_roots, get_dataset_spec

__all__ = ["ImageDataset", "load_cifar", "load_dataset", "load_fashion_mnist", "locate_dataset", "md5_bytes",
           "md5_file"]


@dataclass
class ImageDataset:
    """A whole split pair as uint8 tensors: images (N, C, H, W), labels int64 (N,)."""

    spec: DatasetSpec
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # where the files were found


def _folders(spec: DatasetSpec, data_dir) -> list[Path]:
    return [root / spec.name for root in data_roots(data_dir)]


TensorSplit = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)


def _empty_split(spec: DatasetSpec) -> TensorSplit:
    size = spec.image_size
    return torch.zeros((0, spec.in_channels, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)


def _tensors(spec: DatasetSpec, split: str, images: np.ndarray, labels: np.ndarray) -> TensorSplit:
    """A reader's arrays as (N, C, H, W) uint8 images zero-padded to ``spec.image_size`` and int64 labels."""
    x, y = np.asarray(images), np.asarray(labels)
    shape = x.shape
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): one channel
    stored = (spec.in_channels, spec.raw_size, spec.raw_size)
    if (x.ndim != 4 or x.dtype != np.uint8 or x.shape[1:] != stored or y.ndim != 1 or y.dtype.kind not in "iu"
            or len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= spec.num_classes))):
        raise DatasetCorruptError(
            f"{spec.name} {split}: images {shape} and labels {y.shape} do not fit together (expected uint8 images "
            f"of N x {' x '.join(map(str, stored))} and N integer labels below {spec.num_classes})")
    images_t = torch.from_numpy(np.require(x, np.uint8, ["C", "W"]))  # a copy only of read-only buffers
    if spec.padding:
        p = spec.padding
        images_t = torch.nn.functional.pad(images_t, (p, p, p, p))  # zero border, as the MGiaD paper for FashionMNIST
    return images_t, torch.from_numpy(y.astype(np.int64))


def _load(spec: DatasetSpec, data_dir, *, verify: bool, train: bool) -> ImageDataset:
    arrays: SplitArrays = spec.reader(spec, _folders(spec, data_dir), verify=verify, train=train)
    train_split = _empty_split(spec) if arrays.train is None or not train else _tensors(spec, "train", *arrays.train)
    return ImageDataset(spec, *train_split, *_tensors(spec, "test", *arrays.test), source=arrays.source)


def load_fashion_mnist(data_dir=None, *, verify: bool = True, train: bool = True) -> ImageDataset:
    """``load_dataset("fashion-mnist", ...)``, for existing callers."""
    return _load(registry.FASHION_MNIST, data_dir, verify=verify, train=train)


def load_cifar(name: str, data_dir=None, *, verify: bool = True, train: bool = True) -> ImageDataset:
    """``load_dataset(name, ...)``, for existing callers."""
    return _load(get_dataset_spec(name), data_dir, verify=verify, train=train)


def locate_dataset(name: str, data_dir=None) -> Path:
    """Where ``name`` would be loaded from (without reading it); ``DatasetNotFoundError`` naming every place looked
    in and how to get the files when it is nowhere."""
    spec = get_dataset_spec(name)
    return (spec.locate or locate_files)(spec, _folders(spec, data_dir))


def load_dataset(name: str, data_dir=None, *, verify: bool = True, train: bool = True) -> ImageDataset:
    """Load a registered dataset (``fashion-mnist``, ``cifar10``, ``cifar100``, ...) from the first data root that
    has it, through its spec's reader.

    ``train=False`` reads and checks only the test split (the training tensors are empty), as evaluation needs.
    """
    return _load(get_dataset_spec(name), data_dir, verify=verify, train=train)
