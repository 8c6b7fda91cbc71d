"""Readers for the official dataset formats, with integrity checks; no torchvision.

- FashionMNIST: IDX files (``*-ubyte`` or ``*-ubyte.gz``), checked by the MD5 of the *decompressed* content.
- CIFAR-10 / CIFAR-100: the python archives (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``) checked by
  archive MD5, or their extracted folders checked member by member. The pickles are read with an unpickler that only
  admits numpy arrays and builtins, so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import registry
from .registry import DatasetCorruptError, DatasetNotFoundError, DatasetSpec, data_roots, get_dataset_spec


@dataclass
class ImageDataset:
    """A whole split pair as uint8 tensors: images (N, C, H, W), labels int64 (N,)."""

    spec: DatasetSpec
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # where the files were found


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _not_found(spec: DatasetSpec, what: str, candidates: list[Path]) -> DatasetNotFoundError:
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


# --------------------------------------------------------------------------------------------------- FashionMNIST
def _read_bytes(path: Path) -> bytes:
    """The file's bytes; a file we may not read is a permission problem, not a corrupted file."""
    try:
        return path.read_bytes()
    except PermissionError:
        raise DatasetNotFoundError(f"{path}: permission denied; make it readable (chmod a+r {path}) or point "
                                   "--data-dir at a copy you can read") from None


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


def _find_file(spec: DatasetSpec, names: list[str], roots: list[Path]) -> Path:
    candidates = [root / spec.name / n for root in roots for n in names]
    for p in candidates:
        if p.is_file():
            return p
    raise _not_found(spec, f"file {names[0]}", candidates)


def _empty_split(spec: DatasetSpec) -> tuple[torch.Tensor, torch.Tensor]:
    size = spec.image_size
    return torch.zeros((0, spec.in_channels, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)


def load_fashion_mnist(data_dir=None, *, verify: bool = True, train: bool = True) -> ImageDataset:
    spec = registry.FASHION_MNIST
    roots = data_roots(data_dir)
    arrays, sources = {}, set()
    for f in spec.files:
        if not train and f.name.startswith("train"):
            continue
        path = _find_file(spec, [f.name + ".gz", f.name], roots)
        arrays[f.name] = _read_idx(path, verify, f.md5)
        sources.add(str(path.parent))
    splits = {"train": _empty_split(spec)}
    for split, prefix in (("train", "train"), ("test", "t10k")) if train else (("test", "t10k"),):
        x, y = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (len(y) and y.max() >= spec.num_classes):
            raise DatasetCorruptError(f"{spec.name} {split}: images {x.shape} and labels {y.shape} do not fit together")
        images = torch.from_numpy(x.copy()).unsqueeze(1)  # (N, 1, 28, 28)
        pad = (spec.image_size - images.shape[-1]) // 2
        images = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (N, 1, 32, 32) zero border, as the paper
        splits[split] = (images, torch.from_numpy(y.astype(np.int64)))
    return ImageDataset(spec, *splits["train"], *splits["test"], source=", ".join(sorted(sources)))


# -------------------------------------------------------------------------------------------------------- CIFAR
class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {
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


def _cifar_layout(spec: DatasetSpec) -> tuple[str, list[str], list[str], str, dict[str, str]]:
    if spec.name == "cifar10":
        return ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                registry.CIFAR10_MEMBER_MD5)
    return "cifar-100-python", ["train"], ["test"], "fine_labels", registry.CIFAR100_MEMBER_MD5


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


def load_cifar(name: str, data_dir=None, *, verify: bool = True, train: bool = True) -> ImageDataset:
    spec = get_dataset_spec(name)
    folder, train_members, test_members, label_key, member_md5 = _cifar_layout(spec)
    if not train:
        train_members = []
    archive_spec = spec.files[0]
    candidates = []
    for root in data_roots(data_dir):
        base = root / spec.name
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
                raise DatasetCorruptError(f"{archive}: cannot read the archive ({e}); it is truncated or corrupted") \
                    from None
            prefix, source = f"{archive}:{folder}/", str(archive)
            break
        if extracted.is_dir():
            blobs = {}
            for m in train_members + test_members:
                p = extracted / m
                if not p.is_file():
                    raise _not_found(spec, f"file {folder}/{m}", [p])
                blobs[m] = _read_bytes(p)
                _check(p, md5_bytes(blobs[m]), member_md5.get(m), verify)
            prefix, source = f"{extracted}/", str(extracted)
            break
    else:
        raise _not_found(spec, f"{archive_spec.name} (or its extracted {folder}/ folder)", candidates)

    def split(members):
        parts = [_batch_arrays(_unpickle(blobs[m], prefix + m), label_key, prefix + m, spec.num_classes)
                 for m in members]
        return torch.from_numpy(np.concatenate([p[0] for p in parts])), torch.from_numpy(
            np.concatenate([p[1] for p in parts]))

    return ImageDataset(spec, *(split(train_members) if train else _empty_split(spec)), *split(test_members),
                        source=source)


def locate_dataset(name: str, data_dir=None) -> Path:
    """Where ``name`` would be loaded from (without reading it); ``DatasetNotFoundError`` naming every place looked
    in and how to get the files when it is nowhere."""
    spec = get_dataset_spec(name)
    roots = data_roots(data_dir)
    if spec.name == "fashion-mnist":
        return _find_file(spec, [spec.files[0].name + ".gz", spec.files[0].name], roots).parent
    folder = _cifar_layout(spec)[0]
    candidates = [p for root in roots for p in (root / spec.name / spec.files[0].name, root / spec.name / folder)]
    for p in candidates:
        if p.exists():
            return p
    raise _not_found(spec, f"{spec.files[0].name} (or its extracted {folder}/ folder)", candidates)


def load_dataset(name: str, data_dir=None, *, verify: bool = True, train: bool = True) -> ImageDataset:
    """Load ``fashion-mnist``, ``cifar10`` or ``cifar100`` from the first data root that has it.

    ``train=False`` reads and checks only the test split (the training tensors are empty), as evaluation needs.
    """
    spec = get_dataset_spec(name)
    if spec.name == "fashion-mnist":
        return load_fashion_mnist(data_dir, verify=verify, train=train)
    return load_cifar(spec.name, data_dir, verify=verify, train=train)
