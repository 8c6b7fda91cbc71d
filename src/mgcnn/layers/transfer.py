"""Transfers between grids: resolution restriction Pi/R and in-channel restriction/prolongation.

Resolution transfers follow the MgNet code used by the MGiaD and Poly-MgNet authors (docs/architectures.md 3a):
Pi and R are learnable 3x3 stride-2 convolutions with ``groups = c_in`` ("learnable depthwise pooling operators",
MGiaD paper Sec. IV-B), i.e. depthwise with channel multiplier ``c_out / c_in``: 9 * c_out weights each.
He & Xu's original MgNet uses fully coupled 3x3 stride-2 convolutions followed by norm and activation instead
(:func:`full_transfer`).

In-channel transfers (MGiaD paper eqs. 8, 9, 11) halve or double the channel count by mixing channel *pairs*:
coarse channel j is a learned combination of fine channels (2j, 2j+1). This is a 1x1 convolution with
``groups = c/2`` and costs c weights, which reproduces the papers' counts (docs/architectures.md 6d).

Speed: a grouped 1x1 convolution with 2 channels per group wastes most of a vector unit (oneDNN pads each group to
16 channels), so :class:`ChannelRestriction` and :class:`ChannelProlongation` keep the ``nn.Conv2d`` parameters
(same weights, state dicts and counts) but compute the pair sums as channels-last elementwise products with a
hand-written backward (fwd+bwd 1.2-1.3x faster than the grouped conv at 8x8, on par at 16x16, 1.3-1.5x slower at
32x32 on our CPU when the two are timed in interleaved rounds; 1.5-2x faster below 32x32 in earlier back-to-back
timings). With ``fast = False`` (:func:`mgcnn.layers.reference_mode`) they run the grouped conv instead. With
``cpu_kernel = True`` (set by :func:`mgcnn.layers.cpu_prepare.use_cpu_kernels` when a model is prepared for mgcnn's
CPU kernels, as training on CPU does) the fast path runs the one-pass C++ kernels of :mod:`mgcnn.layers.cpu_transfer`
where they apply: 3-4.7x faster than the grouped conv and 2.8-4.3x faster than the weighted sums
(``python benchmarks/layers.py transfers``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import cpu_transfer
from .common import LayerFactory, is_channels_last, make_act
from .conv import FastPath, GroupedConv2d


def resolution_transfer(c_in: int, c_out: int) -> nn.Conv2d:
    """Pi or R between resolution levels: 3x3, stride 2, ``groups = c_in``, ``c_out`` a multiple of ``c_in``."""
    if c_out % c_in != 0:
        raise ValueError(f"resolution transfer {c_in}->{c_out}: the output width must be a multiple of {c_in}")
    return GroupedConv2d(c_in, c_out, 3, stride=2, padding=1, groups=c_in, bias=False)


def full_transfer(c_in: int, c_out: int, norm_layer: LayerFactory, act_layer: LayerFactory) -> nn.Sequential:
    """Pi or R of He & Xu's original MgNet: ``act(norm(conv3x3_stride2(x)))`` with a fully coupled 3x3 conv.

    He & Xu (2019), Sec. 3 and their released ``MgNet_Code``: ``u <- act(norm(Pi u))`` and
    ``f <- act(norm(R (f - A u))) + A_new u``; 9 c_in c_out weights plus the norm's.
    """
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), norm_layer(c_out),
                         make_act(act_layer))


def _nhwc(x: Tensor) -> Tensor:
    """``(N, C, H, W) -> (N, H, W, C)`` as a view: contiguous for channels-last tensors, strided otherwise."""
    return x.permute(0, 2, 3, 1)


def _pair_dot(x: Tensor, w: Tensor) -> Tensor:
    """``x[..., j, 0] * w[j, 0] + x[..., j, 1] * w[j, 1]`` for x (..., C/2, 2), w (C/2, 2)."""
    return torch.addcmul(x[..., 0] * w[:, 0], x[..., 1], w[:, 1])  # (..., C/2)


def _pair_weight_grad(g: Tensor, x: Tensor) -> Tensor:
    """``sum over (N, H, W) of g[..., j] * x[..., j, k]`` for g (N, H, W, C/2), x (N, H, W, C/2, 2) -> (C/2, 2)."""
    # Two products reduced over the leading dims: much faster here than einsum/bmm, which fall back to batched
    # matmuls with a one-row operand.
    return torch.stack([(g * x[..., 0]).sum((0, 1, 2)), (g * x[..., 1]).sum((0, 1, 2))], dim=-1)


class _PairRestrict(torch.autograd.Function):
    """``y[:, j] = w[j, 0] x[:, 2j] + w[j, 1] x[:, 2j+1]``: a 1x1 conv with ``groups = C/2`` as weighted sums."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        c2 = weight.shape[0]
        xv = _nhwc(x).unflatten(-1, (c2, 2))  # (N, H, W, C/2, 2)
        w = weight.view(c2, 2).to(x.dtype)
        ctx.save_for_backward(x, weight)
        return _pair_dot(xv, w).permute(0, 3, 1, 2)  # (N, C/2, H, W), channels-last if x is

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        c2 = weight.shape[0]
        g = _nhwc(grad)  # (N, H, W, C/2)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            w = weight.view(c2, 2).to(grad.dtype)
            gx = (g.unsqueeze(-1) * w).flatten(-2).permute(0, 3, 1, 2)  # (N, C, H, W)
        if ctx.needs_input_grad[1]:
            gw = _pair_weight_grad(g, _nhwc(x).unflatten(-1, (c2, 2))).to(weight.dtype).view_as(weight)
        return gx, gw


