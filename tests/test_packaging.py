"""The wheel carries LICENSE and py.typed, and a type checker sees mgcnn's types from an installed wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling (the dev extra)")
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                           "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("mgcnn-*.whl")
    return whl


def test_wheel_contains_license_and_py_typed(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "mgcnn/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_wheel_ships_the_trained_weights_and_the_kernel_sources(wheel):
    from mgcnn import zoo

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mgcnn/weights/SHA256SUMS" in names and "mgcnn/layers/cpu_kernels/conv3x3.cpp" in names
    assert {f"mgcnn/weights/{rel}" for rel in zoo.read_manifest()} <= names


def test_mypy_sees_mgcnn_types_from_the_installed_wheel(wheel, tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    zipfile.ZipFile(wheel).extractall(site)  # what pip install does with a pure-Python wheel
    probe = tmp_path / "probe.py"
    probe.write_text("import mgcnn\n\nn: str = mgcnn.count_parameters(mgcnn.create_model('resnet20'))\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                           "--python-executable", str(py), str(probe)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    # Installed without py.typed, mypy would refuse the package ("missing library stubs or py.typed marker") and
    # treat it as Any; with it, it knows count_parameters returns int, so assigning it to a str is an error.
    assert "py.typed" not in proc.stdout, proc.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in proc.stdout, \
        proc.stdout + proc.stderr
