"""Training-mode BatchNorm + ReLU (+ the residual addition after it) in one forward and one backward pass on CPU.

Why: in a training step of MGiaD on one CPU thread, BatchNorm, ReLU and the additions around the convolutions are
a third or more of the time (docs/performance.md). Stock PyTorch runs ``relu(batch_norm(x))`` as four passes over
the activation forward (statistics, normalisation, ReLU; the addition ``u + ...`` a fifth) and four backward
(ReLU mask, BatchNorm's two reductions and its input gradient). The C++ kernel of :mod:`mgcnn.layers.cpu_kernels`
(``batchnorm.cpp``) needs two each: forward one read pass for the statistics and one read/write pass for
``relu(bn(x)) (+ res)``; backward one read pass of x and the gradient for both reductions and one read/write pass for
dx, the ReLU mask recomputed from x. Reductions run in a fixed order (bitwise reproducible, any thread count).

The maths is ``torch.nn.BatchNorm2d`` in training mode followed by ``torch.relu`` (and ``res + ...``): biased batch
variance to normalise, the unbiased one for ``running_var``, ``momentum`` (``None``: the cumulative average by
``num_batches_tracked``), ``eps``. :class:`BatchNormReLU2d` is an ``nn.BatchNorm2d`` (same parameters, buffers and
state-dict keys) whose forward applies the ReLU; it uses the kernel for CPU channels-last float32/float64 inputs in
training mode (or without running statistics) and falls back to ``F.batch_norm`` + ``F.relu`` everywhere else
(eval mode, NCHW, CUDA, autocast, ``torch.compile``, ``fast = False``, kernels unavailable).

A model gets it from :func:`fuse_batchnorm_relu`, which turns every ``nn.BatchNorm2d`` directly followed by an
``nn.ReLU`` (in an ``nn.Sequential``, or a pair a module lists in ``norm_act_pairs``) into a :class:`BatchNormReLU2d`
and the ReLU into ``nn.Identity``; the training engine calls it for CPU channels-last runs that use the conv planner
(the same switch as the CPU convolution kernels: ``MGCNN_CONV_AUTOTUNE=0`` and deterministic runs keep the stock
layers). A :class:`mgcnn.layers.SmoothingStep` whose second norm is fused also folds its update ``u + relu(bn(B r))``
into the same pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import cpu_kernels
from .conv import FastPath

CL = torch.channels_last


def _nhwc(t: Tensor) -> Tensor:
    return t.permute(0, 2, 3, 1)  # a contiguous view of a channels-last tensor


def supported(x: Tensor, bn: nn.BatchNorm2d, residual: Tensor | None = None) -> bool:
    """Whether the kernel computes ``bn``'s training forward of ``x`` followed by ReLU (and ``residual + ...``).

    CPU, float32 or float64 (weight, bias and running statistics of the same dtype), channels-last contiguous, more
    than one value per channel, affine, no autocast, not being compiled; ``residual`` of x's shape, dtype and layout.
    """
    if x.device.type != "cpu" or x.dim() != 4 or x.dtype not in (torch.float32, torch.float64):
        return False
    if not x.is_contiguous(memory_format=CL) or x.numel() == 0 or x.numel() // x.shape[1] <= 1:
        return False
    if bn.weight is None or bn.bias is None or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        if t is not None and (t.dtype != x.dtype or t.device.type != "cpu"):
            return False
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype
                                 or not residual.is_contiguous(memory_format=CL)):
        return False
    return cpu_kernels.load() is not None


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, residual: Tensor | None, running_mean: Tensor | None,
                running_var: Tensor | None, momentum: float, eps: float) -> Tensor:
        ext = cpu_kernels.load()
        xh = _nhwc(x)
        y, mean, invstd = ext.bn_relu_forward(xh, weight.detach(), bias.detach(),
                                              None if residual is None else _nhwc(residual),
                                              running_mean, running_var, momentum, eps)
        ctx.save_for_backward(xh, weight, bias, mean, invstd)
        return y.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernels build no graph: double backward is an error
    def backward(ctx, grad: Tensor):
        ext = cpu_kernels.load()
        xh, weight, bias, mean, invstd = ctx.saved_tensors
        gh = _nhwc(grad.to(xh.dtype)).contiguous()  # a view when the gradient is channels-last
        dx, dw, db = ext.bn_relu_backward(xh, gh, weight.detach(), bias.detach(), mean, invstd,
                                          ctx.needs_input_grad[0])
        dx = dx.permute(0, 3, 1, 2) if ctx.needs_input_grad[0] else None
        dres = grad if ctx.needs_input_grad[3] else None  # d(res + v) / d res = identity
        return dx, dw, db, dres, None, None, None, None


def batch_norm_relu(x: Tensor, bn: nn.BatchNorm2d, residual: Tensor | None = None) -> Tensor:
    """``residual + relu(bn(x))`` (``residual=None``: ``relu(bn(x))``), with ``bn``'s running statistics updated
    exactly as ``bn(x)`` updates them; the kernel where :func:`supported`, else ``F.batch_norm`` + ``F.relu``."""
    bn._check_input_dim(x)
    # what nn.BatchNorm2d.forward does before F.batch_norm
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    running_mean, running_var = (bn.running_mean, bn.running_var) if track else (None, None)
    if use_batch and getattr(bn, "fast", True) and supported(x, bn, residual):
        return _BatchNormReLU.apply(x, bn.weight, bn.bias, residual, running_mean, running_var, factor, bn.eps)
    y = F.relu(F.batch_norm(x, running_mean, running_var, bn.weight, bn.bias, use_batch, factor, bn.eps))
    return y if residual is None else residual + y


class BatchNormReLU2d(nn.BatchNorm2d, FastPath):
    """``relu(BatchNorm2d(x))``, and ``residual + relu(BatchNorm2d(x))`` with ``forward(x, residual)``.

    An ``nn.BatchNorm2d`` in parameters, buffers and state dict (:func:`fuse_batchnorm_relu` converts one in place);
    the fused kernel where :func:`supported` (``fast``: see :class:`mgcnn.layers.FastPath`).
    """

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        return batch_norm_relu(x, self, residual)


def _fusable(norm: nn.Module, act: nn.Module) -> bool:
    return type(norm) is nn.BatchNorm2d and type(act) is nn.ReLU and norm.affine


def fuse_batchnorm_relu(model: nn.Module) -> int:
    """Turn every ``nn.BatchNorm2d -> nn.ReLU`` pair of ``model`` into a :class:`BatchNormReLU2d` and an
    ``nn.Identity``, in place; returns how many were fused.

    The pairs are adjacent entries of an ``nn.Sequential`` and the ``(norm, act)`` attribute names a module lists in
    its ``norm_act_pairs`` (a promise that its forward applies ``act`` right after ``norm`` and nothing else reads
    the norm's output); a norm registered in more than one place is left alone. The BatchNorm module itself changes
    class (same object: parameters, buffers, hooks and sharing stay; the state dict is unchanged). Call it on a
    model before compiling it.
    """
    fused = 0
    places: dict[int, set] = {}  # id(norm) -> the (parent, name) places it is registered at
    for parent in model.modules():
        for name, child in parent._modules.items():
            if child is not None:
                places.setdefault(id(child), set()).add((id(parent), name))

    def fuse(parent: nn.Module, norm_name: str, act_name: str) -> None:
        nonlocal fused
        norm, act = parent._modules.get(norm_name), parent._modules.get(act_name)
        if norm is None or act is None or len(places.get(id(norm), ())) != 1:
            return  # a norm registered in several places might be followed by something else there
        if isinstance(norm, BatchNormReLU2d) and type(act) is nn.Identity:
            return  # fused before (a module shared by several parents)
        if _fusable(norm, act):
            norm.__class__ = BatchNormReLU2d
            parent._modules[act_name] = nn.Identity()
            fused += 1

    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                fuse(module, a, b)
        for norm_name, act_name in getattr(module, "norm_act_pairs", ()):
            fuse(module, norm_name, act_name)
    return fused
