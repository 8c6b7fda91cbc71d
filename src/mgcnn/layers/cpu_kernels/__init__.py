"""mgcnn's own C++ CPU kernels, compiled on first use and cached.

The sources next to this file (``conv3x3.cpp``: grouped 3x3 convolutions with few channels per group;
``depthwise_s2.cpp``: the stride-2 depthwise transfers; ``batchnorm.cpp``: training-mode BatchNorm + ReLU;
``pair_transfer.cpp``: MGiaD's in-channel pair transfers; ``bindings.cpp``: their PyTorch bindings) ship with the
package. The first process that needs them compiles them
with :func:`torch.utils.cpp_extension.load` (a C++17 compiler and ninja are needed; ``-O3 -march=native``: the
library is built for the CPU it runs on) and prints a progress line on stderr; the library is cached in a folder
whose name is a hash of everything the binary depends on (the sources, torch's version, Python's version and
platform, the compiler flags, this CPU's model and instruction-set flags), under ``$TORCH_EXTENSIONS_DIR`` or
torch's default (``~/.cache/torch_extensions``). Later processes import the cached library at once, without a compiler.

Where the kernels cannot be had (no compiler, no ninja, a failed build, another OS), :func:`load` returns ``None``
after one warning naming the cause, and the callers keep PyTorch's stock kernels. :func:`status` says which.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

HERE = Path(__file__).resolve().parent
# batchnorm: training BN + ReLU; pair_transfer: MGiaD's in-channel transfers
SOURCES = ("bindings.cpp", "conv3x3.cpp", "depthwise_s2.cpp", "batchnorm.cpp", "pair_transfer.cpp")
HEADERS = ("conv3x3.h", "depthwise_s2.h", "batchnorm.h", "pair_transfer.h", "tensor_checks.h")
CFLAGS = ("-O3", "-march=native", "-fopenmp")  # OpenMP: at::parallel_for runs on torch's intra-op threads
LDFLAGS = ("-fopenmp",)
NAME = "mgcnn_cpu_kernels"
_MARKER = "mgcnn-built.txt"  # written after a successful build and import; holds the library's file name
STALE_LOCK_S = 900  # a build lock older than this was left by a killed build

_reason: str | None = None  # why the kernels are unavailable (None: available or not tried yet)


def _cpu_identity() -> str:
    """The CPU model and instruction-set flags (what ``-march=native`` compiles for)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    fields = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "flags", "Features", "CPU part") and key not in fields:
            fields[key] = " ".join(sorted(value.split())) if key in ("flags", "Features") else value.strip()
    return f"{platform.machine()} " + " | ".join(f"{k}={v}" for k, v in sorted(fields.items()))


def cache_key() -> str:
    """A hash of everything the compiled library depends on (see the module docstring)."""
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    parts = (torch.__version__, str(torch.version.git_version), sys.version, platform.platform(terse=True),
             " ".join(CFLAGS + LDFLAGS), _cpu_identity())
    h.update("\0".join(parts).encode())
    return h.hexdigest()[:16]


def build_root() -> Path:
    """Where the cached builds live: ``$TORCH_EXTENSIONS_DIR`` or torch's default extensions folder."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        from torch.utils.cpp_extension import get_default_build_root

        root = get_default_build_root()
    return Path(root)


def _import(path: Path, name: str) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _first_error_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() and not ln.lower().startswith("error building extension"):
            return ln[:300]
    return (lines[-1] if lines else "unknown error")[:300]


def build(root: Path | None = None, *, quiet: bool = False) -> tuple[ModuleType | None, str | None]:
    """Import the cached library, compiling it first where needed: ``(module, None)`` or ``(None, reason)``.

    ``root``: the cache folder (default :func:`build_root`). Never raises for a missing compiler or a failed
    build; the reason says what went wrong.
    """
    if sys.platform != "linux":  # the build flags (-fopenmp, -march=native) are those of GCC/Clang on Linux
        return None, f"CPU kernels are built on Linux only (this is {sys.platform})"
    cxx = os.environ.get("CXX", "c++")  # what cpp_extension compiles with
    name = f"{NAME}_{cache_key()}"
    folder = (root or build_root()) / name
    marker = folder / _MARKER
    if marker.is_file():  # built before: import without a compiler
        try:
            return _import(folder / marker.read_text().strip(), name), None
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt below
            marker.unlink(missing_ok=True)
            if not quiet:
                print(f"mgcnn: the cached CPU kernels in {folder} do not load ({e}); rebuilding", file=sys.stderr)
    if shutil.which(cxx) is None:
        return None, f"no C++ compiler (CXX={cxx!r} is not on PATH)"
    from torch.utils import cpp_extension

    with _scripts_on_path():  # the ninja of this environment's pip (a dependency) even when it is not activated
        if not cpp_extension.is_ninja_available():
            return None, "ninja is not installed (pip install ninja)"
        return _build(cpp_extension, name, folder, marker, quiet)


@contextlib.contextmanager
def _scripts_on_path():
    """This interpreter's scripts folder (a venv's bin/) first on PATH while the build runs, then PATH as it was."""
    scripts, path = sysconfig.get_path("scripts"), os.environ.get("PATH", "")
    if not scripts or scripts in path.split(os.pathsep):
        yield
        return
    os.environ["PATH"] = scripts + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _build(cpp_extension, name: str, folder: Path, marker: Path, quiet: bool):
    """Compile the kernels into ``folder`` (the rest of :func:`load`)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / "lock"  # cpp_extension's lock: a build killed half-way leaves it, and the next one would wait
        if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)
    except OSError as e:
        return None, f"the cache folder {folder} is not writable ({e.strerror})"
    if not quiet:
        print(f"mgcnn: compiling the CPU convolution kernels once for this torch and CPU (about a minute) in {folder}",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        module = cpp_extension.load(name, [str(HERE / s) for s in SOURCES], extra_cflags=list(CFLAGS),
                                    extra_ldflags=list(LDFLAGS), extra_include_paths=[str(HERE)],
                                    build_directory=str(folder), verbose=False)
    except Exception as e:  # noqa: BLE001 - compiler errors, linker errors, import errors: all mean no kernels
        return None, f"building them failed: {_first_error_line(e)}"
    try:
        tmp = folder / f"{_MARKER}.{os.getpid()}.tmp"
        tmp.write_text(Path(module.__file__).name)
        os.replace(tmp, marker)
    except OSError:  # the kernels work; only the next process will build (or find the library) again
        pass
    if not quiet:
        print(f"mgcnn: CPU convolution kernels ready ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return module, None


@functools.lru_cache(maxsize=1)
def load() -> ModuleType | None:
    """The kernels' module (built on the first call of the process), or ``None`` after one warning naming why."""
    global _reason
    module, _reason = build()
    if module is None:
        # warn_explicit with a file name that has no source: Python prints the warning as one line, no code under it
        warnings.warn_explicit(f"using PyTorch's stock convolutions, its own CPU kernels are unavailable: {_reason}",
                               RuntimeWarning, filename="mgcnn", lineno=0, module="mgcnn.layers.cpu_kernels")
    return module


def status() -> str:
    """One line: the kernels' instruction set once loaded, why they are unavailable, or that they are not loaded."""
    if load.cache_info().currsize == 0:
        return "not loaded yet"
    module = load()
    if module is None:
        return f"unavailable: {_reason}"
    return f"available ({module.isa}, {module.vector_lanes} float32 lanes)"
