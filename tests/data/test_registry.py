"""One spec per dataset: a dataset registered in a test is read, located, downloaded, offered by the CLI and
trained on through the same generic paths as the built-in ones."""

import dataclasses
import functools
import http.server
import io
import threading

import numpy as np
import pytest

from mgcnn import cli
from mgcnn.data import (
    DatasetCorruptError,
    DatasetNotFoundError,
    DatasetSpec,
    DownloadError,
    FileSpec,
    download_dataset,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    register_dataset,
    registry,
)
from mgcnn.data.io import locate_dataset
from mgcnn.data.readers import SplitArrays, locate_files, md5_bytes, read_checked


def _toy_npz(n_train: int = 32, n_test: int = 16, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, train_x=rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             train_y=rng.integers(0, 3, n_train), test_x=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
             test_y=rng.integers(0, 3, n_test))
    return buf.getvalue()


TOY_NPZ = _toy_npz()


def read_toy(spec: DatasetSpec, folders, *, verify: bool, train: bool) -> SplitArrays:
    """A whole reader: find the folder, read and check the file, hand back the arrays."""
    folder = locate_files(spec, folders)
    data = np.load(io.BytesIO(read_checked(folder / "toy.npz", spec.files[0].md5, verify)))
    return SplitArrays(test=(data["test_x"], data["test_y"]),
                       train=(data["train_x"], data["train_y"]) if train else None, source=str(folder))


TOY = DatasetSpec(
    name="toy",
    num_classes=3,
    in_channels=1,
    image_size=32,
    raw_size=28,
    mean=(0.5,),
    std=(0.25,),
    files=(FileSpec("toy.npz", md5_bytes(TOY_NPZ), "http://example.invalid/toy.npz"),),
    how_to_get="make it with tests/data/test_registry.py",
    classes=("a", "b", "c"),
    reader=read_toy,
)


@pytest.fixture()
def toy():
    """TOY registered for one test; the registry is as before afterwards."""
    register_dataset(TOY)
    try:
        yield TOY
    finally:
        del registry.DATASETS[TOY.name]


