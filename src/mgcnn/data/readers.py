"""Readers of the official dataset formats, with integrity checks; no torchvision.

A dataset spec (:class:`mgcnn.data.registry.DatasetSpec`) names its reader: a function
``reader(spec, folders, *, verify, train) -> SplitArrays`` that reads the arrays from the candidate folders
``<root>/<name>/`` (in lookup order), checks them against the spec's checksums when ``verify``, and skips the
training split when ``train`` is false. :func:`mgcnn.data.load_dataset` turns them into tensors, checks their shape
against the spec and pads them. The readers here:

- :class:`IdxFiles`: IDX files (``*-ubyte`` or ``*-ubyte.gz``, FashionMNIST), checked by the MD5 of the
  *decompressed* content.
- :class:`CifarPython`: the CIFAR python archives (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) checked
  by archive MD5, or their extracted folders checked member by member. The pickles are read with an unpickler that
  only admits numpy arrays and builtins, so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .errors import DatasetCorruptError, DatasetNotFoundError

if TYPE_CHECKING:
    from .registry import DatasetSpec

Split = tuple[np.ndarray, np.ndarray]  # uint8 images (N, H, W) or (N, C, H, W) at the stored size, labels (N,)


@dataclass(frozen=True)
class SplitArrays:
    """What a reader returns: the test split, the training split (None when not asked for), and where they were
    found (shown to the user and recorded in a run's env.json)."""

    test: Split
    train: Split | None
    source: str


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def not_found(spec: DatasetSpec, what: str, candidates: list[Path]) -> DatasetNotFoundError:
    """The error for a missing ``what``: every place looked in, and how to get the files."""
    looked = "\n".join(f"  - {p}" for p in candidates)
    return DatasetNotFoundError(
        f"{spec.name}: {what} not found. Looked in:\n{looked}\nTo get it: {spec.how_to_get}. Then point "
        f"--data-dir (or $MGCNN_DATA) at the folder that contains {spec.name}/."
    )


def _check(path: Path, data_md5: str, expected: str | None, verify: bool, hint: str = "") -> None:
    if verify and expected is not None and data_md5 != expected:
        raise DatasetCorruptError(
            f"{path}: checksum mismatch (MD5 {data_md5}, official {expected}); the file is truncated, corrupted or "
            f"not the official release{hint}. Delete it and fetch it again (e.g. with --download)."
        )


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; a file we may not read is a permission problem, not a corrupted file."""
    try:
        return path.read_bytes()
    except PermissionError:
        raise DatasetNotFoundError(f"{path}: permission denied; make it readable (chmod a+r {path}) or point "
                                   "--data-dir at a copy you can read") from None


def read_checked(path: Path, expected_md5: str | None, verify: bool) -> bytes:
    """The bytes of ``path``, refused with :class:`DatasetCorruptError` when ``verify`` and their MD5 is not
    ``expected_md5`` (None: nothing to check against)."""
    data = _read_bytes(path)
    _check(path, md5_bytes(data), expected_md5, verify)
    return data


def find_file(spec: DatasetSpec, names: list[str], folders: Sequence[Path]) -> Path:
    """The first of ``folder / name`` that is a file, folders outermost; else :func:`not_found` naming them all."""
    candidates = [folder / n for folder in folders for n in names]
    for p in candidates:
        if p.is_file():
            return p
    raise not_found(spec, f"file {names[0]}", candidates)


def locate_files(spec: DatasetSpec, folders: Sequence[Path]) -> Path:
    """The default locator: the first folder that holds every one of ``spec.files``."""
    for folder in folders:
        if folder.is_dir() and all((folder / f.name).is_file() for f in spec.files):
            return folder
    what = ", ".join(f.name for f in spec.files) or "its folder"
    raise not_found(spec, what, list(folders))


# --------------------------------------------------------------------------------------------------- IDX (MNIST)
def _read_idx(path: Path, verify: bool, expected_md5: str | None) -> np.ndarray:
    data = _read_bytes(path)
    try:
        raw = gzip.decompress(data) if path.suffix == ".gz" else data
    except (EOFError, OSError, zlib.error) as e:
        raise DatasetCorruptError(f"{path}: cannot decompress ({e}); the file is truncated or corrupted") from None
    _check(path, md5_bytes(raw), expected_md5, verify, " (checked on the decompressed content)")
    if len(raw) < 8:
        raise DatasetCorruptError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DatasetCorruptError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DatasetCorruptError(f"{path}: header says {dims} but holds {len(body)} bytes; the file is truncated")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


@dataclass(frozen=True)
class IdxFiles:
    """The MNIST family's layout: an (images, labels) pair of uint8 IDX files per split, each ``NAME.gz`` or
    ``NAME``, each found on its own in the first folder that has it, checked by the MD5 of its decompressed content
    (the ``spec.files`` entry of that name): Debian's dataset-fashion-mnist package ships the same DEFLATE streams
    under rewritten gzip headers."""

    train: tuple[str, str] = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    test: tuple[str, str] = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def read(self, spec: DatasetSpec, folders: Sequence[Path], *, verify: bool, train: bool) -> SplitArrays:
        md5 = {f.name: f.md5 for f in spec.files}
        splits: dict[str, Split] = {}
        sources = set()
        for split, (images, labels) in (("train", self.train), ("test", self.test)) if train else (
                ("test", self.test),):
            arrays = []
            for name in (images, labels):
                path = find_file(spec, [name + ".gz", name], folders)
                arrays.append(_read_idx(path, verify, md5.get(name)))
                sources.add(str(path.parent))
            splits[split] = (arrays[0], arrays[1])
        return SplitArrays(splits["test"], splits.get("train"), ", ".join(sorted(sources)))

    def locate(self, spec: DatasetSpec, folders: Sequence[Path]) -> Path:
        name = self.train[0]
        return find_file(spec, [name + ".gz", name], folders).parent


# -------------------------------------------------------------------------------------------------- CIFAR python
class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure here means a bad file
        raise DatasetCorruptError(f"{where}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DatasetCorruptError(f"{where}: not a CIFAR batch (a {type(obj).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch_arrays(d: dict, label_key: str, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d or label_key not in d:
        raise DatasetCorruptError(f"{where}: missing 'data' or '{label_key}' entry")
    x = np.asarray(d["data"])
    if x.dtype != np.uint8:  # floats would be cast to (mostly) zero images without a word
        if x.dtype.kind not in "iu" or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DatasetCorruptError(f"{where}: 'data' holds {x.dtype} values, not the 0-255 bytes of a CIFAR batch")
        x = x.astype(np.uint8)
    y = np.asarray(d[label_key])
    if y.dtype.kind not in "iu":
        raise DatasetCorruptError(f"{where}: '{label_key}' holds {y.dtype} values, not integer class labels")
    y = y.astype(np.int64)
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise DatasetCorruptError(f"{where}: data {x.shape} / labels {y.shape} are not a CIFAR batch")
    return x.reshape(-1, 3, 32, 32), y


@dataclass(frozen=True)
class CifarPython:
    """The CIFAR python layout: the archive ``spec.files[0]`` (checked by its MD5), or the ``folder`` it extracts
    to (checked member by member against ``spec.member_md5``), whichever the first folder holding either has."""

    folder: str  # what the archive extracts to
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    label_key: str  # "labels" (CIFAR-10) or "fine_labels" (CIFAR-100)

    def _what(self, spec: DatasetSpec) -> str:
        return f"{spec.files[0].name} (or its extracted {self.folder}/ folder)"

    def read(self, spec: DatasetSpec, folders: Sequence[Path], *, verify: bool, train: bool) -> SplitArrays:
        folder = self.folder
        train_members = list(self.train_members) if train else []
        test_members = list(self.test_members)
        archive_spec = spec.files[0]
        candidates = []
        for base in folders:
            archive, extracted = base / archive_spec.name, base / folder
            candidates += [archive, extracted]
            if archive.is_file():
                try:
                    _check(archive, md5_file(archive), archive_spec.md5, verify)
                except PermissionError:
                    _read_bytes(archive)  # raises the permission error with its fix
                blobs = {}
                try:
                    with tarfile.open(archive, "r:gz") as tar:
                        for m in train_members + test_members:
                            fh = tar.extractfile(f"{folder}/{m}")
                            if fh is None:
                                raise KeyError(m)
                            blobs[m] = fh.read()
                except KeyError as e:
                    raise DatasetCorruptError(f"{archive}: member {folder}/{e.args[0]} is missing") from None
                except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                    raise DatasetCorruptError(f"{archive}: cannot read the archive ({e}); it is truncated or "
                                              "corrupted") from None
                prefix, source = f"{archive}:{folder}/", str(archive)
                break
            if extracted.is_dir():
                blobs = {}
                for m in train_members + test_members:
                    p = extracted / m
                    if not p.is_file():
                        raise not_found(spec, f"file {folder}/{m}", [p])
                    blobs[m] = _read_bytes(p)
                    _check(p, md5_bytes(blobs[m]), spec.member_md5.get(m), verify)
                prefix, source = f"{extracted}/", str(extracted)
                break
        else:
            raise not_found(spec, self._what(spec), candidates)

        def split(members: list[str]) -> Split:
            parts = [_batch_arrays(_unpickle(blobs[m], prefix + m), self.label_key, prefix + m, spec.num_classes)
                     for m in members]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

        train_split = split(train_members) if train else None  # the training batches first, as they are listed
        return SplitArrays(split(test_members), train_split, source)

    def locate(self, spec: DatasetSpec, folders: Sequence[Path]) -> Path:
        candidates = [p for base in folders for p in (base / spec.files[0].name, base / self.folder)]
        for p in candidates:
            if p.exists():
                return p
        raise not_found(spec, self._what(spec), candidates)
