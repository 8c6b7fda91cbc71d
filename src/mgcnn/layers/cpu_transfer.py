"""mgcnn's C++ CPU kernels for the transfers: Pi and R (depthwise 3x3, stride 2) and the in-channel pairs R^, P^.

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

**In-channel pair transfers.** MGiaD's R^/Pi^ (``C -> C/2``) and P^ (``C/2 -> C``) are 1x1 convolutions with two
channels per group (:mod:`mgcnn.layers.transfer`)::

    restriction:   y[n, j]      = w[2j] x[n, 2j] + w[2j+1] x[n, 2j+1]
    prolongation:  y[n, 2j + k] = w[2j + k] u[n, j]            (+ add[n, 2j + k]: Algorithm 2 line 7's u + P^ u^)

Two multiply-adds per output: pure memory passes. ``pair_transfer.cpp`` does each direction in one pass over NHWC
memory: the forward reads its input once; the backward reads the output gradient and the saved input once each,
writes the input gradient and accumulates the weight gradient on the way (fixed chunks of pixels in a fixed order:
bitwise reproducible). :func:`pair_restrict` and :func:`pair_prolong` are used by
:class:`mgcnn.layers.ChannelRestriction` / :class:`mgcnn.layers.ChannelProlongation` once a model is prepared
for the CPU kernels (:func:`mgcnn.layers.cpu_prepare.use_cpu_kernels`), wherever :func:`pair_supported` holds.
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


# ------------------------------------------------------------------------------------------- in-channel pairs
def pair_supported(x: Tensor, weight: Tensor, add: Tensor | None = None) -> bool:
    """Whether the pair kernels take ``x`` (the transfer's input) and ``weight`` (``(C_out, C_in / groups, 1, 1)``
    of a 2-channel-per-group 1x1 conv): CPU, float32 or float64 both, channels-last contiguous, no autocast;
    ``add`` (the prolongation's added state, if given) channels-last of x's dtype with twice x's channels."""
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.dim() != 4 or x.numel() == 0:
        return False
    if x.dtype not in (torch.float32, torch.float64) or weight.dtype != x.dtype or torch.is_autocast_enabled("cpu"):
        return False
    if not x.is_contiguous(memory_format=CL):
        return False
    if add is not None and (add.dtype != x.dtype or add.shape != (x.shape[0], 2 * x.shape[1], *x.shape[2:])
                            or not add.is_contiguous(memory_format=CL)):
        return False
    return cpu_kernels.load() is not None


class _PairRestrictKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ext = cpu_kernels.load()
        xh, w = x.permute(0, 2, 3, 1), weight.reshape(-1).contiguous()  # (N, H, W, C), (C,)
        ctx.save_for_backward(xh, w)
        ctx.wshape = weight.shape
        return ext.pair_restrict(xh, w).permute(0, 3, 1, 2)  # (N, C/2, H, W), channels-last

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels build no graph: double backward is an error
    def backward(ctx, grad: Tensor):
        ext = cpu_kernels.load()
        xh, w = ctx.saved_tensors
        gx, gw = ext.pair_restrict_backward(_nhwc(grad.to(xh.dtype)), xh, w, ctx.needs_input_grad[0])
        return (gx.permute(0, 3, 1, 2) if ctx.needs_input_grad[0] else None), gw.view(ctx.wshape)


class _PairProlongKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, weight: Tensor, add: Tensor | None) -> Tensor:
        ext = cpu_kernels.load()
        uh, w = u.permute(0, 2, 3, 1), weight.reshape(-1).contiguous()  # (N, H, W, C/2), (C,)
        ctx.save_for_backward(uh, w)
        ctx.wshape = weight.shape
        return ext.pair_prolong(uh, w, None if add is None else add.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        ext = cpu_kernels.load()
        uh, w = ctx.saved_tensors
        gu, gw = ext.pair_prolong_backward(_nhwc(grad.to(uh.dtype)), uh, w, ctx.needs_input_grad[0])
        gu = gu.permute(0, 3, 1, 2) if ctx.needs_input_grad[0] else None
        return gu, gw.view(ctx.wshape), grad if ctx.needs_input_grad[2] else None  # d(add + y) / d add = identity


def pair_restrict(x: Tensor, weight: Tensor) -> Tensor:
    """The in-channel restriction ``F.conv2d(x, weight, groups=C/2)`` (``weight`` ``(C/2, 2, 1, 1)``) with the
    pair kernel; the caller checks :func:`pair_supported`."""
    return _PairRestrictKernel.apply(x, weight)


def pair_prolong(u: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
    """The in-channel prolongation ``F.conv2d(u, weight, groups=C/2)`` (``weight`` ``(C, 1, 1, 1)``), plus ``add``
    if given, with the pair kernel; the caller checks :func:`pair_supported`."""
    return _PairProlongKernel.apply(u, weight, add)
