"""Process-level speed settings that do not change any model's maths.

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
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_state: dict[str, object] = {"tuned": None}


def tune_allocator(*, force: bool = False) -> bool:
    """Make glibc reuse large freed blocks instead of unmapping them. Returns whether the setting is active.

    Idempotent. Skipped (returns False) on non-Linux systems, non-glibc C libraries, or when the environment
    variable ``MGCNN_MALLOC`` is ``default`` (unless ``force``).
    """
    if _state["tuned"] is not None and not force:
        return bool(_state["tuned"])
    ok = False
    if sys.platform.startswith("linux") and (force or os.environ.get("MGCNN_MALLOC", "").lower() != "default"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl and others have no mallopt
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            # mallopt returns 1 on success. Never mmap (so nothing is unmapped on free), never trim the heap top.
            ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _state["tuned"] = ok
    return ok


def allocator_state() -> str:
    """``"tuned"`` or ``"default"`` (recorded in run and benchmark metadata)."""
    return "tuned" if _state["tuned"] else "default"


# ---------------------------------------------------------------------------------------- fast paths in layers
# The layers have fast formulations that compute the same maths as the straightforward one (the in-channel
# transfers as weighted sums, the FAS residual reused instead of recomputed, ...). ``reference_mode()`` switches
# them all off, so tests and users can compare outputs and gradients with the plain implementation.
_fast = {"enabled": True}


def fast_paths_enabled() -> bool:
    return _fast["enabled"]


class reference_mode:  # noqa: N801 - used like a function, as torch.no_grad
    """Context manager: run every layer with its straightforward implementation (for equivalence checks)."""

    def __enter__(self) -> None:
        self._before = _fast["enabled"]
        _fast["enabled"] = False

    def __exit__(self, *exc) -> None:
        _fast["enabled"] = self._before


# --------------------------------------------------------------------------- grouped convolutions: plan by timing
# A grouped convolution has equivalent formulations, and which is fastest depends on the shape, dtype and machine
# (oneDNN pads every group to its vector width; cuDNN's fp32 grouped kernels are slow):
# - ("merge", m): m neighbouring groups merged into one with a block-diagonal weight (m times the FLOPs; m = groups
#   is a dense convolution); ("merge", 1) is the stock grouped kernel;
# - ("split", k): a conv with one input channel per group and k outputs per group (the resolution transfers
#   Pi/R, a depthwise conv with channel multiplier k) as k true depthwise convs whose outputs are interleaved.
# With autotuning on, the first call of each shape times every candidate (forward + backward when gradients are
# needed) and keeps the fastest for the rest of the process, as cudnn.benchmark does for algorithms.
Plan = tuple[str, int]
GROUPED: Plan = ("merge", 1)
_autotune = {"enabled": os.environ.get("MGCNN_CONV_AUTOTUNE", "") == "1"}
_plans: dict[tuple, Plan] = {}
_MAX_MERGED_CHANNELS = 64  # merge candidates go up to this many input channels per merged group
_MIN_GAIN = 0.9  # another plan must be at least 10% faster than the grouped kernel (timing noise is ~5-15% here)


def set_conv_autotune(enabled: bool = True) -> None:
    """Turn per-shape timing of grouped convolutions on or off (``MGCNN_CONV_AUTOTUNE=1`` turns it on).

    ``mgcnn train`` (unless deterministic) and ``mgcnn bench`` turn it on; plain library use leaves it off.
    """
    _autotune["enabled"] = bool(enabled)


def conv_autotune_enabled() -> bool:
    return _autotune["enabled"]


def conv_plans() -> dict[tuple, Plan]:
    """The plans chosen so far, ``{shape key: plan}``."""
    return dict(_plans)


def clear_conv_plans() -> None:
    _plans.clear()


def merge_groups(weight, groups: int, m: int):
    """Weight of a ``groups``-group conv -> the equivalent ``groups/m``-group conv with block-diagonal groups.

    ``weight`` is ``(C_out, C_in/groups, kh, kw)``; the result is ``(C_out, m C_in/groups, kh, kw)`` and is
    differentiable (the gradient of the off-diagonal zeros is dropped, so the maths and the gradient are unchanged).
    """
    if m == 1:
        return weight
    c_out, c_in_g, kh, kw = weight.shape
    o = c_out // groups
    w = weight.reshape(groups // m, m, o, 1, c_in_g, kh, kw)
    eye = torch.eye(m, dtype=weight.dtype, device=weight.device).view(1, m, 1, m, 1, 1, 1)
    return (w * eye).reshape(c_out, m * c_in_g, kh, kw)  # (C_out, m C_in/groups, kh, kw)


def grouped_conv(x, weight, plan: Plan, stride, padding, dilation, groups: int):
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups)`` computed with ``plan`` (bias-free)."""
    kind, m = plan
    if kind == "triton":
        from .layers.triton_conv import grouped_conv3x3

        return grouped_conv3x3(x, weight, stride, groups)
    if kind == "merge":
        return F.conv2d(x, merge_groups(weight, groups, m), None, stride, padding, dilation, groups // m)
    c_out, _, kh, kw = weight.shape
    w = weight.view(groups, m, 1, kh, kw)
    ys = [F.conv2d(x, w[:, j], None, stride, padding, dilation, groups) for j in range(m)]  # k x (N, C_in, h, w)
    if x.is_contiguous(memory_format=torch.channels_last):  # interleave in NHWC so the result stays channels-last
        return torch.stack([y.permute(0, 2, 3, 1) for y in ys], dim=-1).flatten(-2).permute(0, 3, 1, 2)
    return torch.stack(ys, dim=2).flatten(1, 2)  # (N, C_out, h, w)


_triton = {"enabled": os.environ.get("MGCNN_TRITON_CONV", "1") != "0"}


def set_triton_conv(enabled: bool = True) -> None:
    """Let the planner consider the Triton grouped-conv kernel on CUDA (default on; ``MGCNN_TRITON_CONV=0`` off)."""
    _triton["enabled"] = bool(enabled)


def triton_conv_enabled() -> bool:
    return _triton["enabled"]


def _candidates(groups: int, in_per_group: int, out_per_group: int = 1, triton_ok: bool = False) -> list[Plan]:
    out, m = [GROUPED], 2
    while m <= groups and groups % m == 0 and m * in_per_group <= _MAX_MERGED_CHANNELS:
        out.append(("merge", m))
        m *= 2
    if in_per_group == 1 and out_per_group > 1:
        out.append(("split", out_per_group))
    if triton_ok:
        out.append(("triton", 1))
    return out


def median_time(fn: Callable[[], object], device: torch.device, warmup: int, steps: int) -> float:
    """Median seconds of ``steps`` calls of ``fn`` after ``warmup`` calls.

    On CUDA each call is timed with CUDA events recorded on the current stream around it (kernel launches are
    asynchronous: a host clock would time the launches, not the work), synchronising once per call.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        times = []
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_plan(run, device, repeats: int = 3) -> float:
    return median_time(run, device, warmup=1, steps=repeats)  # the warm-up creates primitives / cudnn plans


def plan_grouped_conv(x, conv) -> Plan:
    """The formulation for ``conv`` on input ``x``: the stock kernel when autotuning is off (or in deterministic
    mode), else the cached plan, or (first call of a shape) the fastest candidate by timing."""
    groups = conv.groups
    if groups == 1 or not _autotune["enabled"] or torch.are_deterministic_algorithms_enabled():
        return GROUPED  # autotuning off means the stock kernels, whatever was planned before
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
    key = (x.device.type, str(x.dtype), x.is_contiguous(memory_format=torch.channels_last), tuple(x.shape),
           tuple(conv.weight.shape), conv.stride, conv.padding, conv.dilation, groups, needs_grad, _triton["enabled"],
           torch.is_autocast_enabled(x.device.type) and torch.get_autocast_dtype(x.device.type),
           x.is_cuda and torch.backends.cudnn.allow_tf32)
    plan = _plans.get(key)
    if plan is not None or torch.compiler.is_compiling():
        return plan or GROUPED
    xs = x.detach().clone().requires_grad_(needs_grad)
    w0 = conv.weight.detach().clone().requires_grad_(needs_grad)
    best, best_t = GROUPED, None
    triton_ok = False
    if _triton["enabled"] and x.is_cuda and x.is_contiguous(memory_format=torch.channels_last):
        from .layers.triton_conv import supported

        triton_ok = supported(x, conv.weight, conv.stride, conv.padding, conv.dilation, groups)
    for cand in _candidates(groups, conv.weight.shape[1], conv.weight.shape[0] // groups, triton_ok):
        def run(cand=cand):
            with torch.set_grad_enabled(needs_grad):
                y = grouped_conv(xs, w0, cand, conv.stride, conv.padding, conv.dilation, groups)
                if needs_grad:
                    y.backward(torch.ones_like(y))
        t = _time_plan(run, x.device)
        if best_t is None:
            best_t = t
        elif t < _MIN_GAIN * best_t:
            best, best_t = cand, t
    _plans[key] = best
    return best
