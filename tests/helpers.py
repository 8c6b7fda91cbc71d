"""Test helpers: where the real FashionMNIST is, tiny datasets written in the exact official formats, a tiny training
run (its config and CLI arguments), and running the CLI to read what it prints."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from mgcnn import cli
from mgcnn.data import registry
from mgcnn.data.io import md5_bytes, md5_file
from mgcnn.train import TrainConfig

# The data root (a folder holding fashion-mnist/) of the tests that need the real FashionMNIST: $MGCNN_TEST_DATA,
# else ../shared/data beside the repository. A separate variable from the library's $MGCNN_DATA, so that pointing
# the tests at the data never changes where the code under test looks.
TEST_DATA_ENV = "MGCNN_TEST_DATA"
TEST_DATA = Path(os.environ.get(TEST_DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")
FMNIST_FILES = [f.name + ".gz" for f in registry.FASHION_MNIST.files]
HAVE_FMNIST = all((TEST_DATA / "fashion-mnist" / n).is_file() for n in FMNIST_FILES)
FMNIST_REASON = (f"the official FashionMNIST files ({', '.join(FMNIST_FILES)}) are not in {TEST_DATA}/fashion-mnist; "
                 f"set ${TEST_DATA_ENV} to the folder that holds fashion-mnist/ (present in CI)")
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason=FMNIST_REASON)


def cifar_batch(n: int, num_classes: int, seed: int, label_key: str = "labels") -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic batch",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key.encode(): rng.integers(0, num_classes, size=n).tolist(),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(root: Path, name: str = "cifar10", n_train: int = 64, n_test: int = 32, *, archive: bool = True,
                monkeypatch=None) -> dict[str, bytes]:
    """Write a small CIFAR-10/100 python archive (or extracted folder) under ``root/name`` in the official format.

    With ``monkeypatch``, the registry's checksums are replaced by the generated files' ones, so verification runs.
    """
    if name == "cifar10":
        folder, members, label_key, classes = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + [
            "test_batch"], "labels", 10
    else:
        folder, members, label_key, classes = "cifar-100-python", ["train", "test"], "fine_labels", 100
    blobs = {}
    for i, m in enumerate(members):
        is_test = m.startswith("test")
        n = n_test if is_test else max(n_train // (len(members) - 1), 1)
        d = cifar_batch(n, classes, seed=i, label_key=label_key)
        if name == "cifar100":
            d[b"coarse_labels"] = [x // 5 for x in d[b"fine_labels"]]
        blobs[m] = pickle.dumps(d, protocol=2)
    base = root / name
    base.mkdir(parents=True, exist_ok=True)
    spec = registry.DATASETS[name]
    if archive:
        path = base / spec.files[0].name
        with tarfile.open(path, "w:gz") as tar:
            for m, blob in blobs.items():
                info = tarfile.TarInfo(f"{folder}/{m}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (base / folder).mkdir(exist_ok=True)
        for m, blob in blobs.items():
            (base / folder / m).write_bytes(blob)
    if monkeypatch is not None:
        patch_cifar_checksums(monkeypatch, name, base, blobs)
    return blobs


def patch_cifar_checksums(monkeypatch, name: str, base: Path, blobs: dict[str, bytes]) -> None:
    """Make the registry's checksums of ``name`` (archive, and members in the spec and the module's table) those
    of the generated files."""
    spec = registry.DATASETS[name]
    archive = base / spec.files[0].name
    md5 = md5_file(archive) if archive.exists() else spec.files[0].md5
    members = {m: md5_bytes(b) for m, b in blobs.items()}
    new = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], md5=md5, size=None),),
                              member_md5=members)
    monkeypatch.setitem(registry.DATASETS, name, new)
    attr = "CIFAR10_MEMBER_MD5" if name == "cifar10" else "CIFAR100_MEMBER_MD5"
    monkeypatch.setattr(registry, attr, members)


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def gz(data: bytes, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


# -- a tiny training run and the CLI -----------------------------------------------------------------------------------
# A tiny MGiaD run on the tiny CIFAR-10 of the ``data_root`` fixture, as a config and as `mgcnn train` arguments.
TINY = dict(model="mgiad", model_kwargs={"widths": [8, 16], "coarse_channels": 4, "group_size": 2},
            dataset="cifar10", train_subset=None, batch_size=16, eval_batch_size=32, epochs=2, lr=0.05,
            schedule="cosine", threads=1, train_size=None, tta_flip=False, eval_every=1)  # no speedrun ingredients
TINY_ARGS = ["--dataset", "cifar10", "--model", "mgiad", "--model-arg", "widths=[8, 16]", "--model-arg",
             "coarse_channels=4", "--model-arg", "group_size=2", "--batch-size", "16", "--threads", "1"]
quiet = dict(progress=False, log=lambda s: None)


def tiny(data_root, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_dir": str(data_root), "out": str(out), **kw})


def printed_config(capsys, *args) -> dict:
    assert cli.main(["train", *args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def block_imports(monkeypatch, *prefixes: str) -> None:
    """Imports of modules starting with any of ``prefixes`` fail, as on a machine without that optional extra."""
    import builtins

    real = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.startswith(prefixes):
            raise ImportError(f"no {name} here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)


def last_candidate_wins():
    """A conv-planner timer under which each candidate timed is faster than the ones before it (the last wins)."""
    calls = []

    def timer(run, device):
        run()
        calls.append(run)
        return 1.0 / len(calls)

    return timer
