"""Datasets without torchvision: official-format readers, integrity checks, downloads, device-resident loading."""

from .download import DownloadError, download_dataset, download_file
from .io import ImageDataset, load_dataset
from .loader import DeviceLoader, random_crop
from .registry import (
    DATASETS,
    DatasetCorruptError,
    DatasetNotFoundError,
    DatasetSpec,
    FileSpec,
    data_roots,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)
from .split import VAL_SPLIT_SEED, validation_split

__all__ = [
    "DATASETS",
    "VAL_SPLIT_SEED",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DeviceLoader",
    "DownloadError",
    "FileSpec",
    "ImageDataset",
    "data_roots",
    "download_dataset",
    "download_file",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "random_crop",
    "register_dataset",
    "validation_split",
]
