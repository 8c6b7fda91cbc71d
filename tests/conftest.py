import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="where the model and training tests run: cpu (default), cuda, cuda:N, or all (every "
                          "available device). CUDA-only tests run whenever CUDA is available and skip otherwise.")


def _devices(config) -> list[str]:
    opt = config.getoption("--device")
    if opt == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [opt]


def pytest_configure(config):
    devices = _devices(config)
    for d in devices:
        if torch.device(d).type == "cuda" and not torch.cuda.is_available():
            pytest.exit(f"--device {d}: torch.cuda.is_available() is False on this machine; use --device cpu",
                        returncode=4)
    if all(torch.device(d).type == "cpu" for d in devices):
        # Triton kernels run in Triton's interpreter on CPU; the switch is read when triton is first imported,
        # so it is set here, before any test module imports it.
        os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_generate_tests(metafunc):
    """Tests that take a ``device`` argument run on every device chosen with ``--device``."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _devices(metafunc.config))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def cifar(tmp_path, monkeypatch):
    """A tiny official-format CIFAR-10 archive (64 training, 32 test images) under tmp_path/data, the registry's
    checksums its own: (the data root, the archive's members)."""
    from tests.helpers import write_cifar  # imported when used: nothing of mgcnn before pytest_configure

    blobs = write_cifar(tmp_path / "data", n_train=64, n_test=32, monkeypatch=monkeypatch)
    return tmp_path / "data", blobs


@pytest.fixture()
def data_root(cifar):
    """The data root of :func:`cifar`."""
    return cifar[0]


@pytest.fixture()
def no_matplotlib(monkeypatch):
    """Imports of matplotlib fail, as on a machine without the plots extra."""
    from tests.helpers import block_imports

    block_imports(monkeypatch, "matplotlib")
