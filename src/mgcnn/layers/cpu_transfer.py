"""mgcnn's C++ CPU kernel for the resolution transfers Pi and R: depthwise 3x3 convolutions with stride 2.

MgNet's and MGiaD's Pi and R (:func:`mgcnn.layers.transfer.resolution_transfer`) are 3x3, stride-2, padding-1,
bias-free convolutions with ``groups = C_in`` and a channel multiplier ``M = C_out / C_in`` of 1 or 2. Why a kernel:
oneDNN runs them at a few GFLOP/s (with a channel multiplier of 2 it takes a generic path; its depthwise path with
M = 1 is better), although they are cheap: 9 multiply-adds per output on large tensors, so their speed is that of
reading and writing the tensors. The kernels of :mod:`mgcnn.layers.cpu_kernels` (``depthwise_s2.cpp``) put one
input channel in every vector lane, keep the block's 9 M weight vectors in registers, read and write NHWC
(channels-last) tensors in memory order, prefetch the next row's tensors while a row computes, and
(de)interleave the M outputs of an input channel with two permutes per pixel.

The maths (cross-correlation; output channel ``c M + j`` reads input channel ``c``; output size ceil(H/2) x ceil(W/2)):

    y[n, c M + j, oh, ow] = sum_{kh, kw} x[n, c, 2 oh + kh - 1, 2 ow + kw - 1] W[c M + j, 0, kh, kw]
    dx[n, c, ih, iw]      = sum over j and the (oh, kh), (ow, kw) with 2 oh + kh - 1 = ih, 2 ow + kw - 1 = iw
    dW[c M + j, 0, kh, kw] = sum_{n, oh, ow} dy[n, c M + j, oh, ow] x[n, c, 2 oh + kh - 1, 2 ow + kw - 1]

The weight gradient is reduced in a fixed order that depends on the shape only (bitwise equal over runs and thread
counts). float32 runs the vectorised kernels (AVX-512, else AVX2 + FMA, else plain loops); float64 plain loops (for
``torch.autograd.gradcheck``).

A model uses the kernel only through its grouped-conv plan ``("cpu", 1)`` for a stride-2 convolution
(:mod:`mgcnn.layers.conv`): a :class:`mgcnn.layers.ConvPlanner` times it beside the stock kernel and the other
formulations for CPU channels-last inputs and keeps it only where it is at least 10% faster.
``ConvPlanner(cpu_kernels=False)``, the reference formulation and deterministic mode leave it out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernels
from .cpu_conv import _nchw, _nhwc, _pair

MULTIPLIERS = (1, 2)  # the channel multipliers the vectorised kernels are built for (MGiaD's and MgNet's)
CL = torch.channels_last


def supported(x: Tensor, weight: Tensor, stride=2, padding=1, dilation=1, groups: int = 1) -> bool:
    """Whether :func:`depthwise_conv3x3_s2` computes ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``.

    CPU, float32 or float64, 3x3, stride 2, padding 1, dilation 1, ``groups`` = the input channels (depthwise),
    a channel multiplier in :data:`MULTIPLIERS`, and no autocast (the kernels have no bfloat16 path).
    """
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.dim() != 4 or weight.dim() != 4:
        return False
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype or torch.is_autocast_enabled("cpu"):
        return False
    c_out, c_in_g, kh, kw = weight.shape
    if (kh, kw) != (3, 3) or _pair(stride) != (2, 2) or _pair(padding) != (1, 1) or _pair(dilation) != (1, 1):
        return False
    c = x.shape[1]
    if c_in_g != 1 or groups != c or c < 1 or c_out % c or c_out // c not in MULTIPLIERS:
        return False
    return cpu_kernels.load() is not None


class _DepthwiseS2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ext = cpu_kernels.load()
        xh = _nhwc(x)
        w = weight.contiguous()
        ctx.save_for_backward(xh, w)
        ctx.channels_last = x.is_contiguous(memory_format=CL)
        return _nchw(ext.dws2_forward(xh, w), ctx.channels_last)  # (N, C M, Ho, Wo)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels build no graph: double backward is an error
    def backward(ctx, grad: Tensor):
        ext = cpu_kernels.load()
        xh, w = ctx.saved_tensors
        gy = _nhwc(grad.to(xh.dtype))
        gx = gw = None
        if ctx.needs_input_grad[0]:
            _, h, wd, c = xh.shape
            gx = _nchw(ext.dws2_input_grad(gy, w, h, wd, c), ctx.channels_last)
        if ctx.needs_input_grad[1]:
            gw = ext.dws2_weight_grad(xh, gy)
        return gx, gw


def depthwise_conv3x3_s2(x: Tensor, weight: Tensor, groups: int) -> Tensor:
    """``F.conv2d(x, weight, None, 2, 1, 1, groups)`` with mgcnn's CPU kernels (see :func:`supported`).

    Falls back to ``F.conv2d`` where the kernels do not apply (e.g. under autocast, or where they are unavailable),
    so a plan chosen once stays correct.
    """
    if not supported(x, weight, 2, 1, 1, groups):
        return F.conv2d(x, weight, None, 2, 1, 1, groups)
    return _DepthwiseS2.apply(x, weight)