@pytest.fixture()
def no_other_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("MGCNN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _write_toy(root, data: bytes = TOY_NPZ):
    (root / "toy").mkdir(parents=True, exist_ok=True)
    (root / "toy" / "toy.npz").write_bytes(data)


def test_a_registered_spec_is_read_checked_and_padded_through_the_generic_path(toy, tmp_path, no_other_roots):
    _write_toy(tmp_path)
    d = load_dataset("toy", tmp_path)
    assert d.spec is TOY and d.source == str(tmp_path / "toy")
    assert d.train_images.shape == (32, 1, 32, 32) and d.test_images.shape == (16, 1, 32, 32)
    ref = np.load(io.BytesIO(TOY_NPZ))
    assert np.array_equal(d.test_images[:, 0, 2:30, 2:30].numpy(), ref["test_x"])  # 28 -> 32: a 2-pixel zero border
    assert d.test_images[:, :, :2].max() == 0 and d.test_labels.tolist() == ref["test_y"].tolist()
    only_test = load_dataset("toy", tmp_path, train=False)
    assert only_test.train_images.shape == (0, 1, 32, 32) and len(only_test.test_labels) == 16
    assert locate_dataset("toy", tmp_path) == tmp_path / "toy"  # the default locator: the folder with the files


def test_a_registered_spec_is_verified_and_missing_files_are_named(toy, tmp_path, no_other_roots):
    _write_toy(tmp_path, _toy_npz(seed=1))  # a valid file, but not the official one
    with pytest.raises(DatasetCorruptError, match="toy.npz: checksum mismatch"):
        load_dataset("toy", tmp_path)
    assert len(load_dataset("toy", tmp_path, verify=False).test_labels) == 16
    with pytest.raises(DatasetNotFoundError, match="toy: toy.npz not found") as exc:
        locate_dataset("toy", tmp_path / "elsewhere")
    assert "elsewhere/toy" in str(exc.value) and "make it with" in str(exc.value)


def test_arrays_that_do_not_fit_the_spec_are_refused(toy, tmp_path, no_other_roots, monkeypatch):
    _write_toy(tmp_path)
    for bad in ({"num_classes": 2}, {"raw_size": 30}, {"in_channels": 3}):  # labels up to 2; 28x28 one-channel images
        monkeypatch.setitem(registry.DATASETS, "toy", dataclasses.replace(TOY, **bad))
        with pytest.raises(DatasetCorruptError, match="toy train: .* do not fit together"):
            load_dataset("toy", tmp_path, verify=False)


def test_registry_lists_and_refuses_duplicates(toy):
    assert list_datasets() == sorted(["cifar10", "cifar100", "fashion-mnist", "toy"])
    assert get_dataset_spec("toy") is TOY
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(TOY)
    other = dataclasses.replace(TOY, num_classes=4)
    assert register_dataset(other, replace=True) is other and get_dataset_spec("toy") is other
    with pytest.raises(ValueError, match="use one of .*'toy'"):
        get_dataset_spec("toy2")


def test_builtin_specs_carry_reader_downloads_and_checksums():
    for name in ("fashion-mnist", "cifar10", "cifar100"):
        spec = get_dataset_spec(name)
        assert callable(spec.reader) and callable(spec.locate) and spec.download_files
        assert all(f.url.startswith("http") and len(f.md5) == 32 for f in spec.download_files)
    fm = registry.FASHION_MNIST
    assert {f.name: f.md5 for f in fm.download_files} == registry.FASHION_MNIST_GZ_MD5  # .gz files, .gz MD5s
    assert [f.url for f in fm.download_files] == [f.url for f in fm.files]
    assert registry.CIFAR10.download_files == registry.CIFAR10.files  # the archive itself
    assert registry.CIFAR10.checksums["test_batch"] == registry.CIFAR10_MEMBER_MD5["test_batch"]
    assert registry.CIFAR100.checksums["cifar-100-python.tar.gz"] == registry.CIFAR100.files[0].md5


@pytest.fixture()
def serve(tmp_path):
    """An HTTP server on 127.0.0.1 serving the folder tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None  # keep test output clean
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_registered_spec_downloads_its_list(toy, tmp_path, serve, no_other_roots, monkeypatch):
    www, url = serve
    (www / "toy.npz").write_bytes(TOY_NPZ)
    folder = download_dataset("toy", tmp_path / "root", base_url=url)  # downloads: None means the files themselves
    assert sorted(p.name for p in folder.iterdir()) == ["toy.npz"]
    assert len(load_dataset("toy", tmp_path / "root").train_labels) == 32
    (www / "extra.bin").write_bytes(b"extra")
    extra = FileSpec("extra.bin", md5_bytes(b"extra"), f"{url}/extra.bin")
    monkeypatch.setitem(registry.DATASETS, "toy", dataclasses.replace(TOY, downloads=(extra,)))
    download_dataset("toy", tmp_path / "root2")  # an explicit list, from its own URLs
    assert sorted(p.name for p in (tmp_path / "root2" / "toy").iterdir()) == ["extra.bin"]
    monkeypatch.setitem(registry.DATASETS, "toy", dataclasses.replace(TOY, downloads=()))
    with pytest.raises(DownloadError, match="toy has no download list; to get it: make it with"):
        download_dataset("toy", tmp_path / "root3")


def test_cli_dataset_choices_come_from_the_registry(toy, capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["eval", "ckpt", "--dataset", "toy"]).dataset == "toy"
    assert parser.parse_args(["train", "--dataset", "toy"]).dataset == "toy"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "ckpt", "--dataset", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_training_on_a_registered_dataset(toy, tmp_path, no_other_roots):
    from mgcnn.train import TrainConfig, train

    _write_toy(tmp_path / "data")
    cfg = TrainConfig(model="mgiad", model_kwargs={"widths": [8, 16], "coarse_channels": 4, "group_size": 2},
                      dataset="toy", data_dir=str(tmp_path / "data"), epochs=1, batch_size=16, eval_batch_size=16,
                      threads=1, channels_last=False, out=str(tmp_path / "run"))
    result = train(cfg, progress=False, log=lambda s: None)
    assert result is not None and result.dataset == "toy" and result.epochs == 1 and 0.0 <= result.test_acc <= 100.0
