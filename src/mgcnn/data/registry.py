"""Where datasets live, which files make them, how to read and download them, their checksums and class names.

Each dataset is one :class:`DatasetSpec` in ``DATASETS``: :func:`mgcnn.data.load_dataset`,
:func:`mgcnn.data.download_dataset`, ``mgcnn train --dataset`` and ``mgcnn eval --dataset`` all go through it, so
adding a dataset means adding (or :func:`register_dataset`-ing) one spec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..settings import settings
from .errors import DatasetCorruptError, DatasetNotFoundError  # noqa: F401 - re-exported: their historical home
from .readers import CifarPython, IdxFiles, SplitArrays


@dataclass(frozen=True)
class FileSpec:
    """One official file: its name, MD5 of its *content* (decompressed for .gz IDX files), and where to get it."""

    name: str
    md5: str
    url: str
    size: int | None = None


class Reader(Protocol):
    """Reads a dataset's arrays from its candidate folders ``<root>/<name>/`` (lookup order), checking them
    against the spec's checksums when ``verify``; ``train=False`` reads only the test split (see
    :mod:`mgcnn.data.readers`)."""

    def __call__(self, spec: DatasetSpec, folders: Sequence[Path], *, verify: bool, train: bool) -> SplitArrays: ...


class Locator(Protocol):
    """Where a dataset would be read from, without reading it; :class:`DatasetNotFoundError` when nowhere."""

    def __call__(self, spec: DatasetSpec, folders: Sequence[Path]) -> Path: ...


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its shape, normalisation, official files and checksums, reader and download list.

    ``reader`` loads the arrays (:class:`Reader`); ``locate`` finds them without reading (None:
    :func:`mgcnn.data.readers.locate_files`, the first folder holding every one of ``files``). ``files`` are the
    official files with the MD5 the reader checks; ``downloads`` what :func:`mgcnn.data.download_dataset` fetches
    into ``<root>/<name>/`` (None: ``files`` themselves; ``()``: nothing, ``how_to_get`` says how);
    ``member_md5`` the MD5s of the members of an archive, checked when it is read extracted.
    """

    name: str  # folder name under a data root
    num_classes: int
    in_channels: int
    image_size: int  # after our padding (FashionMNIST 28 -> 32, as in the MGiaD paper)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: tuple[FileSpec, ...]
    how_to_get: str
    classes: tuple[str, ...] = ()  # class names in label order
    raw_size: int = 32  # the stored images' side before our padding
    reader: Reader = field(kw_only=True)
    locate: Locator | None = field(default=None, kw_only=True)
    downloads: tuple[FileSpec, ...] | None = field(default=None, kw_only=True)
    member_md5: Mapping[str, str] = field(default_factory=dict, hash=False, kw_only=True)

    @property
    def padding(self) -> int:
        """Zero border added on each side of the stored images (FashionMNIST: 28 -> 32 needs 2)."""
        return (self.image_size - self.raw_size) // 2

    @property
    def download_files(self) -> tuple[FileSpec, ...]:
        """What :func:`mgcnn.data.download_dataset` fetches: ``downloads``, or ``files`` when that is None."""
        return self.files if self.downloads is None else self.downloads

    @property
    def checksums(self) -> dict[str, str]:
        """Every official MD5 the reader checks, by file or archive-member name (what a run's env.json records)."""
        return {**{f.name: f.md5 for f in self.files}, **self.member_md5}


_FM_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

# FashionMNIST: MD5 of the *decompressed* IDX content, because Debian's dataset-fashion-mnist package ships the same
# DEFLATE streams under rewritten gzip headers (only the 10-byte header differs). The .gz MD5s are kept for downloads.
FASHION_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_IDX = IdxFiles()
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    num_classes=10,
    in_channels=1,
    image_size=32,
    mean=(0.2190,),  # of the 32x32 zero-padded training images
    std=(0.3318,),
    files=(
        FileSpec("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a", _FM_URL + "train-images-idx3-ubyte.gz"),
        FileSpec("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9", _FM_URL + "train-labels-idx1-ubyte.gz"),
        FileSpec("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a", _FM_URL + "t10k-images-idx3-ubyte.gz"),
        FileSpec("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965", _FM_URL + "t10k-labels-idx1-ubyte.gz"),
    ),
    how_to_get="`mgcnn train --download ...`, or `apt-get install dataset-fashion-mnist` (installs into "
    "/usr/share/datasets/fashion-mnist), or the four *-ubyte.gz files from " + _FM_URL,
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    raw_size=28,
    reader=_IDX.read,
    locate=_IDX.locate,
    downloads=tuple(FileSpec(name, md5, _FM_URL + name) for name, md5 in FASHION_MNIST_GZ_MD5.items()),
)

CIFAR10_MEMBER_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_CIFAR10_LAYOUT = CifarPython("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                              "labels")
CIFAR10 = DatasetSpec(
    name="cifar10",
    num_classes=10,
    in_channels=3,
    image_size=32,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    files=(FileSpec("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", _CIFAR_URL + "cifar-10-python.tar.gz",
                    170498071),),
    how_to_get="`mgcnn train --download ...`, or cifar-10-python.tar.gz from " + _CIFAR_URL + " (or its extracted "
    "cifar-10-batches-py/ folder)",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    reader=_CIFAR10_LAYOUT.read,
    locate=_CIFAR10_LAYOUT.locate,
    member_md5=CIFAR10_MEMBER_MD5,
)

CIFAR100_MEMBER_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
}
_CIFAR100_CLASSES = (  # in label order
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm")
_CIFAR100_LAYOUT = CifarPython("cifar-100-python", ("train",), ("test",), "fine_labels")
CIFAR100 = DatasetSpec(
    name="cifar100",
    num_classes=100,
    in_channels=3,
    image_size=32,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    files=(FileSpec("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                    _CIFAR_URL + "cifar-100-python.tar.gz", 169001437),),
    how_to_get="`mgcnn train --download ...`, or cifar-100-python.tar.gz from " + _CIFAR_URL + " (or its extracted "
    "cifar-100-python/ folder)",
    classes=tuple(_CIFAR100_CLASSES.split()),
    reader=_CIFAR100_LAYOUT.read,
    locate=_CIFAR100_LAYOUT.locate,
    member_md5=CIFAR100_MEMBER_MD5,
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (FASHION_MNIST, CIFAR10, CIFAR100)}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to ``DATASETS`` (``replace=True`` to redefine a name); it is then loadable, downloadable and a
    choice of ``mgcnn train --dataset`` like the built-in ones."""
    if spec.name in DATASETS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered; pass replace=True to redefine it")
    DATASETS[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    """Sorted names of the registered datasets."""
    return sorted(DATASETS)


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"dataset={name!r} is not supported; use one of {list_datasets()}") from None


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Roots searched in order: ``data_dir``, ``$MGCNN_DATA``, ``~/.cache/mgcnn``, ``/usr/share/datasets``."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    env_root = settings().data
    if env_root:
        roots.append(Path(env_root).expanduser())
    roots.append(Path("~/.cache/mgcnn").expanduser())
    roots.append(Path("/usr/share/datasets"))
    return roots