class _PairProlong(torch.autograd.Function):
    """``y[:, 2j+k] = w[2j+k] u[:, j]``: a 1x1 conv ``C/2 -> C`` with ``groups = C/2`` as a broadcast product;
    with ``add`` (channels-last, of the output's shape), ``add + y`` in the same pass."""

    @staticmethod
    def forward(ctx, u: Tensor, weight: Tensor, add: Tensor | None = None) -> Tensor:
        c2 = u.shape[1]
        w = weight.view(c2, 2).to(u.dtype)
        ctx.save_for_backward(u, weight)
        uv = _nhwc(u).unsqueeze(-1)  # (N, H, W, C/2, 1)
        y = uv * w if add is None else torch.addcmul(_nhwc(add).unflatten(-1, (c2, 2)), uv, w)  # (N, H, W, C/2, 2)
        return y.flatten(-2).permute(0, 3, 1, 2)  # (N, C, H, W)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        u, weight = ctx.saved_tensors
        c2 = u.shape[1]
        gv = _nhwc(grad).unflatten(-1, (c2, 2))  # (N, H, W, C/2, 2)
        gu = gw = None
        if ctx.needs_input_grad[0]:
            gu = _pair_dot(gv, weight.view(c2, 2).to(grad.dtype)).permute(0, 3, 1, 2)  # (N, C/2, H, W)
        if ctx.needs_input_grad[1]:
            gw = _pair_weight_grad(_nhwc(u), gv).to(weight.dtype).view_as(weight)
        needs_add = len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]  # apply(u, weight) has no add
        return gu, gw, grad if needs_add else None  # d(add + y) / d add = identity


class ChannelRestriction(nn.Conv2d, FastPath):
    """In-channel restriction R^ or FAS restriction Pi^: ``c -> c/2`` mixing adjacent channel pairs (c weights).

    An ``nn.Conv2d(c, c/2, 1, groups=c/2, bias=False)`` in every respect but the speed of its forward.
    """

    cpu_kernel = False  # mgcnn's C++ pair kernel on the fast path (see the module docstring)

    def __init__(self, c_fine: int):
        if c_fine % 2:
            raise ValueError(f"in-channel restriction needs an even channel count, got {c_fine}")
        super().__init__(c_fine, c_fine // 2, 1, groups=c_fine // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # the weighted sums are laid out for channels-last memory; NCHW inputs keep the conv (no layout flip)
        if self.fast and is_channels_last(x):
            if self.cpu_kernel and cpu_transfer.pair_supported(x, self.weight):
                return cpu_transfer.pair_restrict(x, self.weight)
            return _PairRestrict.apply(x, self.weight)
        return super().forward(x)


class ChannelProlongation(nn.Conv2d, FastPath):
    """In-channel prolongation P^: ``c/2 -> c``, each coarse channel feeds one adjacent pair (c weights).

    An ``nn.Conv2d(c/2, c, 1, groups=c/2, bias=False)`` in every respect but the speed of its forward.
    """

    cpu_kernel = False  # as in ChannelRestriction

    def __init__(self, c_fine: int):
        if c_fine % 2:
            raise ValueError(f"in-channel prolongation needs an even channel count, got {c_fine}")
        super().__init__(c_fine // 2, c_fine, 1, groups=c_fine // 2, bias=False)

    def forward(self, u: Tensor, add: Tensor | None = None) -> Tensor:
        """``P^ u``, or ``add + P^ u`` (the coarse correction of Algorithm 2 line 7) in one pass on the fast path."""
        if self.fast and is_channels_last(u) and (add is None or is_channels_last(add)):  # as in ChannelRestriction
            if self.cpu_kernel and cpu_transfer.pair_supported(u, self.weight, add):
                return cpu_transfer.pair_prolong(u, self.weight, add)
            return _PairProlong.apply(u, self.weight, add)
        y = super().forward(u)
        return y if add is None else add + y


def channel_restriction(c_fine: int) -> ChannelRestriction:
    """In-channel restriction R^ or FAS restriction Pi^ (see :class:`ChannelRestriction`)."""
    return ChannelRestriction(c_fine)


def channel_prolongation(c_fine: int) -> ChannelProlongation:
    """In-channel prolongation P^ (see :class:`ChannelProlongation`)."""
    return ChannelProlongation(c_fine)
