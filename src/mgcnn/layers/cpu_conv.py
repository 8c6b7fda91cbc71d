"""mgcnn's C++ CPU kernel for grouped 3x3 convolutions with few channels per group (MGiaD's g_s = 2..32).

Why: oneDNN's grouped kernels pad every group to the vector width (16 floats with AVX-512), so with 4 or 8
channels per group most of the work multiplies zeros, and MGiaD's 3x3 convolutions run at a fraction of the rate of
a dense one. The kernels of :mod:`mgcnn.layers.cpu_kernels` (``conv3x3.cpp``) vectorise across groups instead:
one 16-lane vector holds 4 groups of 4 channels (or 2 of 8), one input vector is permuted per input channel so that
every lane sees its own group's channel, and the result feeds up to 6 multiply-adds; groups of more than 8
channels spread over whole vectors and read the input by broadcast. Channels-last (NHWC) memory is what they read
and write: a pixel's channels are contiguous.

The maths (cross-correlation, stride 1, zero padding 1, no bias, as many output as input channels per group):

    y[n, o, h, w]    = sum_{i, kh, kw} x[n, g c + i, h + kh - 1, w + kw - 1] W[o, i, kh, kw]    (g = o // c)
    dx               = the same convolution of dy with the flipped, group-transposed weight
    dW[o, i, kh, kw] = sum_{n, h, w} dy[n, o, h, w] x[n, g c + i, h + kh - 1, w + kw - 1]

The weight gradient is reduced in a fixed order that depends on the shape only, so two runs (with any number of
threads) give bitwise equal gradients. float32 runs the vectorised kernels; float64 runs plain loops (for
``torch.autograd.gradcheck``).

A model uses the kernel only through its grouped-conv plan ``("cpu", 1)`` (:mod:`mgcnn.layers.conv`): a
:class:`mgcnn.layers.ConvPlanner` times it per shape beside the stock kernel and the other formulations for CPU
channels-last inputs and keeps it only where it is at least 10% faster. ``ConvPlanner(cpu_kernels=False)`` leaves
it out, and so do the reference formulation (:func:`mgcnn.layers.reference_mode`) and deterministic mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernels

MAX_GROUP_CHANNELS = 32  # few channels per group: wider groups are what oneDNN is good at
CL = torch.channels_last


def available() -> bool:
    """Whether the kernels are built and loaded (builds them on the first call of a process)."""
    return cpu_kernels.load() is not None


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


def supported(x: Tensor, weight: Tensor, stride=1, padding=1, dilation=1, groups: int = 1) -> bool:
    """Whether :func:`grouped_conv3x3` computes ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``.

    CPU, float32 or float64, 3x3, stride 1, padding 1, dilation 1, as many output as input channels per group,
    at most :data:`MAX_GROUP_CHANNELS` of them, and no autocast (the kernels have no bfloat16 path).
    """
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.dim() != 4 or weight.dim() != 4:
        return False
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype or torch.is_autocast_enabled("cpu"):
        return False
    c_out, cg, kh, kw = weight.shape
    if (kh, kw) != (3, 3) or _pair(stride) != (1, 1) or _pair(padding) != (1, 1) or _pair(dilation) != (1, 1):
        return False
    if groups < 1 or x.shape[1] != c_out or c_out != groups * cg or cg > MAX_GROUP_CHANNELS:
        return False
    return available()


def _nhwc(t: Tensor) -> Tensor:
    """(N, C, H, W) -> the contiguous (N, H, W, C) tensor: a free view of a channels-last tensor, else a copy."""
    return t.permute(0, 2, 3, 1).contiguous()


def _nchw(t: Tensor, channels_last: bool) -> Tensor:
    """A kernel's (N, H, W, C) result as (N, C, H, W) in the input's layout (channels-last: a free view), as
    F.conv2d returns it."""
    y = t.permute(0, 3, 1, 2)
    return y if channels_last else y.contiguous()


class _GroupedConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, groups: int, add: Tensor | None) -> Tensor:
        ext = cpu_kernels.load()
        xh = _nhwc(x)
        w = weight.contiguous()
        ctx.save_for_backward(xh, w)
        ctx.channels_last = x.is_contiguous(memory_format=CL)
        return _nchw(ext.forward(xh, w, None if add is None else _nhwc(add.to(x.dtype))), ctx.channels_last)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels build no graph: double backward is an error
    def backward(ctx, grad: Tensor):
        ext = cpu_kernels.load()
        xh, w = ctx.saved_tensors
        gy = _nhwc(grad.to(xh.dtype))
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _nchw(ext.input_grad(gy, w), ctx.channels_last)
        if ctx.needs_input_grad[1]:
            gw = ext.weight_grad(xh, gy, w.shape[1])
        return gx, gw, None, grad if ctx.needs_input_grad[3] else None  # d(add + y) / d add = identity


def grouped_conv3x3(x: Tensor, weight: Tensor, groups: int, add: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, None, 1, 1, 1, groups)`` with mgcnn's CPU kernels (see :func:`supported`); with
    ``add`` (a tensor of the output's shape), ``add + F.conv2d(...)`` in the same pass (the kernel's accumulators
    start from ``add``: the residual ``f - A u`` and the FAS data ``R r + A u`` need no separate addition).

    Falls back to ``F.conv2d`` where the kernels do not apply (e.g. under autocast, or where they are unavailable),
    so a plan chosen once stays correct.
    """
    if not supported(x, weight, 1, 1, 1, groups) or (add is not None and add.shape != x.shape):
        y = F.conv2d(x, weight, None, 1, 1, 1, groups)
        return y if add is None else add + y
    return _GroupedConv3x3.apply(x, weight, groups, add)
