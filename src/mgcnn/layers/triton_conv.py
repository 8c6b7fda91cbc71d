"""A Triton kernel for grouped 3x3 convolutions with few channels per group (MGiaD's g_s = 4, 8, 16), channels-last.

Why: cuDNN and oneDNN are built for wide groups; with 4-16 channels per group their grouped kernels waste most of
the hardware (the MGiaD paper's own limitation: "grouped convolution is not efficient on GPUs"). Here one program
computes a tile of ``BLOCK_P`` output pixels x ``BLOCK_C`` output channels that spans *several groups*, so the
channel dimension is vectorised across groups instead of within one tiny group. In NHWC memory the loads of a tile
are contiguous along channels. Every product is accumulated in fp32; the output has the input's dtype.

Maths (cross-correlation, zero padding 1, stride s; input channel of output channel o and local index i is
``(o // g_out) g_in + i``):

    y[n, p, q, o]    = sum_{kh, kw, i} x[n, s p - 1 + kh, s q - 1 + kw, (o // g_out) g_in + i] w[o, i, kh, kw]
    dx[n, h, v, c]   = sum_{kh, kw, o in group(c)} dy[n, (h + 1 - kh) / s, (v + 1 - kw) / s, o] w[o, c % g_in, kh, kw]
                       (terms whose index is not an integer in range are zero)
    dw[o, i, kh, kw] = sum_{n, p, q} dy[n, p, q, o] x[n, s p - 1 + kh, s q - 1 + kw, (o // g_out) g_in + i]

The weight gradient is reduced in two deterministic stages (per pixel block, then a sum over blocks), no atomics.

:func:`grouped_conv3x3` is the entry point; :func:`supported` says which convolutions it handles. It runs on CUDA
devices; with ``TRITON_INTERPRET=1`` set before triton is first imported, Triton's interpreter runs it on CPU
tensors (how the tests check it on CPU).

A model uses the kernel only through its grouped-conv plan (``("triton", 1)``, :mod:`mgcnn.layers.conv`): a
:class:`mgcnn.layers.ConvPlanner` attached to the model (:func:`mgcnn.layers.set_conv_planner`; a freshly built
model has none and runs the stock kernels) times it per shape beside the stock grouped kernel and the merged-group
formulations, for channels-last CUDA inputs only, and keeps it only where it is at least 10% faster than the best
of those (``mgcnn.layers.conv.MIN_GAIN``). ``ConvPlanner(triton=False)`` leaves it out, as does
``MGCNN_TRITON_CONV=0`` in the environment for a planner built without ``triton=``; so do the reference formulation
(``fast=False``, :func:`mgcnn.layers.reference_mode`) and deterministic mode.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

MAX_GROUP_CHANNELS = 16  # the kernel unrolls its loop over a group's channels: meant for small groups


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means no kernel
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supported(x: Tensor, weight: Tensor, stride, padding, dilation, groups: int) -> bool:
    """Whether :func:`grouped_conv3x3` computes ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``."""
    if not triton_available() or groups < 2 or x.dim() != 4:
        return False
    if not (x.is_cuda or (interpreting() and x.device.type == "cpu")):
        return False
    c_out, g_in, kh, kw = weight.shape
    s = stride if isinstance(stride, int) else stride[0]
    return ((kh, kw) == (3, 3) and tuple(_pair(padding)) == (1, 1) and tuple(_pair(dilation)) == (1, 1)
            and tuple(_pair(stride)) == (s, s) and s in (1, 2) and g_in <= MAX_GROUP_CHANNELS
            and c_out // groups <= MAX_GROUP_CHANNELS and x.dtype in (torch.float32, torch.float16, torch.bfloat16))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@functools.lru_cache(maxsize=1)
def _kernels():
    """(forward, input-gradient, weight-gradient) kernels (compiled, or interpreted under ``TRITON_INTERPRET=1``)."""
    from . import _triton_kernels as k

    return k.fwd, k.bwd_input, k.bwd_weight


def _blocks(channels: int) -> tuple[int, int]:
    block_c = 64 if channels >= 64 else max(16, 1 << (channels - 1).bit_length())
    block_p = 64 if interpreting() else 128
    return block_p, block_c


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1).contiguous()  # a no-op view for channels-last tensors


def _launch_geometry(x: Tensor, weight: Tensor, stride: int, groups: int):
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1  # 3x3, padding 1
    return n, c_in, h, w, c_out, oh, ow, c_in // groups, c_out // groups


class _GroupedConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: int, groups: int) -> Tensor:
        import triton

        fwd, _, _ = _kernels()
        n, c_in, h, w, c_out, oh, ow, g_in, g_out = _launch_geometry(x, weight, stride, groups)
        xh = _nhwc(x)
        wt = weight.permute(2, 3, 1, 0).contiguous()  # (3, 3, g_in, C_out): contiguous over output channels
        y = torch.empty((n, oh, ow, c_out), device=x.device, dtype=x.dtype)
        bp, bc = _blocks(c_out)
        grid = (triton.cdiv(n * oh * ow, bp), triton.cdiv(c_out, bc))
        fwd[grid](xh, wt, y, n * oh * ow, h, w, c_in, oh, ow, c_out, S=stride, G_IN=g_in, G_OUT=g_out,
                  BLOCK_P=bp, BLOCK_C=bc)
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, groups)
        return y.permute(0, 3, 1, 2)  # (N, C_out, OH, OW), channels-last

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels build no graph: double backward is an error
    def backward(ctx, grad: Tensor):
        import triton

        _, bwd_input, bwd_weight = _kernels()
        x, weight = ctx.saved_tensors
        stride, groups = ctx.conf
        n, c_in, h, w, c_out, oh, ow, g_in, g_out = _launch_geometry(x, weight, stride, groups)
        gy = _nhwc(grad.to(x.dtype))
        wt = weight.permute(2, 3, 1, 0).contiguous()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gxh = torch.empty((n, h, w, c_in), device=x.device, dtype=x.dtype)
            bp, bc = _blocks(c_in)
            grid = (triton.cdiv(n * h * w, bp), triton.cdiv(c_in, bc))
            bwd_input[grid](gy, wt, gxh, n * h * w, h, w, c_in, oh, ow, c_out, S=stride, G_IN=g_in, G_OUT=g_out,
                            BLOCK_P=bp, BLOCK_C=bc)
            gx = gxh.permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            bp, bc = _blocks(c_out)
            n_blocks = triton.cdiv(n * oh * ow, bp)
            part = torch.empty((n_blocks, 3, 3, g_in, c_out), device=x.device, dtype=torch.float32)
            grid = (n_blocks, triton.cdiv(c_out, bc))
            bwd_weight[grid](gy, _nhwc(x), part, n * oh * ow, h, w, c_in, oh, ow, c_out, S=stride, G_IN=g_in,
                             G_OUT=g_out, BLOCK_P=bp, BLOCK_C=bc)
            gw = part.sum(0).permute(3, 2, 0, 1).to(weight.dtype)  # (C_out, g_in, 3, 3)
        return gx, gw, None, None


def grouped_conv3x3(x: Tensor, weight: Tensor, stride: int, groups: int) -> Tensor:
    """``F.conv2d(x, weight, None, stride, 1, 1, groups)`` for a 3x3 ``weight`` with the Triton kernels above.

    Under autocast the operands are cast to the autocast dtype, as ``F.conv2d`` would be.
    """
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, weight = x.to(dt), weight.to(dt)
    elif weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
    return _GroupedConv3x3.apply(x, weight, int(stride if isinstance(stride, int) else stride[0]), groups)
