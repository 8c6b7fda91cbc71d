"""Datasets without torchvision: official-format readers, integrity checks, downloads, device-resident loading."""

from .download import DownloadError, download_dataset, download_file
from .io import ImageDataset, load_dataset
from .loader import DeviceLoader, random_crop
from .registry import DATASETS, DatasetCorruptError, DatasetNotFoundError, data_roots, get_dataset_spec

__all__ = [
    "DATASETS",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DeviceLoader",
    "DownloadError",
    "ImageDataset",
    "data_roots",
    "download_dataset",
    "download_file",
    "get_dataset_spec",
    "load_dataset",
    "random_crop",
]
