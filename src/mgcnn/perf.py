"""Process-level speed settings that do not change any model's maths.

Only settings of the process live here. How a layer computes (fast or reference formulation, grouped-conv plans)
is chosen per model, in :mod:`mgcnn.layers.conv`.

``tune_allocator()``: keep freed CPU memory in the process instead of returning it to the kernel.

Why: PyTorch's CPU allocator is plain ``malloc``. glibc serves every block above its mmap threshold (at most 32 MiB,
and usually far less) with a fresh ``mmap`` and unmaps it on free, so every new activation of a CIFAR batch is
page-faulted in and zeroed by the kernel again, step after step. Measured on our 2-core CPU (128x64x32x32 fp32,
``python benchmarks/layers.py allocator``): ``x + y`` into a fresh tensor 11-14 ms, into a preallocated one 2-3 ms.
The multigrid models are full of such elementwise passes (residuals, corrections, norms, activations), so the page
faults cost them more than a conv-bound ResNet. With ``M_MMAP_MAX = 0`` and trimming off, large blocks come from the
heap and are reused, like a caching allocator: a fresh ``x + y`` takes 2-3 ms too. The price is the same as a
caching allocator's: the process keeps its peak memory until it exits.

It is glibc-only (Linux); elsewhere ``tune_allocator`` does nothing and returns False. ``MGCNN_MALLOC=default`` in
the environment turns it off for an A/B comparison; the ``mgcnn`` commands and ``train()`` call it at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from .settings import settings

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# glibc's defaults (malloc(3)): at most 65,536 mmap'ed blocks, the heap top trimmed above 128 KiB.
_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD = 65536, 128 * 1024

_state: dict[str, object] = {"tuned": None}


def tune_allocator(*, force: bool = False) -> bool:
    """Make glibc reuse large freed blocks instead of unmapping them. Returns whether the setting is active.

    Idempotent. Skipped (returns False) on non-Linux systems, non-glibc C libraries, or when the environment
    variable ``MGCNN_MALLOC`` is ``default`` (unless ``force``).
    """
    if _state["tuned"] is not None and not force:
        return bool(_state["tuned"])
    ok = False
    if sys.platform.startswith("linux") and (force or not settings().malloc_default):
        mallopt = _mallopt()
        if mallopt is not None:
            # mallopt returns 1 on success. Never mmap (so nothing is unmapped on free), never trim the heap top.
            ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _state["tuned"] = ok
    return ok


def restore_allocator(state: str) -> None:
    """Put the allocator back to ``state`` (an :func:`allocator_state` value read before :func:`tune_allocator`).

    ``"default"`` sets glibc's documented defaults again; what stays different from a process that was never tuned
    is glibc's *dynamic* mmap threshold, which an explicit setting fixes at its current value.
    """
    if state == "tuned" or not _state["tuned"]:
        return
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    _state["tuned"] = False


def _mallopt():
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt


def allocator_state() -> str:
    """``"tuned"`` or ``"default"`` (recorded in run and benchmark metadata)."""
    return "tuned" if _state["tuned"] else "default"
