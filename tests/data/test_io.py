"""Dataset readers: official formats, lookup order, integrity errors."""

import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from mgcnn.data import DatasetCorruptError, DatasetNotFoundError, data_roots, load_dataset
from mgcnn.data.io import load_cifar
from tests.helpers import TEST_DATA, gz, needs_fmnist, write_cifar


@needs_fmnist
def test_real_fashion_mnist_loads_padded_and_verified():
    d = load_dataset("fashion-mnist", TEST_DATA)
    assert d.train_images.shape == (60000, 1, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (10000, 1, 32, 32)
    assert torch.bincount(d.train_labels).tolist() == [6000] * 10
    assert torch.bincount(d.test_labels).tolist() == [1000] * 10
    # 2-pixel zero border from padding 28 -> 32, content inside
    assert d.train_images[:, :, :2].max() == 0 and d.train_images[:, :, :, -2:].max() == 0
    assert d.train_images[:, :, 2:30, 2:30].float().mean() > 50


def _fmnist_copy(tmp_path, names=None):
    dst = tmp_path / "fashion-mnist"
    dst.mkdir(parents=True)
    for p in (TEST_DATA / "fashion-mnist").glob("*-ubyte.gz"):
        if names is None or p.name in names:
            shutil.copy(p, dst / p.name)
    return dst


@needs_fmnist
def test_rewritten_gzip_headers_and_uncompressed_files_are_accepted(tmp_path):
    # Debian's package rewrites the gzip header; uncompressed copies are common too. The content decides.
    dst = _fmnist_copy(tmp_path)
    raw = gzip.decompress((dst / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (dst / "t10k-labels-idx1-ubyte.gz").write_bytes(gz(raw, mtime=1591315200))
    (dst / "train-labels-idx1-ubyte.gz").rename(dst / "train-labels.tmp")
    (dst / "train-labels-idx1-ubyte").write_bytes(gzip.decompress((dst / "train-labels.tmp").read_bytes()))
    d = load_dataset("fashion-mnist", tmp_path)
    assert len(d.test_labels) == 10000 and len(d.train_labels) == 60000


@needs_fmnist
def test_truncated_and_corrupted_files_are_refused_by_name(tmp_path):
    dst = _fmnist_copy(tmp_path)
    f = dst / "t10k-labels-idx1-ubyte.gz"
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetCorruptError, match="t10k-labels-idx1-ubyte.gz.*truncated or corrupted"):
        load_dataset("fashion-mnist", tmp_path)
    raw = bytearray(gzip.decompress(good))
    raw[100] ^= 0xFF  # one flipped label byte: a valid gzip with wrong content
    f.write_bytes(gz(bytes(raw)))
    with pytest.raises(DatasetCorruptError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_dataset("fashion-mnist", tmp_path)


def test_missing_file_names_it_every_place_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("MGCNN_DATA", str(tmp_path / "env-root"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("fashion-mnist", tmp_path / "cli-root")
    msg = str(exc.value)
    assert "train-images-idx3-ubyte" in msg
    for place in ("cli-root/fashion-mnist", "env-root/fashion-mnist", "home/.cache/mgcnn/fashion-mnist",
                  "/usr/share/datasets/fashion-mnist"):
        assert place in msg
    assert "--download" in msg and "dataset-fashion-mnist" in msg and "http" in msg


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MGCNN_DATA", "/env")
    monkeypatch.setenv("HOME", "/home/u")
    assert [str(p) for p in data_roots("/cli")] == ["/cli", "/env", "/home/u/.cache/mgcnn", "/usr/share/datasets"]
    monkeypatch.delenv("MGCNN_DATA")
    assert [str(p) for p in data_roots()] == ["/home/u/.cache/mgcnn", "/usr/share/datasets"]


@pytest.mark.parametrize("archive", [True, False])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archive_and_extracted_folder(tmp_path, monkeypatch, name, archive):
    blobs = write_cifar(tmp_path, name, n_train=50, n_test=20, archive=archive, monkeypatch=monkeypatch)
    d = load_dataset(name, tmp_path)
    assert d.train_images.shape == (50, 3, 32, 32) and d.test_images.shape == (20, 3, 32, 32)
    test_member = "test_batch" if name == "cifar10" else "test"
    ref = pickle.loads(blobs[test_member], encoding="bytes")
    expected = np.asarray(ref[b"data"]).reshape(-1, 3, 32, 32)
    assert np.array_equal(d.test_images.numpy(), expected)  # row-major RGB planes, as documented by CIFAR
    key = b"labels" if name == "cifar10" else b"fine_labels"
    assert d.test_labels.tolist() == ref[key]


def test_cifar_checksum_mismatch_and_truncation(tmp_path, monkeypatch):
    write_cifar(tmp_path)  # official checksums stay in place: our synthetic archive is not the official one
    with pytest.raises(DatasetCorruptError, match="cifar-10-python.tar.gz: checksum mismatch"):
        load_dataset("cifar10", tmp_path)
    d = load_cifar("cifar10", tmp_path, verify=False)  # explicit opt-out still reads it
    assert len(d.train_labels) == 60  # 5 batches of 12
    archive = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(DatasetCorruptError, match="cifar-10-python.tar.gz: cannot read the archive"):
        load_cifar("cifar10", tmp_path, verify=False)


def test_cifar_pickle_cannot_run_code(tmp_path, monkeypatch):
    write_cifar(tmp_path, archive=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(DatasetCorruptError, match="refusing to load builtins.print"):
        load_cifar("cifar10", tmp_path, verify=False)


def test_cifar_member_holding_floats_is_refused(tmp_path, monkeypatch):
    from mgcnn.data import DatasetCorruptError, load_dataset
    from tests.helpers import cifar_batch

    blobs = write_cifar(tmp_path / "d", archive=False, monkeypatch=monkeypatch)
    d = pickle.loads(blobs["test_batch"])
    d[b"data"] = (d[b"data"] / 255.0).astype("float32")  # 0..1 floats: cast to uint8 they become all-zero images
    (tmp_path / "d" / "cifar10" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(DatasetCorruptError, match="'data' holds float32 values, not the 0-255 bytes"):
        load_dataset("cifar10", tmp_path / "d", verify=False)
    assert cifar_batch  # the helper the fixture files come from
